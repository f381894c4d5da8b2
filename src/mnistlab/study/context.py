"""What every stage of `mnistlab run` is given: the study folder, its preset, the plan, the per-table
`--set` overrides, the device, and the registry-derived facts stages ask for (which tasks the study
trains, which of them is its autoencoder, which of them encode)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnistlab import tasks
from mnistlab.core.config import COMMAND_TABLES, load_table
from mnistlab.core.errors import ConfigError
from mnistlab.probe.config import ProbeExperiment
from mnistlab.study.plan import RunPlan


def study_tasks(plan: RunPlan) -> list[str]:
    """The tasks trained by `mnistlab run` under `plan`: its stage list, each name checked."""
    for name in plan.tasks:
        tasks.get(name)  # an unknown name is a one-line error listing the known tasks
    return list(dict.fromkeys(plan.tasks))


def provider_of(names: list[str], kind: str) -> str | None:
    """The first of `names` whose runs serve as a run of `kind` (TaskSpec.provides)."""
    return next((n for n in names if kind in tasks.get(n).provides), None)


def autoencoder_of(names: list[str]) -> str | None:
    """The study's autoencoder among `names`, which the probe and latent stages read and a denoiser
    compares with: the first that serves as an autoencoder run."""
    return provider_of(names, "autoencoder")


@dataclass(frozen=True)
class StudyContext:
    """The run folder, the preset, per-table `--set` overrides and the plan."""

    out: Path
    preset: str
    plan: RunPlan
    overrides: dict[str, list[str]] = field(default_factory=dict)  # table -> ["section.key=value", ...]
    device: str | None = None
    progress: bool = True

    def experiment(self, task: str) -> Any:
        return tasks.load_experiment(task, self.preset, self.overrides.get(task, []))

    def probe_table(self) -> ProbeExperiment:
        """The preset's [probe] table, with its overrides: how the probe stages train."""
        return load_table("probe", self.preset, self.overrides.get("probe", []), ProbeExperiment)

    @property
    def trained(self) -> list[str]:
        return study_tasks(self.plan)

    def provider(self, kind: str) -> str | None:
        """The study's stage whose run serves as a run of `kind` (tasks.RUN_KINDS), or None."""
        return provider_of(self.trained, kind)

    @property
    def autoencoder(self) -> str | None:
        """The study's autoencoder stage, or None when the study trains none."""
        return autoencoder_of(self.trained)

    @property
    def encoder(self) -> str:
        """The autoencoder stage that the probe and latent stages read; a one-line error if none."""
        name = self.autoencoder
        if name is None:
            raise ConfigError("the study trains no task with an encoder and a decoder to probe and map")
        return name

    def encoders(self) -> list[str]:
        """The study's task stages whose runs encode, in stage-list order."""
        return [n for n in self.trained if "encoder" in tasks.get(n).roles]


def split_overrides(
    items: list[str], data_dir: str | None = None, device: str | None = None, source: str = "--set"
) -> dict:
    """["ae.train.epochs=1", "data.train_limit=500", "run.search=false"] -> per-table override lists.
    A `data.` item (and --data-dir) applies to every trained task and the plan; --device to the
    trained tasks (probe and latent take it as an argument). `source` names the items in errors."""
    trained = tasks.names()
    per: dict[str, list[str]] = {t: [] for t in (*trained, *COMMAND_TABLES)}
    shared = [f"data.data_dir={data_dir}"] if data_dir else []
    for item in items:
        head, dot, rest = item.partition(".")
        if head == "data":
            shared.append(item)
        elif dot and head in per:
            per[head].append(rest)
        else:
            known = ", ".join(sorted(per))
            raise ConfigError(
                f"{source} {item!r}: start with a stage table ({known}) or data., e.g. ae.train.epochs=2"
            )
    for task in (*trained, "run"):
        per[task] = shared + per[task]
    if device:
        for task in trained:
            per[task].append(f"train.device={device}")
    return {k: v for k, v in per.items() if v}

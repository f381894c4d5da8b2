"""What each stage of `mnistlab run` reads, as a fingerprint, so that a study folder rerun with other
settings reruns only the stages whose inputs changed (and the stages that read them), keeping the
finished others, as make or DVC decide from a stage's inputs.

A stage's inputs: a task stage, its resolved config (data included) and the stage it compares with;
the search, the plan's search fields and the searched task's config; probe and latent, the plan's
fields they use, the probe table and the encoder stage they read. A stage that reads another stage's
output carries that stage's fingerprint, so a change flows downstream.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from typing import Any

from mnistlab import tasks
from mnistlab.errors import ConfigError

SEARCH_FIELDS = ("search_grid", "search_objective")
PROBE_FIELDS = ("finetune", "labels_per_class")
NOT_TASKS = ("search", "probe", "latent", "labels")  # the stages of `mnistlab run` that train no task
LATENT_FIELDS = ("latent_samples", "latent_maps", "latent_score", "tsne_iter", "tsne_early_iter")


def fingerprint(inputs: Any) -> str:
    """SHA-256 of the canonical JSON of `inputs` (sorted keys, tuples as lists)."""
    text = json.dumps(inputs, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()


def plan_fields(plan: Any, names: tuple[str, ...]) -> dict[str, Any]:
    plain = dataclasses.asdict(plan)
    return {k: plain[k] for k in names}


def stage_fingerprints(stages: list[str], own: dict[str, Any], reads: dict[str, list[str]]) -> dict[str, str]:
    """Fingerprint of every stage (in order): its own inputs plus the fingerprints of what it reads."""
    prints: dict[str, str] = {}
    for name in stages:
        upstream = {r: prints[r] for r in reads.get(name, []) if r in prints}
        prints[name] = fingerprint({"own": own[name], "reads": upstream})
    return prints


def stages_to_rerun(entries: list[dict[str, Any]], prints: dict[str, str], same_settings: bool) -> list[str]:
    """Finished stages whose inputs differ from the ones recorded when they ran. A stage recorded
    before fingerprints existed counts as unchanged only when the command's settings are the same."""
    rerun = []
    for entry in entries:
        if entry.get("status") != "done":
            continue
        recorded = entry.get("inputs")
        if (recorded is None and not same_settings) or (
            recorded is not None and recorded != prints[entry["name"]]
        ):
            rerun.append(entry["name"])
    return rerun


def fingerprints(ctx: Any, stages: list[tuple[str, str]], enc: str | None) -> dict[str, str]:
    """Each stage's inputs as a fingerprint (py): what decides whether it reruns."""
    from mnistlab.config import to_doc

    plan, names = ctx.plan, [n for n, _ in stages]
    own: dict[str, Any] = {}
    for name in names:
        if name == "search":
            own[name] = {"plan": plan_fields(plan, SEARCH_FIELDS),
                         "config": to_doc(ctx.experiment(enc), enc)}  # fmt: skip
        elif name in ("probe", "latent"):
            fields = PROBE_FIELDS if name == "probe" else LATENT_FIELDS
            table = dataclasses.asdict(tasks.load_table("probe", ctx.preset, ctx.overrides.get("probe", [])))
            own[name] = {"plan": plan_fields(plan, fields), "device": ctx.device,
                         "probe": table if name == "probe" else None}  # fmt: skip
        elif name == "labels":  # every encoder stage's frozen code at the plan's label counts
            table = dataclasses.asdict(tasks.load_table("probe", ctx.preset, ctx.overrides.get("probe", [])))
            own[name] = {"plan": plan_fields(plan, ("labels_per_class",)), "device": ctx.device,
                         "probe": table}  # fmt: skip
        else:
            own[name] = {"config": to_doc(ctx.experiment(name), name)}
    return stage_fingerprints(names, own, stage_reads(ctx, names, enc))


def task_options(ctx: Any, name: str) -> dict[str, Any]:
    """The options task stage `name` of the study in `ctx` passes to its `train` (TaskSpec.stage_options;
    one written for the older protocol takes the study folder alone)."""
    given = tasks.get(name).stage_options
    if given is None:
        return {}
    if len(inspect.signature(given).parameters) < 2:
        return given(ctx.out)
    return given(ctx.out, ctx.experiment(name))


def stage_reads(ctx: Any, names: list[str], enc: str | None) -> dict[str, list[str]]:
    """The stages (of `names`) of the study in `ctx` whose output each stage reads: what its
    fingerprint carries and what must finish before it starts."""
    reads: dict[str, list[str]] = {}
    for name in names:
        if name in ("probe", "latent"):
            wanted = [enc]
        elif name == "labels":  # every encoder stage's frozen code
            wanted = [n for n in names if n not in NOT_TASKS and "encoder" in tasks.get(n).roles]
        elif name == "search":
            wanted = []
        else:  # a task: the encoder stage reads the search; a task given study options reads the encoder
            wanted = ["search"] if name == enc else ([enc] if task_options(ctx, name) else [])
        reads[name] = [r for r in wanted if r in names]
    return reads


def check_plan(ctx: Any, enc: str | None, trained: list[str]) -> None:
    """What the plan and the data must allow, checked before the first stage (a failure would otherwise
    come after hours): a stage whose options read the encoder stage needs it in the study; the plan's
    labelled-subset sizes must fit the encoder stage's training split."""
    from mnistlab.data import load
    from mnistlab.training.probe import check_labels_per_class, parse_labels_per_class

    for name in trained:
        if name != enc and enc not in trained and task_options(ctx, name):
            raise ConfigError(f"{name} reads the study's {enc} stage (its study settings start it from it, or "
                              f"compare with it): add {enc} to run.tasks")  # fmt: skip
    labels = ctx.plan.labels_per_class
    if enc is None or enc not in trained or not labels:
        return
    counts = parse_labels_per_class(",".join(labels))
    try:
        check_labels_per_class(load(ctx.experiment(enc).data).train.labels, counts)
    except ConfigError as e:
        raise ConfigError(f"run.labels_per_class: {e}") from None

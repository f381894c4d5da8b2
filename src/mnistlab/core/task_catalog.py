"""The tasks' facts that the command line shows, as plain data: name, description, roles, options,
sample options, samplers, the validation metrics it logs, whether the generator takes a digit, listing
order, and whether `mnistlab eval` compares a run with a baseline. The built-ins' are here; a plug-in's
come from the entry point of the same name in the group `mnistlab.task_info` (a plain mapping of
these fields in a module that imports no torch), or, without one, its name alone.

Why a table of its own: `mnistlab --help`, `train --help` and a mistyped command must answer in a
fraction of a second, and importing the task registry (`mnistlab.tasks`) imports torch and every task
module (about 3 s of CPU). Each built-in task module builds its `TaskSpec` from its entry here
(`TaskSpec(**spec_fields("ae"), ...)`), so the help and the registry read one source; tests check that
every built-in task has exactly one entry and that `eval_baseline` matches its `evaluate`'s signature.
A plug-in without a `mnistlab.task_info` entry is only named by the help; what any task can do is
checked when a command runs (through the registry). It lives in core because the package
`mnistlab.tasks` imports torch on import, and both the task modules and the CLI may import core.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

ENTRY_POINT_GROUP = "mnistlab.tasks"  # the same group as tasks.ENTRY_POINT_GROUP (a test checks)
# A plug-in task's help facts, by the task's name: a mapping of TaskEntry's fields (all but `name`,
# all optional), e.g. {"description": "...", "roles": ["generator"], "samplers": ["prior"]}. Its module
# is imported to print help, so it must import nothing heavy.
INFO_GROUP = "mnistlab.task_info"


@dataclass(frozen=True)
class TaskEntry:
    """A task as the CLI shows it; the fields it shares with TaskSpec have TaskSpec's names and
    meanings, so code that lists tasks reads either."""

    name: str
    description: str
    roles: frozenset[str] = frozenset()
    order: int = 100
    options: tuple[str, ...] = ()
    conditional: bool = False
    sample_options: tuple[str, ...] = ()
    val_metrics: tuple[str, ...] = ()  # what its training's `evaluate()` returns, logged as val_<name>
    # Not TaskSpec fields. `evaluate` takes a baseline run (and test noise levels), which `eval --help`
    # names; the registry reads the same fact from the function's signature. `samplers`: the sampler
    # names its generator takes, the default first (`sample --help`; a run's generator says for sure).
    eval_baseline: bool = False
    samplers: tuple[str, ...] = ()
    plugin: bool = False  # from an entry point, not built in

    @classmethod
    def from_info(cls, name: str, info: Any) -> TaskEntry:
        """The entry of plug-in task `name` from its `mnistlab.task_info` mapping; a field TaskEntry
        does not have, or a value of the wrong kind, is a ValueError naming it."""
        if not isinstance(info, Mapping):
            raise ValueError(f"its {INFO_GROUP} entry is a {type(info).__name__}, not a mapping")
        known = {f.name for f in dataclasses.fields(cls)} - {"name", "plugin"}
        unknown = sorted(set(info) - known)
        if unknown:
            raise ValueError(
                f"unknown field(s) {', '.join(map(str, unknown))}; fields: {', '.join(sorted(known))}"
            )
        fields: dict[str, Any] = {}
        for key, value in info.items():
            if key in ("description",):
                ok = isinstance(value, str)
            elif key in ("conditional", "eval_baseline"):
                ok = isinstance(value, bool)
            elif key == "order":
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:  # roles, options, sample_options, val_metrics, samplers: names
                ok = isinstance(value, list | tuple | set | frozenset) and all(
                    isinstance(v, str) for v in value
                )
                value = frozenset(value) if key == "roles" else tuple(value)
            if not ok:
                raise ValueError(f"field {key!r} has the wrong kind of value: {value!r}")
            fields[key] = value
        return cls(name=name, plugin=True, **{"description": "", **fields})

    def spec_fields(self) -> dict[str, Any]:
        """The TaskSpec keyword arguments this entry gives."""
        return {
            "name": self.name,
            "description": self.description,
            "roles": self.roles,
            "order": self.order,
            "options": self.options,
            "conditional": self.conditional,
            "sample_options": self.sample_options,
            "val_metrics": self.val_metrics,
        }


BUILT_IN: dict[str, TaskEntry] = {
    e.name: e
    for e in (
        TaskEntry(
            "ae",
            "the report's convolutional autoencoder (reconstruction MSE)",
            roles=frozenset({"encoder", "decoder", "generator"}),
            order=10,
            val_metrics=("loss",),
            samplers=("gmm", "gaussian", "uniform"),
        ),
        TaskEntry(
            "dae",
            "the denoising autoencoder (noisy input, MSE against the clean image)",
            roles=frozenset({"encoder", "decoder", "generator", "denoiser"}),
            order=20,
            options=("baseline",),
            val_metrics=("loss", "noisy_mse"),
            eval_baseline=True,
            samplers=("gmm", "gaussian", "uniform"),
        ),
        TaskEntry(
            "vae",
            "a variational autoencoder on the report's shapes (prior samples, mean code)",
            roles=frozenset({"encoder", "decoder", "generator"}),
            order=30,
            options=("baseline",),  # an autoencoder run to start from (init.from_baseline)
            val_metrics=("loss", "recon_nll", "kl"),
            samplers=("prior", "stage1", "gmm", "gaussian", "uniform"),
        ),
        TaskEntry(
            "gan",
            "the report's GAN (generator and discriminator of its shapes)",
            roles=frozenset({"generator"}),
            order=40,
            val_metrics=("d_real", "d_fake"),  # none when gan.merge_test trains on the held-out images
            samplers=("prior",),
        ),
        TaskEntry(
            "cgan",
            "the report's GAN conditioned on the digit (sample --digit d)",
            roles=frozenset({"generator"}),
            order=45,
            options=("gan_run",),  # a GAN run to start from (init.from_gan)
            conditional=True,
            val_metrics=("d_real", "d_fake"),
            samplers=("prior",),
        ),
        TaskEntry(
            "flow",
            "a conditional flow-matching generator (sample --steps N --guidance W --digit d)",
            roles=frozenset({"generator"}),
            order=47,
            conditional=True,
            sample_options=("steps", "guidance"),
            val_metrics=("loss",),
            samplers=("midpoint", "euler", "heun"),  # its ODE solvers, flow.solver (midpoint) first
        ),
        TaskEntry(
            "semi",
            "a classifier from 10 labels per class and unlabelled digits (FixMatch-style)",
            roles=frozenset({"classifier", "encoder"}),
            order=60,
            val_metrics=("accuracy",),
        ),
        TaskEntry(
            "classifier",
            "the reference digit classifier the generation metrics measure with",
            roles=frozenset({"classifier"}),
            order=90,
            val_metrics=("loss", "accuracy"),
        ),
    )
}


def spec_fields(name: str) -> dict[str, Any]:
    """The TaskSpec keyword arguments of built-in task `name` (what its module registers)."""
    return BUILT_IN[name].spec_fields()


def entries() -> list[TaskEntry]:
    """The built-in tasks in listing order (as `tasks.all_tasks()` sorts them)."""
    return sorted(BUILT_IN.values(), key=lambda e: (e.order, e.name))


def plugin_names() -> list[str]:
    """The names of the installed plug-in tasks, read from their entry points without loading them."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)} - set(BUILT_IN))


def plugin_entries() -> list[TaskEntry]:
    """The installed plug-in tasks as the help shows them: from their `mnistlab.task_info` entries
    (their modules imported: they must be light), or their names alone. An info entry that fails to
    load leaves the name and says why in the description; the task itself is loaded, and any error
    of its own reported, only when a command runs."""
    infos = {ep.name: ep for ep in entry_points(group=INFO_GROUP)}
    found = []
    for name in plugin_names():
        if name not in infos:
            found.append(TaskEntry(name, "", plugin=True))  # no description: the help names it
            continue
        try:
            found.append(TaskEntry.from_info(name, infos[name].load()))
        except Exception as e:  # a plug-in's broken help facts must not break the help
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]
            found.append(TaskEntry(name, f"a plug-in task (its {INFO_GROUP} entry: {why})", plugin=True))
    return found


def all_entries() -> list[TaskEntry]:
    """The built-in and the plug-in tasks, in listing order (as `tasks.all_tasks()` sorts them)."""
    return sorted([*BUILT_IN.values(), *plugin_entries()], key=lambda e: (e.order, e.name))


def entry(name: str) -> TaskEntry | None:
    """The entry of task `name` (a plug-in's only if installed), else None."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    return next((e for e in plugin_entries() if e.name == name), None)

"""The built-in tasks' facts that the command line shows, as plain data: name, description, roles,
options, sample options, whether the generator takes a digit, listing order, and whether `mnistlab
eval` compares a run with a baseline. Plug-in tasks by their entry-point names only.

Why a table of its own: `mnistlab --help`, `train --help` and a mistyped command must answer in a
fraction of a second, and importing the task registry (`mnistlab.tasks`) imports torch and every task
module (about 3 s of CPU). Each built-in task module builds its `TaskSpec` from its entry here
(`TaskSpec(**spec_fields("ae"), ...)`), so the help and the registry read one source; tests check that
every built-in task has exactly one entry and that `eval_baseline` matches its `evaluate`'s signature.
A plug-in's details exist only once its module is imported: the help names it, and what it can do is
checked when a command runs (through the registry). It lives in core because the package
`mnistlab.tasks` imports torch on import, and both the task modules and the CLI may import core.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

ENTRY_POINT_GROUP = "mnistlab.tasks"  # the same group as tasks.ENTRY_POINT_GROUP (a test checks)


@dataclass(frozen=True)
class TaskEntry:
    """A built-in task as the CLI shows it; the fields it shares with TaskSpec have TaskSpec's names
    and meanings, so code that lists tasks reads either."""

    name: str
    description: str
    roles: frozenset[str] = frozenset()
    order: int = 100
    options: tuple[str, ...] = ()
    conditional: bool = False
    sample_options: tuple[str, ...] = ()
    # Not a TaskSpec field: its `evaluate` takes a baseline run (and test noise levels), which `eval
    # --help` names; the registry reads the same fact from the function's signature.
    eval_baseline: bool = False

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
        }


BUILT_IN: dict[str, TaskEntry] = {
    e.name: e
    for e in (
        TaskEntry(
            "ae",
            "the report's convolutional autoencoder (reconstruction MSE)",
            roles=frozenset({"encoder", "decoder", "generator"}),
            order=10,
        ),
        TaskEntry(
            "dae",
            "the denoising autoencoder (noisy input, MSE against the clean image)",
            roles=frozenset({"encoder", "decoder", "generator", "denoiser"}),
            order=20,
            options=("baseline",),
            eval_baseline=True,
        ),
        TaskEntry(
            "vae",
            "a variational autoencoder on the report's shapes (prior samples, mean code)",
            roles=frozenset({"encoder", "decoder", "generator"}),
            order=30,
            options=("baseline",),  # an autoencoder run to start from (init.from_baseline)
        ),
        TaskEntry(
            "gan",
            "the report's GAN (generator and discriminator of its shapes)",
            roles=frozenset({"generator"}),
            order=40,
        ),
        TaskEntry(
            "cgan",
            "the report's GAN conditioned on the digit (sample --digit d)",
            roles=frozenset({"generator"}),
            order=45,
            conditional=True,
        ),
        TaskEntry(
            "flow",
            "a conditional flow-matching generator (sample --steps N --guidance W --digit d)",
            roles=frozenset({"generator"}),
            order=47,
            conditional=True,
            sample_options=("steps", "guidance"),
        ),
        TaskEntry(
            "semi",
            "a classifier from 10 labels per class and unlabelled digits (FixMatch-style)",
            roles=frozenset({"classifier", "encoder"}),
            order=60,
        ),
        TaskEntry(
            "classifier",
            "the reference digit classifier the generation metrics measure with",
            roles=frozenset({"classifier"}),
            order=90,
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

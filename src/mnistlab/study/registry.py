"""The registry of the study's stages: every stage of `mnistlab run` is one `Stage`.

A task stage trains a task of the plan's stage list (run.tasks) into RUN/<task>/, as `mnistlab train`
would (`task_stage` makes it from the task's spec). The other stages (search, probe, latent, labels,
and a third party's) are the modules of the package study/stages/, or objects named by entry points
of the group `mnistlab.stages`, each registering one Stage with `register`. Everything else asks this
registry: which stages a study runs and in what order (`planned`), what each reads, its input
fingerprint, how to run it and its part of the report. No other code compares a stage's name.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistlab import tasks
from mnistlab.core.config import to_doc
from mnistlab.core.errors import ConfigError
from mnistlab.core.plugins import load_plugins
from mnistlab.runs import folder as rundir
from mnistlab.runs import owner
from mnistlab.search.results import best_trial
from mnistlab.study.context import StudyContext

log = logging.getLogger("mnistlab")

ENTRY_POINT_GROUP = "mnistlab.stages"


def _always(ctx: StudyContext) -> bool:
    return True


def _nothing(ctx: StudyContext) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class Stage:
    """One stage of `mnistlab run`.

    run(ctx, resume): do the stage's work into RUN/<folder(ctx)>.
    folder(ctx) -> str: its folder inside the study folder.
    reads(ctx) -> stage names: the stages whose output it reads (declared; those in the study must
        finish before it starts, and their fingerprints are part of its own).
    inputs(ctx) -> JSON-able: its own settings; a change reruns it and what reads it.
    include(ctx) -> bool: whether this study runs it.
    check(ctx): what the plan and the data must allow, checked before the first stage runs.
    report(run, name) -> plots.content.Section: its part of the study report.
    exclusive: it runs alone (it keeps a worker pool of its own).
    task: the task it trains, for a task stage.
    """

    name: str
    description: str
    run: Callable[[StudyContext, bool], None]
    folder: Callable[[StudyContext], str]
    inputs: Callable[[StudyContext], Any]
    reads: Callable[[StudyContext], tuple[str, ...]] = _nothing
    include: Callable[[StudyContext], bool] = _always
    check: Callable[[StudyContext], None] | None = None
    report: Callable[[Any, str], Any] | None = None
    exclusive: bool = False
    task: str | None = None

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ValueError(f"stage name {self.name!r} must be an identifier")


_STAGES: dict[str, Stage] = {}
_BROKEN: dict[str, str] = {}
_loaded = False


def register(stage: Stage, replace: bool = False) -> Stage:
    """Add a stage that trains no task (a second stage of the same name is an error unless `replace`)."""
    if not isinstance(stage, Stage):
        raise TypeError(f"register() takes a Stage, got {type(stage).__name__}")
    if stage.name in _STAGES and not replace and _STAGES[stage.name] is not stage:
        raise ValueError(f"a stage named {stage.name!r} is already registered")
    if stage.name in tasks.names():  # a task's own stage has its name
        raise ValueError(f"{stage.name!r} names a task; choose another stage name")
    _STAGES[stage.name] = stage
    return stage


def unregister(name: str) -> None:
    """Remove a stage (tests register temporary ones)."""
    _STAGES.pop(name, None)


def _load_all() -> None:
    """Import every module of study/stages/ (the built-in stages), then the entry points, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    _BROKEN.update(load_plugins("mnistlab.study.stages", ENTRY_POINT_GROUP, register, Stage, "stage"))


def registered() -> list[Stage]:
    """The stages that train no task, in registration order (built-in first)."""
    _load_all()
    return list(_STAGES.values())


def names() -> list[str]:
    """Every name a study's stage can have: the registered stages and the registered tasks."""
    return [*(s.name for s in registered()), *tasks.names()]


def get(name: str) -> Stage:
    """The stage called `name`: a registered stage, else the task stage of the task of that name."""
    _load_all()
    if name in _STAGES:
        return _STAGES[name]
    if name in _BROKEN:
        raise ConfigError(_BROKEN[name])
    if name in tasks.names():
        return task_stage(tasks.get(name))
    raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(names())}")


def check_names(given: tuple[str, ...], what: str) -> None:
    """A one-line error for a name that is no stage of any study."""
    known = names()
    for name in given:
        if name not in known:
            raise ConfigError(f"{what}: unknown stage {name!r}; stages: {', '.join(known)}")


def planned(ctx: StudyContext) -> list[Stage]:
    """The stages of the study `ctx` plans, in order: its task stages in stage-list order, each stage
    that another reads before it, and each registered stage right after the last stage it reads."""
    trained = [get(n) for n in ctx.trained]
    extra = [s for s in registered() if s.include(ctx)]
    chosen = {s.name: s for s in (*trained, *extra)}
    reads = {name: [r for r in s.reads(ctx) if r in chosen and r != name] for name, s in chosen.items()}
    order: list[Stage] = []
    done: set[str] = set()

    def place(stage: Stage, path: tuple[str, ...] = ()) -> None:
        if stage.name in done:
            return
        if stage.name in path:
            raise ConfigError(f"the study's stages read each other in a circle: {' -> '.join(path)}")
        for r in reads[stage.name]:
            place(chosen[r], (*path, stage.name))
        order.append(stage)
        done.add(stage.name)

    for stage in trained:
        place(stage)
        for other in extra:  # each registered stage as soon as everything it reads is placed
            if other.name not in done and all(r in done for r in reads[other.name]):
                place(other)
    for other in extra:
        place(other)
    return order


# ------------------------------------------------------------------------------ task stages

SEARCH = "search"  # the stage whose best trial becomes the study's autoencoder stage (stages/search.py)


def task_stage(spec: tasks.TaskSpec) -> Stage:
    """The stage that trains task `spec` into RUN/<name>/ as `mnistlab train` would. It reads the
    study's stage of each kind of run its config asks for (TaskSpec.run_inputs: the autoencoder a
    denoiser compares with, the GAN a conditional GAN starts from), and, when it is the study's
    autoencoder and the plan searches, the search, whose best trial it becomes."""
    name = spec.name

    def searched(ctx: StudyContext) -> bool:
        return ctx.plan.search and name == ctx.autoencoder

    def sources(ctx: StudyContext) -> dict[str, tuple[str, str | None]]:
        """option -> (kind of run, the study's stage that provides it or None)."""
        return {
            option: (kind, ctx.provider(kind))
            for option, kind in spec.run_inputs(ctx.experiment(name)).items()
        }

    def reads(ctx: StudyContext) -> tuple[str, ...]:
        wanted = (SEARCH,) if searched(ctx) else ()
        stages = (stage for _, stage in sources(ctx).values() if stage not in (None, name))
        return wanted + tuple(dict.fromkeys(stages))

    def run(ctx: StudyContext, resume: bool) -> None:
        target = ctx.out / name
        if searched(ctx):
            return _copy_best_trial(ctx.out / SEARCH, target)
        exp = ctx.experiment(name)
        options = {option: ctx.out / stage for option, (_, stage) in sources(ctx).items()}
        spec.train(exp, target, resume=resume, progress=ctx.progress, **options)

    def check(ctx: StudyContext) -> None:
        for kind, stage in sources(ctx).values():
            if stage is None:
                can = ", ".join(s.name for s in tasks.all_tasks() if kind in s.provides) or "none"
                raise ConfigError(
                    f"{name} reads the study's {kind} stage (its study settings start it from "
                    f"it, or compare with it): add one to run.tasks ({can})"
                )

    return Stage(
        name=name,
        description=spec.description,
        run=run,
        folder=lambda ctx: name,
        inputs=lambda ctx: {"config": to_doc(ctx.experiment(name), name)},
        reads=reads,
        check=check,
        report=spec.report,
        task=name,
    )


def _copy_best_trial(search_dir, target) -> None:
    """The autoencoder stage after a search: its best trial, trained with the preset's settings plus
    its grid point, copied into place (staged in a fresh folder beside it, so a crash leaves no half
    copy). The stage's folder is claimed first: only the files mnistlab wrote there are replaced, and
    a file of the user's in the way is a one-line error before anything moves."""
    source = best_trial(search_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.copying-", dir=target.parent))
    try:
        copy = staging / target.name
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns(*owner.BOOKKEEPING))
        summary = rundir.read_summary(copy)
        rundir.write_summary(copy, {**summary, "search_trial": source.name})
        owner.claim(target, "train", force=True)
        owner.move_into(copy, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # made above: nothing in it is the user's
    log.info("%s: the search's best trial %s", target.name, source.name)

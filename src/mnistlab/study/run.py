"""`mnistlab run`: the whole study as stages into one run folder, resumable, then the report.

The stages come from the stage registry (study/registry.py): a task stage for each task of the plan's
stage list (run.tasks: ae, dae, vae, gan, cgan by default), trained into RUN/<task>/ exactly as
`mnistlab train <task>` would, plus the registered stages the plan includes (search, probe, latent,
labels, a plug-in's), each in the folder it names. RUN/run.json records the preset, the command and
each stage's status (pending / running / done / failed), start and end times and seconds. Running the
same command again skips done stages and resumes an interrupted training stage from its last epoch
checkpoint (stages that keep no checkpoint start over). With the plan's `workers` above one the stages
run side by side, each in a process of its own, each started once the stages it reads have finished
(pool.py). Settings come from the preset: the task tables for each stage's training, the [run] table
(plan.RunPlan) for what the stages do.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnistlab.core import host
from mnistlab.core.config import load_table
from mnistlab.runs import owner
from mnistlab.runs.folder import command_line
from mnistlab.study import inputs as run_inputs
from mnistlab.study import pool as stage_pool
from mnistlab.study import registry
from mnistlab.study import state as run_state
from mnistlab.study.console import StudyConsole
from mnistlab.study.context import StudyContext, split_overrides
from mnistlab.study.plan import RunPlan

log = logging.getLogger("mnistlab")


def run_stage(ctx: StudyContext, name: str, resume: bool) -> None:
    """Run one stage of the study (what a stage's worker process calls); the folders it claims are
    released when it ends (owner.session)."""
    with owner.session():
        registry.get(name).run(ctx, resume)


# --------------------------------------------------------------------------------------------- run


def run_study(
    out: Path,
    preset: str = "quick",
    overrides: list[str] | None = None,
    data_dir: str | None = None,
    device: str | None = None,
    progress: bool = True,
    report: Callable[[Path], Any] | None = None,
) -> dict[str, Any]:
    """Run (or resume) every stage of the study into `out`, then `report(out)` (the CLI passes
    report.build.write_report; it is also called after a stage fails). Returns run.json. `out` is
    claimed (owner.claim) and locked until the study and its report are done."""
    with owner.session():
        return _run_study(Path(out), preset, overrides, data_dir, device, progress, report)


def _run_study(
    out: Path,
    preset: str,
    overrides: list[str] | None,
    data_dir: str | None,
    device: str | None,
    progress: bool,
    report: Callable[[Path], Any] | None,
) -> dict[str, Any]:
    overrides = list(overrides or [])
    plan = load_table("run", preset, split_overrides(overrides, data_dir, device).get("run", []), RunPlan)
    # The plan's own stage settings first, so that the command's --set items override them.
    split_overrides(list(plan.set), source="run.set item")  # a bad item named as the preset's, not --set
    per_task = split_overrides([*plan.set, *overrides], data_dir, device)
    ctx = StudyContext(out, preset, plan, per_task, device, progress)
    for task in ctx.trained:  # check every stage's config before any training
        ctx.experiment(task)
    ctx.probe_table()
    registry.check_names(plan.start_first, "run.start_first")
    stages = registry.planned(ctx)
    for stage in stages:
        if stage.check is not None:
            stage.check(ctx)
    prints = run_inputs.fingerprints(ctx, stages)
    settings = {
        "preset": preset,
        "overrides": overrides,
        "data_dir": data_dir,
        "device": device,
        "command": command_line(),
        "host": host.describe(),  # the machine this (last) ran on
    }
    folders = [(stage.name, stage.folder(ctx)) for stage in stages]
    state = run_state.open_state(out, plan, folders, settings, prints)
    state["command"] = settings["command"]
    state["status"] = "running"
    run_state.save(out, state)
    todo = [e for e in state["stages"] if e["status"] != "done"]
    workers = stage_pool.workers_for(ctx.plan.workers, len(todo))
    screen = StudyConsole(len(state["stages"]), len(state["stages"]) - len(todo), workers, progress)
    try:
        screen.begin(preset, [e["name"] for e in state["stages"]], out, plan.data.train_limit)
        for entry in state["stages"]:
            if entry["status"] == "done":
                screen.skipped(entry["name"])
        _run_stages(ctx, state, todo, prints, stages, workers, screen)
    except BaseException as e:
        state["status"] = "failed"
        run_state.save(out, state)
        if report is not None and isinstance(e, Exception):
            _report_anyway(out, report)
        raise
    finally:
        screen.close()
    state["status"] = "done"
    run_state.save(out, state)
    if report is not None:
        report(out)
    return state


def _run_stages(
    ctx: StudyContext,
    state: dict[str, Any],
    todo: list[dict[str, Any]],
    prints: dict[str, str],
    stages: list[registry.Stage],
    workers: int,
    screen: StudyConsole,
) -> None:
    """Run the stages of `todo` (run.json entries, in stage order): one after another in this process,
    or side by side in `workers` worker processes (pool.py). run.json records each start and end as
    it happens, and `screen` prints them; the first failure is raised once nothing runs."""
    out = ctx.out
    entries = {e["name"]: e for e in todo}
    resume = {e["name"]: (out / e["folder"] / "config.toml").exists() for e in todo}
    clocks: dict[str, float] = {}

    def start(name: str, running: int) -> None:
        entry = entries[name]
        screen.started(name, resuming=bool(resume[name] and entry["attempts"]))
        entry.update(
            status="running", started=run_state.now(), ended=None, error=None, attempts=entry["attempts"] + 1
        )
        run_state.save(out, state)
        clocks[name] = time.perf_counter()

    def end(name: str, outcome: stage_pool.Outcome) -> None:
        error, wall = outcome.error, time.perf_counter() - clocks[name]
        message = None if error is None else _error_line(error)
        run_state.finish(
            entries[name],
            "failed" if error else "done",
            wall,
            outcome.cpu_seconds,
            outcome.peak_rss_mb,
            message,
        )
        if error is None:
            entries[name]["inputs"] = prints[name]
        run_state.save(out, state)
        screen.ended(name, message, wall)

    if workers == 1:
        for entry in todo:
            name = entry["name"]
            start(name, 1)
            cpu0 = time.process_time()
            try:
                run_stage(ctx, name, resume[name])
            except BaseException as e:
                end(name, stage_pool.Outcome(time.process_time() - cpu0, run_state.peak_rss_mb(), e))
                raise
            end(name, stage_pool.Outcome(time.process_time() - cpu0, run_state.peak_rss_mb()))
        return
    # Worker processes: no progress bars inside (they would interleave); the stages log instead.
    quiet = dataclasses.replace(ctx, progress=False)
    names = stage_pool.start_order([e["name"] for e in todo], ctx.plan.start_first)
    reads = run_inputs.stage_reads(ctx, [s for s in stages if s.name in names])
    error = stage_pool.run_graph(
        names,
        reads,
        workers,
        lambda name: (run_stage, (quiet, name, resume[name])),
        start,
        end,
        exclusive=frozenset(s.name for s in stages if s.exclusive),
    )
    if error is not None:
        raise error


def _error_line(error: BaseException) -> str:
    """A stage's error as run.json records it: one line."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return f"{type(error).__name__}: {error}".splitlines()[0]


def _report_anyway(out: Path, report: Callable[[Path], Any]) -> None:
    """The report of what has run so far, after a stage failed (its own failure only logged)."""
    try:
        report(out)
    except Exception as e:  # the stage's error is the one to raise
        log.warning("could not write the report of %s: %s", out, e)

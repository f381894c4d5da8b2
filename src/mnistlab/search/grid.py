"""Grid search over any config field, and the pieces every search shares: running one trial as a
normal run folder with the task's own trainer, the objective (best validation loss or a linear
probe on the frozen codes) and the small logistic-regression probe itself.

A grid trial's folder is named from its overrides (`lr=1e-3_weight_decay=1e-4_latent_dim=2`), so
running the same search again skips trials whose summary says finished (or diverged: that is
deterministic), and resumes interrupted ones from their last epoch checkpoint.
Optuna searches (search/optuna.py) reuse `run_trial` and the objective functions from here.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mnistlab.core import procs
from mnistlab.core.errors import ConfigError, WorkersDied, check_threads
from mnistlab.core.fsio import write_json
from mnistlab.data.datasets import load
from mnistlab.metrics.codes import probe_accuracy
from mnistlab.runs import folder as rundir
from mnistlab.runs import owner
from mnistlab.search.results import write_results
from mnistlab.search.space import grid_points, overrides_of, trial_name
from mnistlab.tasks import get, load_experiment, load_run, load_run_config, with_role
from mnistlab.training.loop import NonFiniteLossError
from mnistlab.training.progress import bars

log = logging.getLogger("mnistlab")

DONE = ("finished", "diverged")  # trial states a re-run does not repeat
# Pools started for one grid: a worker that dies (killed, out of memory) breaks the whole pool, and
# every trial not done is queued again in a fresh one (each resumes from its last epoch checkpoint).
# A trial that kills its worker every time would do so forever; after this many pools the search
# stops with a one-line error instead.
MAX_POOLS = 3
PROBE_MAX_TRAIN = 10_000  # training codes the probe is fit on (lbfgs on all 48k is slower, not better)

EpochCallback = Callable[[int, dict[str, Any]], None]


# ------------------------------------------------------------------------------------- objective


@dataclass(frozen=True)
class Objective:
    """What a search optimises: a per-epoch validation metric (best epoch counts) or probe_acc."""

    name: str
    direction: str  # "minimize" | "maximize"
    per_epoch: bool  # logged every epoch in metrics.jsonl, so a pruner can watch it

    def better(self, a: float, b: float) -> bool:
        return a < b if self.direction == "minimize" else a > b


# Validation metrics where higher is better (by the last part of the name): a search maximises them;
# every other val_* metric (losses, errors, distances) is minimised.
HIGHER_IS_BETTER = ("acc", "accuracy", "psnr", "ssim", "precision", "recall")


def objective_of(name: str) -> Objective:
    if name == "probe_acc":
        return Objective(name, "maximize", per_epoch=False)
    if name.startswith("val_"):
        higher = name.rsplit("_", 1)[-1] in HIGHER_IS_BETTER
        return Objective(name, "maximize" if higher else "minimize", per_epoch=True)
    raise ConfigError(
        f"--objective {name!r}: use val_loss (or another val_* metric: accuracies maximised, losses "
        "minimised) or probe_acc (maximised)"
    )


def check_objective(task: str, objective: str | Objective) -> Objective:
    """`objective` for a search of `task`, refused before anything trains when the task cannot give
    it: probe_acc of a task without an encoder, or a val_* metric outside what its training logs
    (TaskSpec.val_metrics; a task that declares none is checked after its first trial instead)."""
    obj = objective if isinstance(objective, Objective) else objective_of(objective)
    spec = get(task)
    if obj.name == "probe_acc":
        if "encoder" not in spec.roles:
            can = ", ".join(s.name for s in with_role("encoder")) or "none"
            raise ConfigError(
                f"objective probe_acc needs an encoder and {task} has none (tasks with one: {can})"
            )
        return obj
    logged = [f"val_{m}" for m in spec.val_metrics]
    if logged and obj.name not in logged:
        raise ConfigError(
            f"objective {obj.name}: the {task} task never logs it; it logs {', '.join(logged)} "
            "(or use probe_acc for a task with an encoder)"
        )
    return obj


def probe_objective(run_dir: Path, max_train: int = PROBE_MAX_TRAIN) -> float | None:
    """probe_acc of a finished run: fit on the codes of (up to max_train) training images of the run's
    own data config, scored on its validation split. Cached in the run's summary.json. None when the
    encoder's codes are not finite."""
    summary = rundir.read_summary(run_dir)
    if "probe_acc" in summary:
        return float(summary["probe_acc"])
    run = load_run(run_dir, role="encoder")  # a task without an encoder: a one-line error
    data = load(run.exp.data)
    train = data.train.take(slice(0, max_train))
    train_codes, val_codes = run.encode(train.images).numpy(), run.encode(data.val.images).numpy()
    if not (np.isfinite(train_codes).all() and np.isfinite(val_codes).all()):
        log.warning("%s: its codes are not finite; no probe_acc for this trial", run_dir)
        return None
    acc = probe_accuracy(train_codes, train.labels.numpy(), val_codes, data.val.labels.numpy())
    rundir.write_summary(run_dir, {**summary, "probe_acc": round(acc, 6), "probe_n_train": len(train)})
    return acc


def objective_value(run_dir: Path, objective: Objective) -> float | None:
    """The trial's objective, or None when it has none (diverged, pruned before any epoch, ...)."""
    summary = rundir.read_summary(run_dir)
    if objective.name == "probe_acc":
        return probe_objective(run_dir) if summary.get("status") == "finished" else None
    values = [r[objective.name] for r in rundir.read_history(run_dir) if objective.name in r]
    if not values and summary.get("status") == "finished":
        raise ConfigError(f"{run_dir}: the task logs no {objective.name}; choose another objective")
    return min(values) if values else None


# ------------------------------------------------------------------------------------- one trial


def trainer_for(task: str) -> Callable[..., dict]:
    """The registered task's train function (an unknown task is a one-line error)."""
    return get(task).train


def accepts_epoch_callback(trainer: Callable[..., Any]) -> bool:
    return "on_epoch_end" in inspect.signature(trainer).parameters


def run_trial(
    task: str,
    exp: Any,
    run_dir: Path,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
) -> str:
    """Train `exp` into `run_dir` with the task's trainer unless it is already done; returns the
    trial's status ("finished" or "diverged"). An interrupted trial resumes from its checkpoint.
    A diverging trial is recorded (summary status "diverged"), not raised."""
    run_dir = Path(run_dir)
    status = rundir.read_summary(run_dir).get("status")
    if status in DONE:
        return status
    resume = (run_dir / "config.toml").exists()
    if resume:
        saved_task, saved = load_run_config(run_dir)
        if (saved_task, saved) != (task, exp):
            raise ConfigError(f"{run_dir} holds a trial with another config; search into a fresh --out")
    trainer = trainer_for(task)
    kwargs = {}
    if on_epoch_end is not None:
        if not accepts_epoch_callback(trainer):
            raise ConfigError(f"the {task} trainer takes no on_epoch_end callback, so it cannot be pruned")
        kwargs["on_epoch_end"] = on_epoch_end
    with owner.session():  # the trial's folder stays locked while it trains (its trainer claims it)
        try:
            trainer(exp, run_dir, resume=resume, progress=progress, **kwargs)
        except NonFiniteLossError as e:
            summary = rundir.read_summary(run_dir)
            if summary.get("status") != "diverged":  # a trainer that did not record it itself
                rundir.write_summary(
                    run_dir, {**summary, "task": task, "status": "diverged", "error": str(e)}
                )
            log.warning("trial %s diverged: %s", run_dir.name, e)
            return "diverged"
    return "finished"


def trial_row(run_dir: Path, params: dict[str, Any], objective: Objective, status: str) -> dict[str, Any]:
    """One results-table row read back from a trial's run folder."""
    history = rundir.read_history(run_dir)
    summary = rundir.read_summary(run_dir)
    vals = [(r["val_loss"], r["epoch"]) for r in history if "val_loss" in r]
    best = min(vals) if vals else (None, None)
    value = objective_value(run_dir, objective) if status in ("finished", "pruned") else None
    return {
        "trial": Path(run_dir).name,
        **params,
        objective.name: value,
        "status": status,
        "best_val_loss": best[0],
        "best_epoch": best[1],
        "epochs": len(history),
        "test_mse": (summary.get("test") or {}).get("mse"),
        "train_seconds": summary.get("train_seconds"),
        "run_dir": str(run_dir),
    }


def default_workers() -> int:
    """Worker processes the CLI uses unless told: one per core, each with one torch thread (at most 4,
    to bound memory: every worker holds its own copy of the data and of torch).

    Processes rather than threads: one single-threaded worker per core finishes a fixed grid sooner
    than one worker with a thread per core (benchmarks/search_workers.py, benchmarks/search_workers.md)."""
    return max(1, min(4, os.cpu_count() or 1))


def worker_threads(workers: int) -> int:
    """torch threads per worker process: the cores shared out evenly, at least one."""
    return max(1, (os.cpu_count() or 1) // max(workers, 1))


# ------------------------------------------------------------------------------------------ grid


def _grid_worker_init() -> None:
    """A grid worker ends with the process that started it, even one killed with SIGKILL."""
    procs.die_with_parent()


def _grid_job(task: str, exp: Any, run_dir: Path, threads: int) -> str:
    """One grid trial in a worker process (progress bars off: they would interleave)."""
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    return run_trial(task, exp, run_dir, progress=False)


def run_grid(
    task: str,
    grid: dict[str, list[str]],
    out: Path,
    preset: str = "default",
    overrides: list[str] | None = None,
    objective: str = "val_loss",
    workers: int = 1,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train every point of `grid` (on top of preset + overrides) into out/trials/<name>/ and write
    the results table, the curves figure and best.toml to `out`. Returns the rows, best first."""
    obj = check_objective(task, objective)  # before any trial trains
    check_threads(workers, "--workers")
    base = list(overrides or [])
    points = grid_points(grid)
    # Build (and so check) every trial's config before training any of them.
    trials = [
        (p, load_experiment(task, preset, base + overrides_of(p)), out / "trials" / trial_name(p))
        for p in points
    ]
    if len({t[2] for t in trials}) != len(trials):
        raise ConfigError("--grid gives two points the same trial name; make the values distinct")
    owner.claim(out, "search")  # a new or empty folder, or this search's own (resumed)
    write_json(
        out / "search.json",
        {
            "kind": "grid",
            "task": task,
            "preset": preset,
            "overrides": base,
            "grid": grid,
            "objective": obj.name,
        },
    )
    todo = [t for t in trials if rundir.read_summary(t[2]).get("status") not in DONE]
    log.info(
        "grid search: %d trials, %d already done, %d to run", len(trials), len(trials) - len(todo), len(todo)
    )
    if workers == 1 or len(todo) <= 1:
        for i, (_, exp, run_dir) in enumerate(tqdm(todo, desc="trials", disable=not bars(progress))):
            status = run_trial(task, exp, run_dir, progress=progress)
            log.info("trial %d/%d %s: %s", i + 1, len(todo), run_dir.name, status)
    else:
        _run_pools(task, [(exp, run_dir) for _, exp, run_dir in todo], workers, progress)
    rows = [
        trial_row(run_dir, p, obj, rundir.read_summary(run_dir).get("status", "?"))
        for p, _, run_dir in trials
    ]
    return write_results(out, rows, obj, list(grid), task)


def _run_pools(
    task: str,
    todo: list[tuple[Any, Path]],
    workers: int,
    progress: bool,
    job: Callable[..., str] | None = None,
) -> None:
    """The trials of `todo` in `workers` spawned processes, each `job(task, exp, run_dir, threads)`
    (default `_grid_job`). A worker that dies breaks its pool: the trials not done yet go to a fresh
    pool, up to MAX_POOLS pools, then WorkersDied (one line)."""
    bar = tqdm(total=len(todo), desc="trials", disable=not bars(progress))  # plain lines off a terminal
    try:
        for round_ in range(1, MAX_POOLS + 1):
            left = [t for t in todo if rundir.read_summary(t[1]).get("status") not in DONE]
            if not left:
                return
            if round_ > 1:
                log.warning(
                    "a search worker process died; %d trial(s) not finished run again in a new pool "
                    "(each resumes from its last epoch checkpoint)",
                    len(left),
                )
            try:
                _pool_round(task, left, workers, bar, job or _grid_job)
                return
            except BrokenProcessPool:
                continue
        left = [t for t in todo if rundir.read_summary(t[1]).get("status") not in DONE]
        raise WorkersDied(
            f"search worker processes died {MAX_POOLS} times; {len(left)} trial(s) not finished "
            f"(first: {left[0][1].name if left else '-'})"
        )
    finally:
        bar.close()


def _pool_round(task: str, todo: list[tuple[Any, Path]], workers: int, bar, job: Callable[..., str]) -> None:
    """One pool over `todo`; BrokenProcessPool when one of its workers dies. Interrupted (Ctrl-C,
    SIGTERM), its workers are stopped at once instead of finishing their trials: the executor's own
    shutdown would wait for them."""
    threads = worker_threads(workers)
    pool = ProcessPoolExecutor(
        min(workers, len(todo)), mp_context=get_context("spawn"), initializer=_grid_worker_init
    )
    try:
        futures = {pool.submit(job, task, exp, run_dir, threads): run_dir for exp, run_dir in todo}
        for fut in as_completed(futures):
            log.info("trial %s: %s", futures[fut].name, fut.result())
            bar.update(1)
    except BaseException as e:
        if not isinstance(e, Exception):  # KeyboardInterrupt: stop the workers now
            procs.stop_processes(list(getattr(pool, "_processes", {}).values()))
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)

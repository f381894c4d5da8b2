"""Optuna search that scales out: TPE sampling over a TOML search space, a median pruner fed with each
epoch's validation loss, and a study in an RDB storage (a SQLite file in the search folder by
default; any SQLAlchemy URL such as PostgreSQL via --storage) shared by any number of workers, local
(`--workers K` processes) or on other machines running the same command.

Reliability: a trial whose worker died is failed and re-queued (once per retry, up to max_retry) by
RetryHeartbeatStaleTrialCallback (Optuna 5's name for RetryFailedTrialCallback). Each trial records
its worker's host and process id, so a dead worker on this machine is noticed at once: by the launcher
when its worker processes exit (it then runs the re-queued trials before it reports), by any worker
between trials, and by a rerun of the same command. A worker on another machine is noticed by its
missing heartbeats after the grace period. The retry reuses the original trial's run folder, so it
resumes from that trial's last epoch checkpoint. A diverging trial (non-finite loss) is recorded as
FAIL with its message, never a crash of the worker.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import socket
import warnings
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from mnistlab.core.errors import ConfigError, WorkersDied, check_threads
from mnistlab.core.fsio import write_json
from mnistlab.core.procs import die_with_parent, stop_processes
from mnistlab.runs import folder as rundir
from mnistlab.runs import owner
from mnistlab.search.grid import (
    accepts_epoch_callback,
    check_objective,
    objective_of,
    objective_value,
    run_trial,
    trainer_for,
    trial_row,
    worker_threads,
)
from mnistlab.search.results import write_results
from mnistlab.search.space import Param, overrides_of, suggest
from mnistlab.tasks import load_experiment

log = logging.getLogger("mnistlab")


def _stable(fn, *args, **kwargs):
    """Call an Optuna API marked experimental (heartbeats, retries) without its ExperimentalWarning:
    they have been in Optuna since 2.x and are what its docs recommend for distributed studies."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return fn(*args, **kwargs)


class TrialDiverged(RuntimeError):
    """The trial's training hit a non-finite loss; Optuna records it as FAIL and the worker goes on."""


# User attributes naming the process that runs a trial, so that its death can be noticed at once.
WORKER_ATTRS = ("worker_host", "worker_pid")


class _Retry(RetryHeartbeatStaleTrialCallback):
    """Re-queues a failed trial without the dead worker's identity: until the next worker marks the
    retry as its own, nothing should mistake it for a trial of the dead process."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trial = copy.deepcopy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in WORKER_ATTRS}
        super().__call__(study, trial)


def _retry(spec: StudySpec) -> _Retry:
    return _stable(_Retry, spec.max_retry, inherit_intermediate_values=True)


@dataclass(frozen=True)
class StudySpec:
    """Everything a worker needs to join the study (plain data, so it pickles to worker processes)."""

    task: str
    out: Path
    space: tuple[Param, ...]
    n_trials: int
    preset: str = "default"
    overrides: tuple[str, ...] = ()
    objective: str = "val_loss"
    storage: str = ""  # "" = sqlite file out/study.db
    study_name: str = ""  # "" = "<task>-search"
    seed: int | None = None  # TPE seed (None: fresh per process); local worker k uses seed + k
    prune: bool = True
    prune_startup_trials: int = 4  # completed trials before the median pruner may stop anything
    prune_warmup_epochs: int = 1  # epochs every trial runs before it may be pruned
    heartbeat_s: int = 60
    grace_s: int = 0  # 0 = 2 x heartbeat
    max_retry: int = 3
    progress: bool = True

    @property
    def url(self) -> str:
        return self.storage or f"sqlite:///{(Path(self.out) / 'study.db').resolve()}"

    @property
    def name(self) -> str:
        return self.study_name or f"{self.task}-search"


def public_url(url: str) -> str:
    """The storage URL with any password masked, for logs and files."""
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable storage URL>"


def open_study(spec: StudySpec, worker: int = 0) -> optuna.Study:
    kwargs: dict[str, Any] = {}
    if spec.url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 60}}  # several processes write one file: wait on its lock
    try:
        storage = _stable(
            RDBStorage,
            spec.url,
            engine_kwargs=kwargs,
            heartbeat_interval=spec.heartbeat_s,
            grace_period=spec.grace_s or 2 * spec.heartbeat_s,
            heartbeat_stale_trial_callback=_retry(spec),
        )
    except Exception as e:  # bad URL, missing driver, server down: one line, not a traceback
        raise ConfigError(f"cannot open storage {public_url(spec.url)}: {str(e).splitlines()[0]}") from None
    obj = objective_of(spec.objective)
    pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    if spec.prune and obj.per_epoch:
        # Optuna prunes at step >= n_warmup_steps; epochs count from 1, so "warm-up w epochs" is w + 1.
        pruner = optuna.pruners.MedianPruner(spec.prune_startup_trials, spec.prune_warmup_epochs + 1)
    seed = None if spec.seed is None else spec.seed + worker  # the same seed would propose the same points
    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    return optuna.create_study(
        storage=storage,
        study_name=spec.name,
        direction=obj.direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )


def root_number(trial: Any) -> int:
    """The number of the first trial in a retry chain (the trial itself when it is no retry)."""
    study = getattr(trial, "study", None)
    if study is None:  # FixedTrial
        return trial.number
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    history = _stable(RetryHeartbeatStaleTrialCallback.retry_history, frozen)
    return history[0] if history else trial.number


class TrialObjective:
    """objective(trial) -> value: suggest a point, train it as a run folder, report each epoch's
    validation metric to the pruner, and return the objective."""

    def __init__(self, spec: StudySpec):
        self.spec = spec
        self.objective = objective_of(spec.objective)
        self.prune = (
            spec.prune and self.objective.per_epoch and accepts_epoch_callback(trainer_for(spec.task))
        )

    def run_dir(self, number: int) -> Path:
        return Path(self.spec.out) / "trials" / f"trial-{number:04d}"

    def __call__(self, trial: Any) -> float:
        # Marked first: until then, only the heartbeat could tell that this trial's worker died.
        trial.set_user_attr("worker_host", socket.gethostname())
        trial.set_user_attr("worker_pid", os.getpid())
        point = suggest(trial, list(self.spec.space))
        exp = load_experiment(self.spec.task, self.spec.preset, [*self.spec.overrides, *overrides_of(point)])
        run_dir = self.run_dir(root_number(trial))
        trial.set_user_attr("run_dir", str(run_dir))
        metric = self.objective.name

        def report(epoch: int, row: dict[str, Any]) -> None:
            if metric in row:
                trial.report(row[metric], epoch)
                if trial.should_prune():
                    # fit logs an epoch after this callback: log the deciding epoch here, so the
                    # run folder shows what the pruner saw (no checkpoint is kept for it).
                    with (run_dir / "metrics.jsonl").open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    raise optuna.TrialPruned(f"epoch {epoch}: {metric}={row[metric]:.5g} above the median")

        try:
            status = run_trial(
                self.spec.task, exp, run_dir, self.spec.progress, report if self.prune else None
            )
        except optuna.TrialPruned:
            summary = rundir.read_summary(run_dir)
            rundir.write_summary(run_dir, {**summary, "task": self.spec.task, "status": "pruned"})
            trial.set_user_attr("status", "pruned")
            raise
        trial.set_user_attr("status", status)
        if status == "diverged":
            error = rundir.read_summary(run_dir).get("error", "non-finite loss")
            trial.set_user_attr("error", error)
            raise TrialDiverged(error)
        value = objective_value(run_dir, self.objective)
        if value is None:
            raise TrialDiverged(f"{run_dir} finished without a {metric} value")
        return value


def _retried(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    return {n for t in trials for n in _stable(RetryHeartbeatStaleTrialCallback.retry_history, t)}


def _counted(trials: list[optuna.trial.FrozenTrial]) -> int:
    """Trials that use up the budget: all but stale ones that were re-queued (their retry counts)."""
    retried = _retried(trials)
    return sum(1 for t in trials if not (t.state == TrialState.FAIL and t.number in retried))


def _worker_gone(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether the trial's worker ran on this machine and its process no longer exists. A trial of
    another machine, or one not marked yet, is left to the heartbeat."""
    pid = trial.user_attrs.get("worker_pid")
    if trial.user_attrs.get("worker_host") != socket.gethostname() or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)  # signal 0 sends nothing: it only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, as another user's process
        return False
    return False


def requeue_dead(spec: StudySpec, study: optuna.Study) -> int:
    """Fail the RUNNING trials whose worker process on this machine is gone and re-queue them (within
    max_retry), as the heartbeat does after its grace period. Returns how many trials it failed."""
    failed = 0
    for trial in study.get_trials(deepcopy=True, states=(TrialState.RUNNING,)):
        if not _worker_gone(trial):
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another process failed (and re-queued) it first
        _retry(spec)(study, trial)
        failed += 1
    if failed:
        log.warning("%d trial(s) of worker processes that died were failed and re-queued", failed)
    return failed


def _budget_met(spec: StudySpec, study: optuna.Study) -> bool:
    trials = study.get_trials(deepcopy=False)
    return not any(t.state == TrialState.WAITING for t in trials) and _counted(trials) >= spec.n_trials


def _needed(spec: StudySpec, study: optuna.Study) -> int:
    """Trials still to run: the queued ones plus what the budget lacks."""
    trials = study.get_trials(deepcopy=False)
    waiting = sum(1 for t in trials if t.state == TrialState.WAITING)
    return waiting + max(0, spec.n_trials - _counted(trials))


def work(spec: StudySpec, worker: int = 0, threads: int = 0) -> int:
    """Run trials of the study until it holds spec.n_trials (queued retries always run). Returns how
    many trials this worker ran."""
    if threads:
        torch.set_num_threads(threads)
    study = open_study(spec, worker)
    objective = TrialObjective(spec)
    ran = 0
    while True:
        # Re-queue trials of dead workers before counting: at once for this machine's, after the
        # heartbeat's grace period for other machines'.
        requeue_dead(spec, study)
        _stable(optuna.storages.fail_stale_trials, study)
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if not waiting and _counted(trials) >= spec.n_trials:
            return ran
        _stable(study.optimize, objective, n_trials=1, catch=(TrialDiverged,), gc_after_trial=False)
        ran += 1


def _worker_main(spec: StudySpec, worker: int, threads: int) -> None:
    die_with_parent()  # a worker ends with the command that started it, even one killed with SIGKILL
    logging.basicConfig(level=logging.WARNING, format=f"[worker {worker}] %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work(spec, worker, threads)


def check_space(spec: StudySpec) -> None:
    """Fail before any training if a key is unknown or a bound is an invalid value for its field."""
    for pick in ("low", "high"):
        point = {
            p.key: (getattr(p, pick) if p.kind != "categorical" else p.choices[0 if pick == "low" else -1])
            for p in spec.space
        }
        load_experiment(spec.task, spec.preset, [*spec.overrides, *overrides_of(point)])


def run_optuna(spec: StudySpec, workers: int = 1) -> list[dict[str, Any]]:
    """Run the study with `workers` local processes (1 = in this process), then write the results
    table, curves and best.toml from every trial the study holds. Returns the sorted rows."""
    if spec.n_trials < 1 or workers < 1:
        raise ConfigError("--trials and --workers must be >= 1")
    check_threads(workers, "--workers")
    check_objective(spec.task, spec.objective)  # before any trial trains
    check_space(spec)
    # The search folder is this launcher's, locked, unless --storage names a study that several
    # launchers share on purpose (then only its ownership is checked).
    owner.claim(spec.out, "search", lock=not spec.storage)
    study = open_study(spec)  # creates the study once, before workers race to load it
    write_json(
        Path(spec.out) / "search.json",
        {
            "kind": "optuna",
            "task": spec.task,
            "preset": spec.preset,
            "overrides": list(spec.overrides),
            "study": spec.name,
            "storage": public_url(spec.url),
            "objective": spec.objective,
            "space": {
                p.key: {k: v for k, v in vars(p).items() if k != "key" and v not in (None, (), False)}
                for p in spec.space
            },
        },
    )
    if objective_of(spec.objective).per_epoch and spec.prune and not TrialObjective(spec).prune:
        log.warning("the %s trainer takes no on_epoch_end callback: trials run without pruning", spec.task)
    # Trials a killed earlier run of this command left RUNNING are re-queued now: waiting for the
    # heartbeat's grace period would have this run count them as taken and do nothing.
    requeue_dead(spec, study)
    # A worker that dies (killed, out of memory) leaves its trial RUNNING. The other workers may count
    # it and stop before its heartbeat goes stale, and the results would then show a trial "running"
    # as if the search were done. The launcher knows its workers have exited, so it re-queues their
    # trials and runs another round; max_retry bounds how often a trial that kills its worker reruns.
    finished = _finished(study)
    processes = workers
    while True:
        codes = _run_workers(spec, processes, workers)
        requeued = requeue_dead(spec, study)
        if _budget_met(spec, study):
            break
        died = [c for c in codes if c != 0]
        if died and not requeued and _finished(study) == finished:  # they died finishing nothing
            raise WorkersDied(
                f"{len(died)} worker(s) exited with codes {died} before the study held its "
                f"{spec.n_trials} trials; rerun the same command to finish it"
            )
        finished = _finished(study)
        processes = min(workers, _needed(spec, study))
    return study_results(spec, study)


def _finished(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished())


def _run_workers(spec: StudySpec, processes: int, workers: int) -> list[int]:
    """Run `work` in `processes` spawned processes (in this process when the search has one worker)
    and return their exit codes; each gets the torch threads of one of `workers`."""
    if workers == 1:
        work(spec, 0, 0)
        return [0]
    ctx = get_context("spawn")
    threads = worker_threads(workers)
    quiet = dataclasses.replace(spec, progress=False)
    procs = [ctx.Process(target=_worker_main, args=(quiet, k, threads)) for k in range(processes)]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    except BaseException:  # Ctrl-C or SIGTERM: stop the workers now (their trials are re-queued next run)
        stop_processes(procs)
        raise
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        log.warning("%d worker(s) exited with codes %s", len(bad), bad)
    return [p.exitcode for p in procs]


def study_results(spec: StudySpec, study: optuna.Study) -> list[dict[str, Any]]:
    obj = objective_of(spec.objective)
    trials = study.get_trials(deepcopy=False)
    retried = _retried(trials)
    rows = []
    for t in trials:
        if "run_dir" not in t.user_attrs:
            continue
        status = {
            TrialState.COMPLETE: "finished",
            TrialState.PRUNED: "pruned",
            TrialState.RUNNING: "running",
        }.get(t.state, t.user_attrs.get("status", "failed"))
        if t.state == TrialState.FAIL and t.number in retried:
            status = "stale, retried"
        elif t.state == TrialState.FAIL and status in ("finished", "running"):
            status = "failed"
        row = trial_row(Path(t.user_attrs["run_dir"]), dict(t.params), obj, status)
        row["trial"] = f"trial-{t.number:04d}"
        if t.state == TrialState.COMPLETE:
            row[obj.name] = t.value
        rows.append(row)
    return write_results(Path(spec.out), rows, obj, [p.key for p in spec.space], spec.task)

"""Stages of `mnistlab run` side by side: each in a process of its own, as many at once as the plan's
workers, each started once every stage it reads has finished.

Why processes: on a small CPU two 1-thread trainings get more done than one 2-thread training (a
batch-64 convolution step does not split well over threads; the same reason `mnistlab search` runs
one trial per core, benchmarks/search_workers.md), and the study's stages form two long chains that
read nothing of each other (the autoencoder and what reads it, the GANs and the VAE).

Each stage runs in a process of its own (forked from a fork server, see `_context`) with the cores
shared out among the workers as torch threads; the last one left running, with nothing else able to
start, is told to take every core (WIDEN). It reports its CPU seconds, its peak memory and its error,
if any; the error itself travels back (pickled), so the parent raises what the stage raised.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from mnistlab import tasks
from mnistlab.core import procs
from mnistlab.runs import folder as rundir
from mnistlab.search.grid import default_workers, worker_threads
from mnistlab.study.state import peak_rss_mb

log = logging.getLogger("mnistlab")


# What the stages import on first use, imported once in the fork server instead of once per stage
# (scikit-learn, SciPy, openTSNE and tensorboard's writer take seconds each).
_PRELOAD = (
    "mnistlab.study.run",
    "mnistlab.training.loop",
    "mnistlab.probe.run",
    "mnistlab.probe.labels",
    "mnistlab.latent.run",
    "mnistlab.report.build",
    "sklearn.linear_model",
    "sklearn.decomposition",
    "scipy.linalg",
    "openTSNE",
    "torch.utils.tensorboard",
)


# Sent to the one stage left running when nothing else can start (the others wait on it, or none is
# left): its handler, run on its main thread between two torch calls, gives it every core, so that the
# study's tail does not run on one core of several. None where the platform has no such signal.
WIDEN = getattr(signal, "SIGUSR1", None)


@dataclass(frozen=True)
class Outcome:
    """What one stage's process reports when it ends."""

    cpu_seconds: float
    peak_rss_mb: float
    error: BaseException | None = None


def start_order(names: Sequence[str], first: Sequence[str]) -> list[str]:
    """`names` (stage order) with the stages of `first` moved to the front, in `first`'s order: the order
    of preference run_graph takes when several stages could start (`run.start_first`)."""
    return [n for n in dict.fromkeys(first) if n in names] + [n for n in names if n not in first]


def workers_for(asked: int, stages: int) -> int:
    """Stages at once: `asked` (0 = one per core, at most 4), never more than there are stages."""
    return max(1, min(asked or default_workers(), stages))


def _child(
    conn: Connection,
    fn: Callable[..., Any],
    args: tuple,
    threads: int,
    level: int,
    tag: str,
    command: list[str] | None,
) -> None:
    """The body of a stage's process: threads and logging set, `fn(*args)` run under the parent's
    `mnistlab` command (`command`: what the run folders it writes record), the outcome sent.
    Its own process group first, so that the parent can stop it and every process it starts with one
    signal; SIGTERM then raises KeyboardInterrupt here, so the stage unwinds as after Ctrl-C; and it
    dies with the fork server, which ends when the command does, even by SIGKILL."""
    procs.become_group_leader()
    procs.raise_on_stop_signals()
    procs.die_with_parent()
    import torch

    torch.set_num_threads(threads)
    if WIDEN is not None:  # the parent's word that this stage runs alone now: take every core
        signal.signal(WIDEN, lambda *_: torch.set_num_threads(worker_threads(1)))
    logging.basicConfig(level=level, format=f"[{tag}] %(message)s")
    cpu0 = time.process_time()
    error: BaseException | None = None
    try:
        with rundir.recording_command(command):
            fn(*args)
    except BaseException as e:  # KeyboardInterrupt included: the parent records it
        error = e
        if not isinstance(e, (KeyboardInterrupt, ValueError)):  # a bug, not bad input: show where
            log.error("stage %s failed", tag, exc_info=True)
    peak = peak_rss_mb()  # this process's high-water mark, or its own workers' (a search's)
    if error is not None:
        try:
            pickle.loads(pickle.dumps(error))
        except Exception:  # an exception that does not make the trip travels as its text
            error = RuntimeError(f"{type(error).__name__}: {error}")
    try:
        conn.send(Outcome(time.process_time() - cpu0, peak, error))
        conn.close()
    except OSError:  # the parent is gone or stopped listening (it is stopping this stage): nobody to tell
        pass


def run_graph(
    names: Sequence[str],
    reads: dict[str, list[str]],
    workers: int,
    job: Callable[[str], tuple[Callable[..., Any], tuple]],
    on_start: Callable[[str, int], None],
    on_end: Callable[[str, Outcome], None],
    exclusive: frozenset[str] = frozenset(),
) -> BaseException | None:
    """Run every stage of `names` (in that order of preference), at most `workers` at once, a stage
    only after the stages of `reads[stage]` that are in `names` have ended without error. `job(name)`
    gives the (picklable) function and arguments to run; `on_start(name, running)` and
    `on_end(name, outcome)` keep the books in this process. A stage in `exclusive` (one with worker
    processes of its own) runs alone. After a failure no new stage starts; the running ones finish.
    Returns the first error (None when every stage ended well)."""
    ctx = _context()
    threads = worker_threads(workers)
    level = logging.getLogger().getEffectiveLevel()
    pending = list(names)
    running: dict[int, tuple[str, Any, Connection]] = {}  # process sentinel -> (name, process, pipe end)
    failed: BaseException | None = None
    widened: set[str] = set()

    def ready(name: str) -> bool:
        if name in exclusive and running:
            return False
        return all(
            r not in pending and r not in {n for n, _, _ in running.values()} for r in reads.get(name, [])
        )

    # A stage's process ignores WIDEN until its handler is set (it inherits the disposition through the
    # fork server), so a signal sent just after it started cannot end it.
    ignoring = WIDEN is not None and threading.current_thread() is threading.main_thread()
    previous = signal.signal(WIDEN, signal.SIG_IGN) if ignoring else None
    try:
        while pending or running:
            while failed is None and len(running) < workers:
                if any(n in exclusive for n, _, _ in running.values()):
                    break
                name = next((n for n in pending if ready(n)), None)
                if name is None:
                    break
                pending.remove(name)
                fn, args = job(name)
                receive, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(
                    target=_child, args=(send, fn, args, threads, level, name, rundir.cli_args()), name=name
                )
                on_start(name, len(running) + 1)
                proc.start()
                send.close()  # the child holds the sending end now
                running[proc.sentinel] = (name, proc, receive)
            if not running:
                break  # a failure stopped the rest (stages left pending)
            alone = len(running) == 1 and (failed is not None or not any(map(ready, pending)))
            if alone and workers > 1 and WIDEN is not None:
                name, proc, _ = next(iter(running.values()))
                if name not in widened:
                    widened.add(name)
                    log.info("%s runs alone now: %d threads", name, worker_threads(1))
                    # Only while its sentinel is not ready: the process (or its zombie) still holds its
                    # pid. It can end and be reaped between the two: the wait below collects it.
                    if not wait([proc.sentinel], timeout=0):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(proc.pid, WIDEN)
            for sentinel in wait(list(running)):
                name, proc, receive = running.pop(sentinel)
                outcome = _collect(name, proc, receive)
                failed = failed or outcome.error
                on_end(name, outcome)
    except BaseException:  # interrupted here (Ctrl-C, SIGTERM): stop every stage's process group; each
        # resumes from its last checkpoint on the next run, and run.json records it as interrupted.
        procs.stop_processes(proc for _, proc, _ in running.values())
        stopped = Outcome(0.0, 0.0, KeyboardInterrupt())
        for name, proc, receive in running.values():
            try:
                outcome = _collect(name, proc, receive)  # a stage that finished just before stays done
            except Exception:  # its report cut short by the stop
                outcome = stopped
            on_end(name, outcome if outcome.error is None else stopped)
        raise
    finally:
        if ignoring:
            signal.signal(WIDEN, previous)
    return failed


def _context() -> Any:
    """Processes forked from a fork server that has imported mnistlab once (about 5 CPU seconds saved
    per stage, which a short study notices); a plain spawn where there is no fork server. The server
    forks before any torch thread exists, so no thread-pool state is copied into a stage."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    import pkgutil

    ctx = multiprocessing.get_context("forkserver")
    task_modules = [f"{tasks.__name__}.{m.name}" for m in pkgutil.iter_modules(tasks.__path__)]
    ctx.set_forkserver_preload([*_PRELOAD, *task_modules])  # a module that fails to import is skipped
    return ctx


def _collect(name: str, proc: Any, receive: Connection) -> Outcome:
    """A finished stage's outcome; a process that died without one (killed, out of memory) is an error."""
    outcome = None
    if receive.poll():
        try:
            outcome = receive.recv()
        except EOFError:
            outcome = None
    proc.join()
    receive.close()
    if outcome is None:
        why = f"its process ended with exit code {proc.exitcode} before reporting"
        outcome = Outcome(0.0, 0.0, RuntimeError(f"stage {name}: {why}"))
    return outcome

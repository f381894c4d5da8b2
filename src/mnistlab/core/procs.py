"""Worker processes that end with the command that started them: each in a process group of its own,
stopped as a group (SIGTERM, a grace period, then SIGKILL), and told by the kernel when the process
that started it dies, so that a `kill -9` of the command leaves nothing training on.

Used by the study's stage workers (study/pool.py) and the searches' worker processes (search/).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Iterable
from typing import Any

# Seconds a stopped worker gets to unwind (close its files, stop its own workers) before SIGKILL.
# A training step or a t-SNE iteration takes well under this; a worker stuck in C code does not hang
# the command past it.
STOP_GRACE_S = 10.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def become_group_leader() -> None:
    """In a worker, first thing: a process group of its own, so that one signal to the group stops it
    and every process it starts (a search stage's trial workers), and the terminal's Ctrl-C goes to the
    command alone, which stops its workers in order instead of all of them at once."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Ask the kernel (Linux) to send `signum` to this process when its parent dies, even by SIGKILL,
    which leaves the parent no chance to stop it. Nothing elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)


def raise_on_stop_signals() -> None:
    """In a worker: SIGTERM and SIGHUP raise KeyboardInterrupt, as Ctrl-C does, so that the worker
    unwinds (its own workers stopped, its files closed) when the command stops it."""

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), stop)


def signal_group(pid: int, signum: int, alone_too: bool = True) -> None:
    """`signum` to the process group led by `pid`; with `alone_too`, to `pid` alone when it has no
    group (a worker stopped before it made its own; only for a process not yet joined, whose pid
    cannot have been reused). A group already gone is fine."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        if alone_too:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
    except PermissionError:  # not ours (cannot happen while the group has a member of ours)
        pass


def stop_processes(procs: Iterable[Any], grace: float = STOP_GRACE_S) -> None:
    """Stop multiprocessing Processes started with `become_group_leader`: SIGTERM to each group, up to
    `grace` seconds for them to end, then SIGKILL to whatever is left of each group (a worker's own
    workers included; while one lives, the group id cannot be given to another process). Returns once
    every process has been joined."""
    procs = [p for p in procs if p.pid is not None]
    for p in procs:
        if p.exitcode is None:
            signal_group(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        signal_group(p.pid, signal.SIGKILL, alone_too=p.exitcode is None)
        p.join()

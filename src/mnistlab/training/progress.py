"""What training and a study tell the console: progress bars on a terminal, plain lines elsewhere
(a log file, a pipe, CI), and an honest estimate of the time left.

A bar redraws itself with carriage returns; written to a file, every redraw stays as a fragment. So
bars are drawn only when stderr is a terminal (`bars`), and the same news also goes out as one
logged line per epoch or stage, which reads well in both places. The time left is extrapolated from
what this process has measured (the work done since it started, over the seconds it took), and is
left out until something has been measured: no guess before the first step or stage.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def interactive(stream: TextIO | None = None) -> bool:
    """Whether `stream` (stderr by default) is a terminal, where a bar can redraw itself in place."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


def bars(progress: bool) -> bool:
    """Whether to draw progress bars: asked for (no --no-progress) and stderr is a terminal."""
    return bool(progress) and interactive()


def clock(seconds: float) -> str:
    """Elapsed time as a clock: 0:42, 12:05, 1:02:03."""
    s = max(0, int(round(seconds)))
    h, m, s = s // 3600, s // 60 % 60, s % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def duration(seconds: float) -> str:
    """A time left in words, as rounded as such an estimate deserves: 40 s, 3 min, 2 h 05 min."""
    if seconds < 10:
        return f"{max(1, round(seconds))} s"
    if seconds < 55:
        return f"{int(round(seconds / 10.0)) * 10} s"
    minutes = int(round(seconds / 60.0))
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class Remaining:
    """Time left for `total` units of work (steps, stages) of which `done` were done before this
    process started: (seconds since start) / (units done since) x (units left). None until a unit
    has been done here."""

    def __init__(self, total: int, done: int = 0) -> None:
        self.total, self.start_done, self.t0 = total, done, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def seconds(self, done: int) -> float | None:
        measured = done - self.start_done
        if measured <= 0:
            return None
        return self.elapsed() / measured * max(self.total - done, 0)

    def text(self, done: int) -> str:
        """ "about 3 min left", "" before anything is measured or once nothing is left."""
        left = self.seconds(done)
        if left is None or done >= self.total:
            return ""
        return f"about {duration(left)} left"

    def status(self, done: int) -> str:
        """ "1:32 elapsed, about 3 min left" (the estimate only once there is one)."""
        left = self.text(done)
        return f"{clock(self.elapsed())} elapsed" + (f", {left}" if left else "")

"""What `mnistlab run` tells the console while it runs: a start line, a line when a stage starts and
when it ends (with the time the study has left), and, on a terminal, one bar over the stages.

Stages run side by side (pool.py), so they do not start in stage order: the gan stage, seventh in the
plan, starts beside the first. A stage is therefore numbered when it starts ("stage 2/8" is the
second stage to start, or to be skipped as done), so the numbers printed only ever go up, in a log
as on a terminal; run.json keeps the plan's order. Off a terminal (a log file, a pipe, CI) no bar is
drawn, since its redraws would stay in the file as fragments; the lines are logged, one each.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from mnistlab.training import progress as console

log = logging.getLogger("mnistlab")


class StudyConsole:
    """The lines and the bar of one `mnistlab run`: `total` stages, `done` of them already done."""

    def __init__(self, total: int, done: int, workers: int, progress: bool) -> None:
        self.total, self.done, self.workers = total, done, workers
        self.numbered = 0  # stages started or skipped so far: the next one's number is this + 1
        self.running: list[str] = []
        self.left = console.Remaining(total, done)  # by stages done in this process, none before
        self.bar = tqdm(
            total=total,
            initial=done,  # stages done before this process started count in the bar, not in its rate
            desc="mnistlab run",
            unit="stage",
            disable=not console.bars(progress),
            position=0,
        )
        # Under the bar, this process's log lines (the stages run here when one runs at a time) are
        # written above it, as `say` writes, instead of through it.
        self.redirect = contextlib.nullcontext() if self.bar.disable else logging_redirect_tqdm()
        self.redirect.__enter__()

    def close(self) -> None:
        self.redirect.__exit__(None, None, None)
        self.bar.close()

    def say(self, text: str) -> None:
        """One line: above the bar on a terminal, logged otherwise (as the stages' own lines are)."""
        if self.bar.disable:
            log.info("%s", text)
        else:
            self.bar.write(text, file=sys.stderr)

    def begin(self, preset: str, names: Sequence[str], out: Path, train_limit: int) -> None:
        """The start line: what runs, where, on how many training images, and when to expect a time."""
        images = f"up to {train_limit:,} training images" if train_limit else "every training image"
        again = f"; {self.done} done before, skipped" if self.done else ""
        at_once = f", {self.workers} at a time" if self.workers > 1 else ", one after another"
        self.say(
            f"mnistlab run: preset {preset}, {self.total} stages ({', '.join(names)}){at_once}{again}, "
            f"{images}, into {out}; time left: after the first stage"
        )

    def skipped(self, name: str) -> None:
        self.numbered += 1
        self.say(f"stage {self.numbered}/{self.total}: {name} (done, skipped)")

    def started(self, name: str, resuming: bool) -> None:
        self.numbered += 1
        self.running.append(name)
        note = " (resuming)" if resuming else ""
        if self.workers > 1:
            note += f" ({len(self.running)} running)"
        self.say(f"stage {self.numbered}/{self.total}: {name}{note}")
        self._describe()

    def ended(self, name: str, error: str | None, seconds: float) -> None:
        """A stage's end line: its outcome and time, then the study's count and time left."""
        if name in self.running:
            self.running.remove(name)
        if error is None:
            self.done += 1
            self.bar.update(1)
        outcome = "done" if error is None else error if error == "interrupted" else f"failed: {error}"
        self.say(
            f"{name} {outcome} ({console.clock(seconds)}); {self.done} of {self.total} stages done, "
            f"{self.left.status(self.done)}"
        )
        self._describe()

    def _describe(self) -> None:
        self.bar.set_description(", ".join(self.running) or "mnistlab run")

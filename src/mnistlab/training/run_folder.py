"""What every `mnistlab train` command does around the shared loop: set the process up, fit into a run
folder (rank 0 writes it), record a divergence in summary.json, and the summary fields of a finished run.

The trainers (autoencoder, denoise, classifier, gan_run) keep only what is their own: the task, the
evaluation and the figures.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnistlab.core import distributed, host
from mnistlab.core.allocator import keep_freed_memory
from mnistlab.core.errors import ConfigError
from mnistlab.data.datasets import Data, Split, load
from mnistlab.runs import folder as rundir
from mnistlab.training.loop import FitResult, NonFiniteLossError, fit, resolve_device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def start(exp: Any) -> tuple[Data, torch.device]:
    """Threads, allocator, seeds, then the data and the device of experiment `exp`."""
    if exp.train.threads:
        torch.set_num_threads(exp.train.threads)
    keep_freed_memory()  # no page faults on each step's activations (allocator.py)
    seed_everything(exp.train.seed)
    return load(exp.data), resolve_device(exp.train.device)


def prepare(out: Path, exp: Any, task: str, resume: bool) -> Path:
    """The run folder: created (or checked, on resume) by rank 0 only; every rank gets its path."""
    return distributed.on_main(rundir.prepare, out, exp, task, resume) or Path(out)


def check_resumable(out: Path) -> None:
    """`--resume` needs a checkpoint: without one it is a one-line error, not a silent fresh start
    (which would empty the run's metrics.jsonl)."""
    ckpt = rundir.checkpoint_path(out)
    if not ckpt.is_file():
        raise ConfigError(f"{out}: nothing to resume (no {ckpt}); run without --resume to start it")


def fit_plain(
    task, train: Split, exp: Any, run_dir: Path, kind: str, resume: bool, progress: bool, on_epoch_end=None
) -> FitResult | None:
    """`fit`, writing {"status": "diverged"} to summary.json on rank 0 if the loss stops being finite.
    Returns None on the other ranks (rank 0 evaluates and writes the summary; they wait in
    distributed.shutdown)."""
    main = distributed.current().is_main
    try:
        result = fit(
            task, train, exp.train, run_dir, resume=resume, progress=progress, on_epoch_end=on_epoch_end
        )
    except NonFiniteLossError as e:
        if main:
            rundir.write_summary(run_dir, {"task": kind, "status": "diverged", "error": str(e)})
        raise
    return result if main else None


def finished(result: FitResult) -> dict:
    """The summary fields every finished training run records, with the host that trained it and the
    precision its step ran in (a time means something only beside them)."""
    return {
        "status": "finished",
        "epochs": len(result.history),
        "train_seconds": round(result.seconds, 2),
        "train_images_per_s": round(result.images_per_s, 1),
        "checkpoint_sha256": result.checkpoint_sha256,
        "precision": result.precision,
        "host": host.describe(),
    }

"""A rank of a test's process group: torch.multiprocessing.spawn calls `run_rank` in each child with
torchrun's environment variables set by hand (gloo on the CPU, one thread per process)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch

# Task -> (module, class) of the step that a crash is injected into.
STEPS = {
    "ae": ("mnistlab.training.autoencoder", "AutoencoderTask"),
    "gan": ("mnistlab.training.gan", "GANTask"),
}


class Crash(Exception):
    """Stands for a killed job: raised by every rank at the same training step, before its collectives."""


def run_rank(
    rank: int, world: int, port: int, task: str, overrides: list[str], out: str, crash_at: int
) -> None:
    """Train `task` (seed preset + overrides) into `out` as rank `rank` of `world`; with crash_at > 0,
    stop at that training step (1-based) as a killed job would, keeping the last epoch's checkpoint."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from mnistlab import tasks
    from mnistlab.core import distributed
    from mnistlab.tasks import load_experiment

    trainer = tasks.get(task).train
    if crash_at:
        task_cls = getattr(importlib.import_module(STEPS[task][0]), STEPS[task][1])
        step, calls = task_cls.train_step, [0]

        def crashing(self, images, labels):
            calls[0] += 1
            if calls[0] == crash_at:
                raise Crash
            return step(self, images, labels)

        task_cls.train_step = crashing
    distributed.init("cpu")
    try:
        trainer(load_experiment(task, "seed", overrides), Path(out), progress=False)
    except Crash:
        pass
    distributed.shutdown()

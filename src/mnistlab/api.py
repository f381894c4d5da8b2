"""The Python API, for notebooks and scripts: the same functions the CLI calls.

import mnistlab
run = mnistlab.load_run("runs/ae-default")      # a TrainedRun: its roles are methods
codes = run.encode(images)                       # uint8 (N, 28, 28) or float in [0, 1]
digits = run.decode(codes)                       # float (N, 28, 28) in [0, 1]
mnistlab.train("vae", preset="quick", out="runs/vae-quick")
"""

from __future__ import annotations

from mnistlab.tasks import TrainedRun, all_tasks, load_run, train, with_role

__all__ = ["TrainedRun", "all_tasks", "load_run", "train", "with_role"]

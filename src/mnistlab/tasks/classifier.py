"""The task `classifier`: the reference digit classifier (models/classifier.py, training/classifier.py)
that the generation metrics measure with (reference.py). Role: classifier. Not a stage of the study:
the shipped reference is used unless a dataset needs its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mnistlab.core.task_catalog import spec_fields
from mnistlab.models import build_model
from mnistlab.runs import folder as rundir
from mnistlab.tasks import TaskSpec, TrainedRun, as_images, register
from mnistlab.training.classifier import ClassifierExperiment, train_classifier


class ClassifierRun(TrainedRun):
    def __init__(self, spec: TaskSpec, path: Path, exp: Any, device: torch.device):
        super().__init__(spec, path, exp, device)
        self.model = rundir.load_weights(path, build_model("digit_cnn", exp.model)).to(device).eval()

    @torch.inference_mode()
    def classify(self, images: Any) -> torch.Tensor:
        x = as_images(images)
        return torch.cat(
            [
                torch.softmax(self.model(x[i : i + 1000].to(self.device)).logits, 1).cpu()
                for i in range(0, len(x), 1000)
            ]
            or [torch.zeros(0, 10)]
        )


def load_run(run_dir: Path, exp: Any, device: torch.device) -> ClassifierRun:
    return ClassifierRun(SPEC, run_dir, exp, device)


SPEC = register(
    TaskSpec(
        **spec_fields("classifier"),
        experiment=ClassifierExperiment,
        train=train_classifier,
        load=load_run,
    )
)

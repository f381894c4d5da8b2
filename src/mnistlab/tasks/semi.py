"""The task `semi`: a digit classifier trained from a few labelled images per class and every other
training image without its label (models/semi.py, training/semi.py; method and numbers: docs/semi.md).
Roles: classifier (class probabilities) and encoder (its penultimate features), so the probes, the
latent maps, `compare` and the explorer work on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mnistlab.core.task_catalog import spec_fields
from mnistlab.data.datasets import load
from mnistlab.models.semi import SemiNet
from mnistlab.plots.content import RunFolder, Section, Table, num, pct, read_toml
from mnistlab.runs import folder as rundir
from mnistlab.tasks import RoleError, TaskSpec, TrainedRun, as_images, register
from mnistlab.training.semi import (
    DEFAULT_TRAIN,
    PUBLISHED_100_LABELS,
    SemiExperiment,
    evaluate_split,
    load_final,
    train_semi,
)


class SemiRun(TrainedRun):
    def __init__(self, spec: TaskSpec, path: Path, exp: Any, device: torch.device):
        super().__init__(spec, path, exp, device)
        self.model = load_final(path, exp).to(device)
        self.batch_size = exp.train.eval_batch_size

    @torch.inference_mode()
    def _map(self, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        out = [
            module(x[i : i + self.batch_size].to(self.device)).float().cpu()
            for i in range(0, len(x), self.batch_size)
        ]
        return torch.cat(out) if out else module(x[:0].to(self.device)).float().cpu()

    def classify(self, images: Any) -> torch.Tensor:  # -> (N, 10) class probabilities
        return self._map(self.model, as_images(images)).softmax(1)

    def encode(self, images: Any) -> torch.Tensor:  # -> (N, 4 * width) penultimate features
        return self._map(self.model.encoder, as_images(images))

    def modules(self, role: str) -> torch.nn.Module:
        self.require(role)
        if role != "encoder":
            raise RoleError(f"a {self.task} run has no {role} module")
        return self.model.encoder

    def fresh_encoder(self) -> torch.nn.Module:
        """An untrained encoder of the same architecture (the probe's from-scratch baseline)."""
        return SemiNet(self.exp.model).encoder


def load_run(run_dir: Path, exp: Any, device: torch.device) -> SemiRun:
    return SemiRun(SPEC, run_dir, exp, device)


def evaluate(run_dir: Path, exp: Any, device: torch.device) -> dict:
    """`mnistlab eval`: the final model's test accuracy again; summary.json updated."""
    model = load_final(run_dir, exp).to(device)
    test = evaluate_split(model, load(exp.data).test, device, exp.train.eval_batch_size)
    rundir.write_summary(run_dir, {**rundir.read_summary(run_dir), "test": test})
    return test


def report_section(run: RunFolder, stage: str) -> Section:
    """The semi-supervised classifier's part of the study report, with the published numbers."""
    sec = Section(stage, "Semi-supervised classifier")
    sec.missing = run.not_run(stage, "semi-supervised classifier")
    if sec.missing:
        return sec
    s = run.json(f"{stage}/summary.json")
    lab = s.get("labels", {})
    per_class = lab.get("labels_per_class")
    config = read_toml(run.root / stage / "config.toml")  # tables [semi.model], [semi.semi], ...
    semi = config.get("semi", {}).get("semi", {})
    prior_text = _prior_text(semi.get("prior_epochs", 0), semi.get("prior_floor", 0))
    tail_text = _weak_tail_text(semi.get("weak_tail", 0))
    sec.intro = (
        f"A classifier trained on {num(lab.get('n_labelled'))} labelled training images "
        f"({'every label' if per_class is None else f'{per_class} per class'}, label seed "
        f"{lab.get('label_seed')}) and the other {num((s.get('n_train') or 0) - (lab.get('n_labelled') or 0))} "
        f"without their labels: FixMatch-style consistency with class-wise thresholds and a mean teacher"
        f"{prior_text}{tail_text}, {num(s.get('steps'))} steps in {num(s.get('train_seconds'))} s. The last model is reported "
        "(fixed schedule, no early stopping, no validation label used)."
    )
    rows = [
        [f"this run ({num(lab.get('n_labelled'))} labels, measured)", pct(s.get("test", {}).get("accuracy"))]
    ]
    if per_class == 10:
        rows += [[f"{name}: published, not measured here", pct(acc)] for name, acc in PUBLISHED_100_LABELS]
    sec.tables.append(Table("Test accuracy", ["model", "test accuracy"], rows))
    sec.figures += run.figure(
        f"{stage}/figures/accuracy.png",
        "Share of unlabelled images whose pseudo-label was used, and the teacher's accuracy on "
        "validation images (a monitor only), per epoch. x: epoch; y: fraction.",
    )
    return sec


def _prior_text(epochs: Any, floor: Any) -> str:
    """How the run's pseudo-labels used label propagation (semi.prior_epochs, semi.prior_floor)."""
    epochs = epochs if isinstance(epochs, (int, float)) else 0
    floor = floor if isinstance(floor, (int, float)) else 0
    span = f"{num(epochs)} epoch{'' if epochs == 1 else 's'}"
    if epochs > 0 and floor > 0:
        how = f"faded over {span} to weight {num(floor)}, kept to the end"
    elif epochs > 0:
        how = f"faded out over {span}"
    elif floor > 0:
        how = f"at weight {num(floor)} throughout"
    else:
        return ""
    return f", the pseudo-labels guided by label propagation from the labelled images ({how})"


def _weak_tail_text(tail: Any) -> str:
    """How the run's last steps trained the unlabelled images (semi.weak_tail)."""
    if not isinstance(tail, (int, float)) or isinstance(tail, bool) or tail <= 0:
        return ""
    return f", the last {num(100 * tail)}% of the steps on the weak views of the unlabelled images"


# The network of the presets: the third block's map flattened into a 128-unit code (docs/semi.md, try
# H); model.hidden's own default, 0 (global average pooling), keeps runs made before it loadable.
DEFAULT_MODEL = {"hidden": 128}
# Label propagation's prior on the pseudo-labels, faded over the first 3 epochs to a weight of 0.3
# and kept there (docs/semi.md, third and fourth rounds), and the second half of the steps on weak
# views only (fifth round); the fields' own defaults, 0, keep runs made before them as they were
# trained.
DEFAULT_SEMI = {"prior_epochs": 3, "prior_floor": 0.3, "weak_tail": 0.5}

PRESETS = {
    "default": {"train": DEFAULT_TRAIN, "model": DEFAULT_MODEL, "semi": DEFAULT_SEMI},
    # The report has no semi model: the default.
    "seed": {"train": DEFAULT_TRAIN, "model": DEFAULT_MODEL, "semi": DEFAULT_SEMI},
    "quick": {  # a smoke run: 5,000 + 1,000 images, 2 epochs
        "data": {"train_limit": 5000, "test_limit": 1000},
        "model": DEFAULT_MODEL,
        "train": {**DEFAULT_TRAIN, "epochs": 2},
        "semi": {"bn_images": 2000, "val_images": 500, "prior_epochs": 1},
    },
}

SPEC = register(
    TaskSpec(
        **spec_fields("semi"),
        experiment=SemiExperiment,
        train=train_semi,
        load=load_run,
        evaluate=evaluate,
        report=report_section,
        presets=PRESETS,
    )
)

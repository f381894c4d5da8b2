"""The classifier's part of training (task "classifier"): one cross-entropy step on randomly shifted
digits, validation accuracy, and test evaluation. The network it trains is the reference that the
generation metrics (FID-MNIST, precision/recall, class coverage) measure against; see metrics/reference.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from mnistlab.core.errors import check
from mnistlab.data.datasets import DataConfig, Split, to_float
from mnistlab.models import build_model
from mnistlab.models.classifier import ClassifierConfig, DigitCNN
from mnistlab.plots.figures import plot_curves
from mnistlab.runs import folder as rundir
from mnistlab.training import run_folder
from mnistlab.training.loop import (
    TrainConfig,
    autocast,
    make_optimizer,
    memory_format,
)


@dataclass(frozen=True)
class AugmentConfig:
    max_shift: int = 2  # each training digit moves by a random whole number of pixels in [-s, s]

    def __post_init__(self):
        check(0 <= self.max_shift <= 8, f"augment.max_shift must be in [0, 8], got {self.max_shift}")


@dataclass(frozen=True)
class ClassifierExperiment:
    """The reference digit classifier (metrics/reference.py) that the generation metrics measure against."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ClassifierConfig = field(default_factory=ClassifierConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each image of x (B, 1, H, W) by its own random (dy, dx) in [-s, s], filling with 0.

    Vectorised: pad by s, then gather one shifted HxW window per image with advanced indexing.
    """
    if max_shift == 0:
        return x
    b, _, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s))  # (B, 1, H + 2s, W + 2s)
    offsets = torch.randint(0, 2 * s + 1, (2, b), generator=generator).to(x.device)
    rows = offsets[0][:, None] + torch.arange(h, device=x.device)[None, :]  # (B, H)
    cols = offsets[1][:, None] + torch.arange(w, device=x.device)[None, :]  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[:, 0][batch, rows[:, :, None], cols[:, None, :]].unsqueeze(1)  # (B, 1, H, W)


@torch.no_grad()
def evaluate_classifier(
    model: DigitCNN, split: Split, device: torch.device, batch_size: int = 1000
) -> dict[str, float]:
    """Mean cross-entropy and accuracy of `model` on `split` (eval mode restored afterwards)."""
    was_training = model.training
    model.eval()
    loss, correct = 0.0, 0
    try:
        for start in range(0, len(split), batch_size):
            x = to_float(split.images[start : start + batch_size], device)
            y = split.labels[start : start + batch_size].to(device)
            logits = model(x).logits
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
    finally:
        model.train(was_training)
    n = max(len(split), 1)
    return {"loss": loss / n, "accuracy": correct / n}


class ClassifierTask:
    """What the training loop needs: modules, optimizers, a step and validation."""

    def __init__(self, model: DigitCNN, cfg: TrainConfig, augment: AugmentConfig, val: Split, device):
        self.channels_last = cfg.channels_last
        self.model = (
            model.to(device, memory_format=memory_format(cfg)) if cfg.channels_last else model.to(device)
        )
        self.net = self.model  # what the step calls: the model, or its DDP wrapper (distribute)
        self.autocast = autocast(cfg, device)
        self.device = device
        self.val = val
        self.augment = augment
        self.eval_batch_size = cfg.eval_batch_size
        self.modules = {"model": self.model}
        self.optimizers = {"model": make_optimizer(self.model.parameters(), cfg)}

    def distribute(self, wrap) -> None:
        """Train through `wrap(model)` (DistributedDataParallel). Each rank's BatchNorm normalises its
        own slice of the batch (as usual with DDP); rank 0's running statistics are kept."""
        self.net = wrap(self.model)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        # The shift draws from torch's global RNG, which the loop checkpoints: resume stays exact.
        x = random_shift(to_float(images, self.device), self.augment.max_shift)  # (B, 1, 28, 28)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = labels.to(self.device)
        with self.autocast():
            logits = self.net(x).logits.float()  # (B, 10)
        loss = F.cross_entropy(logits, y)
        opt = self.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item(), "accuracy": (logits.argmax(1) == y).float().mean().item()}

    def evaluate(self) -> dict[str, float]:
        if len(self.val) == 0:
            return {}
        return evaluate_classifier(self.model, self.val, self.device, self.eval_batch_size)


def train_classifier(exp, out: Path, resume: bool = False, progress: bool = True) -> dict:
    """Train the classifier of `exp` into run folder `out`; evaluate it on the test set."""
    data, device = run_folder.start(exp)
    model = build_model("digit_cnn", exp.model)
    task = ClassifierTask(model, exp.train, exp.augment, data.val, device)
    run_dir = run_folder.prepare(out, exp, "classifier", resume)
    result = run_folder.fit_plain(task, data.train, exp, run_dir, "classifier", resume, progress)
    if result is None:
        return {}  # not rank 0
    test = evaluate_classifier(model, data.test, device, exp.train.eval_batch_size)
    history = rundir.read_history(run_dir)
    figures = Path(run_dir) / "figures"
    plot_curves(
        history,
        ("train_loss", "val_loss"),
        figures / "loss_curves.png",
        "Classifier: cross-entropy",
        ylabel="cross-entropy",
        log_y=True,
    )
    plot_curves(
        history,
        ("train_accuracy", "val_accuracy"),
        figures / "accuracy.png",
        "Classifier: accuracy (train on shifted digits)",
        ylabel="accuracy",
    )
    summary = {
        "task": "classifier",
        "test": {k: round(v, 6) for k, v in test.items()},
        "data": data.source,
        "n_train": len(data.train),
        "n_val": len(data.val),
        "n_test": len(data.test),
        **run_folder.finished(result),
        "device": str(device),
    }
    rundir.write_summary(run_dir, summary)
    return summary


def load_classifier(run_dir: Path) -> tuple[object, DigitCNN]:
    """(experiment, trained classifier in eval mode) of a classifier run folder."""
    _, exp = rundir.load_config(run_dir, ClassifierExperiment, expect="classifier")
    model = build_model("digit_cnn", exp.model)
    rundir.load_weights(run_dir, model)
    return exp, model.eval()

"""Classifiers on a trained encoder, trained by the shared loop: the pieces `mnistlab probe` is made of.

- `ProbeTask`: cross-entropy training of any classifier, plugged into `training.loop.fit`.
- Features: the frozen encoder's codes are computed once (`encode`) and the linear probe trains on
  them; `fit` only indexes rows of a Split, so a Split whose "images" are feature rows (N, D) works
  as well as one of uint8 images (N, 28, 28) and makes a frozen-probe epoch cost microseconds.
- Labelled subsets: seeded, balanced, nested (the 10-per-class subset lies inside the 100 one).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.core.errors import ConfigError
from mnistlab.data.datasets import Split, to_float
from mnistlab.models.encoder_classifier import N_CLASSES, LinearHead
from mnistlab.training.loop import FitResult, TrainConfig, conv_channels_last, fit, make_optimizer

Prepare = Callable[[torch.Tensor, torch.device], torch.Tensor]


def features_to(rows: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Prepare for feature rows (B, D): already float, only moved."""
    return rows.to(device, torch.float32)


def random_shift(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate each image (B, 1, H, W) by its own random integer offset in [-max_shift, max_shift]
    along both axes, filling with zeros. Uses torch's global RNG, which checkpoints save."""
    b, _, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s))  # (B, 1, H + 2s, W + 2s)
    dy = torch.randint(0, 2 * s + 1, (b, 1), device=x.device)
    dx = torch.randint(0, 2 * s + 1, (b, 1), device=x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
    cols = (dx + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, 0, rows, cols].unsqueeze(1)  # (B, 1, H, W)


class ProbeTask:
    """Cross-entropy training of `model` (inputs -> logits (B, 10)); `prepare` turns a batch of rows
    of the training Split into the model's input on `device`. With `validate_after` = N, only the Nth
    evaluate() call (the last epoch of an N-epoch fit that does not resume) scores the validation
    split; the others return no numbers."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        val: Split,
        device: torch.device,
        prepare: Prepare,
        shift: int = 0,
        eval_batch_size: int = 1000,
        validate_after: int | None = None,
    ):
        # Conv weights channels_last on the CPU (`conv_channels_last`): the fine-tuned and from-scratch
        # networks' step is faster that way (docs/results.md); a no-op for a linear probe.
        last = conv_channels_last(device)
        self.model = model.to(device, memory_format=torch.channels_last) if last else model.to(device)
        self.val, self.device, self.prepare = val, device, prepare
        self.shift, self.eval_batch_size = shift, eval_batch_size
        self.validate_after, self.evaluations = validate_after, 0
        self.modules = {"model": self.model}
        self.optimizers = {"model": optimizer}

    def train_step(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        x = self.prepare(inputs, self.device)
        if self.shift:
            x = random_shift(x, self.shift)
        y = labels.to(self.device)
        logits = self.model(x)  # (B, 10)
        loss = F.cross_entropy(logits, y)
        opt = self.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item(), "acc": (logits.argmax(1) == y).float().mean().item()}

    def evaluate(self) -> dict[str, float]:
        self.evaluations += 1
        if len(self.val) == 0 or self.evaluations < (self.validate_after or 0):
            return {}
        logits = predict(self.model, self.val.images, self.device, self.prepare, self.eval_batch_size)
        return classification_scores(logits, self.val.labels)


@torch.no_grad()
def predict(
    model: nn.Module, inputs: torch.Tensor, device: torch.device, prepare: Prepare, batch_size: int = 1000
) -> torch.Tensor:
    """Logits (N, 10) on the CPU for input rows (N, ...), the model in eval mode."""
    was_training = model.training
    model.eval()
    try:
        out = [
            model(prepare(inputs[i : i + batch_size], device)).float().cpu()
            for i in range(0, len(inputs), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, N_CLASSES)


def classification_scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Mean cross-entropy and accuracy of logits (N, C) against labels (N,)."""
    return {
        "loss": F.cross_entropy(logits, labels).item(),
        "acc": (logits.argmax(1) == labels).float().mean().item(),
    }


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, n: int = N_CLASSES) -> torch.Tensor:
    """(n, n) counts: rows = true class, columns = predicted class."""
    return torch.bincount(labels * n + pred, minlength=n * n).reshape(n, n)


@torch.no_grad()
def encode(
    encoder: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 1000
) -> torch.Tensor:
    """Codes (N, latent) on the CPU of uint8 images (N, 28, 28), the encoder in eval mode (no dropout)."""
    return predict(encoder, images, device, to_float, batch_size)


def feature_stats(train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and std (1, D) of training rows (N, D); std floored so constant features stay 0."""
    return train.mean(0, keepdim=True), train.std(0, keepdim=True).clamp_min(1e-6)


def standardize(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Z-score every feature with the training rows' mean and std."""
    mean, std = feature_stats(train)
    return [(t - mean) / std for t in (train, *others)]


@torch.no_grad()
def fold_standardization(head: LinearHead, mean: torch.Tensor, std: torch.Tensor) -> LinearHead:
    """The head on raw features equal to `head` on standardized ones: W (x - m) / s + b = (W / s) x +
    (b - W (m / s)). Fine-tuning starts from the trained probe this way (linear probe, then fine-tune),
    instead of a random head on codes whose scale may be ~10, which wrecks the first steps."""
    folded = LinearHead(head.linear.in_features, head.linear.out_features)
    w = head.linear.weight / std  # (C, D) / (1, D)
    folded.linear.weight.copy_(w)
    folded.linear.bias.copy_(head.linear.bias - (w * mean).sum(1))
    return folded


# ------------------------------------------------------------------------------- labelled subsets


def parse_labels_per_class(text: str) -> tuple[int | None, ...]:
    """'10,100,all' -> (10, 100, None); None means every labelled training image."""
    counts: list[int | None] = []
    for item in text.split(","):
        item = item.strip().lower()
        if item == "all":
            counts.append(None)
            continue
        try:
            value = int(item)
        except ValueError:
            value = 0
        if value <= 0:
            raise ConfigError(
                f"--labels-per-class {text!r}: {item!r} is not a positive whole number or 'all' "
                f"(e.g. --labels-per-class 10,100,1000,all)"
            )
        counts.append(value)
    return tuple(counts)


def check_labels_per_class(labels: torch.Tensor, counts: tuple[int | None, ...]) -> None:
    """One-line ConfigError if a requested count exceeds the images of the rarest class."""
    per_class = torch.bincount(labels, minlength=N_CLASSES)
    rarest = int(per_class.argmin())
    for n in counts:
        if n is not None and n > per_class[rarest]:
            raise ConfigError(
                f"--labels-per-class {n}: the training split has only {int(per_class[rarest])} images of "
                f"digit {rarest}; use at most {int(per_class[rarest])} per class, or 'all'"
            )


def balanced_subset(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices of `per_class` images of each class, drawn with `seed`. One permutation serves every
    count, so the subsets are nested: a smaller count takes a prefix of each class's draw."""
    check_labels_per_class(labels, (per_class,))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    picked = [order[labels[order] == c][:per_class] for c in range(N_CLASSES)]
    return torch.cat(picked)


def repeat_to(split: Split, min_images: int) -> Split:
    """`split` repeated whole so an epoch holds at least `min_images` rows: a 100-image subset then
    trains for as many steps per epoch as a 10,000-image one, and validation runs once per epoch."""
    if len(split) == 0 or len(split) >= min_images:
        return split
    reps = math.ceil(min_images / len(split))
    return split.take(torch.arange(len(split)).repeat(reps))


# ------------------------------------------------------------------------------- training one


def train_classifier(
    model: nn.Module,
    param_groups: list[dict],
    train: Split,
    val: Split,
    cfg: TrainConfig,
    device: torch.device,
    prepare: Prepare,
    out: Path | None,
    shift: int = 0,
    progress: bool = True,
    curves: bool = True,
) -> FitResult:
    """Train `model` with cross-entropy through the shared loop; each param group may carry its own lr
    (fine-tuning gives the encoder a lower one); checkpoints and metrics go to `out`. Without `curves`
    the validation split is scored after the last epoch only (a network whose curve nobody draws)."""
    optimizer = make_optimizer(param_groups, cfg)
    task = ProbeTask(
        model,
        optimizer,
        val,
        device,
        prepare,
        shift,
        cfg.eval_batch_size,
        validate_after=None if curves else cfg.epochs,
    )
    return fit(task, train, cfg, out, progress=progress)

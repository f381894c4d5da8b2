"""Mode-collapse and failure detection for generators: a pure function of samples, their predicted
classes and the loss history, returning warnings a person can act on.

Three signs, each checked only when its input is given:
- samples alike: the mean pairwise distance of the samples is small, relative to real images' when
  those are given (real MNIST: about 10.2 in [0, 1] pixel units; one digit class alone: 6.4 to 10);
- one class dominating: the most frequent predicted class holds more than `max_class_share`
  (real MNIST: at most 11%; the course GAN that collapsed made 97% ones);
- classes rarely generated: a class under `min_class_share` of the samples (real MNIST: at least 9%;
  a GAN with one digit at 35% and four under 5% had passed the dominance check at 40% unwarned),
  checked from 400 samples on (below that a 10% class falls under 5% by chance too often);
- the discriminator stuck: its loss near zero (it wins, the generator learns nothing) or pinned high
  (BCE on probabilities clamps log at -100, so a saturated discriminator sits at 100 and never moves),
  for the last `window` epochs of the history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mnistlab.core.errors import check, check_float, check_int


@dataclass(frozen=True)
class CollapseConfig:
    min_diversity_ratio: float = 0.3  # samples' mean pairwise distance / real images' below this = alike
    min_diversity: float = 2.0  # absolute floor on the mean pairwise distance, used with or without real
    # One predicted class above this share = dominating: three times its share in real MNIST (10%).
    max_class_share: float = 0.3
    min_class_share: float = 0.05  # a class below this share = rarely generated (half its share in MNIST)
    d_loss_floor: float = 0.01  # epoch-mean D loss below this ...
    d_loss_ceiling: float = 20.0  # ... or above this, for `window` epochs in a row = stuck
    window: int = 2
    max_samples: int = 1000  # pairwise distances on at most this many samples (O(n^2) memory)

    def __post_init__(self):
        check_float(self.min_diversity_ratio, "gan.collapse.min_diversity_ratio", 0, 1, high_open=True)
        # The largest distance between two [0, 1] images of 784 pixels is sqrt(784) = 28.
        check_float(self.min_diversity, "gan.collapse.min_diversity", 0, 28)
        check_float(self.max_class_share, "gan.collapse.max_class_share", 0, 1, low_open=True)
        check_float(self.min_class_share, "gan.collapse.min_class_share", 0, 1)
        check_float(self.d_loss_floor, "gan.collapse.d_loss_floor", 0, 1e4)
        check_float(self.d_loss_ceiling, "gan.collapse.d_loss_ceiling", 0, 1e4)
        check(self.d_loss_floor < self.d_loss_ceiling, "gan.collapse: need d_loss_floor < d_loss_ceiling")
        check_int(self.window, "gan.collapse.window", 1, 100_000)
        # Pairwise distances are an n x n matrix: 10,000 samples take 400 MB.
        why = "the pairwise distances take n^2 floats"
        check_int(self.max_samples, "gan.collapse.max_samples", 2, 10_000, why)


# The rare-class check needs this many samples at its threshold share: with fewer, a class of 10% falls
# under 5% by chance (binomial: at 100 samples, about one time in fifteen for each class).
MIN_EXPECTED_AT_THRESHOLD = 20


@dataclass(frozen=True)
class CollapseReport:
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def collapsed(self) -> bool:
        return bool(self.warnings)

    def to_dict(self) -> dict[str, Any]:
        return {"collapsed": self.collapsed, "warnings": list(self.warnings), "stats": dict(self.stats)}


def _flat(images: torch.Tensor, limit: int) -> torch.Tensor:
    """(N, 28, 28) uint8 or (N, 1, 28, 28) float in [0, 1] -> (min(N, limit), 784) float64 in [0, 1]."""
    x = images[:limit].reshape(min(len(images), limit), -1).double()
    return x / 255.0 if images.dtype == torch.uint8 else x


def mean_pairwise_distance(images: torch.Tensor, limit: int = 1000) -> float:
    """Mean Euclidean distance between distinct images (pixels in [0, 1]); 0 for fewer than two."""
    x = _flat(images, limit)
    n = len(x)
    if n < 2:
        return 0.0
    d = torch.cdist(x, x)  # (n, n), zero diagonal
    return float(d.sum() / (n * (n - 1)))


def detect_collapse(
    samples: torch.Tensor,
    history: Sequence[dict[str, Any]] = (),
    classes: torch.Tensor | None = None,
    real: torch.Tensor | None = None,
    cfg: CollapseConfig | None = None,
    n_classes: int = 10,
) -> CollapseReport:
    """Check generated `samples` (N, 28, 28) uint8 or (N, 1, 28, 28) float for collapse.

    `classes` (N,) are the samples' predicted labels (e.g. from the reference classifier), `real` a
    batch of real images to scale the diversity check, `history` the per-epoch metric rows with
    "train_d_loss". Pure: reads its inputs only and returns a report.
    """
    cfg = cfg or CollapseConfig()
    warnings: list[str] = []
    stats: dict[str, float] = {}
    if len(samples) >= 2:
        div = mean_pairwise_distance(samples, cfg.max_samples)
        stats["diversity"] = round(div, 4)
        if real is not None and len(real) >= 2:
            ref = mean_pairwise_distance(real, cfg.max_samples)
            ratio = div / ref if ref > 0 else 0.0
            stats["diversity_ratio"] = round(ratio, 4)
            if ratio < cfg.min_diversity_ratio:
                warnings.append(
                    f"samples alike: their mean pairwise distance is {ratio:.0%} of real images' "
                    f"({div:.2f} vs {ref:.2f}; threshold {cfg.min_diversity_ratio:.0%})"
                )
        if div < cfg.min_diversity and not any(w.startswith("samples alike") for w in warnings):
            warnings.append(
                f"samples alike: mean pairwise distance {div:.3f} < {cfg.min_diversity} (pixels in [0, 1])"
            )
    if classes is not None and len(classes):
        share = torch.bincount(classes.long().flatten(), minlength=n_classes).double() / len(classes)
        top = int(share.argmax())
        stats["max_class_share"] = round(float(share[top]), 4)
        stats["min_class_share"] = round(float(share.min()), 4)
        if share[top] > cfg.max_class_share:
            warnings.append(
                f"one class dominating: {float(share[top]):.0%} of samples are class {top} "
                f"(threshold {cfg.max_class_share:.0%})"
            )
        rare = [c for c in range(len(share)) if share[c] < cfg.min_class_share]
        if rare and len(classes) * cfg.min_class_share >= MIN_EXPECTED_AT_THRESHOLD:
            listed = ", ".join(f"{c} ({float(share[c]):.1%})" for c in rare)
            warnings.append(
                f"classes rarely generated: {len(rare)} under {cfg.min_class_share:.0%} of samples: "
                f"{listed} (the commonest, class {top}, holds {float(share[top]):.1%})"
            )
    losses = [float(r["train_d_loss"]) for r in history if "train_d_loss" in r]
    if len(losses) >= cfg.window:
        last = losses[-cfg.window :]
        stats["d_loss_last"] = round(last[-1], 6)
        if all(v < cfg.d_loss_floor for v in last):
            warnings.append(
                f"discriminator loss stuck near zero ({last[-1]:.2g} for the last {cfg.window} epochs): "
                "it wins every time and the generator gets no useful gradient"
            )
        elif all(v > cfg.d_loss_ceiling for v in last):
            warnings.append(
                f"discriminator loss pinned at {last[-1]:.3g} for the last {cfg.window} epochs: "
                "its outputs are saturated and training has stopped moving"
            )
    return CollapseReport(warnings, stats)

"""A small CNN digit classifier: the reference network that generation metrics measure against.

Shapes for one image with the default channels: (1, 28, 28) -> [conv 3x3 + BN + ReLU + maxpool 2]
x3 -> (16, 14, 14) -> (32, 7, 7) -> (64, 3, 3) -> flatten 576 -> Linear + BN + ReLU -> features (128,)
-> Linear -> 10 logits. `features` (the penultimate layer) is what FID-MNIST and precision/recall
compare; `forward` returns both, so one pass serves the loss and the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from mnistlab.core.errors import check, check_int


@dataclass(frozen=True)
class ClassifierConfig:
    channels: tuple[int, ...] = (16, 32, 64)  # one conv block (conv, BN, ReLU, 2x2 max-pool) each
    feature_dim: int = 128  # width of the penultimate layer (the features FID-MNIST uses)
    n_classes: int = 10

    def __post_init__(self):
        check(isinstance(self.channels, tuple), "model.channels must be a list of channel counts")
        check(len(self.channels) >= 1, "model.channels needs at least one conv block")
        check(len(self.channels) <= 4, "model.channels: at most 4 blocks fit a 28x28 image")
        # The first block keeps channels x 28 x 28 floats per image: at 512, 400 MB for a batch of 256.
        memory = "activations and weights grow with it"
        for c in self.channels:
            check_int(c, "model.channels", 1, 512, memory)
        check_int(self.feature_dim, "model.feature_dim", 1, 4096, memory)
        check_int(self.n_classes, "model.n_classes", 2, 256, "IDX labels are bytes")


class ClassifierOutput(NamedTuple):
    logits: torch.Tensor  # (B, n_classes)
    features: torch.Tensor  # (B, feature_dim), after the ReLU of the penultimate layer


def _spatial(size: int, blocks: int) -> int:
    for _ in range(blocks):
        size //= 2  # 2x2 max-pool, floor: 28 -> 14 -> 7 -> 3 -> 1
    return size


class DigitCNN(nn.Module):
    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in cfg.channels:
            # bias=False: BatchNorm's shift makes a conv bias redundant.
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = c_out
        side = _spatial(28, len(cfg.channels))
        self.conv = nn.Sequential(*layers, nn.Flatten())  # (B, C * side * side)
        self.embed = nn.Sequential(
            nn.Linear(c_in * side * side, cfg.feature_dim, bias=False),
            nn.BatchNorm1d(cfg.feature_dim),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(cfg.feature_dim, cfg.n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) in [0, 1] -> penultimate features (B, feature_dim)."""
        return self.embed(self.conv(x))

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        f = self.features(x)
        return ClassifierOutput(self.head(f), f)

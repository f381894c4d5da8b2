"""The semi-supervised task's network: a small all-convolutional digit classifier whose penultimate
features (after global average pooling) are its encoder's code.

Sized for the CPU: at width 24 (53,746 parameters) a channels-last forward + backward of one image
costs about 0.5 ms on one thread (docs/history.md, the prototype's timings), so the 2,052 steps of 64
labelled + 448 unlabelled images fit the default autoencoder's training time (docs/semi.md). Images
in are float (B, 1, 28, 28) in [0, 1], as every mnistlab encoder takes them; the network normalises
them itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mnistlab.core.errors import check_int

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of the MNIST training pixels in [0, 1]


@dataclass(frozen=True)
class SemiNetConfig:
    width: int = 24  # channels of the first block; the second has 2w, the third 4w
    # 0: the code is the third block's global average (4w values); > 0: its 4w x 5 x 5 map, flattened,
    # through a linear layer of this many units (BN, ReLU): the code keeps where strokes are.
    hidden: int = 0

    def __post_init__(self):
        check_int(self.width, "model.width", 1, 512, "channels of the first block")
        check_int(self.hidden, "model.hidden", 0, 4096, "0 = global average pooling")


class Normalize(nn.Module):
    """[0, 1] pixels -> zero mean, unit variance over MNIST (a fixed affine map, no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - MNIST_MEAN) / MNIST_STD


def _block(c_in: int, c_out: int, kernel: int, padding: int) -> list[nn.Module]:
    # No conv bias: the BatchNorm after it has its own shift.
    return [nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def _code(channels: int, hidden: int) -> list[nn.Module]:
    """(B, C, 5, 5) -> the code: (B, C) by global average, or (B, hidden) by a linear map of the map."""
    if hidden == 0:
        return [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return [nn.Flatten(), nn.Linear(channels * 25, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU()]


class SemiNet(nn.Module):
    """conv5x5(w)-BN-ReLU-maxpool, conv3x3(2w)-BN-ReLU-maxpool, conv3x3(4w, valid)-BN-ReLU, global
    average pool (or flatten, linear(hidden)-BN-ReLU), linear(code -> 10). Shapes: (B, 1, 28, 28) ->
    (B, w, 14, 14) -> (B, 2w, 7, 7) -> (B, 4w, 5, 5) -> (B, 4w or hidden) = the code -> (B, 10)."""

    def __init__(self, cfg: SemiNetConfig = SemiNetConfig()):
        super().__init__()
        w = cfg.width
        self.encoder = nn.Sequential(
            Normalize(),
            *_block(1, w, 5, 2),
            nn.MaxPool2d(2),
            *_block(w, 2 * w, 3, 1),
            nn.MaxPool2d(2),
            *_block(2 * w, 4 * w, 3, 0),
            *_code(4 * w, cfg.hidden),
        )
        self.code_dim = cfg.hidden or 4 * w
        self.head = nn.Linear(self.code_dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28) in [0, 1] -> logits (B, 10)
        return self.head(self.encoder(x))

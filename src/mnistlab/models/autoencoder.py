"""The report's convolutional autoencoder: a 3-conv encoder to a small latent code and its mirror.

Shapes for one image: (1, 28, 28) -> conv s2 -> (24, 14, 14) -> conv s2 -> (48, 7, 7)
-> conv s2 p0 -> (96, 3, 3) -> flatten 864 -> 128 -> latent; the decoder runs the same path back
with transposed convolutions and ends in a Sigmoid, so reconstructions lie in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from mnistlab.core.errors import check_float, check_int
from mnistlab.models.dropout import FastDropout

MAX_WIDTH = 4096  # widest latent code and hidden layer


@dataclass(frozen=True)
class AEConfig:
    latent_dim: int = 10
    dropout: float = 0.0  # after every hidden ReLU of encoder and decoder; the report used dropout
    hidden: int = 128  # width of the linear layer between the conv stack and the code

    def __post_init__(self):
        # Bounded so that a typo fails here, not in a multi-GB allocation: the linear layers hold
        # hidden x latent_dim and 864 x hidden weights (x4 with Adam's state; 10^8 asked for 51 GB).
        # 4,096 is already five times the 784 pixels a code encodes.
        memory = "the weights grow with it"
        check_int(self.latent_dim, "model.latent_dim", 1, MAX_WIDTH, memory)
        check_int(self.hidden, "model.hidden", 1, MAX_WIDTH, memory)
        check_float(self.dropout, "model.dropout", 0, 1, high_open=True)


class AEOutput(NamedTuple):
    recon: torch.Tensor  # (B, 1, 28, 28) in [0, 1]
    z: torch.Tensor  # (B, latent_dim)


def _act(p: float) -> list[nn.Module]:
    # Dropout with p=0 is skipped entirely: its mask costs time on CPU even when it drops nothing.
    # FastDropout is nn.Dropout with masks that are cheaper to draw on CPU (models/dropout.py).
    return [nn.ReLU(inplace=True)] + ([FastDropout(p)] if p > 0 else [])


class Encoder(nn.Module):
    def __init__(self, cfg: AEConfig):
        super().__init__()
        p = cfg.dropout
        self.net = nn.Sequential(
            nn.Conv2d(1, 24, 3, stride=2, padding=1),
            *_act(p),  # (24, 14, 14)
            nn.Conv2d(24, 48, 3, stride=2, padding=1),
            *_act(p),  # (48, 7, 7)
            nn.Conv2d(48, 96, 3, stride=2, padding=0),
            *_act(p),  # (96, 3, 3)
            nn.Flatten(),  # 864
            nn.Linear(96 * 3 * 3, cfg.hidden),
            *_act(p),
            nn.Linear(cfg.hidden, cfg.latent_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    def __init__(self, cfg: AEConfig):
        super().__init__()
        p = cfg.dropout
        self.net = nn.Sequential(
            nn.Linear(cfg.latent_dim, cfg.hidden),
            *_act(p),
            nn.Linear(cfg.hidden, 96 * 3 * 3),
            *_act(p),
            nn.Unflatten(1, (96, 3, 3)),
            nn.ConvTranspose2d(96, 48, 3, stride=2, padding=0),
            *_act(p),  # (48, 7, 7)
            nn.ConvTranspose2d(48, 24, 3, stride=2, padding=1, output_padding=1),
            *_act(p),  # (24, 14, 14)
            nn.ConvTranspose2d(24, 1, 3, stride=2, padding=1, output_padding=1),  # (1, 28, 28)
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class ConvAutoencoder(nn.Module):
    def __init__(self, cfg: AEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> AEOutput:
        z = self.encoder(x)
        return AEOutput(self.decoder(z), z)

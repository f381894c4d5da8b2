"""The report's GAN: a transposed-convolution generator and a strided-convolution discriminator.

Generator, for one noise vector z (noise_dim,):
  Linear(noise_dim -> 128*3*3), SELU -> unflatten (128, 3, 3)
  -> ConvT(128->64, k3 s2)         (64, 7, 7),  SELU
  -> ConvT(64->32, k3 s2 p1 op1)   (32, 14, 14), SELU
  -> ConvT(32->1, k3 s2 p1 op1)    (1, 28, 28),  Sigmoid      (the report's "31" inputs is a typo for 32)
Discriminator, for one image (1, 28, 28):
  Conv(1->64, k3 s2 p1) (64, 14, 14) -> Conv(64->128, k3 s2 p1) (128, 7, 7) -> Conv(128->256, k3 s2 p0)
  (256, 3, 3), each followed by LeakyReLU(0.2) -> flatten 2304 -> Linear(2304 -> 1) -> Sigmoid.

`Discriminator.logits` returns the value before the Sigmoid, so a loss can be computed from logits
(numerically stable) without changing the network: forward(x) == sigmoid(logits(x)) always.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mnistlab.core.errors import check_float, check_int


@dataclass(frozen=True)
class GANConfig:
    noise_dim: int = 100  # length of the generator's input noise vector
    leak: float = 0.2  # negative slope of the discriminator's LeakyReLUs

    def __post_init__(self):
        # noise_dim x 1152 weights in the first layer: a typo such as 10^8 would ask for 460 GB.
        check_int(self.noise_dim, "model.noise_dim", 1, 4096, "the first layer's weights grow with it")
        check_float(self.leak, "model.leak", 0, 1, high_open=True)


class Generator(nn.Module):
    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.noise_dim = cfg.noise_dim
        self.net = nn.Sequential(
            nn.Linear(cfg.noise_dim, 128 * 3 * 3),
            nn.SELU(),
            nn.Unflatten(1, (128, 3, 3)),
            nn.ConvTranspose2d(128, 64, 3, stride=2),
            nn.SELU(),  # (64, 7, 7)
            nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1),
            nn.SELU(),  # (32, 14, 14)
            nn.ConvTranspose2d(32, 1, 3, stride=2, padding=1, output_padding=1),  # (1, 28, 28)
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, noise_dim) -> images (B, 1, 28, 28) in [0, 1]."""
        return self.net(z)


class Discriminator(nn.Module):
    def __init__(self, cfg: GANConfig):
        super().__init__()
        a = cfg.leak
        self.features = nn.Sequential(
            nn.Conv2d(1, 64, 3, stride=2, padding=1),
            nn.LeakyReLU(a),  # (64, 14, 14)
            nn.Conv2d(64, 128, 3, stride=2, padding=1),
            nn.LeakyReLU(a),  # (128, 7, 7)
            nn.Conv2d(128, 256, 3, stride=2, padding=0),
            nn.LeakyReLU(a),  # (256, 3, 3)
            nn.Flatten(),  # 2304
        )
        self.head = nn.Linear(256 * 3 * 3, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) -> (B,) scores before the Sigmoid."""
        return self.head(self.features(x)).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) -> (B,) probability that each image is real."""
        return torch.sigmoid(self.logits(x))


class GAN(nn.Module):
    """The pair, so the registry can build both from one config; training uses the parts."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.cfg = cfg
        self.generator = Generator(cfg)
        self.discriminator = Discriminator(cfg)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)


# Multiply-accumulates per image of one forward pass, counted from the layer shapes above
# (a conv's MACs = output pixels x in x out x k*k; a transposed conv's = input pixels x in x out x k*k).
GENERATOR_MACS = 100 * 1152 + 9 * 128 * 64 * 9 + 49 * 64 * 32 * 9 + 196 * 32 * 9
DISCRIMINATOR_MACS = 196 * 64 * 9 + 49 * 128 * 64 * 9 + 9 * 256 * 128 * 9 + 2304


def train_step_flops(noise_dim: int = 100) -> float:
    """FLOPs per image of one two-phase GAN step, counted the usual way (backward = 2 x forward):
    D on real and fake (forward + backward), then D on fake again and G (forward + backward)."""
    g = GENERATOR_MACS + (noise_dim - 100) * 1152
    forward = 3 * DISCRIMINATOR_MACS + g
    return 2.0 * 3 * forward  # 2 FLOPs per MAC; forward + backward = 3 x forward

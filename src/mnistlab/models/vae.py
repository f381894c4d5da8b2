"""A variational autoencoder on the report's shapes: the autoencoder's encoder with a final layer of
2 x latent_dim (mean and log-variance of q(z|x)), the reparameterisation trick, and the autoencoder's
decoder, whose last layer gives Bernoulli logits (the Sigmoid is applied for images).

Shapes for a batch: x (B, 1, 28, 28) -> encoder -> (B, 2d) -> mu, logvar (B, d);
z = mu + exp(logvar / 2) * eps (B, d) -> decoder -> logits (B, 1, 28, 28).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from mnistlab.errors import check
from mnistlab.models.autoencoder import AEConfig, Decoder, Encoder


@dataclass(frozen=True)
class VAEConfig:
    latent_dim: int = 10
    hidden: int = 128  # width of the linear layer between the conv stack and the code

    def __post_init__(self):
        check(isinstance(self.latent_dim, int) and 0 < self.latent_dim <= 4096,
              f"model.latent_dim must be in [1, 4096], got {self.latent_dim}")  # fmt: skip
        check(isinstance(self.hidden, int) and 0 < self.hidden <= 65536,
              f"model.hidden must be in [1, 65536], got {self.hidden}")  # fmt: skip


class VAEOutput(NamedTuple):
    recon: torch.Tensor  # (B, 1, 28, 28) in [0, 1]: sigmoid of the logits
    z: torch.Tensor  # (B, d): the mean code (what probes and maps use)
    logits: torch.Tensor  # (B, 1, 28, 28)
    mu: torch.Tensor  # (B, d)
    logvar: torch.Tensor  # (B, d)


class GaussianEncoder(nn.Module):
    """The autoencoder's encoder ending in 2d numbers; calling it gives the mean code, so it can stand
    wherever an encoder is expected (probes, latent maps, fine-tuning)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.latent_dim = cfg.latent_dim
        self.body = Encoder(AEConfig(latent_dim=2 * cfg.latent_dim, hidden=cfg.hidden))

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)  # (B, 2d)
        return h[:, : self.latent_dim], h[:, self.latent_dim :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.moments(x)[0]


class BernoulliDecoder(nn.Module):
    """The autoencoder's decoder; `logits` stops before its Sigmoid (for a stable BCE)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.body = Decoder(AEConfig(latent_dim=cfg.latent_dim, hidden=cfg.hidden))

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.body.net[:-1](z)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)  # (B, 1, 28, 28) in [0, 1]


class VAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = GaussianEncoder(cfg)
        self.decoder = BernoulliDecoder(cfg)

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> VAEOutput:
        """With `eps` (B, d) standard normal: a sample of q(z|x) is decoded (training); without, the
        mean (evaluation: deterministic reconstructions)."""
        mu, logvar = self.encoder.moments(x)
        z = mu if eps is None else mu + torch.exp(0.5 * logvar) * eps
        logits = self.decoder.logits(z)
        return VAEOutput(torch.sigmoid(logits), mu, logits, mu, logvar)

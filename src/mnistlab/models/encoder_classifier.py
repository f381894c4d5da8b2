"""Classifiers built from the autoencoder's encoder: a linear head on a feature vector (the probe) and
encoder + head (fine-tuning, or the same network trained from scratch).

Shapes: the head maps (B, D) -> (B, n_classes) logits; `EncoderClassifier` maps images
(B, 1, 28, 28) -> code (B, latent_dim) -> logits (B, n_classes).
"""

from __future__ import annotations

import torch
from torch import nn

from mnistlab.models.autoencoder import AEConfig, Encoder

N_CLASSES = 10


class LinearHead(nn.Module):
    """One Linear(in_dim -> n_classes): the report's probe."""

    def __init__(self, in_dim: int, n_classes: int = N_CLASSES):
        super().__init__()
        self.linear = nn.Linear(in_dim, n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


class EncoderClassifier(nn.Module):
    """The autoencoder's encoder followed by a linear head; `encoder` (and `head`) may carry trained
    weights, e.g. a pretrained encoder and the linear probe trained on its frozen code."""

    def __init__(
        self, encoder: Encoder, latent_dim: int, n_classes: int = N_CLASSES, head: LinearHead | None = None
    ):
        super().__init__()
        self.encoder = encoder
        self.head = head if head is not None else LinearHead(latent_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def encoder_classifier(cfg: AEConfig) -> EncoderClassifier:
    """A freshly initialised encoder + head of the autoencoder's architecture (model "encoder_classifier")."""
    return EncoderClassifier(Encoder(cfg), cfg.latent_dim)

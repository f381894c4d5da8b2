"""Model registry: `build_model(name, cfg)` builds any registered network and fails on unknown names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from mnistlab.models.autoencoder import AEConfig, ConvAutoencoder
from mnistlab.models.classifier import ClassifierConfig, DigitCNN
from mnistlab.models.encoder_classifier import encoder_classifier
from mnistlab.models.gan import GAN, GANConfig

MODELS: dict[str, tuple[type, Callable[[Any], nn.Module]]] = {
    "conv_autoencoder": (AEConfig, ConvAutoencoder),
    "encoder_classifier": (AEConfig, encoder_classifier),  # the autoencoder's encoder + a linear head
    "digit_cnn": (ClassifierConfig, DigitCNN),
    "report_gan": (GANConfig, GAN),
}


def build_model(name: str, cfg: Any) -> nn.Module:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(sorted(MODELS))}")
    cfg_type, ctor = MODELS[name]
    if not isinstance(cfg, cfg_type):
        raise TypeError(f"model {name!r} needs a {cfg_type.__name__}, got {type(cfg).__name__}")
    return ctor(cfg)

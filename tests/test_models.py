"""The report's autoencoder: shapes, parameter counts, registry."""

from __future__ import annotations

import pytest
import torch

from mnistlab.core.errors import ConfigError
from mnistlab.models import build_model
from mnistlab.models.autoencoder import AEConfig, ConvAutoencoder
from mnistlab.models.dropout import FastDropout


def expected_params(latent: int, hidden: int = 128) -> int:
    conv = (1 * 24 * 9 + 24) + (24 * 48 * 9 + 48) + (48 * 96 * 9 + 96)
    enc = conv + (864 * hidden + hidden) + (hidden * latent + latent)
    deconv = (96 * 48 * 9 + 48) + (48 * 24 * 9 + 24) + (24 * 1 * 9 + 1)
    dec = (latent * hidden + hidden) + (hidden * 864 + 864) + deconv
    return enc + dec


@pytest.mark.parametrize("latent", [2, 10, 100])
def test_shapes_range_and_parameter_count(latent):
    model = build_model("conv_autoencoder", AEConfig(latent_dim=latent, dropout=0.1))
    out = model(torch.rand(5, 1, 28, 28))
    assert out.recon.shape == (5, 1, 28, 28) and out.z.shape == (5, latent)
    assert out.recon.min() >= 0 and out.recon.max() <= 1
    assert sum(p.numel() for p in model.parameters()) == expected_params(latent)


def test_encoder_layers_follow_the_report():
    convs = [m for m in ConvAutoencoder(AEConfig()).encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (1, 24, (3, 3), (2, 2), (1, 1)),
        (24, 48, (3, 3), (2, 2), (1, 1)),
        (48, 96, (3, 3), (2, 2), (0, 0)),
    ]


def test_dropout_only_when_asked():
    has = lambda m: any(isinstance(x, (torch.nn.Dropout, FastDropout)) for x in m.modules())  # noqa: E731
    assert not has(ConvAutoencoder(AEConfig(dropout=0.0)))
    assert has(ConvAutoencoder(AEConfig(dropout=0.2)))


def test_registry_and_config_errors():
    with pytest.raises(KeyError, match="unknown model 'vae'"):
        build_model("vae", AEConfig())
    with pytest.raises(ConfigError, match="latent_dim"):
        AEConfig(latent_dim=0)
    with pytest.raises(ConfigError, match="dropout"):
        AEConfig(dropout=1.0)

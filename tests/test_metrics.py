"""Pure image metrics: known values and properties."""

from __future__ import annotations

import math

import torch

from mnistlab.metrics import images as metrics


def test_mse_and_psnr_known_values():
    x = torch.zeros(2, 1, 28, 28)
    y = torch.full((2, 1, 28, 28), 0.1)
    assert torch.allclose(metrics.mse(x, y), torch.tensor([0.01, 0.01]))
    assert torch.allclose(metrics.psnr(x, y), torch.tensor([20.0, 20.0]), atol=1e-4)
    assert math.isclose(float(metrics.psnr(x, x)[0]), 100.0, rel_tol=1e-6)


def test_ssim_is_one_for_identical_and_drops_with_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 28, 28, generator=g)
    assert torch.allclose(metrics.ssim(x, x), torch.ones(4), atol=1e-5)
    light = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    heavy = (x + 0.5 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    s_light, s_heavy = metrics.ssim(light, x), metrics.ssim(heavy, x)
    assert (s_light > s_heavy).all() and (s_light < 1).all()
    assert torch.allclose(metrics.ssim(light, x), metrics.ssim(x, light), atol=1e-6)  # symmetric

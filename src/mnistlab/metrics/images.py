"""Pure image-quality metrics on tensors of shape (B, 1, H, W) with values in [0, 1].

Each returns one value per image, so callers can average, plot or test them; nothing here keeps state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image: (B,)."""
    return (x - y).pow(2).flatten(1).mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image: (B,). Identical images are capped at 100 dB."""
    err = mse(x, y).clamp_min(1e-10)
    return 10.0 * torch.log10(data_range**2 / err)


def _gaussian_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]  # (1, 1, size, size)


def ssim(
    x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, window: int = 7, sigma: float = 1.5
) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004): (B,).

    Gaussian-weighted local statistics over the valid region; the window is 7 (not the paper's 11)
    because a 28x28 image leaves only an 18x18 valid region for an 11x11 window.
    """
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    w = _gaussian_window(window, sigma, x.device, x.dtype)
    channels = x.shape[1]
    w = w.expand(channels, 1, window, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1)


# The per-image scores by name, in the order reports list them.
QUALITY = {"mse": mse, "psnr": psnr, "ssim": ssim}

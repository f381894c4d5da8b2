"""Batched augmentations of digits for consistency training (the `semi` task): a weak view (a small
shift) and a strong view (rotation, anisotropic scaling, shear, shift, an elastic field, stroke
thickening or thinning, cutout), each one `grid_sample` over the whole batch, no per-image Python.

Images in and out are float (B, 1, H, W) in [0, 1]. Random numbers come from `generator`, or from
torch's global RNG when it is None (the training loop checkpoints that one, so a resumed run draws
the same views). Elastic distortion follows Simard et al. 2003; cutout DeVries & Taylor 2017.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mnistlab.core.errors import check_float, check_int


@dataclass(frozen=True)
class AugmentConfig:
    """Sizes of the random changes (pixels of a 28x28 image, degrees, fractions)."""

    weak_shift: float = 2.0  # the weak view: a shift of up to this many pixels each way
    rotation: float = 20.0  # strong view: up to +-degrees
    scale: float = 0.15  # up to +-this fraction, separately along x and y
    shear: float = 0.2
    shift: float = 4.0  # pixels each way
    elastic: float = 0.06  # std of a coarse displacement field in normalised coordinates (1.0 = 14 px)
    elastic_grid: int = 5  # the field is drawn on a k x k grid and upsampled (bicubic): smooth
    morph: float = 0.2  # probability of a 3x3 dilation or erosion (half each): thicker / thinner strokes
    cutout: int = 8  # zeroed square of cutout // 2 pixels each side of a random centre (8: 9x9; 0 = off)

    def __post_init__(self):
        check_float(self.weak_shift, "augment.weak_shift", 0, 8)
        check_float(self.rotation, "augment.rotation", 0, 180)
        check_float(self.scale, "augment.scale", 0, 0.9)
        check_float(self.shear, "augment.shear", 0, 2)
        check_float(self.shift, "augment.shift", 0, 14)
        check_float(self.elastic, "augment.elastic", 0, 1)
        check_int(self.elastic_grid, "augment.elastic_grid", 2, 28)
        check_float(self.morph, "augment.morph", 0, 1)
        check_int(self.cutout, "augment.cutout", 0, 28)


def _uniform(n: int, *shape: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, *shape, generator=generator) * 2 - 1  # in [-1, 1)


def weak(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image shifted by its own (dx, dy) of up to cfg.weak_shift pixels (bilinear, zero fill)."""
    n, _, h, w = x.shape
    if n == 0:
        return x
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    # affine_grid's coordinates span [-1, 1] over the image: one pixel is 2 / size.
    theta[:, :, 2] = _uniform(n, 2, generator=generator) * (2 * cfg.weak_shift / torch.tensor([w, h]))
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def strong(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random affine map + elastic field (one resampling), then dilation/erosion, then cutout."""
    n, _, h, w = x.shape
    if n == 0:  # affine_grid refuses an empty batch
        return x
    g = generator
    angle = _uniform(n, generator=g) * math.radians(cfg.rotation)
    sx, sy = 1 + _uniform(n, generator=g) * cfg.scale, 1 + _uniform(n, generator=g) * cfg.scale
    shear = _uniform(n, generator=g) * cfg.shear
    c, s = torch.cos(angle), torch.sin(angle)
    # theta = R(angle) @ [[1, shear], [0, 1]] @ diag(sx, sy): output coordinates -> input coordinates.
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = c * sx
    theta[:, 0, 1] = (c * shear - s) * sy
    theta[:, 1, 0] = s * sx
    theta[:, 1, 1] = (s * shear + c) * sy
    theta[:, :, 2] = _uniform(n, 2, generator=g) * (2 * cfg.shift / torch.tensor([w, h]))
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)  # (B, H, W, 2)
    if cfg.elastic > 0:
        k = cfg.elastic_grid
        field = torch.randn(n, 2, k, k, generator=g) * cfg.elastic  # (B, 2, k, k)
        field = F.interpolate(field, size=(h, w), mode="bicubic", align_corners=True)  # (B, 2, H, W)
        grid = grid + field.permute(0, 2, 3, 1)
    x = F.grid_sample(x, grid.to(x.device), align_corners=False)
    if cfg.morph > 0:
        r = torch.rand(n, 1, 1, 1, generator=g).to(x.device)
        thick = F.max_pool2d(x, 3, 1, 1)
        thin = -F.max_pool2d(-x, 3, 1, 1)
        x = torch.where(r < cfg.morph / 2, thick, torch.where(r < cfg.morph, thin, x))
    if cfg.cutout > 0:
        cy = torch.randint(0, h, (n, 1, 1), generator=g)
        cx = torch.randint(0, w, (n, 1, 1), generator=g)
        half = cfg.cutout // 2
        rows = (torch.arange(h).view(1, h, 1) - cy).abs() <= half  # (B, H, 1)
        cols = (torch.arange(w).view(1, 1, w) - cx).abs() <= half  # (B, 1, W)
        x = x.masked_fill((rows & cols).unsqueeze(1).to(x.device), 0.0)
    return x

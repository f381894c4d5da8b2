"""A flow-matching generator: a small U-Net that predicts the velocity of the straight path between
noise and a digit, and the ODE solvers that follow it.

Straight path (Lipman et al. 2023, flow matching; Liu et al. 2023, rectified flow):
    x_t = (1 - t) x0 + t x1,   x0 ~ N(0, I),   x1 a training image scaled to [-1, 1],   t in [0, 1],
    target velocity x1 - x0, mean squared error (`flow_loss`).
One network learns the conditional and the unconditional field: the label is replaced by the "no label"
token NULL with probability p_uncond (Ho & Salimans 2022, classifier-free guidance), so sampling can
mix the two, v = v_null + w (v_label - v_null).

The network works on 2x2 pixel-unshuffled images (28x28x1 -> 14x14x4): no 28x28 tensor anywhere,
which is where small convolutions run slowest on a CPU. Then levels 14 and 7 (channels[0], channels[1]),
`blocks` residual blocks per level down and as many up (each fed the matching down block's output),
`mid_blocks` at 7x7, a 1x1 convolution to 4 channels and a pixel shuffle back to (1, 28, 28).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.core.errors import ConfigError, check, check_bool, check_int
from mnistlab.models.code_samplers import MAX_SOLVER_STEPS as MAX_STEPS

N_CLASSES = 10
NULL = N_CLASSES  # the "no label" token of the label embedding
SOLVERS = ("euler", "midpoint", "heun")


@dataclass(frozen=True)
class FlowConfig:
    channels: tuple[int, ...] = (32, 64)  # at 14x14 and at 7x7
    blocks: int = 1  # residual blocks per level, down (and as many up)
    mid_blocks: int = 1
    emb_dim: int = 64  # time and label embedding width
    groups: int = 8  # GroupNorm groups
    conditional: bool = True  # False: the label is always NULL (a generator that cannot take a digit)

    def __post_init__(self):
        check(
            isinstance(self.channels, (tuple, list))
            and len(self.channels) == 2
            and all(isinstance(c, int) and not isinstance(c, bool) for c in self.channels),
            f"model.channels must be two integers (14x14 and 7x7 widths), not {self.channels!r}",
        )
        for c in self.channels:
            check_int(c, "model.channels", 8, 1024)
            check(
                c % self.groups == 0, f"model.channels {c} must be a multiple of model.groups {self.groups}"
            )
        check_int(self.blocks, "model.blocks", 1, 8)
        check_int(self.mid_blocks, "model.mid_blocks", 0, 8)
        check_int(self.emb_dim, "model.emb_dim", 8, 1024)
        check(self.emb_dim % 2 == 0, f"model.emb_dim must be even, not {self.emb_dim}")
        check_int(self.groups, "model.groups", 1, 64)
        check_bool(self.conditional, "model.conditional")


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of times t (B,) in [0, 1] -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = (1000.0 * t.float())[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv3x3, GroupNorm scaled and shifted by the embedding, SiLU-conv3x3 (initialised
    to zero, so each block starts as the identity), plus the input (1x1 conv where widths differ)."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(min(groups, cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(e)[:, :, None, None].chunk(2, dim=1)  # (B, cout, 1, 1) each
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class FlowUNet(nn.Module):
    """velocity(x (B, 1, 28, 28) in [-1, 1] space, t (B,), y (B,) labels 0..9 or NULL) -> (B, 1, 28, 28)."""

    def __init__(self, cfg: FlowConfig):
        super().__init__()
        (c14, c7), E, g = cfg.channels, cfg.emb_dim, cfg.groups
        self.cfg = cfg
        # p(y) of the training labels, set by the trainer: what a sample with no digit asked for draws.
        self.register_buffer("label_prior", torch.full((N_CLASSES,), 1.0 / N_CLASSES))
        self.time = nn.Sequential(nn.Linear(E, E), nn.SiLU(), nn.Linear(E, E))
        self.label = nn.Embedding(N_CLASSES + 1, E)
        self.inp = nn.Conv2d(4, c14, 3, padding=1)  # the 2x2-unshuffled image: 4 channels at 14x14
        self.down14 = nn.ModuleList([ResBlock(c14, c14, E, g) for _ in range(cfg.blocks)])
        self.to7 = nn.Conv2d(c14, c14, 3, stride=2, padding=1)
        self.down7 = nn.ModuleList([ResBlock(c14 if i == 0 else c7, c7, E, g) for i in range(cfg.blocks)])
        self.mid = nn.ModuleList([ResBlock(c7, c7, E, g) for _ in range(cfg.mid_blocks)])
        self.up7 = nn.ModuleList([ResBlock(2 * c7, c7, E, g) for _ in range(cfg.blocks)])
        self.to14 = nn.ConvTranspose2d(c7, c14, 2, stride=2)
        self.up14 = nn.ModuleList([ResBlock(2 * c14, c14, E, g) for _ in range(cfg.blocks)])
        self.out_norm = nn.GroupNorm(min(g, c14), c14)
        self.out = nn.Conv2d(c14, 4, 1)  # 1x1: a 3x3 conv to 4 channels costs much and gives little
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        e = F.silu(self.time(timestep_embedding(t, self.cfg.emb_dim)) + self.label(y))  # (B, E)
        h = self.inp(F.pixel_unshuffle(x, 2))  # (B, c14, 14, 14)
        skips = []
        for block in self.down14:
            h = block(h, e)
            skips.append(h)
        h = self.to7(h)  # (B, c14, 7, 7)
        for block in self.down7:
            h = block(h, e)
            skips.append(h)
        for block in self.mid:
            h = block(h, e)
        for block in self.up7:
            h = block(torch.cat([h, skips.pop()], dim=1), e)
        h = self.to14(h)  # (B, c14, 14, 14)
        for block in self.up14:
            h = block(torch.cat([h, skips.pop()], dim=1), e)
        return F.pixel_shuffle(self.out(F.silu(self.out_norm(h))), 2)  # (B, 1, 28, 28)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 28, 28) -> float (B, 1, 28, 28) in [-1, 1]."""
    return images.unsqueeze(1).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float (B, 1, 28, 28) in [-1, 1] space -> uint8 (B, 28, 28) on the CPU."""
    return ((x.squeeze(1).float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


TIME_SAMPLINGS = ("uniform", "logit_normal")


def training_times(n: int, how: str, gen: torch.Generator) -> torch.Tensor:
    """(n,) times in (0, 1) for the flow loss: uniform, or logit-normal (sigmoid of a standard normal,
    Esser et al. 2024), which puts more of the training on the middle of the path, where the velocity
    is hardest to predict, and less near pure noise and pure data."""
    if how == "logit_normal":
        return torch.randn(n, generator=gen).sigmoid()
    return torch.rand(n, generator=gen)


def drop_labels(labels: torch.Tensor, p_uncond: float, u: torch.Tensor) -> torch.Tensor:
    """Labels (B,) with those where the uniform draws u (B,) fall under p_uncond replaced by NULL."""
    return torch.where(u < p_uncond, torch.full_like(labels, NULL), labels)


def flow_loss(
    model: nn.Module, x1: torch.Tensor, y: torch.Tensor, x0: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Mean squared error between the predicted and the true velocity of the straight path from noise
    x0 to data x1 (both (B, 1, 28, 28)) at times t (B,)."""
    tb = t.view(-1, 1, 1, 1)
    xt = (1 - tb) * x0 + tb * x1
    return F.mse_loss(model(xt, t, y).float(), x1 - x0)


def check_sampling(solver: str, steps: int, guidance: float) -> None:
    """One-line errors for a solver name, a step count or a guidance weight that cannot be used."""
    if solver not in SOLVERS:
        raise ConfigError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    check_int(steps, "--steps", 1, MAX_STEPS, "network evaluations per sample")
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance):
        raise ConfigError(f"--guidance must be a finite number, not {guidance!r}")
    check(0 <= guidance <= 100, f"--guidance must be between 0 and 100, not {guidance}")


def velocity(model: nn.Module, x: torch.Tensor, t: float, y: torch.Tensor, guidance: float) -> torch.Tensor:
    """The field at x (B, 1, 28, 28), time t, labels y (B,) (NULL = unconditional). With guidance w != 1
    the labelled and the NULL fields are evaluated in one batch of 2B and mixed: v0 + w (v1 - v0)."""
    tt = torch.full((x.shape[0],), t, device=x.device)
    labelled = y != NULL
    if guidance == 1.0 or not bool(labelled.any()):
        return model(x, tt, y).float()
    v = model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([y, torch.full_like(y, NULL)])).float()
    v_label, v_null = v.chunk(2)
    return torch.where(labelled.view(-1, 1, 1, 1), v_null + guidance * (v_label - v_null), v_label)


@torch.inference_mode()
def solve(
    model: nn.Module,
    x0: torch.Tensor,
    y: torch.Tensor,
    solver: str = "euler",
    steps: int = 20,
    guidance: float = 1.0,
    path: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Follow the field from noise x0 (t = 0) to t = 1 with at most `steps` network evaluations
    (a guided evaluation is one batch of twice the samples): euler takes `steps` steps; midpoint and
    heun take (steps + 1) // 2, two evaluations each, the last one an Euler step when `steps` is odd
    (so one step is Euler for every solver). With `path`,
    the state after each step is appended to it (for the explorer's noise-to-digit strip)."""
    check_sampling(solver, steps, guidance)

    def v(x_, t_):
        return velocity(model, x_, t_, y, guidance)

    x = x0
    k = steps if solver == "euler" else (steps + 1) // 2
    grid = [i / k for i in range(k + 1)]
    for i, (t0, t1) in enumerate(zip(grid[:-1], grid[1:])):
        h = t1 - t0
        d0 = v(x, t0)
        if solver == "euler" or (i == k - 1 and steps % 2 == 1):
            x = x + h * d0
        elif solver == "midpoint":
            x = x + h * v(x + 0.5 * h * d0, t0 + 0.5 * h)
        else:
            x = x + 0.5 * h * (d0 + v(x + h * d0, t1))
        if path is not None:
            path.append(x.clone())
    return x

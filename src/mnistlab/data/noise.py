"""Gaussian noise for the denoising autoencoder: its config, fresh per-step training noise that a
resumed run reproduces exactly, and fixed seeded noise for validation and test.

Every draw comes from a generator seeded by (noise seed, stream, step) through numpy's SeedSequence,
so the noise of training step k does not depend on how the run got there (uninterrupted or resumed),
and the validation/test noise is the same for every run with the same seed (comparable numbers).
The fixed noise is a standard normal tensor; callers scale it by sigma, so one draw serves every
noise level and every model under comparison (common random numbers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mnistlab.core import distributed
from mnistlab.core.errors import ConfigError, check, check_bool, check_float, check_seed
from mnistlab.data.datasets import add_noise

# Stream ids keep the training, validation and test draws independent of each other.
STREAMS = {"train": 0, "val": 1, "test": 2}
MAX_SIGMA = 10.0  # far beyond anything useful on [0, 1] images; larger values are typos


def check_sigma(value: float, where: str) -> float:
    """`value` if it is a usable noise level, else a one-line ConfigError naming `where`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: noise level {value!r} is not a number")
    if not (math.isfinite(value) and 0 < value <= MAX_SIGMA):
        raise ConfigError(f"{where}: noise level {value!r} must be a number in (0, {MAX_SIGMA:g}]")
    return float(value)


def parse_sigmas(text: str) -> tuple[float, ...]:
    """'0.25,0.5' -> (0.25, 0.5); a one-line ConfigError for anything else."""
    sigmas = []
    for item in text.split(","):
        try:
            value = float(item.strip())
        except ValueError:
            raise ConfigError(
                f"--sigmas {text!r}: {item.strip()!r} is not a number; give noise levels like 0.25,0.5,1"
            ) from None
        sigmas.append(check_sigma(value, f"--sigmas {text!r}"))
    return tuple(sigmas)


@dataclass(frozen=True)
class NoiseConfig:
    """The denoising autoencoder's corruption: x + sigma * N(0, 1), optionally clipped to [0, 1]."""

    sigma: float = 1.0  # standard deviation; the report used variance 1, i.e. sigma 1
    clip: bool = False  # clip the noisy input back to [0, 1] (the report did not)
    seed: int = 0  # seeds the training, validation and test noise (independent of train.seed)
    eval_sigmas: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)  # test-set table rows

    def __post_init__(self):
        check_float(self.sigma, "noise.sigma", 0, MAX_SIGMA, low_open=True)
        check_bool(self.clip, "noise.clip")
        check_seed(self.seed, "noise.seed")
        check(isinstance(self.eval_sigmas, tuple), "noise.eval_sigmas must be a list of noise levels")
        # One test-set evaluation per level: a hundred is already a long table.
        check(0 < len(self.eval_sigmas) <= 100, "noise.eval_sigmas must list 1 to 100 noise levels")
        for s in self.eval_sigmas:
            check_float(s, "noise.eval_sigmas", 0, MAX_SIGMA, low_open=True)


def _generator(seed: int, stream: str, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    # SeedSequence mixes the three integers into a well-spread 64-bit seed with no collisions in practice.
    state = np.random.SeedSequence([seed, STREAMS[stream], step]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device=device).manual_seed(int(state[0]) << 32 | int(state[1]))


def fixed_noise(n: int, seed: int, stream: str) -> torch.Tensor:
    """Standard normal noise (n, 1, 28, 28) on the CPU, the same for every call with these arguments."""
    return torch.randn((n, 1, 28, 28), generator=_generator(seed, stream, 0))


def apply_noise(x: torch.Tensor, eps: torch.Tensor, sigma: float, clip: bool) -> torch.Tensor:
    """x + sigma * eps for clean images x (B, 1, 28, 28) in [0, 1] and standard normal eps, same shape."""
    noisy = x + sigma * eps.to(x.device, x.dtype)
    return noisy.clamp_(0.0, 1.0) if clip else noisy


class TrainingNoise(nn.Module):
    """The training-time corruption, as a module so that its step counter is a buffer that the
    checkpoint saves and restores: step k always gets the same fresh draw, so resume is exact."""

    def __init__(self, cfg: NoiseConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gen = _generator(self.cfg.seed, "train", int(self.step), x.device)
        self.step += 1
        world = distributed.current()
        if world.enabled:
            # Under torchrun x is this rank's slice of the global batch: draw the global batch's noise
            # and take the slice's rows, so the step sees what a single process would.
            eps = torch.randn((len(x) * world.world_size, *x.shape[1:]), generator=gen, device=x.device)
            return apply_noise(x, distributed.local_rows(eps, world), self.cfg.sigma, self.cfg.clip)
        return add_noise(x, self.cfg.sigma, self.cfg.clip, gen)

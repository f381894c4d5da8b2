"""`mnistlab sample`: draw N digits from a trained run, whatever its model, into a .npy and a PNG grid.

A run's task picks its generator through GENERATORS (task -> (module, function)), the same lazy
registry style as cli.TRAINERS. The function is `f(run_dir, device) -> Generator`; a Generator
names the samplers it accepts (the first is the default) and turns a SampleRequest into uint8
images (n, 28, 28). Autoencoder runs (ae, dae) sample codes and decode them; another generator
(the GAN) registers itself with one line.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from mnistlab.config import load_run_config
from mnistlab.errors import ConfigError, check

log = logging.getLogger("mnistlab")


@dataclass(frozen=True)
class SampleRequest:
    sampler: str  # a name from the generator's `samplers`
    n: int
    seed: int = 0
    components: int = 10  # for the gmm sampler

    def __post_init__(self):
        check(self.n > 0, f"--n must be > 0, got {self.n}")
        check(self.n <= 1_000_000, f"--n must be <= 1000000, got {self.n}")
        check(self.components >= 1, f"--components must be >= 1, got {self.components}")


class Generator(Protocol):
    samplers: tuple[str, ...]

    def sample(self, request: SampleRequest) -> np.ndarray: ...  # uint8 (n, 28, 28)


class AutoencoderGenerator:
    """Codes drawn from a distribution fitted to the run's training codes, then decoded.
    The fitted samplers are kept, so several requests reuse one fit."""

    samplers = ("gmm", "gaussian", "uniform")

    def __init__(self, model, train_images: torch.Tensor, device: torch.device, batch_size: int = 1000):
        self.model = model.to(device).eval()
        self.device = device
        self.batch_size = batch_size
        self.train_images = train_images  # encoded on first use, after the request is checked
        self._train_codes: np.ndarray | None = None
        self._fitted: dict[tuple[str, int, int], Any] = {}

    @property
    def train_codes(self) -> np.ndarray:
        from mnistlab.latent import encode

        if self._train_codes is None:
            self._train_codes = encode(self.model.encoder, self.train_images, self.device, self.batch_size)
        return self._train_codes  # (N_train, d)

    def codes(self, request: SampleRequest) -> np.ndarray:
        from mnistlab.latent import fit_sampler

        check_sampler(request.sampler, self.samplers, "autoencoder")
        key = (request.sampler, request.seed, request.components)
        if key not in self._fitted:
            self._fitted[key] = fit_sampler(
                request.sampler, self.train_codes, request.seed, request.components
            )
        return self._fitted[key].sample(request.n, np.random.default_rng(request.seed))

    def sample(self, request: SampleRequest) -> np.ndarray:
        from mnistlab.latent import decode

        return decode(self.model.decoder, self.codes(request), self.device, self.batch_size)


def check_sampler(name: str, known: tuple[str, ...], what: str) -> None:
    if name not in known:
        raise ConfigError(f"unknown sampler {name!r} for a {what} run; choose one of {', '.join(known)}")


def autoencoder_generator(run_dir: Path, device: torch.device) -> AutoencoderGenerator:
    """The generator of an ae or dae run: its decoder and its training split's codes."""
    from mnistlab.data import load
    from mnistlab.train.autoencoder import load_autoencoder

    exp, model = load_autoencoder(run_dir)
    return AutoencoderGenerator(model, load(exp.data).train.images, device, exp.train.eval_batch_size)


# Task -> (module, function) building a Generator from a run folder: f(run_dir, device).
GENERATORS: dict[str, tuple[str, str]] = {
    "ae": ("mnistlab.sampling", "autoencoder_generator"),
    "dae": ("mnistlab.sampling", "autoencoder_generator"),
    "gan": ("mnistlab.train.gan_run", "gan_generator"),
}


def load_generator(run_dir: Path, device: torch.device) -> tuple[str, Generator]:
    """(task, generator) of a run folder; a run whose task cannot generate is a one-line error."""
    task, _ = load_run_config(run_dir)
    if task not in GENERATORS:
        raise ConfigError(
            f"{run_dir} holds a {task!r} run, which cannot generate digits; "
            f"`mnistlab sample` works for runs of: {', '.join(sorted(GENERATORS))}"
        )
    module, function = GENERATORS[task]
    return task, getattr(importlib.import_module(module), function)(Path(run_dir), device)


def sample_to_file(
    run_dir: Path,
    out: Path,
    sampler: str | None,
    n: int,
    seed: int = 0,
    components: int = 10,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Draw n digits from run `run_dir` with `sampler` (None = the generator's default) and write
    `out` (.npy uint8 (n, 28, 28)) plus a PNG grid of the first 100 beside it (same stem)."""
    from mnistlab.generation import check_writable, save_samples
    from mnistlab.report.latent_figures import image_grid

    request = SampleRequest(sampler or "", n, seed, components)  # checks n before any work
    out = check_writable(out, ".npy")
    task, gen = load_generator(run_dir, device or torch.device("cpu"))
    request = SampleRequest(sampler or gen.samplers[0], n, seed, components)
    images = gen.sample(request)
    if images.dtype != np.uint8 or images.shape != (n, 28, 28):
        raise RuntimeError(
            f"the {task} generator returned {images.dtype} {images.shape}, not uint8 ({n}, 28, 28)"
        )
    save_samples(out, images)
    png = image_grid(images[:100], out.with_suffix(".png"),
                     f"{task} run {Path(run_dir).name}: {request.sampler} sampler, {min(n, 100)} of {n}")  # fmt: skip
    log.info("wrote %d samples to %s and %s", n, out, png)
    return {"run": str(run_dir), "task": task, "sampler": request.sampler, "n": n, "seed": seed,
            "out": str(out), "png": str(png)}  # fmt: skip

"""Generators of any encoder/decoder pair: encode and decode in batches, code samplers (uniform,
gaussian, gmm) fitted to training codes, and `AutoencoderGenerator`, which draws codes from a fitted
sampler and decodes them. `SampleRequest` is what every generator's `sample` takes.

Everything takes and returns numpy arrays; nothing here reads run folders or writes files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from mnistlab.core.errors import ConfigError, check, check_float, check_int, check_seed
from mnistlab.data.datasets import to_float

MAX_SOLVER_STEPS = 1000  # --steps above this is a typo, not a sampler setting

# ------------------------------------------------------------------------- encode / decode


@torch.no_grad()
def encode(
    encoder: nn.Module, images: torch.Tensor, device: torch.device | str = "cpu", batch_size: int = 1000
) -> np.ndarray:
    """uint8 images (N, 28, 28) -> codes (N, d) float32, in eval mode."""
    was_training = encoder.training
    encoder.eval()
    try:
        parts = [
            encoder(to_float(images[i : i + batch_size], device)).float().cpu()
            for i in range(0, len(images), batch_size)
        ]
    finally:
        encoder.train(was_training)
    return torch.cat(parts).numpy()


@torch.no_grad()
def decode(
    decoder: nn.Module, codes: np.ndarray, device: torch.device | str = "cpu", batch_size: int = 1000
) -> np.ndarray:
    """Codes (N, d) -> uint8 images (N, 28, 28) (decoder outputs in [0, 1], rounded)."""
    was_training = decoder.training
    decoder.eval()
    z = torch.as_tensor(np.asarray(codes, dtype=np.float32))
    try:
        parts = [
            decoder(z[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(z), batch_size)
        ]
    finally:
        decoder.train(was_training)
    x = torch.cat(parts).reshape(len(z), 28, 28)
    return x.clamp(0, 1).mul(255).round().to(torch.uint8).numpy()


# -------------------------------------------------------------------------------- samplers


class CodeSampler:
    """A distribution over codes fitted to training codes; `sample(n, rng)` -> (n, d) float32.
    `state()` is the fit as named arrays and `from_state` rebuilds the sampler from them without
    fitting again (the explorer's start-up cache stores them)."""

    name = ""
    fields: tuple[str, ...] = ()  # the fitted parameters: attributes holding arrays

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        return {f: np.asarray(getattr(self, f)) for f in self.fields}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> CodeSampler:
        """The sampler with these fitted parameters; a ConfigError (a ValueError) unless they are all
        there, finite, and of shapes that fit together."""
        missing = [f for f in cls.fields if f not in state]
        check(not missing, f"sampler {cls.name}: no {', '.join(missing)} in its saved state")
        sampler = cls.__new__(cls)
        for f in cls.fields:
            value = np.asarray(state[f])
            ok = value.dtype.kind == "f" and value.size > 0 and bool(np.isfinite(value).all())
            check(ok, f"sampler {cls.name}: {f} is not a non-empty array of finite numbers")
            setattr(sampler, f, value)
        check(sampler._shapes_fit(), f"sampler {cls.name}: parameter shapes do not fit together")
        return sampler

    def _shapes_fit(self) -> bool:
        return True


class UniformSampler(CodeSampler):
    """The report's sampler: each coordinate uniform within the [min, max] range of the codes."""

    name = "uniform"
    fields = ("low", "high")

    def __init__(self, codes: np.ndarray, seed: int = 0, components: int = 10):
        self.low, self.high = codes.min(0), codes.max(0)  # (d,), (d,)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(self.low, self.high, size=(n, len(self.low))).astype(np.float32)

    def _shapes_fit(self) -> bool:
        return self.low.ndim == 1 and self.high.shape == self.low.shape


class GaussianSampler(CodeSampler):
    """One Gaussian with the mean and full covariance of the codes."""

    name = "gaussian"
    fields = ("mean", "cov")

    def __init__(self, codes: np.ndarray, seed: int = 0, components: int = 10):
        self.mean = codes.mean(0).astype(np.float64)
        self.cov = np.cov(codes.astype(np.float64), rowvar=False).reshape(len(self.mean), len(self.mean))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.multivariate_normal(self.mean, self.cov, size=n, method="eigh").astype(np.float32)

    def _shapes_fit(self) -> bool:
        return self.mean.ndim == 1 and self.cov.shape == (len(self.mean),) * 2


class GMMSampler(CodeSampler):
    """scikit-learn's GaussianMixture (full covariances, k components) fitted to the codes; we draw
    from it with our own generator (sklearn's .sample returns the samples sorted by component)."""

    name = "gmm"
    fields = ("weights", "means", "covariances")  # (k,), (k, d), (k, d, d)

    def __init__(self, codes: np.ndarray, seed: int = 0, components: int = 10):
        from sklearn.mixture import GaussianMixture
        from threadpoolctl import threadpool_limits

        check(components >= 1, f"gmm components must be >= 1, got {components}")
        check(len(codes) >= components, f"gmm: {components} components need >= {components} codes")
        gmm = GaussianMixture(components, covariance_type="full", random_state=seed, reg_covar=1e-5)
        # EM solves many tiny (d x d) systems: one BLAS thread is faster than several fighting over
        # them, and the fitted means are the same to float equality.
        with threadpool_limits(1, user_api="blas"):
            gmm.fit(codes.astype(np.float64))
        self.weights, self.means, self.covariances = gmm.weights_, gmm.means_, gmm.covariances_

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        which = rng.choice(len(self.weights), size=n, p=self.weights / self.weights.sum())  # (n,)
        out = np.empty((n, self.means.shape[1]), dtype=np.float64)
        for c in range(len(self.weights)):
            rows = np.flatnonzero(which == c)
            out[rows] = rng.multivariate_normal(
                self.means[c], self.covariances[c], size=len(rows), method="eigh"
            )
        return out.astype(np.float32)

    def _shapes_fit(self) -> bool:
        k, d = len(self.weights), self.means.shape[-1]
        shapes = (self.weights.shape, self.means.shape, self.covariances.shape) == ((k,), (k, d), (k, d, d))
        return shapes and bool((self.weights >= 0).all() and self.weights.sum() > 0)


SAMPLERS: dict[str, type[CodeSampler]] = {
    "uniform": UniformSampler,
    "gaussian": GaussianSampler,
    "gmm": GMMSampler,
}


def fit_sampler(name: str, codes: np.ndarray, seed: int = 0, components: int = 10) -> CodeSampler:
    """Fit sampler `name` to training codes (N, d); unknown names raise a one-line ConfigError."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    check(len(codes) >= 2, f"sampler {name}: need at least 2 codes to fit, got {len(codes)}")
    return SAMPLERS[name](np.asarray(codes, dtype=np.float32), seed=seed, components=components)


# ------------------------------------------------------------------ decoded code samplers


@dataclass(frozen=True)
class SampleRequest:
    sampler: str  # a name from the generator's `samplers`
    n: int
    seed: int = 0
    components: int = 10  # for the gmm sampler
    digit: int | None = None  # conditional generators only: the class to draw (None = equal shares)
    # Generators that solve an ODE only (their `options` name these): network evaluations per sample and
    # the classifier-free guidance weight; None = the run's defaults.
    steps: int | None = None
    guidance: float | None = None

    def __post_init__(self):
        if self.steps is not None:
            check_int(self.steps, "--steps", 1, MAX_SOLVER_STEPS, "network evaluations per sample")
        if self.guidance is not None:
            check_float(self.guidance, "--guidance", 0, 100)
        if self.digit is not None:
            check_int(self.digit, "--digit", 0, 9)
        check_int(self.n, "--n", 1, 1_000_000)
        # Checked here, before any work: scikit-learn's GaussianMixture raised a traceback for a seed
        # outside [0, 2^32 - 1], after the run's codes had been computed.
        check_seed(self.seed, "--seed")
        check_int(self.components, "--components", 1, 1000)


def check_sampler(name: str, known: tuple[str, ...], what: str) -> None:
    if name not in known:
        raise ConfigError(f"unknown sampler {name!r} for a {what} run; choose one of {', '.join(known)}")


class AutoencoderGenerator:
    """Codes drawn from a distribution fitted to the run's training codes, then decoded: the generator
    of any run with an encoder and a decoder. The fitted samplers are kept, so several requests reuse
    one fit. `encoder` maps (B, 1, 28, 28) -> (B, d), `decoder` (B, d) -> (B, 1, 28, 28)."""

    samplers = ("gmm", "gaussian", "uniform")

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        train_images: torch.Tensor,
        device: torch.device,
        batch_size: int = 1000,
    ):
        self.encoder, self.decoder = encoder.to(device).eval(), decoder.to(device).eval()
        self.device = device
        self.batch_size = batch_size
        self.train_images = train_images  # encoded on first use, after the request is checked
        self._train_codes: np.ndarray | None = None
        self._fitted: dict[tuple[str, int, int], Any] = {}

    @property
    def train_codes(self) -> np.ndarray:
        if self._train_codes is None:
            self._train_codes = encode(self.encoder, self.train_images, self.device, self.batch_size)
        return self._train_codes  # (N_train, d)

    def codes(self, request: SampleRequest) -> np.ndarray:
        check_sampler(request.sampler, self.samplers, "code-sampling")
        key = (request.sampler, request.seed, request.components)
        if key not in self._fitted:
            self._fitted[key] = fit_sampler(
                request.sampler, self.train_codes, request.seed, request.components
            )
        return self._fitted[key].sample(request.n, np.random.default_rng(request.seed))

    def sample(self, request: SampleRequest) -> np.ndarray:
        return decode(self.decoder, self.codes(request), self.device, self.batch_size)

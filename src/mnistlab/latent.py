"""Latent-space tools for any encoder/decoder pair: encode and decode in batches, 2-D maps (PCA,
t-SNE with openTSNE, UMAP when umap-learn is installed), cluster-quality numbers for a map, code
samplers (uniform, gaussian, gmm) fitted to training codes, and straight-line interpolation.

Everything takes and returns numpy arrays; nothing here reads run folders or writes files.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from mnistlab.data import to_float
from mnistlab.errors import ConfigError, check, check_int, check_seed

# ------------------------------------------------------------------------- encode / decode


@torch.no_grad()
def encode(
    encoder: nn.Module, images: torch.Tensor, device: torch.device | str = "cpu", batch_size: int = 1000
) -> np.ndarray:
    """uint8 images (N, 28, 28) -> codes (N, d) float32, in eval mode."""
    was_training = encoder.training
    encoder.eval()
    try:
        parts = [encoder(to_float(images[i : i + batch_size], device)).float().cpu() for i in range(0, len(images), batch_size)]  # fmt: skip
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


# -------------------------------------------------------------------------------- 2-D maps


@dataclass(frozen=True)
class TSNEConfig:
    """openTSNE settings, chosen with benchmarks/tsne_speed.py on the 10,000 test codes (results in
    benchmarks/results/tsne_speed.txt): 150 + 200 iterations instead of openTSNE's 250 + 500 (the late
    iterations cost most: the FFT grid grows as the embedding spreads), exact neighbour search (codes
    are low-dimensional: 1.7 s against 11.3 s for Annoy, openTSNE's choice above 1,000 points), PCA
    initialisation. Measured there: 8.5x faster than scikit-learn's TSNE defaults, the same 5-NN
    accuracy in 2-D (0.850 vs 0.853), a lower silhouette (0.206 vs 0.249: looser clusters)."""

    perplexity: float = 30.0
    early_exaggeration_iter: int = 150
    n_iter: int = 200
    negative_gradient_method: str = "auto"  # "fft", "bh" (Barnes-Hut) or "auto" (bh below 10,000 points)
    neighbors: str = "exact"  # "exact", "annoy", "pynndescent" or "auto" (openTSNE's choice)
    n_jobs: int = 1

    def __post_init__(self):
        check(self.perplexity > 0, f"tsne.perplexity must be > 0, got {self.perplexity}")
        check(self.early_exaggeration_iter >= 0 and self.n_iter > 0, "tsne iterations must be >= 0 / > 0")
        check(
            self.negative_gradient_method in ("auto", "fft", "bh"),
            f"tsne.negative_gradient_method must be auto, fft or bh, not {self.negative_gradient_method!r}",
        )
        check(
            self.neighbors in ("exact", "annoy", "pynndescent", "auto"),
            f"tsne.neighbors must be exact, annoy, pynndescent or auto, not {self.neighbors!r}",
        )


def pca_map(codes: np.ndarray, seed: int = 0) -> np.ndarray:
    """The first two principal components: (N, d) -> (N, 2)."""
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(codes).astype(np.float32)


def tsne_map(codes: np.ndarray, seed: int = 0, cfg: TSNEConfig | None = None) -> np.ndarray:
    """openTSNE embedding: (N, d) -> (N, 2)."""
    from openTSNE import TSNE

    cfg = cfg or TSNEConfig()
    perplexity = min(cfg.perplexity, max((len(codes) - 1) / 3.0, 1.0))  # openTSNE needs 3p < N
    tsne = TSNE(
        perplexity=perplexity,
        early_exaggeration_iter=cfg.early_exaggeration_iter,
        n_iter=cfg.n_iter,
        negative_gradient_method=cfg.negative_gradient_method,
        neighbors=cfg.neighbors,
        initialization="pca",
        n_jobs=cfg.n_jobs,
        random_state=seed,
    )
    return np.asarray(tsne.fit(np.ascontiguousarray(codes, dtype=np.float64)), dtype=np.float32)


def umap_available() -> bool:
    return importlib.util.find_spec("umap") is not None


def umap_map(codes: np.ndarray, seed: int = 0) -> np.ndarray:
    """UMAP embedding (needs the optional extra: pip install mnistlab[umap])."""
    if not umap_available():
        raise ConfigError("the umap map needs umap-learn: pip install 'mnistlab[umap]'")
    import umap

    return umap.UMAP(n_components=2, random_state=seed).fit_transform(codes).astype(np.float32)


MAPS: dict[str, Callable[..., np.ndarray]] = {"pca": pca_map, "tsne": tsne_map, "umap": umap_map}


def default_maps() -> tuple[str, ...]:
    return ("pca", "tsne", "umap") if umap_available() else ("pca", "tsne")


def cluster_quality(points: np.ndarray, labels: np.ndarray, k: int = 5, seed: int = 0) -> dict[str, float]:
    """How well the digits separate in `points` (N, m), without eyeballing a plot:
    - silhouette: mean silhouette coefficient with the true labels as clusters (-1..1, higher =
      tighter, better separated digit clusters); on a seeded 5,000-point subset above that size;
    - knn_accuracy: leave-one-out k-nearest-neighbour accuracy (majority vote of the k nearest
      other points, ties to the lowest label)."""
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import NearestNeighbors

    points = np.asarray(points, dtype=np.float64)
    labels = np.asarray(labels)
    check(len(points) > k, f"cluster quality needs more than k={k} points, got {len(points)}")
    size = 5000 if len(points) > 5000 else None
    sil = silhouette_score(points, labels, sample_size=size, random_state=seed)
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
    neighbours = labels[idx[:, 1:]]  # (N, k); column 0 is the point itself (or an exact duplicate)
    votes = np.stack([(neighbours == c).sum(1) for c in range(int(labels.max()) + 1)], axis=1)
    knn = float((votes.argmax(1) == labels).mean())
    return {"silhouette": round(float(sil), 4), "knn_accuracy": round(knn, 4)}


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
        # EM solves many tiny (d x d) systems: one BLAS thread is faster than several fighting over them
        # (measured: 1.7x on 48,000 10-d codes, 2-core EPYC at load 4; the same means to float equality).
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


# ---------------------------------------------------------------------------- interpolation


def interpolate(z0: np.ndarray, z1: np.ndarray, steps: int) -> np.ndarray:
    """Points on the straight line from z0 to z1 (both (d,)), ends included: (steps, d)."""
    check(steps >= 2, f"interpolation needs >= 2 steps, got {steps}")
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]  # (steps, 1)
    return ((1 - t) * z0[None, :] + t * z1[None, :]).astype(np.float32)


def pick_pairs(labels: np.ndarray, n_pairs: int, seed: int = 0) -> list[tuple[int, int]]:
    """n_pairs seeded (i, j) index pairs of images with different labels."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    pairs: list[tuple[int, int]] = []
    if len(np.unique(labels)) < 2:
        return pairs
    while len(pairs) < n_pairs:
        i, j = rng.choice(len(labels), size=2, replace=False)
        if labels[i] != labels[j]:
            pairs.append((int(i), int(j)))
    return pairs


def manifold_grid(codes: np.ndarray, size: int = 15, quantile: float = 0.02) -> np.ndarray:
    """For a 2-D latent: a size x size grid of codes spanning the central part of the codes
    (quantile to 1 - quantile of each axis), row-major with y decreasing: (size * size, 2)."""
    check(codes.shape[1] == 2, f"the decoded manifold needs a 2-D latent, got {codes.shape[1]}-D")
    lo, hi = np.quantile(codes, [quantile, 1 - quantile], axis=0)  # (2,), (2,)
    xs = np.linspace(lo[0], hi[0], size)
    ys = np.linspace(hi[1], lo[1], size)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


# ------------------------------------------------------------------ decoded code samplers


@dataclass(frozen=True)
class SampleRequest:
    sampler: str  # a name from the generator's `samplers`
    n: int
    seed: int = 0
    components: int = 10  # for the gmm sampler
    digit: int | None = None  # conditional generators only: the class to draw (None = equal shares)

    def __post_init__(self):
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
        self, encoder: nn.Module, decoder: nn.Module, train_images: torch.Tensor, device: torch.device,
        batch_size: int = 1000,
    ):  # fmt: skip
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

"""Latent-space maps for any encoder: 2-D maps (PCA, t-SNE with openTSNE, UMAP when umap-learn is
installed), cluster-quality numbers for a map, straight-line interpolation and the decoded manifold
grid of a 2-D latent. (Encoding, decoding and code samplers: models/code_samplers.py.)

Everything takes and returns numpy arrays; nothing here reads run folders or writes files.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from mnistlab.core.errors import ConfigError, check

# -------------------------------------------------------------------------------- 2-D maps


@dataclass(frozen=True)
class TSNEConfig:
    """openTSNE settings, chosen with benchmarks/tsne_speed.py on the 10,000 test codes (results in
    benchmarks/results/tsne_speed.txt): 150 + 200 iterations instead of openTSNE's 250 + 500 (the late
    iterations cost most: the FFT grid grows as the embedding spreads), exact neighbour search (codes
    are low-dimensional, where it beats Annoy, openTSNE's choice above 1,000 points), PCA
    initialisation. Against scikit-learn's TSNE defaults: much faster, the same 5-NN accuracy in 2-D
    (0.850 vs 0.853), a lower silhouette (0.206 vs 0.249: looser clusters)."""

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
    with _quiet("openTSNE"):
        embedding = tsne.fit(np.ascontiguousarray(codes, dtype=np.float64))
    return np.asarray(embedding, dtype=np.float32)


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """A library's INFO lines kept off the console for one call: openTSNE logs its own choices
    ("Precomputed initialization provided. Ignoring initalization-related parameters.", the gradient
    method) at INFO, which mnistlab's INFO console shows; its warnings still pass."""
    target = logging.getLogger(logger)
    before = target.level
    target.setLevel(logging.WARNING)
    try:
        yield
    finally:
        target.setLevel(before)


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

"""Pure metrics of a set of generated images, computed on arrays (the only state: a memo of the last
few k-NN radii by content, and whether this CPU's int8 matmul is exact; neither changes a result):

- FID-MNIST: the Frechet distance between Gaussians fitted to the reference classifier's
  penultimate features of two image sets. It is NOT comparable with Inception FID (other network,
  other features, other scale); only compare FID-MNIST numbers measured with the same reference.
- Precision and recall with k-NN manifolds (Kynkaanniemi et al. 2019, "Improved precision and
  recall metric for assessing generative models"): precision is the share of generated samples
  inside the real manifold (the union of balls around real points, each of radius the distance to
  its k-th nearest real neighbour); recall swaps the roles.
- Class coverage: histogram of the reference's predicted digits, its KL divergence to the uniform
  distribution (0 = every digit equally often; log 10 = 2.303 = one digit only) and mean confidence.
- Nearest-training-image distance: the L2 pixel distance (images in [0, 1]) from each sample to its
  closest training image; near-zero values mean copies (memorisation).
"""

from __future__ import annotations

import functools
import time

import numpy as np
import torch

from mnistlab.core.memo import ContentMemo

FID_NOTE = (
    "FID-MNIST is the Frechet distance on the reference classifier's penultimate features; "
    "it is not comparable with Inception FID"
)


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (N, D), in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need features of shape (N >= 2, D), got {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    tr((S1 S2)^(1/2)) is computed as the sum of square roots of the eigenvalues of the symmetric
    matrix S1^(1/2) S2 S1^(1/2), which has the same spectrum as S1 S2; this avoids the complex
    round-off of a general matrix square root (scipy.linalg.sqrtm) on near-singular covariances.
    """
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # S1^(1/2), (D, D)
    middle = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet distance between the feature sets (Na, D) and (Nb, D)."""
    return frechet_distance(*feature_stats(features_a), *feature_stats(features_b))


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared L2 distances (Na, Nb) via |a|^2 + |b|^2 - 2 a.b (one matmul), clamped at 0."""
    return (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2.0 * a @ b.T).clamp_min_(0.0)


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


# knn_radii of the last few feature sets, by content: the real set's radii recur at every score (each
# GAN epoch, every sampler of the latent study), a quarter of precision/recall's work each time.
_RADII = ContentMemo()


def knn_radii(features: np.ndarray, k: int = 3, chunk: int = 1024) -> np.ndarray:
    """Distance from each point (N, D) to its k-th nearest other point: (N,)."""
    f = torch.as_tensor(np.ascontiguousarray(features, dtype=np.float32))
    if not 1 <= k < len(f):
        raise ValueError(f"k must be in [1, N - 1] = [1, {len(f) - 1}], got {k}")
    return _RADII.get(f.numpy(), lambda: _knn_radii(f, k, chunk), k, chunk).copy()


def _knn_radii(f: torch.Tensor, k: int, chunk: int) -> np.ndarray:
    out = torch.empty(len(f))
    for rows in _chunks(len(f), chunk):
        d = _sq_dists(f[rows], f)
        d[torch.arange(d.shape[0]), torch.arange(rows.start, rows.stop)] = float("inf")  # not itself
        out[rows] = d.topk(k, dim=1, largest=False).values[:, k - 1].sqrt()
    return out.numpy()


def in_manifold(query: np.ndarray, support: np.ndarray, radii: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """For each query point (Nq, D): does it lie in a ball around some support point? (Nq,) bool."""
    q = torch.as_tensor(np.asarray(query, dtype=np.float32))
    s = torch.as_tensor(np.asarray(support, dtype=np.float32))
    r2 = torch.as_tensor(np.asarray(radii, dtype=np.float32)).pow(2)[None, :]  # (1, Ns)
    out = torch.empty(len(q), dtype=torch.bool)
    for rows in _chunks(len(q), chunk):
        out[rows] = (_sq_dists(q[rows], s) <= r2).any(1)
    return out.numpy()


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Kynkaanniemi et al. (2019) precision and recall of `fake` (Nf, D) against `real` (Nr, D)."""
    precision = in_manifold(fake, real, knn_radii(real, k)).mean()
    recall = in_manifold(real, fake, knn_radii(fake, k)).mean()
    return float(precision), float(recall)


def class_coverage(probs: np.ndarray) -> dict[str, object]:
    """Predicted-class histogram (fractions), KL(histogram || uniform) in nats, mean top probability."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or len(p) == 0:
        raise ValueError(f"need probabilities of shape (N >= 1, C), got {p.shape}")
    n_classes = p.shape[1]
    hist = np.bincount(p.argmax(1), minlength=n_classes) / len(p)
    nonzero = hist[hist > 0]
    kl = float((nonzero * np.log(nonzero * n_classes)).sum())  # sum h log(h / (1/C)); 0 log 0 = 0
    return {"class_hist": hist.tolist(), "kl_uniform": kl, "mean_confidence": float(p.max(1).mean())}


def _centred(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 images (N, 28, 28) -> (N, 784) int8 of pixel - 128: differences, hence distances, unchanged."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8:
        raise ValueError(f"need uint8 images, got {x.dtype}")
    return (x.reshape(len(x), -1) ^ 128).view(torch.int8)  # flipping the top bit is p - 128 as int8


@functools.cache  # once per process
def int8_matmul_is_exact() -> bool:
    """Whether torch's int8 matmul sums exactly on this machine. With AVX512-VNNI (or AMX) it does; its
    AVX2 and older kernels add pairs of 8-bit products in 16 bits with saturation (a CPU limited to
    them, e.g. by ONEDNN_MAX_CPU_ISA=AVX2, finds wrong nearest images). Checked once, on
    products of the extreme values 127 and -128 at the search's own sizes, against an int32 matmul."""
    g = torch.Generator().manual_seed(0)
    a = torch.where(torch.rand(256, 784, generator=g) < 0.5, 127, -128).to(torch.int8)
    b = torch.where(torch.rand(784, 512, generator=g) < 0.5, 127, -128).to(torch.int8)
    return hasattr(torch, "_int_mm") and torch.equal(
        torch._int_mm(a, b), a.to(torch.int32) @ b.to(torch.int32)
    )


def _best_seconds(fn, repeats: int = 3) -> float:
    """The fastest of `repeats` timed calls of fn(), after one untimed warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def kernel_seconds() -> dict[str, float]:
    """Seconds of one product of the search's shape (64 x 784 by 784 x 2048) by each kernel, best of
    three: {"int8": ..., "float32": ...}."""
    g = torch.Generator().manual_seed(0)
    q8 = torch.randint(-128, 128, (64, 784), generator=g, dtype=torch.int8)
    s8 = torch.randint(-128, 128, (2048, 784), generator=g, dtype=torch.int8)
    q32, s32 = q8.float(), s8.float()
    return {
        "int8": _best_seconds(lambda: torch._int_mm(q8, s8.T)),
        "float32": _best_seconds(lambda: torch.mm(q32, s32.T)),
    }


@functools.cache  # once per process
def int8_search_pays() -> bool:
    """Whether the nearest-image search should use the int8 matmul here: it must sum exactly
    (`int8_matmul_is_exact`) and beat float32 (`kernel_seconds`, timed once). Exactness alone is not
    enough: without VNNI, oneDNN's exact int8 path can run far slower than
    float32. The choice only picks a kernel: both find the same nearest images."""
    if not int8_matmul_is_exact():
        return False
    seconds = kernel_seconds()
    return seconds["int8"] < seconds["float32"]


def _nearest(q: torch.Tensor, s: torch.Tensor, chunk: int) -> torch.Tensor:
    """Index of the nearest row of s for each row of q, both (N, 784) int8: argmin of |s|^2 - 2 q.s,
    in int32 by the int8 matmul where it sums exactly and pays (`int8_search_pays`; |q.s| <= 784 x
    128^2, far inside int32; ties go to the first), else in float32 (the nearest up to round-off)."""
    exact = int8_search_pays()
    if not exact:
        q, s = q.float(), s.float()  # (Nq, 784), (Ns, 784)
    kind = torch.int32 if exact else torch.float32
    s_norm = torch.cat([c.to(kind, copy=True).pow_(2).sum(1, dtype=kind) for c in s.split(4096)])[None, :]
    matmul = torch._int_mm if exact else torch.mm
    index = torch.empty(len(q), dtype=torch.int64)
    for rows in _chunks(len(q), chunk):
        scores = matmul(q[rows], s.T)  # (rows, Ns) q.s
        index[rows] = torch.add(s_norm, scores, alpha=-2, out=scores).argmin(1)
    return index


def nearest_distances(
    query: torch.Tensor, support: torch.Tensor, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """For each uint8 image in query (Nq, 28, 28): (L2 distance to the closest image of support
    (Ns, 28, 28) in [0, 1] pixel units, the index of that image). (Nq,) float, (Nq,) int64.

    In integers: pixels centred to int8 (p - 128: differences unchanged), the nearest image found by
    an int8 matmul per chunk of queries where that sums exactly and is the faster kernel
    (`int8_search_pays`), float32 elsewhere, and its distance computed exactly, so copies read as 0.
    The int8 path also holds the support as int8 (a quarter of float32's bytes); `python -m
    benchmarks.nearest_images` times both."""
    q, s = _centred(query), _centred(support)  # (Nq, 784), (Ns, 784)
    if len(s) == 0:
        raise ValueError("the support set is empty")
    index = _nearest(q, s, chunk)
    sq = (q.to(torch.int32) - s[index].to(torch.int32)).pow_(2).sum(1)  # (Nq,) exact squared distances
    dist = sq.double().sqrt().div_(255.0).float()
    return dist.numpy(), index.numpy()

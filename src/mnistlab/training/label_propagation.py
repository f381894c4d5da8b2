"""Label propagation over a k-nearest-neighbour graph of the images (Zhou et al. 2004, "Learning with
local and global consistency"; the graph and class-mass normalisation as in Iscen et al. 2019).

The semi task uses it as a prior for its first pseudo-labels: a network trained on 100 labels gives
its first confident labels by the style of the few images it has seen (a crossed 7 read as a 2 when
no labelled 7 is crossed), and those labels, once learned, are seldom undone. Neighbours in pixel
space (PCA) link a style to its class through the images in between, which no labelled image needs
to show. Pure functions: images and the labelled subset in, class probabilities out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

N_CLASSES = 10


@torch.no_grad()
def pca_codes(images: torch.Tensor, dims: int = 50) -> torch.Tensor:
    """(N, dims) unit-length PCA codes of uint8 images (N, 28, 28): the top eigenvectors of the pixel
    covariance (torch.linalg.eigh: deterministic, unlike a randomised PCA), so a resumed run
    recomputes the same graph."""
    x = images.reshape(len(images), -1).double() / 255.0  # (N, 784)
    x = x - x.mean(0)
    cov = x.T @ x / max(len(x) - 1, 1)  # (784, 784)
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    basis = vecs[:, -dims:].flip(1)  # (784, dims), largest first
    return F.normalize((x @ basis).float(), dim=1)


@torch.no_grad()
def knn_graph(codes: torch.Tensor, k: int = 10, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(neighbours (N, k), cosine similarities (N, k)) of each code among the others, in chunks of
    `chunk` rows so that memory stays at chunk x N similarities."""
    n = len(codes)
    k = min(k, n - 1)
    nbrs, sims = [], []
    for start in range(0, n, chunk):
        s = codes[start : start + chunk] @ codes.T  # (chunk, N)
        rows = torch.arange(len(s))
        s[rows, rows + start] = -2.0  # not its own neighbour
        v, j = s.topk(k, dim=1)
        nbrs.append(j)
        sims.append(v)
    return torch.cat(nbrs), torch.cat(sims)


@torch.no_grad()
def propagate(
    codes: torch.Tensor,
    labelled: torch.Tensor,
    labels: torch.Tensor,
    k: int = 10,
    alpha: float = 0.99,
    iterations: int = 30,
    gamma: float = 3.0,
) -> torch.Tensor:
    """(N, 10) class probabilities for every code, the labelled ones (`labelled` (L,) indices with
    `labels` (L,)) spread over the symmetric, normalised k-NN graph (edge weight similarity**gamma):
    F <- alpha * W F + Y, iterated. Each class's total mass is then made equal, so a class whose
    labelled images sit in a dense region does not take its neighbours' images. An image the
    propagation never reached gets the uniform distribution."""
    n = len(codes)
    nbrs, sims = knn_graph(codes, k)
    rows = torch.arange(n).repeat_interleave(nbrs.shape[1])
    weights = sims.clamp_min(0).pow(gamma).reshape(-1)
    w = torch.sparse_coo_tensor(
        torch.stack([rows, nbrs.reshape(-1)]), weights, (n, n), check_invariants=False
    )
    w = (w + w.t()).coalesce()  # symmetric: an edge either way
    degree = torch.zeros(n).index_add_(0, w.indices()[0], w.values())
    scale = degree.clamp_min(1e-12).rsqrt()
    i = w.indices()
    w = torch.sparse_coo_tensor(i, w.values() * scale[i[0]] * scale[i[1]], (n, n), check_invariants=False)
    w = w.coalesce()
    y = torch.zeros(n, N_CLASSES)
    y[labelled, labels.long()] = 1.0
    f = y.clone()
    for _ in range(iterations):
        f = alpha * torch.sparse.mm(w, f) + y
    f = f / f.sum(0, keepdim=True).clamp_min(1e-12)  # equal mass per class
    total = f.sum(1, keepdim=True)
    return torch.where(total > 0, f / total.clamp_min(1e-30), torch.full_like(f, 1.0 / N_CLASSES))

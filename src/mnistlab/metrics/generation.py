"""Scoring any set of generated digits against real ones, and reading/writing sample files.

`score_samples` is the one entry point every generator (autoencoder samplers, the GAN) uses: it
takes uint8 images (N, 28, 28), a `Reference` and the real splits, and returns plain numbers that
name the reference they were measured with. `mnistlab score SAMPLES.npy` wraps it for any file.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib import format as npy_format

from mnistlab.core.errors import ConfigError
from mnistlab.core.fsio import atomic_write_bytes
from mnistlab.data.datasets import DataError, Split
from mnistlab.metrics import scores as gen_metrics
from mnistlab.metrics.reference import Reference, _as_uint8

# The columns of the printed table: (summary key, header, format).
COLUMNS = (
    ("fid_mnist", "FID-MNIST", "{:.2f}"),
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("kl_uniform", "KL(cls|unif)", "{:.3f}"),
    ("mean_confidence", "confidence", "{:.3f}"),
    ("nn_train_dist", "NN-train L2", "{:.2f}"),
)


def _subset(n_total: int, n: int, seed: int) -> torch.Tensor:
    """A seeded random choice of n of n_total indices (all of them, in order, if n >= n_total)."""
    if n >= n_total:
        return torch.arange(n_total)
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def score_samples(
    images,
    reference: Reference,
    real: Split,
    train: Split | None,
    k: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Generation metrics of uint8 images (N, 28, 28) against the real split `real` (usually test):
    FID-MNIST on all of both sets; precision/recall (k-NN, k=`k`) on equal-sized seeded subsets;
    class coverage; and, when `train` is given, each sample's L2 distance to its nearest training
    image (mean, median, min; pixels in [0, 1]).

    Returns {"reference", "fid_note", "n_samples", "n_real", "fid_mnist", "precision", "recall",
    "pr_k", "pr_n", "class_hist", "kl_uniform", "mean_confidence", "nn_train_dist",
    "nn_train_dist_median", "nn_train_dist_min"} (the nn_* keys only with `train`)."""
    x = _as_uint8(images)
    if len(x) < k + 1 or len(real) < k + 1:
        raise DataError(
            f"need at least {k + 1} samples and real images (k={k}), got {len(x)} and {len(real)}"
        )
    fake_f, fake_p = reference.features_and_probs(x)
    real_f = reference.features(real.images)
    n_pr = min(len(x), len(real))
    pr_fake = fake_f[_subset(len(x), n_pr, seed).numpy()]
    pr_real = real_f[_subset(len(real), n_pr, seed + 1).numpy()]
    precision, recall = gen_metrics.precision_recall(pr_real, pr_fake, k)
    out: dict[str, Any] = {
        "reference": reference.name,
        "fid_note": gen_metrics.FID_NOTE,
        "n_samples": len(x),
        "n_real": len(real),
        "fid_mnist": round(gen_metrics.fid(fake_f, real_f), 4),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "pr_k": k,
        "pr_n": n_pr,
    }
    cov = gen_metrics.class_coverage(fake_p)
    out["class_hist"] = [round(h, 4) for h in cov["class_hist"]]
    out["kl_uniform"] = round(cov["kl_uniform"], 4)
    out["mean_confidence"] = round(cov["mean_confidence"], 4)
    if train is not None and len(train):
        dist, _ = gen_metrics.nearest_distances(x, train.images)
        out["nn_train_dist"] = round(float(dist.mean()), 4)
        out["nn_train_dist_median"] = round(float(np.median(dist)), 4)
        out["nn_train_dist_min"] = round(float(dist.min()), 4)
    return out


def score_floor(reference: Reference, test: Split, train: Split, seed: int = 0) -> dict[str, Any]:
    """The test set scored as if generated, against a same-sized random part of the training set
    (and its nearest-neighbour distances against the whole training set): the best a generator
    that draws fresh digits from the data distribution could expect."""
    real = train.take(_subset(len(train), len(test), seed))
    return score_samples(test.images, reference, real, train, seed=seed)


def format_table(rows: dict[str, dict[str, Any]], kind: str = "digits") -> str:
    """A plain-text table: one row per scored set, the COLUMNS plus the share of each class
    (`kind`: "digits" for MNIST, "classes" for a dataset that is not digits)."""
    head = f"{'':<16}" + "".join(f"{h:>14}" for _, h, _ in COLUMNS) + f"   {kind} 0-9 (%)"
    lines = [head]
    for name, s in rows.items():
        cells = "".join(f"{fmt.format(s[k]) if k in s else '-':>14}" for k, _, fmt in COLUMNS)
        hist = " ".join(f"{100 * h:.0f}" for h in s.get("class_hist", []))
        lines.append(f"{name:<16}{cells}   {hist}")
    some = next(iter(rows.values()), {})
    if "digit" in some:  # a one-class request: its share, and what the FID row was measured against
        lines.append(
            f"{100 * some['share_as_digit']:.2f}% read as {some['digit']}; FID-MNIST, precision and "
            f"recall against the {some['n_real']} test images of class {some['digit']}"
        )
    lines.append(f"reference: {some.get('reference', '?')}. {gen_metrics.FID_NOTE}.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- sample files


def load_samples(path: Path) -> np.ndarray:
    """Read a .npy file of uint8 images (N, 28, 28), N >= 1; raise DataError in one line if not.

    The header is checked (dtype, shape, and that the file holds exactly that many bytes) before
    anything is allocated, so a header claiming a huge shape is refused instead of allocated."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with path.open("rb") as f:
            shape, fortran = _npy_header(f, path)
            n = math.prod(shape)
            size = os.fstat(f.fileno()).st_size - f.tell()
            if size != n:
                raise DataError(
                    f"{path}: not a readable .npy file (its header says shape {shape}, {n} bytes of "
                    f"data, but the file holds {size})"
                )
            buf = bytearray(n)
            got = f.readinto(buf)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from e
    if got != n:
        raise DataError(f"{path}: not a readable .npy file (it changed while being read)")
    return np.frombuffer(buf, dtype=np.uint8).reshape(shape, order="F" if fortran else "C")


def _npy_header(f, path: Path) -> tuple[tuple[int, ...], bool]:
    """(shape, fortran_order) of the open .npy file `f`, whose header must describe uint8 images
    (N, 28, 28) with N >= 1; leaves `f` at the start of the data."""
    magic = f.read(6)
    if magic[:2] == b"PK":
        raise DataError(f"{path}: an .npz archive, expected one .npy array")
    if magic != b"\x93NUMPY":
        raise DataError(f"{path}: not a readable .npy file (no NumPy header)")
    f.seek(0)
    try:
        version = npy_format.read_magic(f)
        if version not in ((1, 0), (2, 0)):  # numpy writes 3.0 only for structured dtypes
            raise ValueError(f"format version {version[0]}.{version[1]} unsupported")
        read = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, fortran, dtype = read(f)
    except (ValueError, TypeError, EOFError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__  # numpy's can run to 3 lines
        raise DataError(f"{path}: not a readable .npy file ({reason})") from e
    if dtype.hasobject:
        raise DataError(f"{path}: holds Python objects (pickle); refused, expected a uint8 array")
    if len(shape) != 3 or tuple(shape[1:]) != (28, 28):
        raise DataError(f"{path}: shape {tuple(shape)}, expected (N, 28, 28)")
    if dtype != np.uint8:
        raise DataError(f"{path}: dtype {dtype}, expected uint8 (scale to 0-255 and cast)")
    if shape[0] == 0:
        raise DataError(f"{path}: holds no images")
    return tuple(shape), bool(fortran)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float images in [0, 1], (N, 1, 28, 28) or (N, 28, 28) -> uint8 (N, 28, 28), rounded."""
    x = images.detach().float().cpu().reshape(len(images), 28, 28)
    return x.clamp(0, 1).mul(255).round().to(torch.uint8).numpy()


def check_writable(path: Path, suffix: str = ".npy") -> Path:
    """Fail early, in one line, if `path` cannot be written (before any expensive work)."""
    path = Path(path)
    if path.suffix != suffix:
        raise ConfigError(f"--out {path}: expected a {suffix} file name")
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ConfigError(f"--out {path}: is a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {path}: cannot create {parent} ({e.strerror})") from None
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"--out {path}: not writable")
    return path


def save_samples(path: Path, images: np.ndarray) -> Path:
    """Write uint8 images (N, 28, 28) to a .npy file atomically."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(images, dtype=np.uint8), allow_pickle=False)
    try:
        atomic_write_bytes(Path(path), buf.getvalue())
    except OSError as e:
        raise ConfigError(f"--out {path}: cannot write ({e.strerror})") from None
    return Path(path)

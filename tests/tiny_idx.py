"""Tiny synthetic IDX datasets for the DAE and probe tests: each digit class is a bright block at its
own position over faint noise, so a few epochs learn it; seconds on a CPU."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0x0000 08 <ndim>, big-endian int32 dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_blocks(folder: Path, n_train: int = 200, n_test: int = 60, seed: int = 0) -> Path:
    """Write the four gzip IDX files; labels cycle 0..9 so every class has n/10 images."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = (rng.random((n, 28, 28)) * 40).astype(np.uint8)
        for i, c in enumerate(labels):
            r, col = 3 + 12 * (c // 5), 2 + (c % 5) * 5
            images[i, r : r + 10, col : col + 5] = 255
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            (folder / f"{split}-{kind}-ubyte.gz").write_bytes(gzip.compress(idx_bytes(arr)))
    return folder

"""The reference classifier that every generation metric measures against.

For MNIST, mnistlab ships the weights (`_weights/reference-mnist.safetensors`, trained by
`mnistlab train classifier --preset default`); their SHA-256 is checked in code on every load, so
every run measures with the same network and nothing is downloaded. For any other dataset
(`--data-dir`, or a cached `--dataset`), training/reference.py trains one the first time it is needed
and caches it. Every score names its reference.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from mnistlab.core.memo import ContentMemo
from mnistlab.data.datasets import (
    SPLIT_FILES,
    DataConfig,
    DataError,
    _decompress,
    _find,
    resolve_dir,
    to_float,
)
from mnistlab.models.classifier import ClassifierConfig, DigitCNN
from mnistlab.runs.checkpoint import CheckpointError

log = logging.getLogger("mnistlab")

SHIPPED_FILE = Path(__file__).parents[1] / "_weights" / "reference-mnist.safetensors"
SHIPPED_SHA256 = "45e9fcac9a617b9753276e8dab4d07ae7e8cb618adb7cf9bd1275ec7f9e7739e"
FORMAT = "mnistlab-reference-1"


def _as_uint8(images) -> torch.Tensor:
    """Check and convert images to a uint8 tensor (N, 28, 28); raise DataError in one line if not."""
    t = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if not torch.is_tensor(t):
        raise DataError(f"images must be a numpy array or tensor, got {type(images).__name__}")
    if t.dtype != torch.uint8:
        raise DataError(f"images must be uint8 (0-255), got {str(t.dtype).replace('torch.', '')}")
    if t.ndim != 3 or tuple(t.shape[1:]) != (28, 28):
        raise DataError(f"images must have shape (N, 28, 28), got {tuple(t.shape)}")
    return t


@dataclass
class Reference:
    """A trained classifier in eval mode plus where it came from; maps uint8 images to features."""

    name: str  # e.g. "reference-mnist-3f2a9c1d07b4": names the exact weights
    model: DigitCNN
    source: str  # the file the weights were read from
    test_accuracy: float | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 1000
    _memo: ContentMemo = field(default_factory=ContentMemo, repr=False)  # the same real set recurs

    @torch.no_grad()
    def features_and_probs(self, images) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (N, 28, 28) -> (penultimate features (N, D) float32, class probabilities (N, 10))."""
        x = _as_uint8(images)
        return self._memo.get(x.numpy(), lambda: self._features_and_probs(x))

    def _features_and_probs(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        feats, probs = [], []
        for start in range(0, len(x), self.batch_size):
            out = self.model(to_float(x[start : start + self.batch_size], self.device))
            feats.append(out.features.float().cpu())
            probs.append(out.logits.float().softmax(1).cpu())
        d, c = self.model.cfg.feature_dim, self.model.cfg.n_classes
        f = torch.cat(feats).numpy() if feats else np.zeros((0, d), np.float32)
        p = torch.cat(probs).numpy() if probs else np.zeros((0, c), np.float32)
        return f, p

    def features(self, images) -> np.ndarray:
        return self.features_and_probs(images)[0]

    def probs(self, images) -> np.ndarray:
        return self.features_and_probs(images)[1]


# ------------------------------------------------------------------------- weights files


def read_reference(
    path: Path, sha256: str | None, name: str, device: str | torch.device = "cpu"
) -> Reference:
    """Load a weights file written by export_reference, refusing it if its SHA-256 differs."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read reference weights ({e.strerror})") from e
    digest = hashlib.sha256(raw).hexdigest()
    if sha256 is not None and digest != sha256:
        raise CheckpointError(f"{path}: SHA-256 {digest} does not match the expected {sha256}; refusing it")
    try:
        tensors = st_load(raw)
        header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
        meta = json.loads(header.get("__metadata__", {}).get("mnistlab", "{}"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
        cfg = meta["config"]
        model = DigitCNN(ClassifierConfig(tuple(cfg["channels"]), cfg["feature_dim"], cfg["n_classes"]))
        model.load_state_dict(tensors)
    except (SafetensorError, ValueError, KeyError, RuntimeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not a valid reference weights file ({e})") from e
    device = torch.device(device)
    return Reference(name, model.to(device).eval(), str(path), meta.get("test_accuracy"), device)


def shipped_reference(device: str | torch.device = "cpu") -> Reference:
    """The MNIST reference shipped inside the package (checksum verified)."""
    return read_reference(SHIPPED_FILE, SHIPPED_SHA256, f"reference-mnist-{SHIPPED_SHA256[:12]}", device)


# --------------------------------------------------------------- other datasets: on demand


def dataset_fingerprint(cfg: DataConfig) -> tuple[str, dict[str, str]]:
    """(a short label, SHA-256 of each of the four decompressed IDX files) of the dataset `cfg` names."""
    folder, _ = resolve_dir(cfg)
    sums = {}
    for stem in (s for pair in SPLIT_FILES.values() for s in pair):
        path = _find(folder, stem)
        try:
            sums[stem] = hashlib.sha256(_decompress(path.read_bytes(), str(path))).hexdigest()
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e.strerror})") from e
    label = Path(cfg.data_dir).name if cfg.data_dir else cfg.dataset
    return label or "data", sums

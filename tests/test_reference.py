"""The reference classifier: the shipped MNIST weights (checksum-checked), and references trained on
demand for other datasets and cached by the dataset's checksums."""

from __future__ import annotations

import gzip
import shutil
import struct

import numpy as np
import pytest
import torch

from mnistlab.data.datasets import DataConfig, DataError, embedded_dir, load
from mnistlab.metrics import reference
from mnistlab.metrics.reference import read_reference, shipped_reference
from mnistlab.runs.checkpoint import CheckpointError
from mnistlab.training.reference import load_reference


def write_idx_dataset(folder, n_train=120, n_test=40, seed=0):
    """Four gzip IDX files of random 'digits' whose label is drawn as a bright bar's row."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        images[np.arange(n), 4 + 2 * labels] = 255  # learnable: the bar's row encodes the label
        with gzip.open(folder / f"{stem}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        with gzip.open(folder / f"{stem}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 0x801, n) + labels.tobytes())
    return folder


def test_shipped_reference_is_checked_named_and_accurate():
    ref = shipped_reference()
    assert ref.name == f"reference-mnist-{reference.SHIPPED_SHA256[:12]}"
    assert ref.test_accuracy >= 0.993
    test = load(DataConfig(test_limit=500, train_limit=10)).test
    feats, probs = ref.features_and_probs(test.images)
    assert feats.shape == (500, ref.model.cfg.feature_dim) and feats.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert (probs.argmax(1) == test.labels.numpy()).mean() > 0.98
    np.testing.assert_array_equal(ref.features(test.images.numpy()), feats)  # numpy input, same result


def test_load_reference_for_mnist_uses_the_shipped_weights():
    assert load_reference(DataConfig(train_limit=100)).name == shipped_reference().name


def test_a_tampered_weights_file_is_refused(tmp_path):
    raw = bytearray(reference.SHIPPED_FILE.read_bytes())
    raw[-1] ^= 0xFF
    bad = tmp_path / "ref.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="does not match the expected"):
        read_reference(bad, reference.SHIPPED_SHA256, "x")
    with pytest.raises(CheckpointError, match="not a valid reference"):
        (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
        read_reference(tmp_path / "junk.safetensors", None, "x")


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((3, 28, 28), np.float32), "uint8"),
        (np.zeros((3, 28, 27), np.uint8), r"shape \(N, 28, 28\)"),
        (np.zeros((28, 28), np.uint8), r"shape \(N, 28, 28\)"),
        ([[0]], "numpy array or tensor"),
    ],
)
def test_features_reject_bad_images(images, message):
    with pytest.raises(DataError, match=message):
        shipped_reference().features(images)


def test_reference_for_another_dataset_is_trained_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MNISTLAB_CACHE", str(tmp_path / "cache"))
    folder = write_idx_dataset(tmp_path / "bars")
    cfg = DataConfig(data_dir=str(folder), train_limit=50)
    tiny = ("train.epochs=2", "train.batch_size=32", "model.channels=8,8", "model.feature_dim=16")
    ref = load_reference(cfg, progress=False, overrides=tiny)
    assert ref.name.startswith("reference-bars-")
    assert ref.model.cfg.feature_dim == 16 and ref.test_accuracy is not None
    cached = list((tmp_path / "cache" / "references").iterdir())
    assert len(cached) == 1 and (cached[0] / "summary.json").is_file()
    assert ref.features(torch.zeros(2, 28, 28, dtype=torch.uint8)).shape == (2, 16)

    def no_training(*args, **kwargs):
        raise AssertionError("the cached reference should have been reused")

    monkeypatch.setattr("mnistlab.training.reference.train_classifier", no_training)
    again = load_reference(DataConfig(data_dir=str(folder)), progress=False, overrides=tiny)
    assert again.name == ref.name
    # Another config or other files give another reference (and would train it).
    with pytest.raises(AssertionError, match="reused"):
        load_reference(cfg, progress=False, overrides=(*tiny, "train.seed=1"))
    other = write_idx_dataset(tmp_path / "bars2", seed=1)
    with pytest.raises(AssertionError, match="reused"):
        load_reference(DataConfig(data_dir=str(other)), progress=False, overrides=tiny)


def test_a_folder_holding_mnist_gets_the_shipped_reference(tmp_path, monkeypatch):
    monkeypatch.setenv("MNISTLAB_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "my-mnist"
    shutil.copytree(embedded_dir(), copy)
    assert load_reference(DataConfig(data_dir=str(copy))).name == shipped_reference().name
    assert not (tmp_path / "cache").exists()


def test_missing_data_dir_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_reference(DataConfig(data_dir=str(tmp_path / "nope")))

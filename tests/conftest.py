"""Shared fixtures: synthetic IDX datasets written to a temp folder, and tiny experiment configs."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from mnistlab.data import DataConfig
from mnistlab.models.autoencoder import AEConfig
from mnistlab.training.autoencoder import AEExperiment
from mnistlab.training.loop import TrainConfig


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX: magic 0x0000 08 <ndim>, big-endian int32 dims, then the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_dataset(
    folder: Path, n_train: int = 120, n_test: int = 40, compress: bool = True, seed: int = 0
) -> Path:
    """Four IDX files of blob-like digits: each class is a bright square at its own position."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = (rng.random((n, 28, 28)) * 40).astype(np.uint8)
        for i, c in enumerate(labels):
            r, col = 2 + 2 * (c // 5) * 5, 2 + (c % 5) * 5
            images[i, r : r + 8, col : col + 6] = 255
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            data = idx_bytes(arr)
            name = f"{split}-{kind}-ubyte"
            if compress:
                (folder / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors on a shared 2-core machine: one intra-op thread is several times faster. Modules
    opt in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "idx")


@pytest.fixture
def tiny_exp(idx_dir: Path) -> AEExperiment:
    return AEExperiment(
        data=DataConfig(data_dir=str(idx_dir), val_fraction=0.25),
        model=AEConfig(latent_dim=4),
        train=TrainConfig(epochs=3, batch_size=16, lr=2e-3, device="cpu", eval_batch_size=64),
    )


def with_train(exp, **changes):
    return dataclasses.replace(exp, train=dataclasses.replace(exp.train, **changes))


TINY_RUN_PRESET = Path(__file__).parent / "presets" / "tiny.toml"


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """One seconds-long `mnistlab run` (tests/presets/tiny.toml on MNIST slices, with its 2-point AE
    search), report included; shared by test_run.py and test_report.py, which must not modify it."""
    from mnistlab.pipeline import run_study

    out = tmp_path_factory.mktemp("study") / "run"
    run_study(out, str(TINY_RUN_PRESET), ["run.search=true"], progress=False)
    return out

"""Shared fixtures and helpers: synthetic IDX datasets written to a temp folder, tiny experiment configs,
the tiny studies that several modules read (`mnistlab run`'s, and `mnistlab serve`'s with its explorer,
test client and server), and `assert_one_line_error`."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mnistlab.data.datasets import DataConfig
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


@contextlib.contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors on a shared 2-core machine: one intra-op thread is several times faster. Modules
    opt in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`; session fixtures, which are
    set up before it, use `torch_threads(1)` themselves."""
    with torch_threads(1):
        yield


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
# A seconds-long semi-supervised run on the quick preset (a classifier with an encoder and no
# decoder): 400 MNIST training images (320 train / 80 val), 100 test, 2 epochs of 3 steps.
SEMI_TINY = [
    "data.train_limit=400",
    "data.test_limit=100",
    "train.epochs=2",
    "train.batch_size=128",
    "train.device=cpu",
    "semi.labels_per_class=3",
    "semi.batch_labelled=20",
    "semi.bn_images=200",
    "semi.val_images=50",
]


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """One seconds-long `mnistlab run` (tests/presets/tiny.toml on MNIST slices, with its 2-point AE
    search), report included; shared by test_run.py and test_report.py, which must not modify it."""
    from mnistlab.report.build import write_report
    from mnistlab.study.run import run_study

    out = tmp_path_factory.mktemp("study") / "run"
    run_study(out, str(TINY_RUN_PRESET), ["run.search=true"], progress=False, report=write_report)
    return out


# ------------------------------------------------------------------------ `mnistlab serve`'s study
# Built once for the session and shared by test_serve*.py, which must not modify it: a test that
# changes a run folder changes a copy (tmp_path). Their other helpers are in serve_helpers.py.


@pytest.fixture(scope="session")
def serve_ae_run(tmp_path_factory) -> Path:
    """A tiny `mnistlab train ae` run (MNIST slices, one epoch) with its probe/; copied, never changed."""
    from mnistlab.probe.run import run_probe
    from mnistlab.tasks import load_experiment
    from mnistlab.training.autoencoder import train_autoencoder
    from tests.serve_helpers import AE, PROBE

    out = tmp_path_factory.mktemp("serve-ae") / "ae"
    with torch_threads(1):
        train_autoencoder(load_experiment("ae", "quick", AE), out, progress=False)
        run_probe(out, "quick", PROBE, progress=False)
    return out


@pytest.fixture(scope="session")
def serve_study(serve_ae_run, tmp_path_factory) -> Path:
    """RUN/ae (+ probe/, figures/latent/ maps), RUN/dae, RUN/gan and RUN/report.html: what `mnistlab run`
    writes."""
    from mnistlab.latent import maps as latent
    from mnistlab.latent.run import LatentConfig, run_latent
    from mnistlab.tasks import load_experiment
    from mnistlab.training.denoise import train_dae
    from mnistlab.training.gan_run import train_gan
    from tests.serve_helpers import AE, GAN, REPORT

    root = tmp_path_factory.mktemp("serve-study")
    shutil.copytree(serve_ae_run, root / "ae")
    fast = latent.TSNEConfig(early_exaggeration_iter=30, n_iter=30)
    with torch_threads(1):
        run_latent(
            root / "ae",
            LatentConfig(maps=("pca", "tsne"), n_samples=20, pairs=1, steps=3, score=False, tsne=fast),
        )
        train_dae(load_experiment("dae", "quick", AE), root / "dae", progress=False)
        train_gan(load_experiment("gan", "quick", GAN), root / "gan", progress=False)
    (root / "report.html").write_text(REPORT)
    return root


@pytest.fixture(scope="session")
def explorer(serve_study):
    """The explorer over the whole serve study (a module may override it with its own)."""
    from mnistlab.web.explorer import Explorer

    with torch_threads(1):
        return Explorer(serve_study)


@pytest.fixture(scope="module")
def client(explorer):
    """Starlette's TestClient on the app over `explorer` (the module's own, where it has one)."""
    from starlette.testclient import TestClient

    from mnistlab.web.app import create_app

    with TestClient(create_app(explorer)) as c:
        yield c


@pytest.fixture(scope="module")
def server(explorer):
    """A real uvicorn on 127.0.0.1 serving `explorer`; yields the base URL."""
    from mnistlab.web.app import create_app
    from tests.serve_helpers import running

    with running(create_app(explorer, ["127.0.0.1", "localhost"])) as url:
        yield url


# ---------------------------------------------------------------------------------- one-line errors


def assert_one_line_error(source, match: str = "", *, status: int | None = None) -> str:
    """Assert that `source` is a one-line error holding `match` (a substring); return its message.

    source is one of: pytest's `capsys` after a command failed (the message is its stderr, stripped;
    where the command ran, check its exit code, 2), a `pytest.raises` ExceptionInfo or an exception
    (its str), an HTTP response of the explorer (its JSON "error"), or the message itself. `status` is
    the HTTP status the response (or the explorer's ApiError) must have. A one-line error is not empty
    and holds no line break and no traceback.
    """
    if isinstance(source, pytest.CaptureFixture):
        msg = source.readouterr().err.strip()
    else:
        if isinstance(source, pytest.ExceptionInfo):
            source = source.value
        if status is not None:
            got = getattr(source, "status_code", getattr(source, "status", None))
            assert got == status, (got, getattr(source, "text", str(source))[:300])
        if isinstance(source, BaseException):
            msg = str(source)
        elif hasattr(source, "status_code"):
            msg = source.json()["error"]
        else:
            msg = source
    assert isinstance(msg, str) and msg, repr(msg)
    assert "\n" not in msg and "\r" not in msg and "Traceback" not in msg, msg
    assert match in msg, (match, msg)
    return msg


def not_called(*args):
    """Stands in for a score that must not be computed (monkeypatched over it): fails the test if called."""
    raise AssertionError("score computed where it is not reported")

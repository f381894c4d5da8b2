"""The explorer's start-up cache (web/cache.py): a second start reads the codes, PCA and fitted
samplers back instead of encoding and fitting again, and gives the same answers; a new checkpoint,
other sampler settings or changed data files recompute it; a corrupt or unreadable file is logged and
rebuilt, and a folder that cannot be written still serves. One tiny AE run (synthetic IDX digits, one
epoch) is trained for the module and copied for each test."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save as st_save

import mnistlab.data.datasets
from mnistlab.data.datasets import DataConfig
from mnistlab.models import code_samplers
from mnistlab.models.autoencoder import AEConfig
from mnistlab.runs.checkpoint import read_checkpoint, sidecar_path
from mnistlab.runs.folder import checkpoint_path, read_summary
from mnistlab.training.autoencoder import AEExperiment, train_autoencoder
from mnistlab.training.loop import TrainConfig
from mnistlab.web import cache
from mnistlab.web.explorer import Explorer
from tests.conftest import write_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread", "one_blas_thread")


@pytest.fixture(scope="module")
def one_blas_thread():
    """The GMM fit solves hundreds of tiny triangular systems; on a busy 2-core machine multithreaded
    OpenBLAS takes ~8 ms for each (0.04 ms on one thread), which made each test here 3 s instead of 1."""
    import sklearn.mixture  # noqa: F401  (loads scipy's OpenBLAS, so that the limit reaches it)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    exp = AEExperiment(
        data=DataConfig(data_dir=str(write_dataset(root / "idx")), val_fraction=0.25),
        model=AEConfig(latent_dim=4),
        train=TrainConfig(epochs=1, batch_size=32, device="cpu", eval_batch_size=64),
    )
    train_autoencoder(exp, root / "ae", progress=False)
    return root / "ae"


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A fresh copy of the tiny run, without a cache."""
    return Path(shutil.copytree(trained, tmp_path / "ae"))


@pytest.fixture
def computes(monkeypatch) -> list[int]:
    """How many times the explorer computed its start state (encoded and fitted) since the test began."""
    calls: list[int] = []
    real = cache.compute

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cache, "compute", counted)
    return calls


def _answers(ex: Explorer) -> dict[str, np.ndarray]:
    """What the page shows from the start state: maps, codes, samples, a decoded map click."""
    out = {"pca": ex.maps["pca"], "codes": ex.test_codes, "images": ex.test_images, "labels": ex.test_labels}
    for name in code_samplers.SAMPLERS:
        out[name] = ex.sample(name, 6, seed=3)
    out["click"] = np.asarray(ex.click("pca", 0.1, -0.2)["image"])
    return out


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_a_second_start_reads_the_cache_and_answers_the_same(run, monkeypatch, caplog):
    first = Explorer(run)
    assert (run / cache.FILE).is_file()
    key = json.loads(cache.cache_key(_loaded(run), cache.checkpoint_sha256(run), 0, 10))
    assert key["checkpoint_sha256"] == read_summary(run)["checkpoint_sha256"]

    def refuse(*args, **kwargs):
        raise AssertionError("the second start encoded or fitted again, or read the training images")

    for target, name in (
        (cache, "compute"),
        (code_samplers, "encode"),
        (code_samplers, "fit_sampler"),
        (mnistlab.data.datasets, "load"),
    ):
        monkeypatch.setattr(target, name, refuse)
    with caplog.at_level(logging.INFO, logger="mnistlab"):
        second = Explorer(run)
    assert "read from" in caplog.text and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    _same(_answers(first), _answers(second))
    assert (
        set(second.samplers) == set(code_samplers.SAMPLERS)
        and second.info()["panels"]["samplers"]["available"]
    )


def _loaded(run: Path):
    from mnistlab import tasks

    return tasks.load_run(run, role="encoder")


def _new_checkpoint(run: Path) -> None:
    """Replace the run's checkpoint by one with other weights, recorded as training records it (the
    sidecar and summary.json), as a resumed or retrained run would."""
    path = checkpoint_path(run)
    tensors, state = read_checkpoint(path)
    tensors = {
        k: v * 1.5 if k.startswith("module/") and v.is_floating_point() else v for k, v in tensors.items()
    }
    data = st_save(tensors, metadata={"state": json.dumps(state, sort_keys=True)})
    sha = hashlib.sha256(data).hexdigest()
    path.write_bytes(data)
    sidecar_path(path).write_text(sha + "\n")
    summary = read_summary(run)
    (run / "summary.json").write_text(json.dumps({**summary, "checkpoint_sha256": sha}))


def test_a_new_checkpoint_invalidates_the_cache(run, computes):
    before = Explorer(run).test_codes
    _new_checkpoint(run)
    after = Explorer(run)
    assert len(computes) == 2 and not np.array_equal(before, after.test_codes)
    stored = json.loads(_metadata(run)["key"])
    assert stored["checkpoint_sha256"] == read_summary(run)["checkpoint_sha256"]
    np.testing.assert_array_equal(Explorer(run).test_codes, after.test_codes)  # the rebuilt cache is used
    assert len(computes) == 2


@pytest.mark.parametrize("change", ["seed", "components", "data file"])
def test_other_settings_or_data_recompute(run, computes, change):
    Explorer(run)
    if change == "data file":
        assert json.loads(_metadata(run)["key"])["data_files"]  # a --data-dir folder: its files are keyed
        test_file = next(Path(_loaded(run).exp.data.data_dir).glob("t10k-images*"))
        os.utime(test_file, ns=(test_file.stat().st_atime_ns, test_file.stat().st_mtime_ns + 10**9))
        Explorer(run)
    else:
        Explorer(run, **{change: 3})
    assert len(computes) == 2


def _metadata(run: Path) -> dict[str, str]:
    raw = (run / cache.FILE).read_bytes()
    return json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])["__metadata__"]


CORRUPTIONS = {
    "empty": lambda b: b"",
    "truncated": lambda b: b[: len(b) // 2],
    "garbage": lambda b: os.urandom(300),
    "a flipped data byte": lambda b: b[:-1] + bytes([b[-1] ^ 0x40]),
    "a bad header": lambda b: (50).to_bytes(8, "little") + b"{not json" + b[17:],
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS)
def test_a_corrupt_cache_is_rebuilt(run, computes, caplog, corrupt):
    expected = _answers(Explorer(run))
    path = run / cache.FILE
    path.write_bytes(CORRUPTIONS[corrupt](path.read_bytes()))
    with caplog.at_level(logging.INFO, logger="mnistlab"):
        ex = Explorer(run)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(computes) == 2 and len(warnings) == 1, warnings
    assert "corrupt" in warnings[0] and "rebuilding" in warnings[0] and "\n" not in warnings[0]
    _same(_answers(ex), expected)
    Explorer(run)  # the rebuilt file is read back
    assert len(computes) == 2


def test_a_read_only_run_folder_still_serves(run, computes, monkeypatch, caplog):
    """Without a cache the explorer computes and serves, with one log line; with one it reads it.
    (The tests may run as root, whom file modes do not stop: the write is refused by hand too.)"""

    def read_only(path, data):
        raise PermissionError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(cache, "atomic_write_bytes", read_only)
    run.chmod(0o555)
    try:
        with caplog.at_level(logging.INFO, logger="mnistlab"):
            ex = Explorer(run)
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "not written" in warnings[0] and "Read-only" in warnings[0]
        assert not (run / cache.FILE).exists() and ex.sample("gmm", 2, 0).shape == (2, 28, 28)
        assert ex.info()["panels"]["map"]["available"]
    finally:
        run.chmod(0o755)
    monkeypatch.undo()  # writable again: build the cache, then serve it from a read-only folder
    Explorer(run)
    monkeypatch.setattr(cache, "atomic_write_bytes", read_only)
    run.chmod(0o555)
    try:
        caplog.clear()
        before = len(computes)
        with caplog.at_level(logging.INFO, logger="mnistlab"):
            Explorer(run)
        assert len(computes) == before and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        run.chmod(0o755)


def test_an_unreadable_cache_is_one_line_and_the_server_starts(run, caplog):
    (run / cache.FILE).mkdir()  # there, but no file to read (nor to replace)
    with caplog.at_level(logging.INFO, logger="mnistlab"):
        ex = Explorer(run)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "unreadable" in warnings[0], warnings
    assert ex.ae is not None and set(ex.samplers) == set(code_samplers.SAMPLERS)


def test_a_checkpoint_replaced_while_loading_is_not_cached(run, computes, monkeypatch):
    hashes = iter(["a" * 64, "b" * 64])
    monkeypatch.setattr(cache, "checkpoint_sha256", lambda run_dir: next(hashes))
    Explorer(run)
    assert len(computes) == 1 and not (run / cache.FILE).exists()


def test_sampler_state_round_trips_and_refuses_bad_shapes():
    codes = np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32)
    for name, cls in code_samplers.SAMPLERS.items():
        fitted = code_samplers.fit_sampler(name, codes, components=2)
        again = cls.from_state(fitted.state())
        rng = lambda: np.random.default_rng(5)  # noqa: E731
        np.testing.assert_array_equal(fitted.sample(7, rng()), again.sample(7, rng()))
        state = again.state()
        state[cls.fields[-1]] = state[cls.fields[-1]][..., :-1]  # one number short
        with pytest.raises(ValueError):
            cls.from_state(state)
    with pytest.raises(ValueError, match="not finite|finite numbers"):
        code_samplers.GaussianSampler.from_state({"mean": np.array([np.nan]), "cov": np.ones((1, 1))})

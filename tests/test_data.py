"""The IDX reader, dataset loading, checksums, downloads and batching."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistlab import data as D
from mnistlab.data import DataConfig, DataError
from tests.conftest import idx_bytes, write_dataset

VALID = idx_bytes(np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28) % 251)


def test_embedded_mnist_loads_verified_with_seeded_split():
    d = D.load(DataConfig(train_limit=1000))
    assert d.train.images.dtype == torch.uint8 and d.train.images.shape[1:] == (28, 28)
    assert len(d.train) == 800 and len(d.val) == 200 and len(d.test) == 10_000
    again = D.load(DataConfig(train_limit=1000))
    assert torch.equal(d.val.labels, again.val.labels)
    other = D.load(DataConfig(train_limit=1000, split_seed=1))
    assert not torch.equal(d.val.labels, other.val.labels)
    assert d.source.endswith("mnist")


def test_embedded_checksum_mismatch_is_refused(tmp_path):
    (tmp_path / "mnist").mkdir()
    write_dataset(tmp_path / "mnist")
    with pytest.raises(DataError, match="sha256 .* does not match"):
        D.read_split(tmp_path / "mnist", "train", D.DATASETS["mnist"].checksums)


def test_data_dir_raw_and_gzip(tmp_path):
    for compress in (True, False):
        folder = write_dataset(tmp_path / f"c{compress}", compress=compress)
        d = D.load(DataConfig(data_dir=str(folder), val_fraction=0.0))
        assert len(d.train) == 120 and len(d.test) == 40 and len(d.val) == 0


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b"\x01" + b[1:], "bad magic"),
        (lambda b: b[:2] + b"\x0d" + b[3:], "element type"),
        (lambda b: b[:3] + b"\x02" + b[4:], "2 dimensions, expected 3"),
        (lambda b: b[:-5], "truncated"),
        (lambda b: b + b"\x00\x00", "trailing bytes"),
        (lambda b: b[:10], "header truncated"),
        (lambda b: b[:2], "too short"),
    ],
)
def test_corrupt_idx_names_file_and_problem(mutate, message):
    with pytest.raises(DataError, match=message) as e:
        D.parse_idx(mutate(VALID), 3, "some/file-idx3-ubyte")
    assert "some/file-idx3-ubyte" in str(e.value)


def test_truncated_gzip_and_mismatched_counts(tmp_path):
    folder = write_dataset(tmp_path / "d")
    img = folder / "train-images-idx3-ubyte.gz"
    img.write_bytes(img.read_bytes()[:-20])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: truncated gzip"):
        D.read_split(folder, "train")
    folder = write_dataset(tmp_path / "e")
    labels = np.zeros(7, dtype=np.uint8)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(DataError, match="120 train images but 7 labels"):
        D.read_split(folder, "train")


def test_wrong_image_size_and_labels(tmp_path):
    folder = write_dataset(tmp_path / "d")
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((40, 32, 32)))))
    with pytest.raises(DataError, match="expected 28x28"):
        D.read_split(folder, "test")
    folder = write_dataset(tmp_path / "e")
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.full(40, 12))))
    with pytest.raises(DataError, match="labels must be 0-9"):
        D.read_split(folder, "test")


def test_missing_files_and_folder(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        D.load(DataConfig(data_dir=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no train-images-idx3-ubyte"):
        D.load(DataConfig(data_dir=str(tmp_path / "empty")))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(0, len(VALID) - 1), extra=st.binary(min_size=1, max_size=16))
def test_truncation_or_trailing_bytes_always_raise(cut, extra):
    for corrupted in (VALID[:cut], VALID + extra):
        with pytest.raises(DataError):
            D.parse_idx(corrupted, 3, "f")


@settings(max_examples=200, deadline=None)
@given(pos=st.integers(0, 15), value=st.integers(0, 255))
def test_header_corruption_never_escapes_as_another_error(pos, value):
    corrupted = VALID[:pos] + bytes([value]) + VALID[pos + 1 :]
    try:
        arr = D.parse_idx(corrupted, 3, "f")
    except DataError:
        return
    assert arr.size == len(corrupted) - 16  # a header that still parses must describe the data exactly


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=64))
def test_random_bytes_give_data_error_or_valid_array(data):
    try:
        D.parse_idx(D._decompress(data, "f"), 1, "f")
    except DataError:
        pass


def test_unknown_dataset_and_missing_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MNISTLAB_CACHE", str(tmp_path))
    with pytest.raises(DataError, match="mnistlab data download fashion-mnist"):
        D.load(DataConfig(dataset="fashion-mnist"))
    with pytest.raises(DataError, match="unknown dataset"):
        D.load(DataConfig(dataset="cifar"))


class _Server:
    """Serves a folder over HTTP on 127.0.0.1 with an ephemeral port."""

    def __init__(self, folder: Path):
        handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder), **k)  # noqa: E731
        http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _registry(folder: Path, url: str, kind: str) -> dict[str, D.RemoteDataset]:
    sums = {}
    for path in folder.glob("*.gz"):
        payload = path.read_bytes()
        digest = (
            hashlib.sha256(gzip.decompress(payload)).hexdigest()
            if kind == "sha256"
            else hashlib.md5(payload).hexdigest()
        )
        sums[path.name[:-3]] = f"{kind}:{digest}"
    return {"toy": D.RemoteDataset(url, sums)}


@pytest.mark.parametrize("kind", ["sha256", "md5"])
def test_download_from_local_server_verifies_and_loads(tmp_path, kind):
    served = write_dataset(tmp_path / "served")
    server = _Server(served)
    try:
        registry = _registry(served, server.url, kind)
        dest = D.download("toy", tmp_path / "cache", registry=registry)
        assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in served.iterdir())
        assert len(D.load(DataConfig(data_dir=str(dest))).test) == 40
        # A file corrupted on the server is refused and nothing is written for it.
        (served / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.ones(40))))
        fresh = tmp_path / "cache2"
        with pytest.raises(DataError, match="t10k-labels.*refused"):
            D.download("toy", fresh, registry=registry)
        assert not (fresh / "t10k-labels-idx1-ubyte.gz").exists()
        assert not [p for p in fresh.iterdir() if p.name.endswith(".tmp")]
    finally:
        server.close()


def test_download_offline_says_what_to_do(tmp_path):
    registry = {"toy": D.RemoteDataset("http://127.0.0.1:9/", {"train-images-idx3-ubyte": "md5:00"})}
    with pytest.raises(DataError, match="--data-dir"):
        D.download("toy", tmp_path, registry=registry, timeout=2)


def test_batches_cover_everything_once_and_to_float():
    idx = torch.cat(list(D.batches(103, 10, torch.Generator().manual_seed(0))))
    assert sorted(idx.tolist()) == list(range(103))
    x = D.to_float(torch.full((4, 28, 28), 255, dtype=torch.uint8))
    assert x.shape == (4, 1, 28, 28) and x.dtype == torch.float32 and float(x.max()) == 1.0


def test_add_noise_is_seeded_and_clips():
    x = torch.rand(8, 1, 28, 28)
    a = D.add_noise(x, 1.0, clip=True, generator=torch.Generator().manual_seed(3))
    b = D.add_noise(x, 1.0, clip=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    assert D.add_noise(x, 1.0, clip=False).min() < 0

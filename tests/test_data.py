"""The IDX reader, dataset loading, checksums, downloads and batching."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mnistlab.data import datasets as D
from mnistlab.data.datasets import DataConfig, DataError
from tests.conftest import assert_one_line_error, idx_bytes, write_dataset

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


def _parse_traced(data: bytes, ndim: int):
    """parse_idx's array (or its DataError) and the peak memory allocated while parsing."""
    tracemalloc.start()
    try:
        return D.parse_idx(data, ndim, "some/f-idx"), tracemalloc.get_traced_memory()[1]
    except DataError as e:
        return e, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# Dimensions small enough to match a body, or large enough to overflow a 64-bit product of three.
DIM = st.one_of(st.integers(0, 3), st.sampled_from([28, 2**20, 2**22, 2**31, 2**32 - 1]))


@settings(max_examples=80, deadline=None)
@example(magic=b"\0\0\x08", dims=[2**22, 2**22, 2**20], ndim=3, body=b"")  # 2^64 bytes: int64 wraps to 0
@example(magic=b"\0\0\x08", dims=[2**32 - 1] * 3, ndim=3, body=b"\0")
@given(
    magic=st.one_of(st.just(b"\0\0\x08"), st.binary(min_size=3, max_size=3)),
    dims=st.lists(DIM, min_size=1, max_size=3),
    ndim=st.integers(1, 3),
    body=st.binary(max_size=64),
)
def test_random_idx_headers_load_or_give_a_one_line_data_error(magic, dims, ndim, body):
    data = magic + bytes([len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + body
    result, peak = _parse_traced(data, ndim)
    assert peak < 1 << 20  # nothing sized from the header is allocated
    if isinstance(result, DataError):
        assert_one_line_error(result, "some/f-idx")
    else:
        assert result.shape == tuple(dims) and result.tobytes() == body


def test_huge_dimensions_report_the_exact_byte_count():
    dims = (2**32 - 1,) * 3
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in dims)
    with pytest.raises(DataError, match=f"need {(2**32 - 1) ** 3} bytes, got 5"):
        D.parse_idx(header + bytes(5), 3, "f")


@pytest.mark.parametrize(
    "n_train, changes",
    [
        (120, {"train_limit": 1, "val_fraction": 0.9}),
        (120, {"val_fraction": 0.999}),
        (0, {"val_fraction": 0.0}),
    ],
)
def test_an_empty_training_split_is_refused_in_one_line(tmp_path, n_train, changes):
    folder = write_dataset(tmp_path / "d", n_train=n_train)
    with pytest.raises(DataError, match="no training images left") as e:
        D.load(DataConfig(data_dir=str(folder), **changes))
    assert_one_line_error(e, str(folder))


def test_training_on_an_empty_split_exits_2_before_writing_a_run(idx_dir, tmp_path, capsys):
    from mnistlab import cli

    out = tmp_path / "run"
    argv = [
        "-q",
        "train",
        "ae",
        "--preset",
        "quick",
        "--data-dir",
        str(idx_dir),
        "--out",
        str(out),
        "--set",
        "data.train_limit=1",
        "--set",
        "data.val_fraction=0.9",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert cli.main(argv) == 2
    assert_one_line_error(capsys, "no training images left")
    assert not (out / "summary.json").exists()


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

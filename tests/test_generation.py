"""score_samples and `mnistlab score`: real digits score well, noise scores badly, bad files fail in
one line."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from numpy.lib import format as npy_format

from mnistlab import cli
from mnistlab.data.datasets import DataConfig, DataError, load
from mnistlab.latent.sample import score_file
from mnistlab.metrics.generation import (
    check_writable,
    format_table,
    load_samples,
    score_floor,
    score_samples,
)
from mnistlab.metrics.reference import shipped_reference
from tests.conftest import assert_one_line_error


@pytest.fixture(scope="module")
def small():
    data = load(DataConfig(train_limit=1500, test_limit=400, val_fraction=0.0))
    return data, shipped_reference()


def test_real_digits_score_far_better_than_noise(small):
    data, ref = small
    real = data.test.take(slice(0, 200))
    held_out = data.test.images[200:400]
    good = score_samples(held_out, ref, real, data.train)
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (200, 28, 28), generator=g, dtype=torch.uint8)
    bad = score_samples(noise, ref, real, data.train)
    assert good["reference"] == ref.name and "not comparable with Inception FID" in good["fid_note"]
    assert good["fid_mnist"] < bad["fid_mnist"] / 5
    assert good["precision"] > 0.5 and bad["precision"] < 0.05
    assert good["recall"] > 0.5 and bad["recall"] < 0.05
    assert good["kl_uniform"] < 0.2 and sum(good["class_hist"]) == pytest.approx(1.0, abs=1e-3)
    assert good["nn_train_dist"] < bad["nn_train_dist"]
    assert good["n_samples"] == 200 and good["pr_n"] == 200


def test_copies_of_training_images_show_zero_distance(small):
    data, ref = small
    copies = data.train.images[:50]
    scores = score_samples(copies, ref, data.test, data.train)
    assert scores["nn_train_dist"] == 0.0 and scores["nn_train_dist_min"] == 0.0
    assert "nn_train_dist" not in score_samples(copies, ref, data.test, None)


def test_one_digit_only_shows_in_coverage(small):
    data, ref = small
    ones = data.test.images[data.test.labels == 1][:40]
    scores = score_samples(ones, ref, data.test, None)
    assert scores["class_hist"][1] > 0.95
    assert scores["kl_uniform"] > 2.0  # log(10) = 2.30 for a single class
    assert scores["recall"] < 0.3


def test_floor_and_table(small):
    data, ref = small
    floor = score_floor(ref, data.test.take(slice(0, 150)), data.train)
    assert floor["n_real"] == 150 and floor["precision"] > 0.5
    text = format_table({"test (floor)": floor})
    assert "FID-MNIST" in text and ref.name in text and "Inception" in text


def test_too_few_samples(small):
    data, ref = small
    with pytest.raises(DataError, match="at least 4"):
        score_samples(data.test.images[:3], ref, data.test, None)


@pytest.mark.parametrize(
    "writer, message",
    [
        (lambda p: None, "no such file"),
        (lambda p: np.save(p, np.zeros((4, 28, 28), np.float32)), "dtype float32, expected uint8"),
        (lambda p: np.save(p, np.zeros((4, 784), np.uint8)), r"shape \(4, 784\)"),
        (lambda p: np.save(p, np.zeros((0, 28, 28), np.uint8)), "holds no images"),
        (lambda p: np.save(p, np.array([{"a": 1}], dtype=object)), "pickle"),
        (lambda p: p.write_bytes(b"not numpy at all"), "not a readable .npy file"),
        (
            lambda p: (
                np.savez(p.with_suffix(""), a=np.zeros((4, 28, 28), np.uint8))
                or p.with_suffix(".npz").rename(p)
            ),
            ".npz archive",
        ),
        (
            lambda p: np.save(p, np.zeros((4, 28, 28), np.uint8)) or p.write_bytes(p.read_bytes()[:-100]),
            "not a readable .npy file",
        ),
    ],
)
def test_bad_sample_files(tmp_path, writer, message):
    path = tmp_path / "s.npy"
    writer(path)
    with pytest.raises(DataError, match=message):
        load_samples(path)


def test_an_oversized_npy_header_is_a_one_line_error(tmp_path):
    # numpy refuses headers over 10,000 bytes with a three-line message: one line of it is kept.
    path = tmp_path / "s.npy"
    _npy_with_header(path, (1, 28, 28), version=(2, 0), body=b"\0" * 784, pad=70_000)
    with pytest.raises(DataError, match="not a readable .npy file") as e:
        load_samples(path)
    assert "\n" not in str(e.value)


def _npy_with_header(path, shape, version=(1, 0), descr="|u1", body=b"\0" * 64, pad=0):
    """A .npy file whose header claims `shape`, followed by `body` (not the data that shape needs);
    `pad` adds an unused key of that many characters to the header."""
    header = {"descr": descr, "fortran_order": False, "shape": shape, **({"pad": "x" * pad} if pad else {})}
    write = npy_format.write_array_header_1_0 if version == (1, 0) else npy_format.write_array_header_2_0
    with path.open("wb") as f:
        write(f, header)
        f.write(body)


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
@pytest.mark.parametrize("shape", [(2**40, 28, 28), (2**62, 28, 28), (1, 28, 28)])
def test_a_header_claiming_another_size_is_refused_before_allocating(tmp_path, version, shape):
    path = tmp_path / "s.npy"
    _npy_with_header(path, shape, version)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"not a readable \.npy file \(its header says shape") as e:
            load_samples(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert_one_line_error(e, str(path))


def test_header_dtype_and_trailing_bytes_and_fortran_order(tmp_path):
    path = tmp_path / "s.npy"
    _npy_with_header(path, (2**40, 28, 28), descr="<f8")
    with pytest.raises(DataError, match="dtype float64, expected uint8"):
        load_samples(path)
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28).astype(np.uint8)
    np.save(path, images)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(DataError, match="the file holds 2353"):
        load_samples(path)
    np.save(path, np.asfortranarray(images))
    loaded = load_samples(path)
    assert np.array_equal(loaded, images) and loaded.flags.writeable


def test_check_writable(tmp_path):
    assert check_writable(tmp_path / "new" / "x.npy") == tmp_path / "new" / "x.npy"
    from mnistlab.core.errors import ConfigError

    with pytest.raises(ConfigError, match="expected a .npy"):
        check_writable(tmp_path / "x.png")
    (tmp_path / "d.npy").mkdir()
    with pytest.raises(ConfigError, match="is a folder"):
        check_writable(tmp_path / "d.npy")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot create"):
        check_writable(tmp_path / "file" / "x.npy")


def test_cli_score(tmp_path, small, capsys):
    data, _ = small
    path = tmp_path / "samples.npy"
    np.save(path, data.test.images[:64].numpy())
    assert cli.main(["score", str(path), "--json", str(tmp_path / "s.json"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "FID-MNIST" in out and "reference-mnist-" in out
    assert '"fid_mnist"' in (tmp_path / "s.json").read_text()


def test_samples_of_one_digit_are_scored_against_that_digit(tmp_path, small):
    data, _ = small
    cfg = DataConfig(train_limit=1500, test_limit=400, val_fraction=0.0)
    path = tmp_path / "sevens.npy"
    np.save(path, data.train.images[data.train.labels == 7][:60].numpy())  # real sevens, not test images
    as_seven, as_any = score_file(path, cfg, digit=7, progress=False), score_file(path, cfg, progress=False)
    assert as_seven["n_real"] == int((data.test.labels == 7).sum()) < as_any["n_real"] == 400
    assert as_seven["fid_mnist"] < as_any["fid_mnist"] / 3  # sevens look like sevens, not like all digits
    assert as_seven["digit"] == 7 and as_seven["share_as_digit"] == as_seven["class_hist"][7] > 0.9
    assert "read as 7" in format_table({"sevens": as_seven}) and "read as" not in format_table({"x": as_any})


def test_cli_score_bad_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "bad.npy"
    np.save(path, np.zeros((5, 28, 28), np.int16))
    assert cli.main(["score", str(path)]) == 2
    assert_one_line_error(capsys, "expected uint8")
    assert cli.main(["score", str(path), "--k", "0"]) == 2

"""The pure generation metrics against closed forms and brute force, on small random arrays."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mnistlab.metrics import scores as gm


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_frechet_distance_matches_scipy_sqrtm():
    rng = _rng()
    a, b = rng.normal(size=(400, 6)), rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 0.5
    mu1, s1 = gm.feature_stats(a)
    mu2, s2 = gm.feature_stats(b)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert gm.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)


def test_fid_of_shifted_copy_is_the_squared_shift_and_zero_for_itself():
    f = _rng(1).normal(size=(500, 8))
    assert gm.fid(f, f) == pytest.approx(0.0, abs=1e-6)
    shift = np.arange(8) * 0.1
    assert gm.fid(f, f + shift) == pytest.approx((shift**2).sum(), rel=1e-6)


def test_fid_one_dimensional_closed_form():
    # Two 1-D Gaussians: (m1 - m2)^2 + (s1 - s2)^2.
    mu1, mu2 = np.array([1.0]), np.array([3.0])
    s1, s2 = np.array([[4.0]]), np.array([[9.0]])
    assert gm.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(4.0 + 1.0)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_fid_is_symmetric_and_non_negative(seed):
    rng = _rng(seed)
    a, b = rng.normal(size=(40, 4)), rng.normal(size=(30, 4)) * rng.uniform(0.1, 3)
    ab, ba = gm.fid(a, b), gm.fid(b, a)
    assert ab >= -1e-9
    assert ab == pytest.approx(ba, rel=1e-6, abs=1e-9)


def test_feature_stats_rejects_one_sample():
    with pytest.raises(ValueError, match="N >= 2"):
        gm.feature_stats(np.zeros((1, 3)))


def test_knn_radii_on_a_line():
    pts = np.array([[0.0], [1.0], [3.0], [6.0]])
    assert gm.knn_radii(pts, k=1).tolist() == [1.0, 1.0, 2.0, 3.0]
    assert gm.knn_radii(pts, k=2).tolist() == [3.0, 2.0, 3.0, 5.0]
    with pytest.raises(ValueError, match="k must be"):
        gm.knn_radii(pts, k=4)


def test_knn_radii_chunks_agree_with_one_block():
    f = _rng(2).normal(size=(130, 5))
    np.testing.assert_allclose(gm.knn_radii(f, 3, chunk=7), gm.knn_radii(f, 3, chunk=1000), rtol=1e-5)


def test_precision_recall_identical_disjoint_and_collapsed():
    rng = _rng(3)
    real = rng.normal(size=(300, 4)).astype(np.float32)
    assert gm.precision_recall(real, real.copy()) == (1.0, 1.0)
    far = real + 100.0
    assert gm.precision_recall(real, far) == (0.0, 0.0)
    # Mode collapse: every fake sits in one small part of the real cloud -> precise, low recall.
    collapsed = real[real[:, 0] > 1.0][:40]
    collapsed = np.repeat(collapsed, 8, axis=0)[:300] + rng.normal(scale=1e-3, size=(300, 4))
    precision, recall = gm.precision_recall(real, collapsed.astype(np.float32))
    assert precision > 0.9 and recall < 0.4


def test_class_coverage_uniform_and_single_class():
    uniform = np.eye(10)[np.arange(100) % 10]
    cov = gm.class_coverage(uniform)
    assert cov["kl_uniform"] == pytest.approx(0.0)
    assert cov["class_hist"] == [0.1] * 10
    assert cov["mean_confidence"] == pytest.approx(1.0)
    ones = np.full((50, 10), 0.02)
    ones[:, 1] = 0.82
    cov = gm.class_coverage(ones)
    assert cov["kl_uniform"] == pytest.approx(math.log(10))
    assert cov["class_hist"][1] == 1.0
    assert cov["mean_confidence"] == pytest.approx(0.82)


def test_nearest_distances_finds_copies_exactly_and_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (200, 28, 28), generator=g, dtype=torch.uint8)
    query = torch.cat([train[[5, 17]], torch.randint(0, 256, (30, 28, 28), generator=g, dtype=torch.uint8)])
    dist, index = gm.nearest_distances(query, train, chunk=8)
    assert dist[0] == 0.0 and dist[1] == 0.0
    assert index[:2].tolist() == [5, 17]
    brute = torch.cdist(query.reshape(32, -1).double() / 255, train.reshape(200, -1).double() / 255)
    np.testing.assert_allclose(dist, brute.min(1).values.numpy(), rtol=1e-5)


def test_nearest_distances_is_exact_at_the_pixel_extremes_and_picks_the_brute_force_index():
    # All-0 and all-255 images: the largest products the int8 matmul sums (no int32 overflow).
    black, white = torch.zeros(1, 28, 28, dtype=torch.uint8), torch.full((1, 28, 28), 255, dtype=torch.uint8)
    dist, index = gm.nearest_distances(torch.cat([white, black]), torch.cat([black, black, white]))
    assert dist.tolist() == [0.0, 0.0] and index.tolist() == [2, 0]  # ties go to the first
    dist, _ = gm.nearest_distances(white, black)
    assert dist[0] == pytest.approx(28.0)  # sqrt(784) pixels, each 1 apart
    g = torch.Generator().manual_seed(1)
    train = torch.randint(0, 256, (300, 28, 28), generator=g, dtype=torch.uint8)
    query = torch.randint(0, 256, (40, 28, 28), generator=g, dtype=torch.uint8)
    _, index = gm.nearest_distances(query, train, chunk=16)
    brute = torch.cdist(query.reshape(40, -1).double(), train.reshape(300, -1).double())
    assert index.tolist() == brute.argmin(1).tolist()
    with pytest.raises(ValueError, match="uint8"):
        gm.nearest_distances(query.float(), train)


def test_knn_radii_remembers_a_feature_set_by_its_content():
    f = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    first = gm.knn_radii(f, k=3)
    first[:] = -1  # the caller's copy: the remembered radii stay intact
    again = gm.knn_radii(f.copy(), k=3)
    assert (again > 0).all() and np.allclose(again, gm._knn_radii(torch.as_tensor(f), 3, 16))
    moved = f.copy()
    moved[0] += 10.0  # other content, other radii
    assert not np.allclose(gm.knn_radii(moved, k=3), again)
    assert gm.knn_radii(f.reshape(100, 4), k=3).shape == (100,)  # same bytes, another shape


def test_the_float32_search_finds_what_the_int8_one_does(monkeypatch):
    g = torch.Generator().manual_seed(2)
    train = torch.randint(0, 256, (300, 28, 28), generator=g, dtype=torch.uint8)
    query = torch.cat([train[[7]], torch.randint(0, 256, (20, 28, 28), generator=g, dtype=torch.uint8)])
    monkeypatch.setattr(gm, "int8_search_pays", lambda: False)
    dist, index = gm.nearest_distances(query, train, chunk=8)
    brute = torch.cdist(query.reshape(21, -1).double(), train.reshape(300, -1).double())
    assert index.tolist() == brute.argmin(1).tolist() and dist[0] == 0.0


def _saturating_int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """An int8 matmul as oneDNN's pre-VNNI kernels sum it: adjacent pairs of products added in 16 bits
    with saturation, then summed in 32 bits."""
    products = a.to(torch.int32)[:, :, None] * b.to(torch.int32)[None, :, :]  # (M, K, N)
    pairs = products.reshape(a.shape[0], a.shape[1] // 2, 2, b.shape[1]).sum(2)
    return pairs.clamp(-32768, 32767).sum(1).to(torch.int32)


def test_the_exactness_check_refuses_a_kernel_that_saturates(monkeypatch):
    monkeypatch.setattr(torch, "_int_mm", _saturating_int_mm)
    gm.int8_matmul_is_exact.cache_clear()
    try:
        assert gm.int8_matmul_is_exact() is False
    finally:
        gm.int8_matmul_is_exact.cache_clear()


@pytest.mark.parametrize(
    ("exact", "seconds", "pays"),
    [
        (False, {"int8": 0.1, "float32": 1.0}, False),  # fast but wrong: never
        (True, {"int8": 2.0, "float32": 0.1}, False),  # exact but slow (no VNNI): float32
        (True, {"int8": 0.1, "float32": 0.3}, True),
    ],
)
def test_the_int8_search_is_chosen_only_when_exact_and_faster(monkeypatch, exact, seconds, pays):
    monkeypatch.setattr(gm, "int8_matmul_is_exact", lambda: exact)
    monkeypatch.setattr(gm, "kernel_seconds", lambda: seconds)
    gm.int8_search_pays.cache_clear()
    try:
        assert gm.int8_search_pays() is pays
    finally:
        gm.int8_search_pays.cache_clear()


def test_kernel_seconds_times_both_kernels():
    seconds = gm.kernel_seconds()
    assert set(seconds) == {"int8", "float32"} and all(0 < s < 60 for s in seconds.values())


@pytest.mark.parametrize("isa", [None, "AVX2"])
def test_the_search_is_exact_on_the_kernels_the_host_offers(isa):
    """Whatever kernel the host's check picks (limited to AVX2 or not), the nearest images are the
    brute-force ones."""
    script = (
        "import torch; from mnistlab.metrics import scores as gm\n"
        "g = torch.Generator().manual_seed(3)\n"
        "s = torch.randint(0, 256, (400, 28, 28), generator=g, dtype=torch.uint8)\n"
        "q = torch.randint(0, 256, (40, 28, 28), generator=g, dtype=torch.uint8)\n"
        "_, index = gm.nearest_distances(q, s)\n"
        "brute = torch.cdist(q.reshape(40, -1).double(), s.reshape(400, -1).double()).argmin(1)\n"
        "print(index.tolist() == brute.tolist())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True"], out.stdout + out.stderr

"""Label propagation (the semi task's prior): codes, the k-NN graph, propagated classes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mnistlab.training import label_propagation as lp

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _chains(n_per: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes of unit codes (N = 2 n_per): class 0 a long arc of the equator, class 1 a short
    segment near the pole. The arc's far end is nearer to class 1's first code than to its own
    chain's first code: only a walk along the chain gives it the right class."""
    t = torch.linspace(0, 2.5, n_per)
    a = torch.stack([torch.cos(t), torch.sin(t), torch.zeros(n_per)], 1)
    s = torch.linspace(0, 1, n_per)
    b = torch.stack([-0.3 + 0.6 * s, torch.full((n_per,), -0.3), torch.ones(n_per)], 1)
    codes = F.normalize(torch.cat([a, b]), dim=1)
    return codes, torch.cat([torch.zeros(n_per), torch.ones(n_per)]).long()


def test_one_label_at_one_end_of_each_chain_reaches_the_far_end():
    codes, truth = _chains()
    labelled = torch.tensor([0, 60])  # the first code of each chain
    probs = lp.propagate(codes, labelled, truth[labelled], k=4)
    assert probs.shape == (120, lp.N_CLASSES)
    assert torch.allclose(probs.sum(1), torch.ones(120))
    assert torch.equal(probs.argmax(1), truth)
    far = codes[59]  # nearest labelled code: the other class's
    assert far @ codes[60] > far @ codes[0]
    assert probs[:, 2:].max() < 1e-6  # no mass for a class with no labelled image


def test_the_labels_decide_the_classes_not_the_order():
    codes, truth = _chains()
    labelled = torch.tensor([59, 119])  # the other ends, classes swapped
    probs = lp.propagate(codes, labelled, torch.tensor([1, 0]), k=4)
    assert torch.equal(probs.argmax(1), 1 - truth)


def test_knn_graph_leaves_a_code_out_of_its_own_neighbours():
    codes, _ = _chains(10)
    nbrs, sims = lp.knn_graph(codes, k=3, chunk=7)  # chunks that do not divide N
    assert nbrs.shape == sims.shape == (20, 3)
    assert not (nbrs == torch.arange(20)[:, None]).any()
    assert (sims[:, :-1] >= sims[:, 1:]).all()  # nearest first


def test_pca_codes_are_unit_length_and_repeat_exactly():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (300, 28, 28), dtype=torch.uint8, generator=g)
    a, b = lp.pca_codes(images, dims=20), lp.pca_codes(images, dims=20)
    assert a.shape == (300, 20)
    assert torch.allclose(a.norm(dim=1), torch.ones(300))
    assert torch.equal(a, b)  # deterministic: a resumed run rebuilds the same prior

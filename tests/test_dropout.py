"""FastDropout is nn.Dropout with other random draws: same layer, same arithmetic, same gradient,
seeded by torch's RNG, and the same masks whatever the memory format."""

import pytest
import torch
from torch import nn

from mnistlab.models.autoencoder import AEConfig, ConvAutoencoder
from mnistlab.models.dropout import FastDropout, dropout_mask, fast_dropout


def test_drops_about_p_and_scales_the_rest():
    torch.manual_seed(0)
    x = torch.rand(200, 50, 10) + 0.5  # no zeros, so a zero output means "dropped"
    y = FastDropout(0.3)(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.3) < 0.01  # 100,000 draws: std of the share ~0.0015
    kept = y != 0
    assert torch.equal(y[kept], x[kept] * torch.tensor(1 / 0.7))  # bit for bit x * scale
    assert abs(y.mean().item() - x.mean().item()) < 0.01  # inverted dropout keeps the mean


def test_identity_in_eval_and_for_p_zero():
    x = torch.randn(4, 3, 5, 5)
    layer = FastDropout(0.5).eval()
    assert layer(x) is x
    assert fast_dropout(x, 0.0) is x
    assert torch.equal(fast_dropout(x, 1.0), torch.zeros_like(x))


def test_gradient_is_the_mask():
    torch.manual_seed(0)
    x = torch.randn(8, 6, 4, 4, requires_grad=True)
    y = FastDropout(0.4)(x)
    y.sum().backward()
    expected = (y != 0).float() / 0.6  # x is never exactly 0 here
    assert torch.allclose(x.grad, expected)


def test_seeded_by_torch_and_different_each_call():
    x = torch.ones(64, 32)
    torch.manual_seed(5)
    a, b = fast_dropout(x, 0.5), fast_dropout(x, 0.5)
    torch.manual_seed(5)
    assert torch.equal(fast_dropout(x, 0.5), a)
    assert not torch.equal(a, b)


def test_channels_last_gives_the_same_masks():
    x = torch.rand(3, 5, 7, 6) + 0.1
    torch.manual_seed(2)
    y = fast_dropout(x, 0.5)
    torch.manual_seed(2)
    xc = x.contiguous(memory_format=torch.channels_last)
    yc = fast_dropout(xc, 0.5)
    assert yc.is_contiguous(memory_format=torch.channels_last)  # no layout change in the hot loop
    assert torch.equal(y, yc)


def test_mask_values():
    torch.manual_seed(0)
    m = dropout_mask(torch.Size([1000]), 0.25)
    assert m.dtype == torch.float32
    assert set(m.unique().tolist()) == {0.0, torch.tensor(1 / 0.75).item()}


def test_bad_probability_is_refused():
    with pytest.raises(ValueError, match="dropout probability"):
        FastDropout(1.5)


def test_autoencoder_uses_it_only_when_p_is_positive():
    with_dropout = ConvAutoencoder(AEConfig(dropout=0.1))
    assert any(isinstance(m, FastDropout) for m in with_dropout.modules())
    assert not any(isinstance(m, nn.Dropout) for m in with_dropout.modules())
    without = ConvAutoencoder(AEConfig(dropout=0.0))
    assert not any(isinstance(m, FastDropout) for m in without.modules())


def test_other_dtypes_use_torchs_dropout():
    torch.manual_seed(0)
    x = torch.ones(1000, dtype=torch.bfloat16)
    y = fast_dropout(x, 0.5)
    assert y.dtype == torch.bfloat16
    assert 0.4 < (y == 0).float().mean().item() < 0.6

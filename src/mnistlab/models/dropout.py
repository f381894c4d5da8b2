"""Dropout whose random masks are cheap on CPU: the same layer as `nn.Dropout`, other random draws.

Why: on AMD CPUs torch's `bernoulli_` (which `nn.Dropout` uses for its mask) runs one
double-precision draw per element on one thread, and the report's autoencoder draws 4.1 million mask
elements per batch of 256, a large share of its training step (benchmarks/results/cpu_speed.md).
(torch uses MKL's vectorised generator only on Intel CPUs.) Here a mask comes from numpy's SFC64 bit
generator, 32 raw bits per element, several times cheaper, kept where bits >= round(p * 2**32): each element is dropped
independently with probability p to within 2**-32 (torch's float32 `rand() < p` resolves 2**-24).

What is the same as `nn.Dropout`: the layer (inverted dropout, kept values times 1 / (1 - p), identity
in eval mode and for p = 0), the arithmetic (x * keep * scale, as torch's native dropout computes
it), the gradient, and reproducibility: each mask's SFC64 seed is one draw from torch's global
generator, so `torch.manual_seed` fixes the masks and a checkpointed torch RNG state resumes them
exactly. What differs: which elements are dropped for a given seed (another generator), so a run is
statistically the same as with `nn.Dropout`, not bit for bit. Masks follow the logical (N, C, H, W)
order whatever the memory format, so channels_last gives the same masks as contiguous tensors.
On a GPU, or for tensors that are not float32 (autocast), it is torch's own dropout.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

_SEED_HIGH = 2**62  # seeds are drawn from [0, 2**62) with torch's generator


def dropout_mask(shape: torch.Size, p: float, channels_last: bool = False) -> torch.Tensor:
    """float32 tensor of `shape`: 1 / (1 - p) with probability 1 - p per element, independently, else 0.
    Its strides are channels_last ones when asked (same logical values), so it multiplies such tensors
    at full speed."""
    n = int(np.prod(shape))
    seed = int(torch.randint(_SEED_HIGH, (1,)))  # (1,) from torch's global RNG: seeding and resume
    bits = np.random.SFC64(seed).random_raw((n + 1) // 2).view(np.uint32)[:n]  # n uniform uint32
    keep = bits >= np.uint32(round(p * 2**32))  # (n,) bool, in logical (N, C, H, W) order
    if channels_last and len(shape) == 4:
        nb, c, h, w = shape
        keep = np.ascontiguousarray(keep.reshape(nb, c, h, w).transpose(0, 2, 3, 1))  # (N, H, W, C) memory
    # A float mask (0 or scale) costs one multiply forward and one backward; x * mask equals torch's
    # x * keep * scale bit for bit, since 1 * scale is exact.
    mask = torch.from_numpy(keep * np.float32(1.0 / (1.0 - p)))
    if channels_last and len(shape) == 4:
        return mask.permute(0, 3, 1, 2)  # (N, C, H, W) view of (N, H, W, C) memory: channels_last strides
    return mask.view(shape)


class _Dropout(torch.autograd.Function):
    """y = x * mask; dy/dx = mask (mask holds 0 or 1 / (1 - p))."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout of x (any shape) with drop probability p; see the module docstring."""
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    if x.device.type != "cpu" or x.dtype != torch.float32:
        # GPUs draw masks fast in parallel, and bf16/fp16 (autocast) should scale as torch does:
        # torch's own dropout there.
        return torch.nn.functional.dropout(x, p, True)
    cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return _Dropout.apply(x, dropout_mask(x.shape, p, channels_last=cl))


class FastDropout(nn.Module):
    """Drop-in for `nn.Dropout(p)` with CPU-cheap masks (module docstring); no parameters or buffers, so
    checkpoints are the same as with `nn.Dropout`."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"

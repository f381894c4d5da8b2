"""Shared pieces of the speed benchmarks: the tutorial-style data pipeline baseline, a timer, the
machine's fp32 matmul peak and a model's FLOPs per image."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from mnistlab.models.dropout import FastDropout


def tutorial_model(model: nn.Module) -> nn.Module:
    """A copy of `model` as a tutorial writes it: every FastDropout swapped back to nn.Dropout (same p,
    torch's own masks); the weights are the same."""
    model = copy.deepcopy(model)
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, FastDropout):
                setattr(parent, name, nn.Dropout(child.p))
    return model


class PILDigits(Dataset):
    """The usual tutorial dataset: one PIL image per item, converted by a ToTensor-style transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images = images.numpy()
        self.labels = labels.numpy()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i], mode="L")
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).unsqueeze(0)  # ToTensor: (1, 28, 28)
        return x, int(self.labels[i])


def tutorial_loader(images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> DataLoader:
    return DataLoader(PILDigits(images, labels), batch_size=batch_size, shuffle=True)


def timed(fn: Callable[[], int], repeats: int = 1) -> float:
    """Best images/s over `repeats` calls of fn, which returns how many images it processed."""
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        best = max(best, n / (time.perf_counter() - t0))
    return best


def timed_both(fn: Callable[[], int]) -> tuple[float, float]:
    """(images per wall second, images per CPU second of this process) of one call of fn. With one
    thread the CPU-time rate is the steadier number on a machine other jobs share: it leaves out the
    time this process waited for a core (with several threads it counts their spin-waits, though)."""
    t0, c0 = time.perf_counter(), time.process_time()
    n = fn()
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def matmul_peak_gflops(n: int = 2048, repeats: int = 5, dtype=torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def train_flops_per_image(step: Callable[[torch.Tensor], None], batch: torch.Tensor) -> float:
    """FLOPs of one training step (forward + backward) divided by the batch size."""
    with FlopCounterMode(display=False) as counter:
        step(batch)
    return counter.get_total_flops() / len(batch)


def result(
    name: str,
    baseline: float,
    mnistlab: float,
    unit: str,
    flops_per_item: float | None = None,
    peak_gflops: float | None = None,
    **extra,
) -> dict:
    """The dict every speed benchmark returns (and writes with --json) for `python -m benchmarks`:
    throughputs of the baseline and of mnistlab in `unit` (higher is better), their ratio, and, when
    the work per item is known, mnistlab's share of the machine's fp32 matmul peak."""
    out = {
        "name": name,
        "unit": unit,
        "baseline": round(baseline, 2),
        "mnistlab": round(mnistlab, 2),
        "ratio": round(mnistlab / baseline, 3) if baseline > 0 else None,
        "matmul_peak_gflops": round(peak_gflops, 1) if peak_gflops else None,
        "flops_per_item": flops_per_item,
        "fraction_of_peak": None,
        "baseline_fraction_of_peak": None,
    }
    if flops_per_item and peak_gflops:
        out["fraction_of_peak"] = round(mnistlab * flops_per_item / 1e9 / peak_gflops, 4)
        out["baseline_fraction_of_peak"] = round(baseline * flops_per_item / 1e9 / peak_gflops, 4)
    out.update(extra)
    return out


def write_result(path: str, out: dict) -> None:
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")

"""Shared pieces of the speed benchmarks: the tutorial-style data pipeline baseline, a timer, the
machine's fp32 matmul peak and a model's FLOPs per image."""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from mnistlab.core import host
from mnistlab.models.dropout import FastDropout
from mnistlab.training.loop import isa_cap_allows_bf16

# The issue's budget (issue 36): the default study within 1,800 s on a host whose two cores' fp32
# matmul peak is 158 GFLOP/s, scaled by this host's own peak at 2 threads.
BUDGET_SECONDS, BUDGET_PEAK_GFLOPS, BUDGET_THREADS = 1800.0, 158.0, 2
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


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


def matmul_peak_gflops(
    n: int = 2048, repeats: int = 5, dtype=torch.float32, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Best GFLOP/s of an n x n matmul over `repeats`; with clock=time.process_time, GFLOP per CPU
    second of this process (at one thread the steadier figure on a shared host)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(repeats):
        t0 = clock()
        a @ b
        best = max(best, 2 * n**3 / max(clock() - t0, 1e-9) / 1e9)
    return best


def bf16_units(flags: list[str] | tuple[str, ...]) -> str:
    """ "yes" where the CPU has bf16 units oneDNN may use, "hidden" where ONEDNN_MAX_CPU_ISA caps them
    away, "no" where it has none."""
    if not any(f in flags for f in BF16_FLAGS):
        return "no"
    return "yes" if isa_cap_allows_bf16() else "hidden"  # the rule train.amp=auto follows


def peak_at(
    threads: int, n: int, dtype=torch.float32, clock: Callable[[], float] = time.perf_counter
) -> float:
    """The matmul peak (GFLOP/s) at `threads` torch threads; the thread count is put back after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return matmul_peak_gflops(n, dtype=dtype, clock=clock)
    finally:
        torch.set_num_threads(before)


def host_report(threads: int, quick: bool = False) -> dict:
    """What the host is and can do: the CPU (model, family/model, kernel flags), torch and its kernels,
    the fp32 matmul peak at BUDGET_THREADS and at `threads`, the bf16 peak at `threads` where the CPU
    has bf16 units, and the issue's budget for this host. "lines": the same as text, to print first."""
    info = host.describe()
    n = 512 if quick else 2048
    out: dict = {**info, "threads": threads, "env": {}}
    for var in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        if os.environ.get(var):
            out["env"][var] = os.environ[var]
    out["fp32_2_threads"] = peak_at(BUDGET_THREADS, n)
    out["fp32_stage"] = out["fp32_2_threads"] if threads == BUDGET_THREADS else peak_at(threads, n)
    out["fp32_stage_cpu"] = peak_at(threads, n, clock=time.process_time)
    one = out["fp32_stage_cpu"] if threads == 1 else peak_at(1, n, clock=time.process_time)
    # Two threads that had the cores to themselves would reach at most twice one thread's GFLOP per
    # CPU second: the budget's peak where other jobs keep the wall-clock one from being measured.
    out["fp32_2_threads_from_cpu"] = BUDGET_THREADS * one
    out["bf16_units"] = bf16_units(info["flags"])
    if out["bf16_units"] == "yes":
        out["bf16_stage"] = peak_at(threads, n, torch.bfloat16)
        out["bf16_stage_cpu"] = peak_at(threads, n, torch.bfloat16, clock=time.process_time)
    out["budget_s"] = BUDGET_SECONDS * BUDGET_PEAK_GFLOPS / out["fp32_2_threads"]
    out["budget_from_cpu_s"] = BUDGET_SECONDS * BUDGET_PEAK_GFLOPS / out["fp32_2_threads_from_cpu"]
    env = " ".join(f"{k}={v}" for k, v in out["env"].items())
    lines = [
        f"host: {info['cpu']}, {info['cores']} logical CPUs" + (f"   [{env}]" if env else ""),
        f"  flags: {' '.join(info['flags']) or 'none of ' + ', '.join(host.KERNEL_FLAGS)}; "
        f"bf16 units: {out['bf16_units']}; torch {info['torch']}, kernels {info['kernels']}",
        f"  fp32 matmul peak: {out['fp32_2_threads']:.1f} GFLOP/s at {BUDGET_THREADS} threads"
        + (f", {out['fp32_stage']:.1f} at {threads}" if threads != BUDGET_THREADS else "")
        + (f"; bf16 {out['bf16_stage']:.1f} at {threads}" if "bf16_stage" in out else "")
        + f" ({n}^3)",
        f"  per CPU second at {threads} thread(s): fp32 {out['fp32_stage_cpu']:.1f} GFLOP"
        + (f", bf16 {out['bf16_stage_cpu']:.1f}" if "bf16_stage_cpu" in out else ""),
        f"  budget of the default study here (issue 36): {BUDGET_SECONDS:.0f} s x {BUDGET_PEAK_GFLOPS:.0f} / "
        f"{out['fp32_2_threads']:.1f} = {out['budget_s']:,.0f} s (from {BUDGET_THREADS} x one thread's "
        f"GFLOP per CPU second, {out['fp32_2_threads_from_cpu']:.1f}: {out['budget_from_cpu_s']:,.0f} s)",
    ]
    return {**out, "lines": lines}


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

"""What machine a number was measured on: the CPU's model, the instruction-set extensions that decide
which kernels run (AVX2, AVX-512, VNNI, bfloat16, AMX), the core count and torch's kernel choice.
Every finished run's summary.json and a study's run.json record it, so that a speed or a number can be
compared only with one from the same kind of host."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch

# The /proc/cpuinfo flags that change which kernels torch and oneDNN pick.
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


@functools.cache  # the host does not change while a process runs
def describe() -> dict[str, object]:
    """{"cpu": model name, "flags": KERNEL_FLAGS present, "cores": logical CPUs, "kernels": torch's CPU
    capability (DEFAULT / AVX2 / AVX512), "torch": version}."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    cpu = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info and "model" in info:  # "AMD EPYC" alone does not tell Zen 3 from Zen 4
        cpu += f" (family {info['cpu family']} model {info['model']})"
    return {
        "cpu": cpu,
        "flags": [f for f in KERNEL_FLAGS if f in flags],
        "cores": os.cpu_count(),
        "kernels": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
    }


def summary_line(host: dict[str, object]) -> str:
    """ "AMD EPYC 9R14 (avx2 fma avx512f ...), 2 cores, kernels AVX512" for a report."""
    flags = " ".join(host.get("flags") or []) or "no AVX2"
    return f"{host.get('cpu')} ({flags}), {host.get('cores')} cores, kernels {host.get('kernels')}"

"""Keep freed memory in the process, so training steps stop paying page faults (glibc on Linux only).

Why: a training step allocates and frees the same few-MB activation tensors every batch. glibc gives
large freed blocks back to the kernel (munmap, or trimming the heap top), so the next step's
allocations fault every page in again, zero-filled by the kernel: thousands of page faults per
autoencoder step, a sizeable share of the step spent in the kernel (benchmarks/results/cpu_speed.md).
Raising glibc's mmap and trim thresholds (`mallopt`, what
MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ set from the environment) makes freed blocks stay in
the heap for reuse; the numbers computed do not change. Cost: the resident size no longer shrinks
after a peak (the peak itself is the same), and blocks up to MMAP_THRESHOLD come from the heap.

Process-wide by nature, so only entry points that train call it (`mnistlab train ...`); it is
idempotent, a no-op off glibc, and MNISTLAB_MALLOC_TUNING=0 in the environment switches it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 << 20  # blocks above 64 MiB (whole-dataset tensors) are still mmapped and unmapped
TRIM_THRESHOLD = 512 << 20  # keep up to 512 MiB of free heap top before giving it back

_done: list[bool] = []  # set once tuned (a list, so no `global` statement is needed)


def keep_freed_memory() -> bool:
    """Raise glibc's mmap/trim thresholds once per process; True when they are (now or before) set."""
    if _done:
        return _done[0]
    ok = False
    if sys.platform.startswith("linux") and os.environ.get("MNISTLAB_MALLOC_TUNING", "1") != "0":
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = getattr(libc, "mallopt", None)  # absent on musl: nothing to tune there
            ok = mallopt is not None and bool(
                mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
            )
        except OSError:
            ok = False
    _done.append(ok)
    return ok

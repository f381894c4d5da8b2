"""Data-parallel training across processes (torchrun): process group set-up from torchrun's
environment, the rank's share of each batch, averaged step metrics, and "rank 0 writes" helpers.

Under `torchrun --nproc-per-node K -m mnistlab train ...` every process runs the same trainer. The
training loop (`training.loop.fit`) asks `current()` who it is: with a world of one process nothing here
does anything and a run is exactly the single-process one. With K > 1:
  - every rank draws the same global permutation each epoch and cuts each global batch of
    train.batch_size images into K contiguous equal slices; rank r trains on slice r;
  - the task's networks are wrapped in DistributedDataParallel, which averages the gradients of
    the K slices, so one optimizer step sees the gradient of the whole global batch;
  - random draws that shape a batch (the GAN's noise) are drawn for the whole global batch on every
    rank and sliced (`local_rows`), so all ranks keep one RNG stream, the same as a single process;
  - only rank 0 writes the run folder (checkpoints, metrics.jsonl, TensorBoard, figures, summary).

Nothing here keeps module-level state: the process group lives in torch.distributed.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from mnistlab.core.errors import ConfigError


@dataclass(frozen=True)
class Dist:
    """Where this process stands: rank in [0, world_size), its GPU index on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """True when torchrun (or any launcher setting its variables) started more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def current() -> Dist:
    """This process's place in the initialised process group (a world of one when there is none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Dist()
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def init(device_name: str = "auto", timeout_s: float = 1800.0) -> Dist:
    """Join the process group that torchrun's environment describes (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT): nccl when training on CUDA, gloo on the CPU. A no-op for one process.
    On CUDA each process takes the GPU numbered by its LOCAL_RANK."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return current()
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; run one process")
    missing = [v for v in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE > 1 but {', '.join(missing)} unset; start the processes with torchrun")
    cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda but no CUDA device is available; use cpu or auto")
        local = int(os.environ["LOCAL_RANK"])
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local} but this machine has {torch.cuda.device_count()} GPU(s); "
                "use --nproc-per-node <= the number of GPUs"
            )
        torch.cuda.set_device(local)
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return current()


def shutdown() -> None:
    """Wait for every rank (rank 0 may still be writing the summary), then leave the group."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if current().enabled:
        dist.barrier()


def check_batch(batch_size: int, d: Dist) -> int:
    """The per-rank batch: the global batch split evenly, or a one-line error."""
    if batch_size % d.world_size:
        raise ConfigError(
            f"train.batch_size={batch_size} is not divisible by the {d.world_size} processes; the global "
            f"batch is split evenly across them (choose a multiple of {d.world_size})"
        )
    return batch_size // d.world_size


def shard(idx: torch.Tensor, d: Dist) -> torch.Tensor:
    """Rank d.rank's contiguous slice of one global batch of indices (B,): (B // K,). A short last
    batch is cut into K equal slices too; its B % K leftover images are skipped this epoch (so every
    rank's gradient carries the same weight in DDP's average)."""
    if not d.enabled:
        return idx
    per = len(idx) // d.world_size
    return idx[d.rank * per : (d.rank + 1) * per]


def local_rows(global_draw: torch.Tensor, d: Dist | None = None) -> torch.Tensor:
    """This rank's rows of a tensor drawn for the whole global batch (K * b, ...) -> (b, ...)."""
    d = d or current()
    if not d.enabled:
        return global_draw
    per = len(global_draw) // d.world_size
    return global_draw[d.rank * per : (d.rank + 1) * per]


def randn_rows(n_local: int, *shape: int, device: torch.device, dtype: torch.dtype | None = None):
    """Standard normal (n_local, *shape) for this rank: drawn as (K * n_local, *shape) on every rank
    and sliced, so every rank's RNG advances as a single process's would for the global batch."""
    d = current()
    if not d.enabled:
        return torch.randn(n_local, *shape, device=device, dtype=dtype)
    full = torch.randn(n_local * d.world_size, *shape, device=device, dtype=dtype)
    return local_rows(full, d)


def gather_rows(local: torch.Tensor) -> torch.Tensor:
    """Every rank's rows (b, ...) -> the global batch (K * b, ...) in rank order, differentiable: the
    gradient of a loss of the whole batch reaches each rank's rows (summed over the ranks that
    computed it, which DDP's mean over ranks then divides back). A single process gets `local`."""
    d = current()
    if not d.enabled:
        return local
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(local))


def _collective_device() -> torch.device:
    # nccl moves CUDA tensors only; gloo works on CPU tensors.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over all ranks (identity for one process); returned on its device."""
    if not current().enabled:
        return values
    t = values.detach().to(_collective_device(), torch.float64)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).to(values.device, values.dtype)


def mean_metrics(out: dict[str, float]) -> dict[str, float]:
    """Average a step's float metrics over the ranks (each rank trained an equal slice), so every rank
    sees the global batch's numbers: one log line, and the same non-finite-loss decision everywhere."""
    if not current().enabled or not out:
        return out
    keys = list(out)  # the same order on every rank (the same code made the dict)
    mean = mean_over_ranks(torch.tensor([out[k] for k in keys], dtype=torch.float64)).tolist()
    return dict(zip(keys, mean))


def wrap(module: nn.Module) -> nn.Module:
    """`module` in DistributedDataParallel on its own device (its parameters must already be there).
    The weights of rank 0 are broadcast to the others on construction."""
    import warnings

    from torch.nn.parallel import DistributedDataParallel as DDP

    # A (1, N) linear weight's gradient may come with strides (1, 1) instead of (N, 1): the same memory,
    # and DDP copies it into its bucket correctly; its "may impair performance" warning is noise here.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")

    device = next(module.parameters()).device
    ids = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else None
    )
    return DDP(module, device_ids=ids)  # buffers (BatchNorm statistics) follow rank 0


def on_main(fn, *args, **kwargs):
    """Run fn on rank 0 only (e.g. creating the run folder) and share whether it failed: if it raised,
    rank 0 re-raises and every other rank raises a ConfigError with the same message (no rank is left
    waiting). Returns fn's result on rank 0 and None elsewhere."""
    d = current()
    if not d.enabled:
        return fn(*args, **kwargs)
    result, error, message = None, None, ""
    if d.is_main:
        try:
            result = fn(*args, **kwargs)
        except Exception as e:  # shared with the other ranks, then re-raised unchanged
            error, message = e, str(e) or type(e).__name__
    message = broadcast_text(message)
    if error is not None:
        raise error
    if message:
        raise ConfigError(f"rank 0 failed: {message}")
    return result


def broadcast_text(text: str) -> str:
    """Rank 0's `text` on every rank (as UTF-8 bytes in two broadcasts; no pickling)."""
    d = current()
    if not d.enabled:
        return text
    dev = _collective_device()
    raw = text.encode() if d.is_main else b""
    n = torch.tensor([len(raw)], dtype=torch.int64, device=dev)
    dist.broadcast(n, 0)
    buf = torch.zeros(int(n.item()), dtype=torch.uint8, device=dev)
    if d.is_main and len(raw):
        buf.copy_(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
    if len(buf):
        dist.broadcast(buf, 0)
    return bytes(buf.cpu().tolist()).decode()

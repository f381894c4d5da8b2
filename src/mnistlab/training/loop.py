"""One training loop for every model: epochs over in-memory data, validation, logging, atomic
checkpoints, exact resume and a non-finite-loss guard. What differs between models lives in a
`TrainTask` (autoencoder, GAN, probe), which this loop knows nothing about beyond the protocol.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from mnistlab.core import distributed
from mnistlab.core.errors import ConfigError, check, check_bool, check_float, check_int, check_seed
from mnistlab.data.datasets import Split, batches
from mnistlab.runs import folder as rundir
from mnistlab.runs.checkpoint import file_sha256, restore, save_checkpoint
from mnistlab.training import progress as console

log = logging.getLogger("mnistlab")


AMP_MODES = ("off", "bf16", "auto")
# Images per batch at most. The activations kept for the backward pass grow with the batch: at this
# size the autoencoder's already take several GB and the GAN's (three discriminator passes) tens of GB.
MAX_BATCH = 65_536
MAX_EPOCHS = 100_000
DEVICE_DATA_LIMIT = 2 << 30  # bytes of uint8 images kept on the GPU at most (MNIST's 60k: 47 MB)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # "adam" (L2 in the gradient, as the report) or "adamw" (decoupled)
    schedule: str = "constant"  # "constant" | "onecycle" | "cosine"
    warmup: float = 0.25  # share of steps spent warming up, for "onecycle"
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    eval_batch_size: int = 1000
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    # Speed only, off by default: "bf16" runs the training steps' forward passes under bfloat16 autocast
    # (losses and validation stay fp32), "auto" does so only on a CPU with bfloat16 instructions
    # (`amp_mode`); channels_last stores conv weights and images NHWC; data_on_device copies
    # MNIST-sized training images (uint8) to the GPU once, batches converted there.
    amp: str = "off"  # "off" | "bf16" | "auto"
    channels_last: bool = False  # the autoencoder tasks use it on the CPU regardless (measured faster)
    data_on_device: bool = True

    def __post_init__(self):
        # Every field is checked here, before anything is allocated: a huge thread count crashes
        # torch's thread pool (a segfault, not an exception), a huge batch asks for gigabytes.
        # epochs >= 1: a run of 0 epochs trains nothing, yet would be recorded as finished.
        check_int(self.epochs, "train.epochs", 1, MAX_EPOCHS)
        memory = "a batch's activations must fit in memory"
        check_int(self.batch_size, "train.batch_size", 1, MAX_BATCH, memory)
        check_int(self.eval_batch_size, "train.eval_batch_size", 1, MAX_BATCH, memory)
        check_float(self.lr, "train.lr", 0, 10, low_open=True)
        check_float(self.weight_decay, "train.weight_decay", 0, 10)
        check_float(self.warmup, "train.warmup", 0, 1, high_open=True)
        check_seed(self.seed, "train.seed")
        cores = os.cpu_count() or 1
        why = f"at most 4 x this machine's {cores} cores; 0 = torch's default"
        check_int(self.threads, "train.threads", 0, 4 * cores, why)
        check_bool(self.channels_last, "train.channels_last")
        check_bool(self.data_on_device, "train.data_on_device")
        check(
            self.optimizer in ("adam", "adamw"),
            f"train.optimizer must be adam or adamw, not {self.optimizer!r}",
        )
        check(
            self.schedule in ("constant", "onecycle", "cosine"),
            f"train.schedule must be constant, onecycle or cosine, not {self.schedule!r}",
        )
        check(
            self.device in ("auto", "cpu", "cuda"),
            f"train.device must be auto, cpu or cuda, not {self.device!r}",
        )
        check(self.amp in AMP_MODES, f"train.amp must be one of {', '.join(AMP_MODES)}, not {self.amp!r}")


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/inf; the message names the step and the last good checkpoint."""


class TrainTask(Protocol):
    """What a model brings to the loop. `train_step` gets one batch of uint8 images (B, 28, 28) and
    labels (B,) and returns float metrics, one of them "loss"; `evaluate` returns validation metrics."""

    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]: ...

    def evaluate(self) -> dict[str, float]: ...


def resolve_device(name: str) -> torch.device:
    """The device a config names (auto: cuda when available, else cpu); under torchrun on CUDA, the
    GPU of this process's LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available; use cpu or auto")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"train.device must be auto, cpu or cuda, not {name!r}")
    if name == "cuda" and distributed.current().enabled:
        return torch.device("cuda", torch.cuda.current_device())  # set from LOCAL_RANK by distributed.init
    return torch.device(name)


# oneDNN's ISA names (ONEDNN_MAX_CPU_ISA) that include its bfloat16 kernels; a lower cap (e.g. AVX2, as
# CI sets to stand in for a host without bf16 units) hides them, whatever the CPU's flags say.
_BF16_ISAS = (
    "ALL",
    "AVX512_CORE_BF16",
    "AVX512_CORE_FP16",
    "AVX512_CORE_AMX",
    "AVX512_CORE_AMX_FP16",
    "AVX10_1_512",
    "AVX10_1_512_AMX",
    "AVX10_1_512_AMX_FP16",
)


def isa_cap_allows_bf16() -> bool:
    """Whether ONEDNN_MAX_CPU_ISA (unset: no cap) leaves oneDNN its bfloat16 kernels."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return not cap or cap.startswith(_BF16_ISAS)


def cpu_has_bf16() -> bool:
    """Whether bfloat16 runs in hardware here (AVX512-BF16 or AMX, and oneDNN not capped below them by
    ONEDNN_MAX_CPU_ISA). Without it oneDNN converts in software and bf16 autocast runs several times
    slower than fp32 (docs/guide.md)."""
    if not isa_cap_allows_bf16():
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def amp_mode(cfg: TrainConfig, device: torch.device) -> str:
    """The precision a training step runs in on `device`: "bf16" or "off". train.amp = "auto" is bf16
    on a CPU with bfloat16 instructions, where it speeds up the GAN's step (docs/results.md), and off
    everywhere else (no GPU measurement backs it there), so one preset suits every host."""
    if cfg.amp == "auto":
        return "bf16" if device.type == "cpu" and cpu_has_bf16() else "off"
    return cfg.amp


def autocast(cfg: TrainConfig, device: torch.device):
    """A context for a training step's forward pass: bfloat16 autocast when `amp_mode` says bf16 (on
    CUDA or the CPU), else nothing. Raises a one-line ConfigError where the device cannot do it."""
    if amp_mode(cfg, device) == "off":
        return contextlib.nullcontext
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"train.amp=bf16 but {torch.cuda.get_device_name(device)} has no bfloat16; use off")
    if device.type not in ("cuda", "cpu"):
        raise ConfigError(f"train.amp=bf16 is supported on cuda and cpu, not {device.type}")
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def memory_format(cfg: TrainConfig) -> torch.memory_format:
    """The layout of conv weights and image batches: channels_last when train.channels_last."""
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def conv_channels_last(device: torch.device, flag: bool = False) -> bool:
    """Whether a conv network trains with channels_last (NHWC) weights on `device`: always on the CPU,
    where oneDNN's convolutions measured faster that way for the autoencoders, the probe's networks and
    the VAE (benchmarks/results/cpu_speed.md, docs/results.md), elsewhere when `flag` (train.channels_last)."""
    return flag or device.type == "cpu"


def on_device(split: Split, device: torch.device | None, cfg: TrainConfig) -> Split:
    """`split` with its uint8 images and labels copied to the GPU once (train.data_on_device, when they
    fit DEVICE_DATA_LIMIT), so each batch is indexed and converted to float there: no per-step copy
    from host memory. Unchanged on the CPU."""
    if device is None or device.type != "cuda" or not cfg.data_on_device:
        return split
    if split.images.numel() * split.images.element_size() > DEVICE_DATA_LIMIT:
        log.info("training images exceed %d bytes: kept in host memory", DEVICE_DATA_LIMIT)
        return split
    return Split(split.images.to(device), split.labels.to(device))


def make_optimizer(
    params, cfg: TrainConfig, lr: float | None = None, betas: tuple[float, float] | None = None
) -> torch.optim.Optimizer:
    """Adam/AdamW over `params` at `lr` (default cfg.lr); `betas` default to torch's (0.9, 0.999)."""
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    if cfg.optimizer not in kinds:
        raise ConfigError(f"train.optimizer must be one of {sorted(kinds)}, not {cfg.optimizer!r}")
    lr = cfg.lr if lr is None else lr
    # Tensors, or param-group dicts (fine-tuning gives groups their own lr); lists, read twice below.
    params = [{**p, "params": list(p["params"])} if isinstance(p, dict) else p for p in params]
    extra = {} if betas is None else {"betas": tuple(betas)}
    opt = kinds[cfg.optimizer](params, lr=lr, weight_decay=cfg.weight_decay, **extra, **adam_kernel(params))
    for group in opt.param_groups:
        group["base_lr"] = group["lr"]  # the schedule scales this; saved with the optimizer state
    return opt


def adam_kernel(params: list) -> dict[str, bool]:
    """Adam's fused kernel where the parameters' device has one: one pass over each tensor instead of
    a dozen elementwise ops, a faster optimizer step on the CPU (`benchmarks/adam_kernels.py`),
    the same update up to float rounding (~1e-7 after 300 steps); the per-tensor loop elsewhere."""
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    on_fused_device = all(t.device.type in ("cpu", "cuda") and t.is_floating_point() for t in tensors)
    return {"fused": True} if tensors and on_fused_device else {}


def lr_factor(schedule: str, step: int, total: int, warmup: float = 0.25) -> float:
    """Multiplier of the base learning rate at `step` of `total` (pure)."""
    if schedule == "constant":
        return 1.0
    progress = min(step / max(total, 1), 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "onecycle":
        # Linear warm-up from 1/25 of the peak, then cosine annealing to ~0 (as torch's OneCycleLR).
        if progress < warmup:
            return 0.04 + 0.96 * progress / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (progress - warmup) / (1.0 - warmup))) + 1e-4
    raise ConfigError(f"train.schedule must be constant, onecycle or cosine, not {schedule!r}")


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # A per-epoch seed makes each epoch's data order independent of how the run got there (resume).
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    checkpoint_sha256: str
    seconds: float  # training time of the whole run, over every process that resumed it
    images_per_s: float  # of this process alone
    precision: str = "float32"  # of the training step: "float32", or "bf16" (autocast)


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    """Steps in one epoch of `n_images` in batches of `batch_size`: the last batch may be short."""
    return math.ceil(n_images / batch_size)


def total_steps(n_images: int, cfg: TrainConfig) -> int:
    """Steps of the whole run, every epoch included (what a schedule or a fade is counted in)."""
    return steps_per_epoch(n_images, cfg.batch_size) * cfg.epochs


def fit(
    task: TrainTask,
    train: Split,
    cfg: TrainConfig,
    run_dir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end=None,
) -> FitResult:
    """Train `task` for cfg.epochs over `train`; checkpoint to run_dir/checkpoints/last.safetensors
    after each epoch, and log one metrics.jsonl line per epoch. With `resume`, continue from the
    checkpoint so that the result equals an uninterrupted run bit for bit (on CPU).

    Under torchrun (see `mnistlab.core.distributed`), each rank trains its slice of every global batch
    through DistributedDataParallel (the task's `distribute(wrap)` wraps what its step calls), step
    metrics are averaged over the ranks, and only rank 0 validates, calls `on_epoch_end` and writes;
    every rank reads the checkpoint on resume, whatever the number of processes that wrote it."""
    world = distributed.current()
    main = world.is_main
    ckpt = run_dir / "checkpoints" / "last.safetensors" if run_dir else None
    metrics_path = run_dir / "metrics.jsonl" if run_dir and main else None
    history: list[dict[str, Any]] = []
    start_epoch, step, sha = 0, 0, ""
    if resume and ckpt is not None and ckpt.exists():
        tensors, state = rundir.read_run_checkpoint(run_dir)
        restore(tensors, state, task.modules, task.optimizers)
        start_epoch, step = state["epoch"], state["step"]
        history = _read_history(metrics_path, upto=start_epoch)
        _write_history(metrics_path, history)  # drop lines of an epoch that never checkpointed
        log.info("resumed from %s at epoch %d (step %d)", ckpt, start_epoch, step)
    elif metrics_path is not None:
        _write_history(metrics_path, [])
    if world.enabled:
        distributed.check_batch(cfg.batch_size, world)
        if not hasattr(task, "distribute"):
            raise ConfigError(f"{type(task).__name__} cannot train in several processes (no distribute())")
        task.distribute(distributed.wrap)  # after restore: DDP broadcasts rank 0's weights
    train = on_device(train, getattr(task, "device", None), cfg)
    reduced = getattr(task, "metrics_reduced", False)  # the task averaged its step metrics itself

    writer = _tensorboard(run_dir) if main else None
    epoch_steps = steps_per_epoch(len(train), cfg.batch_size)
    run_steps = epoch_steps * cfg.epochs
    # Seconds run on from the last kept epoch's, so a resumed run's rows and total count all its time.
    earlier = float(history[-1].get("seconds", 0.0)) if history else 0.0
    seen, t0 = 0, time.perf_counter()
    saved = start_epoch if ckpt is not None and start_epoch else 0  # the last epoch checkpointed
    # The time left over every epoch still to train, from the steps this process has taken (their
    # validation and epoch-end work included once an epoch has ended): nothing before the first step.
    left = console.Remaining(run_steps, step)
    # The start line of a run folder of its own (config.toml written by rundir.prepare); a probe's
    # many small fits into sub-folders stay quiet, their stage says what they are.
    if main and run_dir is not None and (run_dir / "config.toml").is_file():
        log.info("%s", _start_line(cfg, len(train), epoch_steps, start_epoch, run_dir, task))
    try:
        for epoch in range(start_epoch, cfg.epochs):
            for m in task.modules.values():
                m.train()
            sums: dict[str, float] = {}
            n_epoch = 0
            bar = tqdm(
                total=epoch_steps,
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                disable=not console.bars(progress) or not main,
                leave=False,
            )
            for idx in batches(len(train), cfg.batch_size, _epoch_generator(cfg.seed, epoch)):
                factor = lr_factor(cfg.schedule, step, run_steps, cfg.warmup)
                for opt in task.optimizers.values():
                    for group in opt.param_groups:
                        group["lr"] = group["base_lr"] * factor
                local = distributed.shard(idx, world)  # (B / K,) of the global batch; all of it alone
                if len(local) == 0:  # a last batch smaller than the number of processes
                    continue
                if train.images.device != local.device:
                    local = local.to(train.images.device)
                out = task.train_step(train.images[local], train.labels[local])
                if world.enabled and not reduced:
                    out = distributed.mean_metrics(out)
                n = len(local) * world.world_size
                bad = {k: v for k, v in out.items() if not math.isfinite(v)}
                if bad:
                    where = f"the last good checkpoint is {ckpt}" if sha else "no checkpoint was written yet"
                    raise NonFiniteLossError(
                        f"non-finite {', '.join(f'{k}={v}' for k, v in bad.items())} at epoch "
                        f"{epoch + 1}, step {step + 1}; training stopped, {where}"
                    )
                for k, v in out.items():
                    sums[k] = sums.get(k, 0.0) + v * n
                n_epoch += n
                step += 1
                bar.update(1)
                if not bar.disable:
                    overall = left.text(step)
                    bar.set_postfix_str(
                        f"loss={out['loss']:.4f}" + (f", all epochs: {overall}" if overall else ""),
                        refresh=False,
                    )
            bar.close()
            seen += n_epoch
            if main:
                row = _end_epoch(task, epoch, step, factor * cfg.lr, sums, n_epoch, t0 - earlier)
                history.append(row)
                if on_epoch_end is not None:
                    on_epoch_end(epoch + 1, row)
                if run_dir is not None:
                    # The row before the checkpoint: killed between the two, a resume drops the row of
                    # the epoch it trains again; the other order would lose the row of a saved epoch.
                    _append(metrics_path, row)
                    sha = save_checkpoint(ckpt, task.modules, task.optimizers, epoch + 1, step)
                    saved = epoch + 1
                    if writer is not None:
                        for k, v in row.items():
                            if k not in ("epoch", "step", "seconds"):
                                writer.add_scalar(k, v, epoch + 1)
                        writer.flush()
                log.info(
                    "epoch %d/%d %s (%s)",
                    epoch + 1,
                    cfg.epochs,
                    " ".join(f"{k}={v:.5g}" for k, v in row.items() if k.startswith(("train_", "val_"))),
                    left.status(step),
                )
            distributed.barrier()  # the other ranks wait while rank 0 validates and writes
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the CLI's message says what is kept
        e.saved = _saved_note(ckpt, saved, cfg.epochs)
        raise
    finally:
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - t0
    if ckpt is not None and main and not sha and ckpt.exists():
        sha = file_sha256(ckpt)
    device = getattr(task, "device", None)
    precision = "bf16" if device is not None and amp_mode(cfg, torch.device(device)) == "bf16" else "float32"
    return FitResult(history, sha, earlier + seconds, seen / seconds if seconds > 0 else 0.0, precision)


def _saved_note(ckpt: Path | None, saved: int, epochs: int) -> str:
    """What an interrupted fit leaves, for the message the user reads."""
    if ckpt is None:
        return "this training keeps no checkpoint; nothing of it is saved"
    if saved == 0:
        return "no epoch had finished, so nothing was saved (no checkpoint)"
    return f"epoch {saved}/{epochs} is checkpointed in {ckpt}"


def _start_line(
    cfg: TrainConfig, images: int, steps: int, start_epoch: int, run_dir: Path, task: TrainTask
) -> str:
    """ "training 20 epochs of 48,000 images (188 steps of 256) on cpu into runs/ae; ..." """
    device = getattr(task, "device", None)
    where = f" on {torch.device(device).type}" if device is not None else ""
    if start_epoch >= cfg.epochs:
        return f"all {cfg.epochs} epochs of {run_dir} are trained already"
    epochs = f"{cfg.epochs} epochs" if cfg.epochs > 1 else "1 epoch"
    if start_epoch:
        epochs = f"epochs {start_epoch + 1}-{cfg.epochs} of {cfg.epochs} (resumed)"
    return (
        f"training {epochs} of {images:,} images ({steps} step{'s' * (steps != 1)} of {cfg.batch_size}){where} "
        f"into {run_dir}; time left: after epoch {start_epoch + 1}"
    )


def _end_epoch(task, epoch: int, step: int, lr: float, sums: dict, n_epoch: int, t0: float) -> dict[str, Any]:
    """Validate (in eval mode, without gradients) and build the epoch's metrics row."""
    for m in task.modules.values():
        m.eval()
    with torch.no_grad():
        val = task.evaluate()
    row = {"epoch": epoch + 1, "step": step, "lr": lr}
    row.update({f"train_{k}": v / max(n_epoch, 1) for k, v in sums.items()})
    row.update({f"val_{k}": v for k, v in val.items()})
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row


def _tensorboard(run_dir: Path | None):
    if run_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow to import

    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def _append(path: Path, row: dict[str, Any]) -> None:
    try:
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
    except OSError as e:  # a failed write or flush names no file: name it (a full disk)
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def _read_history(path: Path | None, upto: int) -> list[dict[str, Any]]:
    if path is None:
        return []
    return [r for r in rundir.read_history(path.parent) if r["epoch"] <= upto]  # rows' fields checked


def _write_history(path: Path | None, rows: list[dict[str, Any]]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

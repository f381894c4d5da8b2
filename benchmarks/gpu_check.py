"""One short check of the GPU path: an autoencoder epoch and a GAN epoch through mnistlab's own loop
(`training.loop.fit`), in fp32, bf16 autocast, channels_last and bf16 + channels_last, with a table
that names the device it ran on.

    python benchmarks/gpu_check.py                                   # CUDA if present: 60k AE, 70k GAN
    python benchmarks/gpu_check.py --device cpu --limit 2048         # a CPU smoke run on a slice
    python benchmarks/gpu_check.py --json gpu_check.json             # also write the numbers

Each measurement builds fresh networks (same seed), warms up on a few batches (kernel selection, the
allocator), then times one whole epoch with `fit` exactly as `mnistlab train` runs it: the uint8 images
are copied to the GPU once (train.data_on_device) and converted per batch there. `fit` reads every
step's loss back with .item(), so the time includes the device's work. The AE is the report's
(latent 10, no dropout, batch 256), the GAN the report's (batch 200, D and G at 2e-4, BCE on logits).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from mnistlab.data.datasets import DataConfig, Split, load
from mnistlab.models import build_model
from mnistlab.models.autoencoder import AEConfig
from mnistlab.models.gan import GANConfig
from mnistlab.training.autoencoder import AutoencoderTask
from mnistlab.training.gan import GANTask, GANTrainConfig
from mnistlab.training.loop import TrainConfig, fit, resolve_device
from mnistlab.training.run_folder import seed_everything

VARIANTS = {  # name -> TrainConfig fields
    "fp32": {},
    "channels_last": {"channels_last": True},
    "bf16": {"amp": "bf16"},
    "bf16+channels_last": {"amp": "bf16", "channels_last": True},
}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    model = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor() or platform.machine(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    return f"CPU {model}, {torch.get_num_threads()} threads"


def make_task(kind: str, cfg: TrainConfig, device: torch.device, n: int):
    seed_everything(cfg.seed)
    empty = Split(torch.empty(0, 28, 28, dtype=torch.uint8), torch.empty(0, dtype=torch.int64))
    if kind == "ae":
        return AutoencoderTask(build_model("conv_autoencoder", AEConfig(latent_dim=10)), cfg, empty, device)
    steps = -(-n // cfg.batch_size)
    gcfg = GANTrainConfig(loss="bce_logits", channels_last=False)  # train.channels_last decides
    return GANTask(build_model("report_gan", GANConfig()), cfg, gcfg, device, steps)


def epoch_time(kind: str, train: Split, cfg: TrainConfig, device: torch.device, warmup: int) -> float:
    """Seconds of one epoch of `fit` over `train`, after `warmup` steps on a fresh task."""
    task = make_task(kind, cfg, device, len(train))
    # Warm up through `fit` itself (its first call pays one-time costs: seconds on a CPU).
    n_warm = min(len(train), warmup * cfg.batch_size)
    if n_warm:
        fit(task, Split(train.images[:n_warm], train.labels[:n_warm]), cfg, None, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fit(task, train, cfg, None, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--limit", type=int, default=0, help="training images (0 = AE 60,000, GAN 70,000)")
    p.add_argument("--warmup", type=int, default=5, help="steps before each timed epoch [5]")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated of {', '.join(VARIANTS)}")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    data = load(DataConfig(val_fraction=0.0, train_limit=args.limit, test_limit=args.limit))
    splits = {"ae": data.train}
    gan_all = Split(
        torch.cat([data.train.images, data.test.images]), torch.cat([data.train.labels, data.test.labels])
    )
    splits["gan"] = gan_all if not args.limit else data.train
    batch = {"ae": 256, "gan": 200}
    lr = {"ae": 1e-3, "gan": 2e-4}
    name = device_name(device)
    print(f"device: {name}; torch {torch.__version__}")
    rows = []
    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        if variant not in VARIANTS:
            p.error(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
        for kind in ("ae", "gan"):
            cfg = TrainConfig(
                epochs=1, batch_size=batch[kind], lr=lr[kind], device=device.type, **VARIANTS[variant]
            )
            seconds = epoch_time(kind, splits[kind], cfg, device, args.warmup)
            n = len(splits[kind])
            rows.append(
                {
                    "model": kind,
                    "variant": variant,
                    "images": n,
                    "epoch_s": round(seconds, 3),
                    "images_per_s": round(n / seconds, 1),
                }
            )
    base = {r["model"]: r["images_per_s"] for r in rows if r["variant"] == "fp32"}
    print(f"\n| model | variant | images | epoch (s) | images/s | vs fp32 |  ({name})")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        ratio = f"{r['images_per_s'] / base[r['model']]:.2f}x" if r["model"] in base else "-"
        print(
            f"| {r['model']} | {r['variant']} | {r['images']} | {r['epoch_s']:.2f} | {r['images_per_s']:,.0f} | {ratio} |"
        )
    result = {"device": name, "torch": torch.__version__, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()

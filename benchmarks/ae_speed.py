"""Speed of one autoencoder training epoch: mnistlab's loop against a tutorial-style baseline (a
Dataset returning one PIL image per item through a ToTensor-style transform, a DataLoader, the same
network with nn.Dropout and NCHW tensors, torch's Adam, the same batch size), both in this process,
plus the bare compute of mnistlab's step on a pre-made batch and the limit set by the machine's fp32
matmul peak. mnistlab's side is `fit` + `AutoencoderTask` as `mnistlab train ae` runs it: uint8
batches converted per batch, channels_last, FastDropout (models/dropout.py), and glibc told to keep
freed memory (allocator.py; process-wide, so the baseline here gets it too).

    python -m benchmarks.ae_speed [--images 12800] [--preset seed] [--repeats 2] [--threads N] [--json FILE]
Prints images/s for each (per wall second, and per CPU second of the process, steadier at one thread
on a shared machine) and the ratios; trust ratios only when the machine is busy.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
import torch.nn.functional as F

from benchmarks.common import (
    matmul_peak_gflops,
    result,
    timed_both,
    train_flops_per_image,
    tutorial_loader,
    tutorial_model,
    write_result,
)
from mnistlab.core.allocator import keep_freed_memory
from mnistlab.data.datasets import DataConfig, load, to_float
from mnistlab.models import build_model
from mnistlab.tasks import load_experiment
from mnistlab.training.autoencoder import AutoencoderTask
from mnistlab.training.loop import fit


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=12_800, help="images per timed epoch [12800]")
    ap.add_argument("--preset", default="seed")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--no-malloc-tuning", action="store_true", help="leave glibc's allocator settings alone")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # `mnistlab train` keeps freed memory in the process (allocator.py); the setting is process-wide,
    # so the baseline in this process gets it too and the ratio understates mnistlab's gain from it.
    if not args.no_malloc_tuning:
        keep_freed_memory()

    exp = load_experiment("ae", args.preset, ["train.device=cpu"])
    cfg = dataclasses.replace(exp.train, epochs=1)
    data = load(DataConfig(val_fraction=0.0, train_limit=args.images))
    train = data.train
    cpu = torch.device("cpu")
    torch.manual_seed(0)

    def baseline() -> int:
        model = tutorial_model(build_model("conv_autoencoder", exp.model))  # nn.Dropout, contiguous tensors
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        n = 0
        for x, _ in tutorial_loader(train.images, train.labels, cfg.batch_size):
            recon, _ = model(x)
            loss = F.mse_loss(recon, x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            n += len(x)
        return n

    def mnistlab_loop() -> int:
        task = AutoencoderTask(build_model("conv_autoencoder", exp.model), cfg, data.val, cpu)
        fit(task, train, cfg, run_dir=None, progress=False)
        return len(train)

    # The same steps on one pre-made batch: what the loop would reach with free data handling.
    task = AutoencoderTask(build_model("conv_autoencoder", exp.model), cfg, data.val, cpu)
    images, labels = train.images[: cfg.batch_size], train.labels[: cfg.batch_size]

    def bare() -> int:
        steps = args.images // cfg.batch_size
        for _ in range(steps):
            task.train_step(images, labels)
        return steps * cfg.batch_size

    model = tutorial_model(build_model("conv_autoencoder", exp.model))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def step(x: torch.Tensor) -> None:
        recon, _ = model(x)
        loss = F.mse_loss(recon, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    flops = train_flops_per_image(step, to_float(images))
    peak = matmul_peak_gflops()
    results = {"baseline": 0.0, "mnistlab": 0.0, "bare": 0.0}
    cpu_rates = dict(results)
    fns = {"baseline": baseline, "mnistlab": mnistlab_loop, "bare": bare}
    for _ in range(args.repeats):  # interleaved, so load changes hit all three alike
        for name, fn in fns.items():
            wall, per_cpu_s = timed_both(fn)
            results[name] = max(results[name], wall)
            cpu_rates[name] = max(cpu_rates[name], per_cpu_s)
    peak = max(peak, matmul_peak_gflops())
    limit = peak * 1e9 / flops
    print(
        f"preset {args.preset}: batch {cfg.batch_size}, dropout {exp.model.dropout}, {args.images} images per epoch"
    )
    print(
        f"threads {torch.get_num_threads()}, fp32 matmul peak {peak:.1f} GFLOP/s, "
        f"{flops / 1e6:.1f} MFLOP per image per training step -> limit {limit:,.0f} images/s"
    )
    for name, ips in results.items():
        print(
            f"{name:9s} {ips:9,.0f} images/s  {ips / results['baseline']:5.2f}x baseline  "
            f"{ips * flops / 1e9 / peak:6.1%} of peak   |  per CPU second {cpu_rates[name]:7,.0f} images, "
            f"{cpu_rates[name] / cpu_rates['baseline']:5.2f}x baseline"
        )
    print(f"mnistlab loop / bare compute: {results['mnistlab'] / results['bare']:.2f}")
    out = result(
        "ae_epoch",
        baseline=results["baseline"],
        mnistlab=results["mnistlab"],
        unit="images/s",
        flops_per_item=flops,
        peak_gflops=peak,
        bare=round(results["bare"], 1),
        cpu_images_per_s={k: round(v, 1) for k, v in cpu_rates.items()},
        cpu_ratio=round(cpu_rates["mnistlab"] / cpu_rates["baseline"], 3),
        preset=args.preset,
        batch_size=cfg.batch_size,
        dropout=exp.model.dropout,
        images=args.images,
        threads=torch.get_num_threads(),
    )
    if args.json:
        write_result(args.json, out)
    return out


if __name__ == "__main__":
    main()

"""Threads or processes for the study's stages (`run.workers`): training steps per second of one
process with every core's thread against one 1-thread process per core, all at the same time, for the
autoencoder's and the GAN's default step (pre-made batches, so only the step's compute is timed).

    PYTHONPATH=src:. python -m benchmarks.stage_workers [--steps 150] [--rounds 3] [--json FILE]

Each round runs both layouts back to back (processes first on odd rounds), so a busy machine slows
both alike; the ratio of the layouts' images per second is the number to read.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from mnistlab.core.allocator import keep_freed_memory
from mnistlab.data.datasets import DataConfig, load
from mnistlab.models import build_model
from mnistlab.tasks import load_experiment


def make_step(kind: str):
    """(step function, images per step) of the default preset's `kind` ("ae" or "gan") on one batch."""
    data = load(DataConfig(val_fraction=0.0, train_limit=512))
    cpu = torch.device("cpu")
    if kind == "ae":
        from mnistlab.training.autoencoder import AutoencoderTask

        exp = load_experiment("ae", "default", ["train.device=cpu"])
        model = build_model("conv_autoencoder", exp.model)
        task = AutoencoderTask(model, dataclasses.replace(exp.train, epochs=1), data.val, cpu)
        bs = exp.train.batch_size
    else:
        from mnistlab.training.gan import GANTask

        exp = load_experiment("gan", "default", ["train.device=cpu"])
        task = GANTask(build_model("report_gan", exp.model), exp.train, exp.gan, cpu, total_steps=10_000)
        bs = exp.train.batch_size
    images, labels = data.train.images[:bs], data.train.labels[:bs]
    return (lambda: task.train_step(images, labels)), bs


def worker(kind: str, threads: int, steps: int) -> float:
    """Images per second of `steps` steps at `threads` torch threads, after 5 warm-up steps."""
    torch.set_num_threads(threads)
    keep_freed_memory()
    step, bs = make_step(kind)
    for _ in range(5):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * bs / (time.perf_counter() - t0)


def layout(kind: str, processes: int, threads: int, steps: int) -> float:
    """Summed images per second of `processes` processes of `threads` threads each, started together."""
    cmd = [sys.executable, "-m", "benchmarks.stage_workers", "--worker", kind, str(threads), str(steps)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    return sum(float(p.communicate()[0].strip().splitlines()[-1]) for p in procs)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150, help="timed steps per process (the GAN's: a fifth)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)  # KIND THREADS STEPS: one timed process
    args = ap.parse_args(argv)
    if args.worker:
        kind, threads, steps = args.worker
        print(worker(kind, int(threads), int(steps)))
        return {}
    cores = os.cpu_count() or 1
    print(f"{cores} cores, load average {os.getloadavg()[0]:.2f}")
    results: dict[str, list[dict[str, float]]] = {}
    for kind, steps in (("ae", args.steps), ("gan", max(args.steps // 5, 5))):
        rows = []
        for r in range(args.rounds):
            order = ["processes", "threads"] if r % 2 == 0 else ["threads", "processes"]
            got = {}
            for name in order:
                got[name] = (
                    layout(kind, cores, 1, steps) if name == "processes" else layout(kind, 1, cores, steps)
                )
            rows.append(got)
            print(
                f"{kind} round {r + 1}: one process x {cores} threads {got['threads']:.0f} img/s, "
                f"{cores} processes x 1 thread {got['processes']:.0f} img/s "
                f"({got['processes'] / got['threads']:.2f}x)"
            )
        results[kind] = rows
    # The suite's number: the smaller of the two steps' median ratios (processes over threads).
    medians = {
        k: statistics.median(r["processes"] / r["threads"] for r in rows) for k, rows in results.items()
    }
    out = {
        "cores": cores,
        "ratio": round(min(medians.values()), 3),
        "median_ratio": medians,
        "results": results,
    }
    print("median ratio (processes / threads): " + ", ".join(f"{k} {v:.2f}x" for k, v in medians.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()

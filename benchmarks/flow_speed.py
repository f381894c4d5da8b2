"""The flow-matching generator against the GAN, on this host: training time, sampling time, and
FID-MNIST against the number of solver steps.

    python -m benchmarks.flow_speed train [--batches 30] [--repeats 2] [--threads 2]
    python -m benchmarks.flow_speed sample RUN [--gan GAN_RUN] [--threads 2] [--steps 1,2,4,8,20] [--n 10000]
                                          [--solvers euler,midpoint,heun] [--weights ema|raw] [--field drawn|null]

`train`: one process alternates the default flow step and the default GAN step (the study's recipes,
`--preset default`, with their own batch sizes and precision: the GAN's `train.amp = auto` runs in
bfloat16 where the CPU has bf16 units), each over `--batches` batches of the same images, and prints
each side's images/s and the training seconds that rate gives for its default run (its preset's
epochs, of 48,000 images for the flow and 70,000 for the GAN), side by side. `sample`: 10,000 samples
of a trained flow run at its default settings, timed (wall seconds at `--threads`), then FID-MNIST,
precision and recall of `--n` samples at each step count, beside the GAN run's own scores (its
summary.json) when given.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from benchmarks.common import matmul_peak_gflops, write_result
from mnistlab import tasks
from mnistlab.core import host
from mnistlab.core.allocator import keep_freed_memory
from mnistlab.data.datasets import batches, load
from mnistlab.metrics.generation import score_samples
from mnistlab.models import build_model
from mnistlab.models.code_samplers import SampleRequest
from mnistlab.models.flow import NULL
from mnistlab.runs import folder as rundir
from mnistlab.tasks.flow import FlowTask
from mnistlab.training.gan import GANTask
from mnistlab.training.gan_run import merged
from mnistlab.training.loop import amp_mode
from mnistlab.training.reference import load_reference


def images_per_s(task, images: torch.Tensor, labels: torch.Tensor, batch: int, n_batches: int) -> float:
    """Training images per second of `task.train_step` over n_batches batches (after one warm-up)."""
    order = list(batches(len(images), batch, torch.Generator().manual_seed(0)))[: n_batches + 1]
    task.train_step(images[order[0]], labels[order[0]])
    t0 = time.perf_counter()
    for idx in order[1:]:
        task.train_step(images[idx], labels[idx])
    return len(order[1:]) * batch / (time.perf_counter() - t0)


def train_side_by_side(args: argparse.Namespace) -> dict:
    flow_exp = tasks.load_experiment("flow", "default")
    gan_exp = tasks.load_experiment("gan", "default")
    data = load(flow_exp.data)
    device = torch.device("cpu")
    gan_train = merged(load(gan_exp.data)) if gan_exp.gan.merge_test else load(gan_exp.data).train
    totals = {
        "flow": len(data.train) * flow_exp.train.epochs,
        "gan": len(gan_train) * gan_exp.train.epochs,
    }
    rates: dict[str, list[float]] = {"flow": [], "gan": []}
    for r in range(args.repeats):
        torch.manual_seed(r)
        flow = FlowTask(flow_exp, device, None)
        b = flow_exp.train.batch_size
        rates["flow"].append(images_per_s(flow, data.train.images, data.train.labels, b, args.batches))
        gan = GANTask(
            build_model("report_gan", gan_exp.model),
            gan_exp.train,
            gan_exp.gan,
            device,
            math.ceil(len(gan_train) / gan_exp.train.batch_size) * gan_exp.train.epochs,
        )
        g = gan_exp.train.batch_size
        rates["gan"].append(images_per_s(gan, gan_train.images, gan_train.labels, g, args.batches * b // g))
        print(
            f"repeat {r + 1}: flow {rates['flow'][-1]:.0f} img/s, gan {rates['gan'][-1]:.0f} img/s",
            flush=True,
        )
    best = {k: max(v) for k, v in rates.items()}
    out = {
        "benchmark": "flow_train",
        "threads": torch.get_num_threads(),
        "host": host.describe(),
        "fp32_matmul_peak_gflops": round(matmul_peak_gflops(repeats=5), 1),
        "precision": {
            "flow": "bf16" if amp_mode(flow_exp.train, device) == "bf16" else "float32",
            "gan": "bf16" if amp_mode(gan_exp.train, device) == "bf16" else "float32",
        },
        "images_per_s": {k: round(v, 1) for k, v in best.items()},
        "default_run_images": totals,
        "estimated_train_seconds": {k: round(totals[k] / best[k], 1) for k in best},
    }
    est = out["estimated_train_seconds"]
    print(
        f"\n{out['threads']} threads on {out['host']['cpu']}:\n"
        f"  flow ({out['precision']['flow']}): {best['flow']:.0f} img/s x {totals['flow']:,} images = {est['flow']:.0f} s\n"
        f"  gan  ({out['precision']['gan']}): {best['gan']:.0f} img/s x {totals['gan']:,} images = {est['gan']:.0f} s\n"
        f"  flow / gan training time: {est['flow'] / est['gan']:.2f} (target <= 1)"
    )
    return out


def sample_and_score(args: argparse.Namespace) -> dict:
    run = tasks.load_run(args.run, "cpu", role="generator")
    gen, exp = run.generator(), run.exp
    if args.weights == "raw":  # the last weights instead of their average (flow.ema)
        rundir.load_weights(args.run, gen.net, "model")
    t0 = time.perf_counter()
    gen.sample(SampleRequest(exp.flow.solver, args.time_n, 1))
    seconds = time.perf_counter() - t0
    print(
        f"{args.time_n:,} samples, {exp.flow.steps} {exp.flow.solver} steps, {torch.get_num_threads()} threads: "
        f"{seconds:.1f} s",
        flush=True,
    )
    data = load(exp.data)
    ref = load_reference(exp.data, "cpu", progress=False)
    curve = []
    for solver in args.solvers:
        for s in args.steps:
            if args.field == "null":  # the no-label field alone (what 15% of the training batches taught)
                noise = torch.randn((args.n, 1, 28, 28), generator=torch.Generator().manual_seed(2))
                images = gen.draw(noise, torch.full((args.n,), NULL), solver, s, 1.0)
            else:
                images = torch.from_numpy(gen.sample(SampleRequest(solver, args.n, 2, steps=s)))
            sc = score_samples(images, ref, data.test, None)
            hist = sc.get("class_hist") or []
            total = sum(hist) or 1
            row = {
                "solver": solver,
                "steps": s,
                "weights": args.weights,
                "field": args.field,
                "fid_mnist": sc["fid_mnist"],
                "precision": sc["precision"],
                "recall": sc["recall"],
                "digit_min": min(hist) / total if hist else None,
                "digit_max": max(hist) / total if hist else None,
            }
            curve.append(row)
            print(json.dumps(row), flush=True)
    out = {
        "benchmark": "flow_sample",
        "run": str(args.run),
        "threads": torch.get_num_threads(),
        "host": host.describe(),
        "timed_samples": args.time_n,
        "seconds_default_settings": round(seconds, 1),
        "n": args.n,
        "curve": curve,
    }
    if args.gan:
        gan = rundir.read_summary(args.gan).get("test", {})
        out["gan"] = {k: gan.get(k) for k in ("fid_mnist", "precision", "recall")}
        print(f"GAN run {args.gan}: {json.dumps(out['gan'])}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="training images/s of flow and GAN, side by side")
    tr.add_argument("--batches", type=int, default=30, help="flow batches per measurement [30]")
    tr.add_argument("--repeats", type=int, default=2)
    sa = sub.add_parser("sample", help="sampling time and FID-MNIST against steps of a flow run")
    sa.add_argument("run", type=Path)
    sa.add_argument("--gan", type=Path, help="a GAN run whose summary's scores to print beside")
    sa.add_argument("--steps", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2, 4, 8, 20])
    sa.add_argument("--n", type=int, default=10_000, help="samples scored per point [10000]")
    sa.add_argument("--time-n", type=int, default=10_000, help="samples timed at the defaults [10000]")
    sa.add_argument("--solvers", type=lambda s: s.split(","), default=["euler"], help="[euler]")
    sa.add_argument("--weights", choices=("ema", "raw"), default="ema", help="the average or the last [ema]")
    sa.add_argument(
        "--field",
        choices=("drawn", "null"),
        default="drawn",
        help="drawn: each label from the training frequencies (the run's unconditional samples); null: the "
        "no-label field [drawn]",
    )
    for q in (tr, sa):
        q.add_argument("--threads", type=int, default=2)
        q.add_argument("--json", help="also write the result to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as `mnistlab train` does
    out = train_side_by_side(args) if args.cmd == "train" else sample_and_score(args)
    if args.json:
        write_result(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

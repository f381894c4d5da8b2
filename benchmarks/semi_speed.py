"""The semi-supervised task's training cost beside the default autoencoder's, on this host.

Times training steps of both default presets in this process (CPU seconds of `time.process_time`,
real MNIST batches) and projects each to its whole schedule: steps per run x CPU seconds per step
plus each epoch's validation (the AE: its 12,000 validation images; semi: its 2,000-image monitor),
semi's label propagation prior at the start and its BatchNorm re-estimation at the end; checkpoints
are left out of both. The semi steps are timed with every
pseudo-label accepted (threshold 0), so every strong view is forwarded: the most a step of the
recipe can cost; the steps of the weak tail (`semi.weak_tail`: weak views instead of strong ones)
are timed apart, the same way, and weighted by their share of the schedule. `--semi-run` adds a
finished semi run's own measured CPU seconds.

Run: `python -m benchmarks.semi_speed --threads 1 [--semi-run runs/semi-default]`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from mnistlab.core.allocator import keep_freed_memory
from mnistlab.data.datasets import load
from mnistlab.models import build_model
from mnistlab.tasks import load_experiment
from mnistlab.training.autoencoder import AutoencoderTask
from mnistlab.training.run_folder import seed_everything
from mnistlab.training.semi import SemiTask, draw_labelled, recalibrate_bn


def cpu_per_step(step, batches: list, warmup: int = 5) -> float:
    """CPU seconds per call of step(batch), over `batches` after `warmup` untimed calls."""
    for b in batches[:warmup]:
        step(b)
    t0 = time.process_time()
    for b in batches[warmup:]:
        step(b)
    return (time.process_time() - t0) / max(1, len(batches) - warmup)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch threads [1]")
    ap.add_argument("--ae-steps", type=int, default=300, help="timed autoencoder steps [300]")
    ap.add_argument("--semi-steps", type=int, default=40, help="timed semi steps [40]")
    ap.add_argument("--semi-run", help="a finished semi run folder: its measured CPU seconds too")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as `mnistlab train` does
    cpu = torch.device("cpu")

    ae = load_experiment("ae", "default", ["train.device=cpu"])
    data = load(ae.data)
    seed_everything(0)
    ae_task = AutoencoderTask(build_model("conv_autoencoder", ae.model), ae.train, data.val, cpu)
    bs = ae.train.batch_size
    perm = torch.randperm(len(data.train))
    ae_batches = [perm[i * bs : (i + 1) * bs] for i in range(args.ae_steps + 5)]
    ae_step = cpu_per_step(
        lambda i: ae_task.train_step(data.train.images[i], data.train.labels[i]), ae_batches
    )
    ae_steps = ae.train.epochs * math.ceil(len(data.train) / bs)
    ae_eval = cpu_per_step(lambda _: ae_task.evaluate(), [0, 1], warmup=1)  # one epoch's validation

    semi = load_experiment(
        "semi", "default", ["train.device=cpu", "semi.threshold=0", "semi.threshold_floor=0"]
    )
    semi_data = load(semi.data)
    labelled = draw_labelled(semi_data.train.labels, semi.semi)
    seed_everything(0)
    t0 = time.process_time()
    semi_task = SemiTask(semi, semi_data.train, labelled, semi_data.val, cpu)
    semi_start = time.process_time() - t0  # the label propagation prior, built once per run
    bu = semi.train.batch_size
    semi_batches = [perm[i * bu : (i + 1) * bu] for i in range(args.semi_steps + 5)]
    semi_strong = cpu_per_step(lambda i: semi_task.train_step(semi_data.train.images[i], i), semi_batches)
    semi_steps = semi.train.epochs * math.ceil(len(semi_data.train) / bu)
    tail = semi.semi.weak_tail
    semi_step = semi_strong
    if tail > 0:  # the same steps inside the weak tail (the task's step counter moved there)
        semi_task.state.steps.fill_(semi_task.total_steps)
        semi_weak = cpu_per_step(lambda i: semi_task.train_step(semi_data.train.images[i], i), semi_batches)
        semi_step = (1 - tail) * semi_strong + tail * semi_weak
        print(
            f"semi CPU s per step: strong views {semi_strong:.4f}, weak tail {semi_weak:.4f} ({tail:.0%} of the steps)"
        )
    semi_eval = cpu_per_step(lambda _: semi_task.evaluate(), [0, 1], warmup=1)  # the per-epoch monitor
    t0 = time.process_time()
    recalibrate_bn(semi_task.teacher, semi_data.train.images, semi.augment, semi.semi.bn_images, 1, cpu)
    semi_end = time.process_time() - t0  # BatchNorm statistics re-estimated once at the end

    rows = {
        "ae (default preset)": (ae_steps, ae_step, bs, ae.train.epochs * ae_eval),
        "semi (default preset, every view forwarded)": (
            semi_steps,
            semi_step,
            semi.semi.batch_labelled + bu,
            semi.train.epochs * semi_eval + semi_end + semi_start,
        ),
    }
    result = {"threads": args.threads, "rows": {}}
    print(f"CPU seconds at {args.threads} torch thread(s), {torch.__version__}")
    head = f"{'task':44s} {'steps':>7s} {'images/step':>11s} {'CPU s/step':>10s} {'steps CPU s':>11s}"
    print(f"{head} {'+ validation etc.':>17s} {'projected CPU s':>15s}")
    totals = {}
    for name, (steps, per_step, images, other) in rows.items():
        totals[name] = steps * per_step + other
        result["rows"][name] = {
            "steps": steps,
            "cpu_s_per_step": per_step,
            "steps_cpu_s": steps * per_step,
            "other_cpu_s": other,
            "projected_cpu_s": totals[name],
        }
        print(
            f"{name:44s} {steps:7d} {images:11d} {per_step:10.4f} {steps * per_step:11.0f} {other:17.0f}"
            f" {totals[name]:15.0f}"
        )
    if args.semi_run:
        s = json.loads((Path(args.semi_run) / "summary.json").read_text())
        measured = s.get("train_cpu_seconds")
        result["semi_run"] = {
            "run": args.semi_run,
            "train_cpu_seconds": measured,
            "threads": s.get("threads"),
        }
        print(
            f"{'semi run ' + args.semi_run + ' (measured)':44s} {s.get('steps', 0):7d} {'':11s} {'':10s} {measured:15.0f}"
        )
    ratio = totals["semi (default preset, every view forwarded)"] / totals["ae (default preset)"]
    result["ratio_semi_to_ae"] = ratio
    print(f"semi / ae (projected): {ratio:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

"""The whole study's time budget and numbers: `mnistlab run --preset P` end to end, in one process, into
a fresh folder. Prints wall and CPU seconds per stage (from run.json, which the run writes itself), the
report's time, the whole run's wall time, the peak RSS of each stage (the high-water mark of the process
that ran it) and of the whole run (the proportional set sizes of the stage processes side by side summed, sampled), and the machine's
load average (on a shared machine the wall time depends on what else runs); then the
headline numbers each stage measured. With --previous, a JSON this script wrote before (another preset,
an earlier commit) is printed beside them, stage by stage and number by number.

    PYTHONPATH=src python -m benchmarks.study [--preset quick] [--threads N] [--json FILE] [--previous FILE]

Targets (issue "whole default study"): quick under 90 s; default under 25 minutes with every stage.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

import torch

from mnistlab.report.build import write_report
from mnistlab.study.run import run_study


def _get(d: dict, *keys: str):
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def headline(out: Path, state: dict) -> dict[str, float]:
    """The headline numbers of each finished stage, read from its summary by what it holds (so a
    plug-in stage's numbers show too): test MSE, denoising PSNR at the largest sigma, probe and
    fine-tuning accuracy, each sampler's and generator's FID-MNIST and rarest / commonest digit share."""
    nums: dict[str, float] = {}
    for stage in state["stages"]:
        path = out / stage["folder"] / "summary.json"
        s = json.loads(path.read_text()) if path.is_file() else {}
        name = stage["name"]
        found = {
            "test MSE": _get(s, "test", "mse"),
            "frozen probe acc": _get(s, "linear_probe", "test_acc"),
            "fine-tuned acc": _get(s, "finetune", "test_acc"),
            "prior FID-MNIST": _get(s, "generation", "prior", "fid_mnist"),
            "FID-MNIST": _get(s, "test", "fid_mnist"),
        }
        if s.get("denoising"):
            row = max(s["denoising"], key=lambda r: r.get("sigma", 0))
            found[f"PSNR at sigma {row.get('sigma')}"] = _get(row, name, "psnr")
        for sampler, row in (_get(s, "generation", "rows") or {}).items():
            found[f"{sampler} sampler FID-MNIST"] = row.get("fid_mnist")
        hist = _get(s, "test", "class_hist")
        if hist:
            found["rarest digit share"], found["commonest digit share"] = min(hist), max(hist)
        nums.update({f"{name}: {k}": float(v) for k, v in found.items() if isinstance(v, (int, float))})
    return nums


def tree_memory_mb(pid: int) -> float:
    """Memory of process `pid` and of all its descendants (Linux /proc), in MB: the sum of their
    proportional set sizes (a page shared by n processes counts 1/n in each, so pages a stage process
    shares with the fork server it came from are not counted twice, as summed RSS would)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
            total += (
                next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")) / 1024
            )
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):  # ended between the listing and the reading
            continue
    return total


class TreePeak(threading.Thread):
    """The largest summed memory of this process and its stage processes, sampled every `every`
    seconds: with stages side by side (run.workers) the study's memory is their sum, which no single
    process's high-water mark shows. Reading smaps_rollup walks a process's page tables, tens of ms
    for a training process, so the sampler's own CPU seconds are kept (`cpu`) and printed."""

    def __init__(self, every: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.every, self.peak, self.cpu, self.done = every, 0.0, 0.0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.peak = max(self.peak, tree_memory_mb(os.getpid()))
            self.cpu = time.thread_time()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="run folder (replaced) [a temporary folder]")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.KEY=VALUE")
    ap.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    ap.add_argument("--previous", type=Path, help="a JSON written by --json before, printed beside this run")
    ap.add_argument(
        "--threads", type=int, default=0, help="torch threads; 0 = torch's default (one per core)"
    )
    args = ap.parse_args()
    if args.threads:
        # One thread measures honestly on a shared machine: idle OpenMP threads spin and burn CPU
        # when the cores are oversubscribed; CPU seconds are then the steadier number.
        torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="mnistlab-study-")) / "run"
    shutil.rmtree(out, ignore_errors=True)
    load0 = os.getloadavg()
    cpu0, t0 = time.process_time(), time.perf_counter()
    sampler = TreePeak()
    sampler.start()
    state = run_study(out, args.preset, args.overrides, progress=False, report=None)
    t_stages = time.perf_counter() - t0
    t1 = time.perf_counter()
    write_report(out)
    t_report = time.perf_counter() - t1
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    sampler.done.set()
    # The process's own high-water mark (RSS), or the process tree's summed PSS, whichever is larger.
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, sampler.peak)
    print(
        f"mnistlab run --preset {args.preset} (run.workers {state['plan'].get('workers', 1)}, "
        f"{torch.get_num_threads()} torch threads, "
        f"{os.cpu_count()} cores, load average before {load0[0]:.2f}, after {os.getloadavg()[0]:.2f})"
    )
    print(f"{'stage':<10}{'wall s':>10}{'CPU s':>10}{'peak RSS MB':>14}")
    for s in state["stages"]:
        print(
            f"{s['name']:<10}{s['seconds']:>10.1f}{s['cpu_seconds']:>10.1f}{s.get('peak_rss_mb', 0):>14.0f}"
        )
    print(f"{'report':<10}{t_report:>10.1f}")
    print(
        f"{'total':<10}{wall:>10.1f}{peak:>14.0f}   (stages {t_stages:.1f} s, process CPU {cpu:.0f} s, "
        f"of which the memory sampler {sampler.cpu:.1f} s)"
    )
    print(f"run folder: {out}")
    numbers = headline(out, state)
    prev = json.loads(args.previous.read_text()) if args.previous else {}
    if prev:
        print(f"beside {args.previous} (preset {prev.get('preset')}, total {prev.get('total_s')} s):")
        for name, sec in prev.get("stages", {}).items():
            now = next((s["seconds"] for s in state["stages"] if s["name"] == name), None)
            print(f"  {name:<10} now {now if now is not None else '-':>8} s, before {sec:>8} s")
    print(f"{'headline number':<44}{'this run':>12}" + (f"{'previous':>12}" if prev else ""))
    for key, value in numbers.items():
        before = prev.get("numbers", {}).get(key)
        print(f"{key:<44}{value:>12.4g}" + (f"{before:>12.4g}" if isinstance(before, (int, float)) else ""))
    if args.json:
        result = {
            "preset": args.preset,
            "stages": {s["name"]: s["seconds"] for s in state["stages"]},
            "cpu": {s["name"]: s["cpu_seconds"] for s in state["stages"]},
            "report_s": round(t_report, 1),
            "total_s": round(wall, 1),
            "cpu_s": round(cpu, 1),
            "peak_rss_mb": round(peak),
            "load_before": load0[0],
            "threads": torch.get_num_threads(),
            "numbers": numbers,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

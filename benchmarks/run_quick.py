"""The main job's time budget: `mnistlab run --preset quick` end to end (target: about 5 minutes on the
2-core development CPU), in one process, into a fresh folder. Prints wall and CPU seconds per stage
(from run.json, which the run writes itself), the report's time, the whole run's wall time, the
peak RSS after each stage (the process's high-water mark) and the machine's load average, since on
a shared machine the wall time depends on what else runs.

    PYTHONPATH=src nice -n 10 python -m benchmarks.run_quick [--out DIR] [--preset quick] [--threads N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch

from mnistlab.pipeline import run_study
from mnistlab.report.build import write_report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="run folder (replaced) [a temporary folder]")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.KEY=VALUE")
    ap.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    ap.add_argument(
        "--threads", type=int, default=0, help="torch threads; 0 = torch's default (one per core)"
    )
    args = ap.parse_args()
    if args.threads:
        # One thread measures honestly on a shared machine: idle OpenMP threads spin and burn CPU
        # when the cores are oversubscribed; CPU seconds are then the steadier number.
        torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="mnistlab-run-quick-")) / "run"
    shutil.rmtree(out, ignore_errors=True)
    load0 = os.getloadavg()
    cpu0, t0 = time.process_time(), time.perf_counter()
    state = run_study(out, args.preset, args.overrides, progress=False, report=False)
    t_stages = time.perf_counter() - t0
    t1 = time.perf_counter()
    write_report(out)
    t_report = time.perf_counter() - t1
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"mnistlab run --preset {args.preset} ({torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} cores, load average before {load0[0]:.2f}, after {os.getloadavg()[0]:.2f})")  # fmt: skip
    print(f"{'stage':<10}{'wall s':>10}{'CPU s':>10}{'peak RSS MB':>14}")
    for s in state["stages"]:
        print(
            f"{s['name']:<10}{s['seconds']:>10.1f}{s['cpu_seconds']:>10.1f}{s.get('peak_rss_mb', 0):>14.0f}"
        )
    print(f"{'report':<10}{t_report:>10.1f}")
    print(f"{'total':<10}{wall:>10.1f}{peak:>14.0f}   (stages {t_stages:.1f} s, process CPU {cpu:.0f} s)")
    print(f"run folder: {out}")
    if args.json:
        result = {"preset": args.preset, "stages": {s["name"]: s["seconds"] for s in state["stages"]},
                  "cpu": {s["name"]: s["cpu_seconds"] for s in state["stages"]},
                  "report_s": round(t_report, 1), "total_s": round(wall, 1), "cpu_s": round(cpu, 1),
                  "peak_rss_mb": round(peak), "load_before": load0[0], "threads": torch.get_num_threads()}  # fmt: skip
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

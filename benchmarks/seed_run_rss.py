"""Peak memory of `mnistlab run --preset seed`: every stage on the full data (the report's grid search
with its worker processes, AE, DAE, probes with label efficiency, latent maps, GAN on train+test).

    python -m benchmarks.seed_run_rss [--epochs 1] [--out DIR] [--json FILE]
Memory does not grow with the number of epochs (the images are held once, as uint8; each epoch
reuses the same buffers), so by default every training stage runs one epoch to keep this to minutes;
--epochs 0 runs the preset's own epochs (hours on a 2-core CPU). The peak is the largest resident set
of this process or of any worker process it started (getrusage SELF and CHILDREN).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

from mnistlab.report.build import write_report
from mnistlab.study.run import run_study

EPOCH_KEYS = (
    "ae.train.epochs",
    "dae.train.epochs",
    "gan.train.epochs",
    "probe.linear.epochs",
    "probe.finetune.epochs",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--epochs", type=int, default=1, help="epochs of every training stage; 0 = the preset's [1]"
    )
    ap.add_argument("--out", type=Path, help="run folder (replaced) [a temporary folder]")
    ap.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="mnistlab-seed-rss-")) / "run"
    shutil.rmtree(out, ignore_errors=True)
    overrides = [f"{k}={args.epochs}" for k in EPOCH_KEYS] if args.epochs else []
    t0 = time.perf_counter()
    state = run_study(out, "seed", overrides, progress=False, report=write_report)
    wall = time.perf_counter() - t0
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    peak = max(own, children)
    stages = {s["name"]: s.get("peak_rss_mb") for s in state["stages"]}
    print(
        f"mnistlab run --preset seed ({'preset epochs' if not args.epochs else f'{args.epochs} epoch(s) per stage'}): "
        f"{wall:.0f} s; peak RSS {peak:.0f} MiB (this process {own:.0f}, largest worker {children:.0f}); "
        f"after each stage: {stages}"
    )
    if args.json:
        result = {
            "peak_rss_mib": round(peak),
            "self_mib": round(own),
            "children_mib": round(children),
            "epochs": args.epochs,
            "seconds": round(wall),
            "stages_peak_rss_mb": stages,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

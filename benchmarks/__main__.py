"""`python -m benchmarks`: every speed benchmark against its baseline, one process each, one table.

    PYTHONPATH=src nice -n 5 python -m benchmarks [--quick] [--only ae_epoch,probe] [--json FILE]
    PYTHONPATH=src python -m benchmarks --stages [--quick] [--threads N]

Prints the host first: the CPU's model and kernel flags, torch's version and threads, the measured
fp32 matmul peak (the limit the "% of peak" column is measured against), the bf16 peak where the CPU
has bf16 units, and issue 36's budget for the default study on this host. `--stages` then runs only
benchmarks/stages.py, in this process (each training stage of the default study: images/s, share of
the peaks, projected seconds, the critical path; see its docstring). Otherwise a table: baseline and
mnistlab throughput, the result (ratio to the baseline unless the unit says otherwise), the target
and pass/FAIL, mnistlab's share of the matmul peak where the benchmark knows its FLOPs (against the
peak that benchmark measured in its own process, minutes later than the one printed first), and each
benchmark process's peak RSS. The machine may be shared: each benchmark alternates baseline and
mnistlab in its own process, so the ratios are the numbers to trust.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from benchmarks import stages
from benchmarks.common import host_report
from benchmarks.suite import ENTRIES, run_entry, select, table


def main(argv: list[str] | None = None) -> int:
    names = ", ".join(e.name for e in ENTRIES)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not a measurement")
    ap.add_argument("--only", help=f"comma-separated benchmarks to run, of: {names}")
    ap.add_argument("--timeout", type=float, default=None, help="seconds allowed per benchmark")
    ap.add_argument("--json", help="write every result (and the matmul peak) to this file")
    ap.add_argument("--quiet", action="store_true", help="do not echo the benchmarks' own output")
    ap.add_argument("--stages", action="store_true", help="only the default study's stages, in this process")
    ap.add_argument(
        "--threads", type=int, default=0, help="with --stages: torch threads per stage [as the study]"
    )
    args = ap.parse_args(argv)
    if args.stages:  # it prints the host itself, at the stages' threads
        out = stages.main(
            [*(["--quick"] if args.quick else []), "--threads", str(args.threads)]
            + (["--json", args.json] if args.json else [])
        )
        return 0 if out["rows"] else 1
    try:
        entries = select(args.only.split(",") if args.only else None)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    host = host_report(torch.get_num_threads(), quick=args.quick)
    print("\n".join(host["lines"]), flush=True)
    peak = host["fp32_stage"]
    log = None if args.quiet else (lambda line: print(line, flush=True))
    outcomes = []
    for e in entries:
        print(f"running {e.name} ({e.module}) ...", flush=True)
        outcomes.append(run_entry(e, quick=args.quick, timeout=args.timeout, log=log))
    print()
    print(
        f"fp32 matmul peak: {peak:.1f} GFLOP/s"
        + ("   [--quick: smoke sizes, not measurements]" if args.quick else "")
    )
    print(table(outcomes))
    if args.json:
        doc = {
            "matmul_peak_gflops": round(peak, 1),
            "host": {k: v for k, v in host.items() if k != "lines"},
            "quick": args.quick,
            "results": [
                {
                    "name": o.entry.name,
                    "status": o.status,
                    "verdict": o.verdict,
                    "target": o.entry.target,
                    "metric": o.entry.metric,
                    "value": o.value,
                    "seconds": round(o.seconds, 1),
                    "peak_rss_mib": o.peak_rss_mib,
                    "message": o.message,
                    "data": o.data,
                }
                for o in outcomes
            ],
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
    failed = [o for o in outcomes if o.status in ("error", "timeout")]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

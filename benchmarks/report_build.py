"""Time to build report.html and report.md from a finished run folder (`mnistlab report RUN`).

    python -m benchmarks.report_build [--run RUN] [--repeats 3] [--json FILE]
Without --run it first makes a tiny study (tests/presets/tiny.toml, about a minute of CPU) in a
temporary folder, then times the report only: the best of --repeats builds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mnistlab.report.build import write_report
from mnistlab.study.run import run_study

TINY = Path(__file__).resolve().parent.parent / "tests" / "presets" / "tiny.toml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="a finished `mnistlab run` folder [a tiny study made here]")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = ap.parse_args()
    run = args.run
    if run is None:
        run = Path(tempfile.mkdtemp(prefix="mnistlab-report-build-")) / "run"
        print(f"making a tiny study in {run} (not timed) ...", flush=True)
        run_study(run, str(TINY), [], progress=False, report=None)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        write_report(run)
        times.append(time.perf_counter() - t0)
    html = run / "report.html"
    best = min(times)
    print(
        f"report of {run}: best of {args.repeats} builds {best:.2f} s "
        f"(all: {', '.join(f'{t:.2f}' for t in times)}); report.html {html.stat().st_size / 1e6:.2f} MB"
    )
    if args.json:
        result = {
            "seconds": round(best, 3),
            "all_seconds": [round(t, 3) for t in times],
            "run": str(run),
            "html_bytes": html.stat().st_size,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

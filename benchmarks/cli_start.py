"""How long the command line takes to answer what needs no model: `mnistlab --help`, `train --help`,
`--version`, a mistyped command and `pretrained list` (the shipped runs, read from their files), each
the best wall time of --repeats fresh processes (the `mnistlab` script beside this Python, as a user
runs it). Target (issue 37): under 0.5 s each; each took seconds while it imported torch.

    python -m benchmarks.cli_start [--repeats 5]

To time another checkout's code with the same script, put its src/ first: `PYTHONPATH=OTHER/src`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

CASES = (
    ("--help",),
    ("train", "--help"),
    ("--version",),
    ("trian",),  # the typo: one line, exit 2
    ("pretrained", "list"),
)
TARGET_S = 0.5


def command() -> list[str]:
    """The installed `mnistlab` script when there is one (what a user types), else `python -m mnistlab`."""
    script = Path(sys.executable).with_name("mnistlab")
    found = str(script) if script.is_file() else shutil.which("mnistlab")
    return [found] if found else [sys.executable, "-m", "mnistlab"]


def best_wall_s(argv: list[str], repeats: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as the shared machine asks; the help starts no torch
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, env=env, check=False)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="processes per case; the best counts [5]")
    args = parser.parse_args()
    base = command()
    print(
        f"{'mnistlab ...':<22}{'best s':>8}  target < {TARGET_S} s   ({' '.join(base)}, {os.getloadavg()[0]:.2f} load)"
    )
    for case in CASES:
        best = best_wall_s([*base, *case], args.repeats)
        verdict = "pass" if best < TARGET_S else "FAIL"
        print(f"{' '.join(case):<22}{best:>8.3f}  {verdict}")


if __name__ == "__main__":
    main()

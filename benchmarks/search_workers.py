"""How should a search use the cores: one worker with N threads, or N workers with one thread each?

Runs the same fixed grid of autoencoder trials (4 trials: lr {1e-3, 3e-3} x latent {4, 16}, preset
quick on a slice of MNIST) both ways, each into a fresh folder, alternating the order over
--repeats rounds, and prints wall-clock seconds, trials/s and the ratio. The winner is what
`mnistlab search` should use by default (search.default_workers).

    python -m benchmarks.search_workers [--train-limit 4000] [--epochs 2] [--repeats 2] [--cores 2]

The machine may be shared: the load average is printed with each round; trust ratios over rounds.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from mnistlab.search.grid import run_grid

GRID = {"train.lr": ["1e-3", "3e-3"], "model.latent_dim": ["4", "16"]}


def one_round(workers: int, threads: int, overrides: list[str], root: Path) -> float:
    """Wall seconds for the whole grid with `workers` processes of `threads` torch threads each."""
    out = Path(tempfile.mkdtemp(prefix=f"w{workers}t{threads}-", dir=root))
    t0 = time.perf_counter()
    run_grid(
        "ae", GRID, out, "quick", [*overrides, f"train.threads={threads}"], workers=workers, progress=False
    )
    seconds = time.perf_counter() - t0
    shutil.rmtree(out)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--train-limit", type=int, default=4000, help="training images before the val split [4000]"
    )
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="rounds of both layouts, order alternating [2]")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="cores to share out [all]")
    ap.add_argument("--single", action="store_true", help="also time 1 worker x 1 thread")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    overrides = [
        f"data.train_limit={args.train_limit}",
        "data.test_limit=1000",
        f"train.epochs={args.epochs}",
    ]
    layouts = {
        f"1 worker x {args.cores} threads": (1, args.cores),
        f"{args.cores} workers x 1 thread": (args.cores, 1),
    }
    times: dict[str, list[float]] = {name: [] for name in layouts}
    n_trials = len(GRID["train.lr"]) * len(GRID["model.latent_dim"])
    with tempfile.TemporaryDirectory(prefix="search-bench-") as root:
        for r in range(args.repeats):
            order = list(layouts) if r % 2 == 0 else list(reversed(layouts))
            for name in order:
                load = os.getloadavg()[0]
                s = one_round(*layouts[name], overrides, Path(root))
                times[name].append(s)
                print(
                    f"round {r + 1} {name:>22}: {s:7.1f} s  ({n_trials / s:.3f} trials/s, load avg {load:.1f})"
                )
    print(
        f"\n{n_trials} trials x {args.epochs} epochs on {int(args.train_limit * 0.8)} images each, median of rounds:"
    )
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name, s in med.items():
        print(f"  {name:>22}: {s:7.1f} s")
    (a, sa), (b, sb) = list(med.items())[:2]
    faster, ratio = (b, sa / sb) if sb < sa else (a, sb / sa)
    print(f"faster of the two layouts: {faster} ({ratio:.2f}x)")


if __name__ == "__main__":
    main()

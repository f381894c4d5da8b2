"""Speed of the nearest-training-image search that every generation score runs (the "NN-train L2"
column: 10,000 samples against the 48,000 training images, 38 GFLOP-equivalent per 1,000 samples):
the float32 matmul search it used to be against `gen_metrics.nearest_distances`'s exact int8 one.

    python -m benchmarks.nearest_images [--queries 2000] [--support 48000] [--repeats 3] [--threads 1]

Both sides search the same real MNIST images (training images as the support, test images as the
queries); they alternate --repeats times and the best process time of each is kept. The int8 side
must find the same distances (checked: the largest difference is printed, float32's round-off). On a
CPU whose int8 matmul does not sum exactly (below AVX512-VNNI) mnistlab searches in float32 too, and
the ratio is about 1; the JSON says which ran ("int8_exact").
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.common import result, write_result
from mnistlab.data.datasets import DataConfig, load
from mnistlab.metrics.scores import int8_matmul_is_exact, int8_search_pays, nearest_distances


def float32_search(query: torch.Tensor, support: torch.Tensor, chunk: int = 256) -> np.ndarray:
    """The float32 search (as gen_metrics had it to 2026-12-05): argmin of |s|^2 - 2 q.s by addmm, then
    the exact distance of the pick."""
    q = query.reshape(len(query), -1).float().div_(255.0)
    s = support.reshape(len(support), -1).float().div_(255.0)
    s_norm = torch.linalg.vector_norm(s, dim=1).square_()[None, :]
    index = torch.empty(len(q), dtype=torch.int64)
    for start in range(0, len(q), chunk):
        rows = slice(start, start + chunk)
        index[rows] = torch.addmm(s_norm, q[rows], s.T, alpha=-2.0).argmin(1)
    return (q - s[index]).pow(2).sum(1).sqrt().numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--support", type=int, default=48000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load(DataConfig())
    query, support = data.test.images[: args.queries], data.train.images[: args.support]
    times: dict[str, list[float]] = {"float32": [], "int8": []}
    for _ in range(args.repeats):
        t0 = time.process_time()
        slow = float32_search(query, support)
        times["float32"].append(time.process_time() - t0)
        t0 = time.process_time()
        fast, _ = nearest_distances(query, support)
        times["int8"].append(time.process_time() - t0)
    base, new = min(times["float32"]), min(times["int8"])
    diff = float(np.abs(fast - slow).max())
    if int8_search_pays():
        kind = "int8"
    elif int8_matmul_is_exact():
        kind = "float32 (this CPU's int8 matmul is exact but slower)"
    else:
        kind = "float32 (this CPU's int8 matmul is not exact)"
    print(
        f"{len(query)} queries x {len(support)} support images, {args.threads} thread(s): float32 {base:.2f} s, "
        f"mnistlab's {kind} {new:.2f} s ({base / new:.2f}x); largest distance difference {diff:.2g}"
    )
    out = result(
        "nearest_images",
        len(query) / base,
        len(query) / new,
        "queries/s",
        threads=args.threads,
        max_abs_diff=diff,
        int8_exact=int8_matmul_is_exact(),
        int8_used=int8_search_pays(),
    )
    if args.json:
        write_result(args.json, out)


if __name__ == "__main__":
    main()

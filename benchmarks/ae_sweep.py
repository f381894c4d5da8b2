"""Sweep autoencoder settings: each config trains as its own `mnistlab train ae` process (several at
once), then gets test MSE and the accuracy of a logistic-regression probe on its frozen codes.

Used to tune the `default` preset (on a GPU machine when one is lent: `--device cuda`). Example:
    python -m benchmarks.ae_sweep --out /tmp/sweep --parallel 8 --device cuda --grid lr_batch
The quality benchmark (seed and default presets, 20 epochs each, on this machine's CPU):
    python -m benchmarks.ae_sweep --out runs/ae-quality --grid presets
Writes OUT/results.json and OUT/results.md, sorted by test MSE.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

BASE = ["model.latent_dim=10", "model.dropout=0.0", "train.weight_decay=0.0", "train.epochs=20"]


def grid(name: str) -> dict[str, list[str]]:
    """Named config sets: name -> list of --set overrides on top of the default preset."""
    configs: dict[str, list[str]] = {}
    if name in ("lr_batch", "all"):
        for lr, bs in itertools.product(["1e-3", "2e-3", "4e-3"], ["32", "64", "128", "256"]):
            configs[f"onecycle-lr{lr}-bs{bs}"] = [
                *BASE,
                f"train.lr={lr}",
                f"train.batch_size={bs}",
                "train.schedule=onecycle",
                "train.optimizer=adamw",
            ]
    if name in ("schedules", "all"):
        for sched in ("constant", "cosine"):
            for opt in ("adam", "adamw"):
                configs[f"{sched}-{opt}-lr2e-3-bs64"] = [
                    *BASE,
                    "train.lr=2e-3",
                    "train.batch_size=64",
                    f"train.schedule={sched}",
                    f"train.optimizer={opt}",
                ]
    if name in ("seed", "all"):
        configs["seed-preset"] = []
    if name == "presets":  # the quality benchmark: each preset exactly as shipped
        configs["seed-preset"] = []
        configs["default-preset"] = []
    if name == "smoke":
        configs["smoke-a"] = ["train.epochs=1", "data.train_limit=2000", "data.test_limit=500"]
        configs["smoke-b"] = [
            "train.epochs=1",
            "data.train_limit=2000",
            "data.test_limit=500",
            "train.lr=1e-2",
        ]
    if not configs:
        raise SystemExit(f"unknown grid {name!r}")
    return configs


def preset_of(name: str, fallback: str) -> str:
    return name.removesuffix("-preset") if name.endswith("-preset") else fallback


def train_one(name: str, overrides: list[str], out: Path, device: str, preset: str, timeout: float) -> dict:
    run_dir = out / name
    cmd = [
        sys.executable,
        "-m",
        "mnistlab",
        "-q",
        "train",
        "ae",
        "--preset",
        preset,
        "--out",
        str(run_dir),
        "--device",
        device,
        "--no-progress",
        "--resume",
    ]
    for o in overrides:
        cmd += ["--set", o]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    result = {"name": name, "overrides": overrides, "seconds": round(time.perf_counter() - t0, 1)}
    if proc.returncode != 0:
        return {**result, "error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    summary = json.loads((run_dir / "summary.json").read_text())
    return {**result, "test": summary["test"]}


def probe_accuracy(run_dir: Path, device: str) -> float:
    """Logistic regression on standardised frozen codes: fit on train, score on test."""
    from mnistlab.data.datasets import load, to_float
    from mnistlab.tasks import load_run

    run = load_run(run_dir)
    exp, model = run.exp, run.model.to(device)
    data = load(exp.data)

    @torch.no_grad()
    def codes(images):
        return torch.cat(
            [model.encode(to_float(images[i : i + 2000], device)).cpu() for i in range(0, len(images), 2000)]
        ).numpy()

    scaler = StandardScaler().fit(codes(data.train.images))
    clf = LogisticRegression(max_iter=2000).fit(scaler.transform(codes(data.train.images)), data.train.labels)
    return float(np.mean(clf.predict(scaler.transform(codes(data.test.images))) == data.test.labels.numpy()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--grid", default="lr_batch", help="lr_batch | schedules | seed | all | presets | smoke")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--timeout", type=float, default=3600)
    args = ap.parse_args()
    configs = grid(args.grid)
    args.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.parallel) as pool:
        jobs = {
            n: pool.submit(train_one, n, o, args.out, args.device, preset_of(n, args.preset), args.timeout)
            for n, o in configs.items()
        }
        results = []
        for name, job in jobs.items():
            try:
                r = job.result()
            except subprocess.TimeoutExpired:
                r = {"name": name, "error": ["timeout"]}
            if "test" in r:
                r["probe_acc"] = round(probe_accuracy(args.out / name, args.device), 4)
            print(json.dumps(r), flush=True)
            results.append(r)
    results.sort(key=lambda r: r.get("test", {}).get("mse", 9.0))
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    lines = ["| config | test MSE | PSNR | SSIM | logistic probe | seconds |", "|---|---|---|---|---|---|"]
    for r in results:
        t = r.get("test")
        lines.append(
            f"| {r['name']} | {t['mse']:.5f} | {t['psnr']:.2f} | {t['ssim']:.4f} | "
            f"{r.get('probe_acc', float('nan')):.4f} | {r['seconds']} |"
            if t
            else f"| {r['name']} | error: {r.get('error')} | | | | |"
        )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

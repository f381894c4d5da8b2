"""Per-endpoint latency of `mnistlab serve` on this CPU: median and p95 in milliseconds, end to end
(HTTP over loopback, JSON encoding included), one request at a time on one keep-alive connection.

    PYTHONPATH=src nice -n 10 python -m benchmarks.serve_latency [RUN_DIR] [--requests 100] [--threads 1]

Without RUN_DIR it builds a study folder of the layout `mnistlab run` writes (ae + probe + latent
maps, dae, gan) in --work (reused when it is there): each model trained for one epoch on a slice of
MNIST (latency does not depend on how well a model is trained, only on its size), but the full 10,000
-image test set, so the maps, the t-SNE placement and the map payload have their real sizes. The
server runs in its own process (`python -m mnistlab serve RUN_DIR --port 0`), as a user would start it.
Target (issue 8): well under 100 ms per request.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.servers import wait_until_listening


def build_study(root: Path) -> Path:
    """ae (+ probe, pca/t-SNE maps), dae, gan: one epoch each on a training slice, full test set."""
    import torch

    from mnistlab.latent.run import LatentConfig, run_latent
    from mnistlab.probe.run import run_probe
    from mnistlab.tasks import load_experiment
    from mnistlab.training.autoencoder import train_autoencoder
    from mnistlab.training.denoise import train_dae
    from mnistlab.training.gan_run import train_gan

    torch.set_num_threads(1)
    data = ["data.train_limit=6000", "data.test_limit=0", "train.epochs=1", "train.device=cpu"]
    if not (root / "ae" / "summary.json").is_file():
        train_autoencoder(load_experiment("ae", "quick", data), root / "ae", progress=False)
    if not (root / "ae" / "probe" / "summary.json").is_file():
        run_probe(
            root / "ae", "quick", ["linear.epochs=3", "linear.device=cpu"], overwrite=True, progress=False
        )
    if not (root / "ae" / "figures" / "latent" / "map_tsne.csv").is_file():
        run_latent(root / "ae", LatentConfig(maps=("pca", "tsne"), n_samples=100, pairs=2, score=False))
    if not (root / "dae" / "summary.json").is_file():
        train_dae(load_experiment("dae", "quick", data), root / "dae", progress=False)
    if not (root / "gan" / "summary.json").is_file():
        gan = [
            "data.train_limit=2000",
            "data.test_limit=500",
            "train.epochs=1",
            "train.device=cpu",
            "gan.eval_samples=0",
            "gan.final_samples=0",
            "gan.grid_epochs=1",
        ]
        train_gan(load_experiment("gan", "quick", gan), root / "gan", progress=False)
    return root


def drawing_png() -> bytes:
    """A 280x280 canvas with a thick '7', like the page sends."""
    from PIL import Image

    a = np.zeros((280, 280), np.uint8)
    a[50:70, 120:220] = 255
    for t in range(170):
        a[70 + t : 74 + t, 200 - t // 2 - 9 : 200 - t // 2 + 9] = 255
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def start_server(run_dir: Path, threads: int) -> tuple[subprocess.Popen, int, float, str]:
    cmd = [sys.executable, "-m", "mnistlab", "serve", str(run_dir), "--port", "0", "--threads", str(threads)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=os.environ.copy()
    )
    port, lines = wait_until_listening(proc)
    ready = next((line.strip() for line in reversed(lines) if "explorer ready" in line), "")
    return proc, port, time.perf_counter() - t0, ready


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def measure(port: int, requests: int, pid: int) -> list[dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(method: str, path: str, body: bytes | None, ctype: str) -> tuple[int, bytes]:
        conn.request(method, path, body=body, headers={"Content-Type": ctype} if body is not None else {})
        r = conn.getresponse()
        return r.status, r.read()

    status, raw = call("GET", "/api/info", None, "")
    info = json.loads(raw)
    status, raw = call("GET", "/api/test/0", None, "")
    item = json.loads(raw)
    png = drawing_png()
    js = "application/json"
    cases = [
        ("info", "GET", "/api/info", None, ""),
        ("analyze (280x280 PNG)", "POST", "/api/analyze?sigma=0.5", png, "image/png"),
        ("encode (28x28 array)", "POST", "/api/encode", json.dumps({"image": item["image"]}).encode(), js),
        ("decode", "POST", "/api/decode", json.dumps({"code": item["code"]}).encode(), js),
        ("denoise", "POST", "/api/denoise", json.dumps({"image": item["image"], "sigma": 0.5}).encode(), js),
        ("classify (code)", "POST", "/api/classify", json.dumps({"code": item["code"]}).encode(), js),
        *[
            (f"sample {s} n=16", "POST", "/api/sample", json.dumps({"sampler": s, "n": 16}).encode(), js)
            for s, v in info["samplers"].items()
            if v["available"]
        ],
        (
            "interpolate 10 steps",
            "POST",
            "/api/interpolate",
            json.dumps({"a": {"index": 0}, "b": {"index": 1}, "steps": 10}).encode(),
            js,
        ),
        *[
            (f"map {m} (all points)", "GET", f"/api/map/{m}", None, "")
            for m, v in info["maps"].items()
            if v["available"]
        ],
        *[
            (f"map {m} click", "POST", f"/api/map/{m}/click", json.dumps({"x": 0.5, "y": 0.5}).encode(), js)
            for m, v in info["maps"].items()
            if v["available"]
        ],
        ("test digit (hover)", "GET", "/api/test/123", None, ""),
    ]
    rows = []
    for name, method, path, body, ctype in cases:
        for _ in range(5):  # warm-up
            call(method, path, body, ctype)
        times = []
        cpu0 = cpu_seconds(pid)
        for _ in range(requests):
            t0 = time.perf_counter()
            status, raw = call(method, path, body, ctype)
            times.append((time.perf_counter() - t0) * 1000)
            if status != 200:
                raise RuntimeError(f"{name}: HTTP {status}: {raw[:200]!r}")
        cpu_ms = (cpu_seconds(pid) - cpu0) * 1000 / requests  # the server's CPU per request
        times.sort()
        rows.append(
            {
                "endpoint": name,
                "median_ms": round(statistics.median(times), 2),
                "server_cpu_ms": round(cpu_ms, 2),
                "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2),
                "max_ms": round(times[-1], 2),
                "bytes": len(raw),
            }
        )
    conn.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", nargs="?", type=Path, help="a study or run folder [build one in --work]")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-serve"), help="where to build the study")
    ap.add_argument("--requests", type=int, default=100, help="timed requests per endpoint [100]")
    ap.add_argument("--threads", type=int, default=1, help="the server's torch threads [1]")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    run_dir = args.run_dir or build_study(args.work)
    proc, port, startup, ready = start_server(run_dir, args.threads)
    try:
        rows = measure(port, args.requests, proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"server: {run_dir}, {args.threads} torch thread(s); up in {startup:.1f} s ({ready})")
    print(f"{args.requests} sequential requests per endpoint after 5 warm-ups, one keep-alive connection")
    print(
        "server CPU ms: the server process's CPU time per request (steadier than wall time on a busy machine)"
    )
    print(
        f"{'endpoint':28s} {'median ms':>10s} {'p95 ms':>8s} {'max ms':>8s} {'server CPU ms':>14s} {'bytes':>9s}"
    )
    for r in rows:
        print(
            f"{r['endpoint']:28s} {r['median_ms']:10.2f} {r['p95_ms']:8.2f} {r['max_ms']:8.2f} "
            f"{r['server_cpu_ms']:14.2f} {r['bytes']:9d}"
        )
    worst = max(rows, key=lambda r: r["p95_ms"])
    print(f"slowest p95: {worst['endpoint']} {worst['p95_ms']:.1f} ms (target: well under 100 ms)")
    if args.json:
        args.json.write_text(json.dumps({"startup_s": round(startup, 1), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

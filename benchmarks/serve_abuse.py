"""`mnistlab serve` under a flood of large uploads (issue 17): the server's memory above idle while 16
clients post 2048x2048 PNGs to /api/analyze as fast as they are answered, and the latency of
/api/info polled meanwhile by one more client.

    PYTHONPATH=src nice -n 10 python -m benchmarks.serve_abuse [RUN_DIR] [--seconds 20] [--clients 16]

Without RUN_DIR it uses the study of benchmarks.serve_latency (built in --work when missing). The
server runs in its own process (`mnistlab.web.app.serve` on 127.0.0.1, port 0) so that its resident
memory (VmRSS, sampled every 20 ms from /proc, and the kernel's peak VmHWM) is its own. Targets: under
1 GB above idle; /api/info p99 under 200 ms. The numbers are wall-clock on whatever else the machine runs.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.serve_latency import build_study
from benchmarks.servers import wait_until_listening

SERVER = (
    "import logging, sys; from pathlib import Path; logging.basicConfig(level=logging.INFO); "
    "from mnistlab.web.app import serve; serve(Path(sys.argv[1]), port=0)"
)


def big_png(side: int = 2048) -> bytes:
    """A thick '7' on a side x side RGB canvas: small as a file (it compresses well), but decoding it
    costs its full pixel count, which is what the server has to bound."""
    from PIL import Image

    a = np.zeros((side, side, 3), np.uint8)
    s = side / 280
    a[int(50 * s) : int(70 * s), int(120 * s) : int(220 * s)] = 255
    for t in range(int(170 * s)):
        c = int(200 * s - t / 2)
        a[int(70 * s) + t : int(74 * s) + t, c - int(9 * s) : c + int(9 * s)] = 255
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    m = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) / 1024 if m else float("nan")


def start_server(run_dir: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(run_dir)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    port, _ = wait_until_listening(proc)
    return proc, port


def request(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None, ctype: str = ""
) -> tuple[int, bytes]:
    conn.request(method, path, body=body, headers={"Content-Type": ctype} if ctype else {})
    r = conn.getresponse()
    return r.status, r.read()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", nargs="?", type=Path, help="a study or run folder [build one in --work]")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-serve"), help="where to build the study")
    ap.add_argument("--seconds", type=float, default=20.0, help="how long the flood lasts [20]")
    ap.add_argument("--clients", type=int, default=16, help="concurrent uploaders [16]")
    ap.add_argument("--side", type=int, default=2048, help="pixels a side of the uploaded PNG [2048]")
    args = ap.parse_args()
    run_dir = args.run_dir or build_study(args.work)
    png = big_png(args.side)
    proc, port = start_server(run_dir)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for _ in range(3):  # warm-up: lazy imports and first-call allocations belong to idle
            status, raw = request(conn, "POST", "/api/analyze", png, "image/png")
            assert status == 200, raw[:200]
        time.sleep(1.0)
        idle = rss_mb(proc.pid)
        stop = threading.Event()
        statuses: list[int] = []
        info_ms: list[float] = []
        samples: list[float] = []

        def uploader() -> None:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            while not stop.is_set():
                statuses.append(request(c, "POST", "/api/analyze?sigma=0.5", png, "image/png")[0])

        def prober() -> None:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            while not stop.is_set():
                t0 = time.perf_counter()
                status, _ = request(c, "GET", "/api/info")
                info_ms.append((time.perf_counter() - t0) * 1000)
                assert status == 200
                time.sleep(0.02)

        def sampler() -> None:
            while not stop.is_set():
                samples.append(rss_mb(proc.pid))
                time.sleep(0.02)

        threads = [threading.Thread(target=uploader) for _ in range(args.clients)]
        threads += [threading.Thread(target=prober), threading.Thread(target=sampler)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        stop.set()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        hwm = rss_mb(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    info_ms.sort()

    def pct(q: float) -> float:
        return info_ms[min(len(info_ms) - 1, int(q * len(info_ms)))]

    counts = {s: statuses.count(s) for s in sorted(set(statuses))}
    print(
        f"server: {run_dir}; upload: {args.side}x{args.side} PNG of {len(png):,} bytes; "
        f"{args.clients} uploaders for {elapsed:.1f} s"
    )
    print(
        f"uploads answered: {len(statuses)} ({len(statuses) / elapsed:.1f}/s), statuses {json.dumps(counts)}"
    )
    print(
        f"server RSS: idle {idle:.0f} MB, peak sampled {max(samples):.0f} MB "
        f"(+{max(samples) - idle:.0f} MB above idle; target under +1024), VmHWM {hwm:.0f} MB"
    )
    print(
        f"/api/info during the flood: {len(info_ms)} requests, median {pct(0.5):.1f} ms, p95 {pct(0.95):.1f} ms, "
        f"p99 {pct(0.99):.1f} ms, max {info_ms[-1]:.1f} ms (target p99 under 200 ms)"
    )


if __name__ == "__main__":
    main()

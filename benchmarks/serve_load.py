"""`mnistlab serve` while hostile clients hold connections (issue 33): the latency of `/api/info` and
the server's memory while 1,000 idle connections and 400 slow request bodies are held open.

    PYTHONPATH=src nice -n 10 python -m benchmarks.serve_load [RUN_DIR] [--idle 1000] [--slow 400]

Without RUN_DIR the server is `mnistlab serve` with no run (the shipped runs, copied into a fresh
MNISTLAB_HOME under /tmp), started as a user starts it, in its own process on a free port. The load:

- idle connections: half send nothing at all, half a request line and one header, then one more
  header line every few seconds (slowloris);
- slow bodies: POST /api/sample with Content-Type application/json and Content-Length 2,000,000
  (under the JSON bodies' 2 MiB cap), the body trickled a few bytes a second.

An attacker keeps them held: a connection the server closes (or answers) is opened again at once,
through at most --connecting connects in flight. Once they are all open, 20 GETs of /api/info, each
on a new connection like a new visitor's, are timed one after another (and, for information, 5 small
POSTs of /api/sample like the page's); the server's resident memory
(psutil if installed, else VmRSS of /proc/PID/status) is read before the load and sampled during it.
PASS when the slowest GET is under --max-s (1 s) and the memory grew less than --max-mb (300 MB).
The file-descriptor soft limit of this process is raised toward its hard limit; the server is
started with the soft limit the benchmark was given, as a user's shell would start it.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from benchmarks.servers import wait_until_listening

try:
    import psutil
except ImportError:  # optional: /proc is read instead
    psutil = None

HOST = "127.0.0.1"
SLOW_PATH = "/api/sample"


def rss_mb(pid: int) -> float:
    if psutil is not None:
        return psutil.Process(pid).memory_info().rss / 2**20
    m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) / 1024 if m else float("nan")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far."""
    if psutil is not None:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_fd_limit(need: int) -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to `need` (at most the hard limit); -> (old soft, new soft)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def start_server(run_dir: Path | None, home: Path, fd_soft: int) -> tuple[subprocess.Popen, int]:
    """`python -m mnistlab serve [RUN_DIR] --port 0` with MNISTLAB_HOME=home and the soft fd limit
    `fd_soft`; -> (process, port) once it listens."""
    cmd = [sys.executable, "-m", "mnistlab", "serve", *([str(run_dir)] if run_dir else []), "--port", "0"]
    env = {**os.environ, "MNISTLAB_HOME": str(home), "OMP_NUM_THREADS": "1"}

    def limits() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (fd_soft, hard))

    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, preexec_fn=limits
    )
    port, _ = wait_until_listening(proc)
    return proc, port


class Load:
    """The attacker: `idle` idle connections and `slow` slow bodies, each reopened when closed."""

    def __init__(self, port: int, idle: int, slow: int, rate: int, connecting: int) -> None:
        self.port, self.idle, self.slow, self.rate = port, idle, slow, rate
        self.held = Counter()  # kind -> connections open now
        self.opened = Counter()  # kind -> connections opened in all
        self.answers = Counter()  # (kind, first status line or "closed") -> count
        self.connect_errors = Counter()
        self.connecting = connecting
        self.stop = threading.Event()

    async def _open(self, gate: asyncio.Semaphore):
        async with gate:
            return await asyncio.wait_for(asyncio.open_connection(HOST, self.port), 10)

    async def _hold(self, kind: str, gate: asyncio.Semaphore, first: bytes, every: float, more: bytes):
        """One held connection, reopened whenever the server closes or answers it: send `first`,
        then `more` every `every` seconds, until told to stop."""
        while not self.stop.is_set():
            try:
                reader, writer = await self._open(gate)
            except (TimeoutError, OSError) as e:
                self.connect_errors[type(e).__name__] += 1
                await asyncio.sleep(0.5)
                continue
            self.held[kind] += 1
            self.opened[kind] += 1
            answer = "closed"
            try:
                if first:
                    writer.write(first)
                while not self.stop.is_set():
                    try:
                        data = await asyncio.wait_for(reader.read(256), every)
                    except TimeoutError:
                        if more:
                            writer.write(more)
                        continue
                    if data:
                        answer = data.split(b"\r\n", 1)[0].decode("latin-1")[:40]
                    break
            except OSError:
                answer = "reset"
            finally:
                self.held[kind] -= 1
                writer.close()
            if not self.stop.is_set():
                self.answers[kind, answer] += 1

    async def run(self) -> None:
        gate = asyncio.Semaphore(self.connecting)
        host = f"Host: {HOST}:{self.port}\r\n".encode()
        partial = b"GET /api/info HTTP/1.1\r\n" + host
        post = (
            f"POST {SLOW_PATH} HTTP/1.1\r\n".encode()
            + host
            + b"Content-Type: application/json\r\nContent-Length: 2000000\r\n\r\n{"
        )
        tasks = []
        for k in range(self.idle):
            if k % 2:
                tasks.append(self._hold("idle", gate, b"", 3600, b""))
            else:
                tasks.append(self._hold("idle", gate, partial, 2.0, b"X-a: b\r\n"))
        tasks += [self._hold("slow", gate, post, 1.0, b" " * self.rate) for _ in range(self.slow)]
        jobs = [asyncio.ensure_future(t) for t in tasks]
        while not self.stop.is_set():
            await asyncio.sleep(0.1)
        for j in jobs:
            j.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)


def call(port: int, method: str = "GET", path: str = "/api/info", body: bytes | None = None):
    """One request on a new connection: (seconds, status, response body); status 0 when it failed."""
    headers = {"Connection": "close", **({"Content-Type": "application/json"} if body else {})}
    t0 = time.perf_counter()
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        raw = r.read()
        status = r.status
        conn.close()
    except OSError:
        status, raw = 0, b""
    return time.perf_counter() - t0, status, raw


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", nargs="?", type=Path, help="a run or study folder [the shipped runs]")
    ap.add_argument("--idle", type=int, default=1000, help="idle connections held [1000]")
    ap.add_argument("--slow", type=int, default=400, help="slow request bodies held [400]")
    ap.add_argument("--rate", type=int, default=4, help="bytes a second of each slow body [4]")
    ap.add_argument("--gets", type=int, default=20, help="timed GETs of /api/info [20]")
    ap.add_argument("--posts", type=int, default=5, help="small POSTs timed beside the GETs [5]")
    ap.add_argument("--gap", type=float, default=1.0, help="seconds between two timed GETs [1]")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds held before the first GET [5]")
    ap.add_argument("--connecting", type=int, default=64, help="connects in flight at most [64]")
    ap.add_argument(
        "--server-fd-limit", type=int, help="the server's soft limit of open files [this shell's]"
    )
    ap.add_argument("--max-s", type=float, default=1.0, help="PASS: slowest GET under this [1 s]")
    ap.add_argument("--max-mb", type=float, default=300.0, help="PASS: memory growth under this [300 MB]")
    args = ap.parse_args()

    fd_old, fd_new = raise_fd_limit(args.idle + args.slow + 256)
    if fd_new < args.idle + args.slow + 64:
        print(f"the fd limit ({fd_new}) is too low for {args.idle + args.slow} connections", file=sys.stderr)
        return 2
    home = Path(tempfile.mkdtemp(prefix="mnistlab-serve-load-", dir="/tmp"))
    fd_server = args.server_fd_limit or fd_old
    proc, port = start_server(args.run_dir, home, fd_server)
    load = Load(port, args.idle, args.slow, args.rate, args.connecting)
    attacker = threading.Thread(target=asyncio.run, args=(load.run(),), daemon=True)
    samples: list[float] = []
    try:
        info = json.loads(call(port)[2])
        sampler_name = next(k for k, v in info["samplers"].items() if v["available"])
        post = json.dumps({"sampler": sampler_name, "n": 1}).encode()
        for _ in range(3):  # lazy imports and first-call allocations are idle's
            assert call(port)[1] == 200 and call(port, "POST", SLOW_PATH, post)[1] == 200
        time.sleep(1.0)
        before = rss_mb(proc.pid)
        sampling = threading.Event()
        held: list[tuple[int, int]] = []  # (idle, slow) held, sampled with the memory once all are open

        def sample() -> None:
            while not sampling.is_set():
                samples.append(rss_mb(proc.pid))
                if opened.is_set():
                    held.append((load.held["idle"], load.held["slow"]))
                time.sleep(0.25)

        opened = threading.Event()

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t_start, cpu_start = time.monotonic(), cpu_s(proc.pid)
        attacker.start()
        target = args.idle + args.slow
        while sum(load.held.values()) < 0.98 * target and time.monotonic() - t_start < 60:
            time.sleep(0.2)
        ramp = time.monotonic() - t_start
        opened.set()
        time.sleep(args.settle)
        times, statuses, post_times, post_statuses = [], [], [], []
        for k in range(args.gets):
            seconds, status, _ = call(port)
            times.append(seconds)
            statuses.append(status)
            if k < args.posts:  # a real POST with a small body, as the page sends
                seconds, status, _ = call(port, "POST", SLOW_PATH, post)
                post_times.append(seconds)
                post_statuses.append(status)
            time.sleep(args.gap)
        during = rss_mb(proc.pid)
        held_for = time.monotonic() - t_start
        cpu_used = cpu_s(proc.pid) - cpu_start
        sampling.set()
        sampler.join()
        load.stop.set()
        attacker.join(30)
        alive = proc.poll() is None
    finally:
        load.stop.set()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(home, ignore_errors=True)

    peak = max(samples + [during])
    grown = peak - before
    slowest = max(times)
    ok = alive and slowest < args.max_s and grown < args.max_mb and statuses == [200] * args.gets
    print(f"server: mnistlab serve {args.run_dir or '(the shipped runs)'} on port {port}, pid {proc.pid}")
    print(f"host: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"fd soft limit: benchmark {fd_new}, server started with {fd_server}")
    print(
        f"load: {args.idle} idle connections (half silent, half a partial header growing every 2 s), "
        f"{args.slow} slow POST {SLOW_PATH} bodies (Content-Length 2,000,000 at {args.rate} bytes/s)"
    )
    print(f"all opened in {ramp:.1f} s; held {held_for:.1f} s in all")
    print()
    idle_held, slow_held = [h[0] for h in held], [h[1] for h in held]

    def spread(values: list[int]) -> str:
        return f"median {statistics.median(values):.0f}, min {min(values)}, max {max(values)}"

    rows = [
        ("idle connections held (every 0.25 s)", spread(idle_held)),
        ("slow bodies held (every 0.25 s)", spread(slow_held)),
        ("connections opened (reopened)", ", ".join(f"{k} {v}" for k, v in sorted(load.opened.items()))),
        (
            "server's answers to the load",
            "; ".join(f"{k} {a!r}: {n}" for (k, a), n in sorted(load.answers.items())) or "none",
        ),
        ("connect errors", ", ".join(f"{k} {v}" for k, v in load.connect_errors.items()) or "none"),
        (f"/api/info x{args.gets}, new connection each", f"statuses {dict(Counter(statuses))}"),
        ("/api/info median", f"{statistics.median(times) * 1000:.1f} ms"),
        ("/api/info max", f"{slowest * 1000:.1f} ms  (limit {args.max_s * 1000:.0f} ms)"),
        (
            f"POST {SLOW_PATH} small body x{len(post_times)}",
            f"statuses {dict(Counter(post_statuses))}, median {statistics.median(post_times) * 1000:.1f} ms, "
            f"max {max(post_times) * 1000:.1f} ms (not part of PASS)"
            if post_times
            else "none",
        ),
        ("server RSS before", f"{before:.0f} MB"),
        (
            "server RSS during (peak sampled)",
            f"{peak:.0f} MB  (+{grown:.0f} MB, limit +{args.max_mb:.0f} MB)",
        ),
        ("server CPU while loaded", f"{cpu_used:.1f} s in {held_for:.1f} s"),
        ("server alive after", str(alive)),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print()
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The long part of the fault suite (tests/test_faults.py has the fast one): a quick study stopped at
random points, by SIGTERM (a service manager's stop) or SIGKILL (the OOM killer, `kill -9`), then run
again to the end with the same command, must end with the same numbers as a study never stopped (to
CLOSE: the thread count a stage ends up with changes its last digits), and leave no process of the
stopped one behind.

    python -m benchmarks.faults [--trials 4] [--seed 0] [--preset tests/presets/tiny.toml] [--json F]

Each trial: `mnistlab run` in a session of its own, a signal to the command after a random delay
(uniform over 5-60% of the uninterrupted run's wall time: a run on a less busy machine ends sooner),
a check that every process of that session has ended (a SIGKILL leaves the stage workers to the
kernel's parent-death signal), then the same command again, whose run.json must say done and whose
recorded numbers (every summary.json number and every metrics.jsonl row, times excluded) must equal
the uninterrupted run's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.sessions import session_processes

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# Relative difference accepted: a stage's torch thread count changes the last digits of its sums (the
# VAE's losses at 1 and 2 threads differ in the 6th to 7th digit), and the study gives the last stage
# left running every core (pool.WIDEN) at a moment that depends on timing, stopped or not. A resume
# that restored the wrong state would differ in the first digits.
CLOSE = 1e-4
# Numbers that measure the machine, not the model: they differ between any two runs.
TIMING_WORDS = ("seconds", "per_s", "peak_rss", "cpu_", "time", "created", "updated", "started", "ended")


def study_command(out: Path, preset: str) -> list[str]:
    # Two stage workers: the pool, its process groups and the fork server are what a signal tests.
    return [
        sys.executable,
        "-m",
        "mnistlab",
        "run",
        "--preset",
        preset,
        "--out",
        str(out),
        "--workers",
        "2",
        "--no-progress",
    ]


def run_to_end(out: Path, preset: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(study_command(out, preset), env=ENV, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
    return proc.returncode, time.perf_counter() - t0


def stop_at(out: Path, preset: str, delay: float, signum: int) -> dict[str, Any]:
    """Start the study, send `signum` to the command after `delay` seconds, wait for it and for its
    session to empty; returns what happened."""
    proc = subprocess.Popen(
        study_command(out, preset),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    time.sleep(delay)
    finished_first = proc.poll() is not None
    if not finished_first:
        proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    deadline = time.monotonic() + 30
    while session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = session_processes(proc.pid)
    for pid in left:  # do not leave them to the next trial
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    last = [line for line in err.strip().splitlines() if line.strip()][-1:] or [""]
    return {
        "signal": signal.Signals(signum).name,
        "delay_s": round(delay, 1),
        "finished_first": finished_first,
        "exit_code": proc.returncode,
        "left_behind": len(left),
        "traceback": "Traceback" in err,
        "message": last[0][:160],
    }


def numbers(out: Path) -> dict[str, Any]:
    """Every recorded number of a study folder, times excluded: {file: {key path: value}}."""
    found: dict[str, Any] = {}
    for path in sorted(out.rglob("summary.json")):
        found[str(path.relative_to(out))] = _leaves(json.loads(path.read_text()))
    for path in sorted(out.rglob("metrics.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        found[str(path.relative_to(out))] = [_leaves(r) for r in rows]
    return found


def _leaves(obj: Any, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            if any(word in key for word in TIMING_WORDS):
                continue
            flat.update(_leaves(value, f"{prefix}{key}."))
    elif isinstance(obj, list):
        for k, value in enumerate(obj):
            flat.update(_leaves(value, f"{prefix}{k}."))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        flat[prefix.rstrip(".")] = obj
    return flat


def _same(x: Any, y: Any, rel: float) -> bool:
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_same(r, q, rel) for r, q in zip(x, y))
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k], rel) for k in x)
    if isinstance(x, (int, float)) and isinstance(y, (int, float)):
        return x == y or abs(x - y) <= rel * max(abs(x), abs(y))
    return x == y


def differences(a: dict[str, Any], b: dict[str, Any], rel: float = 0.0) -> list[str]:
    """'file: first differing key (a -> b)' for each record file whose numbers differ by more than
    `rel` (relative)."""
    diffs = []
    for name in sorted(a.keys() | b.keys()):
        x, y = a.get(name), b.get(name)
        if _same(x, y, rel):
            continue
        if isinstance(x, list) and isinstance(y, list):
            if len(x) != len(y):
                diffs.append(f"{name}: {len(x)} rows -> {len(y)}")
                continue
            k = next(i for i, (r, q) in enumerate(zip(x, y)) if not _same(r, q, rel))
            x, y, name = x[k], y[k], f"{name} row {k + 1}"
        if isinstance(x, dict) and isinstance(y, dict):
            key = next(k for k in sorted(x.keys() | y.keys()) if not _same(x.get(k), y.get(k), rel))
            diffs.append(f"{name}: {key} {x.get(key)!r} -> {y.get(key)!r}")
        else:
            diffs.append(name)
    return diffs


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default=str(ROOT / "tests" / "presets" / "tiny.toml"))
    parser.add_argument("--json", type=Path, help="write the trials' records here")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="mnistlab-faults-"))
    try:
        code, wall = run_to_end(work / "reference", args.preset)
        if code != 0:
            print(f"the uninterrupted study failed (exit {code})", file=sys.stderr)
            return 1
        reference = numbers(work / "reference")
        print(f"uninterrupted study: {wall:.0f} s, {len(reference)} record files")
        trials = []
        for k in range(args.trials):
            signum = (signal.SIGTERM, signal.SIGKILL)[k % 2]
            out = work / f"trial-{k}"
            record = stop_at(out, args.preset, rng.uniform(0.05, 0.6) * wall, signum)
            record["resume_exit_code"], record["resume_s"] = run_to_end(out, args.preset)
            record["resume_s"] = round(record["resume_s"], 1)
            state = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
            record["status"] = state.get("status")
            got = numbers(out)
            diffs = differences(reference, got)
            record["same_numbers"] = not diffs
            record["close_numbers"] = not differences(reference, got, CLOSE)
            record["differing_files"] = diffs[:5]
            trials.append(record)
            print(json.dumps(record))
            shutil.rmtree(out, ignore_errors=True)
        ok = all(
            t["close_numbers"]
            and t["left_behind"] == 0
            and not t["traceback"]
            and t["resume_exit_code"] == 0
            and (t["finished_first"] or t["exit_code"] == (143 if t["signal"] == "SIGTERM" else -9))
            for t in trials
        )
        same, close = (sum(t[k] for t in trials) for k in ("same_numbers", "close_numbers"))
        print(f"{same}/{len(trials)} resumed studies ended with the same numbers, {close} within {CLOSE:g}")
        print("all good" if ok else "FAILED")
        if args.json:
            args.json.write_text(
                json.dumps({"uninterrupted_s": round(wall, 1), "trials": trials}, indent=2) + "\n"
            )
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""Sweep GAN settings: each named config is one `mnistlab train gan` process (several at once), and the
results land in one JSON file and one markdown table (FID-MNIST, class shares, precision, recall).

    python benchmarks/gan_sweep.py                                # the candidates in gan_sweep_configs.toml
    python benchmarks/gan_sweep.py --jobs 6 --device cuda --out runs/gan-sweep
    python benchmarks/gan_sweep.py --only seed,b64-ema --common-set train.epochs=5

A config file holds one table per config: `[NAME]` with `preset` (default "seed") and `set`, a list of
`section.key=value` overrides. Nothing is interactive; a config that fails or runs past --timeout is
recorded as such and the others go on. Rerunning the same command skips finished configs and
resumes interrupted ones from their last checkpoint (use --force to start them again).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


@dataclass
class Job:
    name: str
    preset: str
    overrides: list[str]
    out: Path
    proc: subprocess.Popen | None = None
    started: float = 0.0
    returncode: int | None = None
    timed_out: bool = False
    seconds: float = 0.0
    log: Path = field(init=False)

    def __post_init__(self):
        self.log = self.out.parent / f"{self.name}.log"


def read_configs(path: Path) -> dict[str, tuple[str, list[str]]]:
    """{name: (preset, overrides)} from a TOML file of [name] tables with `preset` and `set`."""
    try:
        doc = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise SystemExit(f"gan_sweep: cannot read configs {path}: {e}") from None
    configs = {}
    for name, table in doc.items():
        if not isinstance(table, dict) or set(table) - {"preset", "set", "note"}:
            raise SystemExit(f"gan_sweep: [{name}] must hold only preset, set and note")
        sets = table.get("set", [])
        if not all(isinstance(s, str) and "=" in s for s in sets):
            raise SystemExit(f"gan_sweep: [{name}].set must be a list of 'section.key=value' strings")
        configs[name] = (table.get("preset", "seed"), list(sets))
    return configs


def command(job: Job, device: str, common: list[str]) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "mnistlab",
        "-q",
        "train",
        "gan",
        "--preset",
        job.preset,
        "--no-progress",
        "--out",
        str(job.out),
        "--device",
        device,
    ]
    for s in [*job.overrides, *common]:
        cmd += ["--set", s]
    if (job.out / "config.toml").exists():
        cmd.append("--resume")
    return cmd


def start(job: Job, device: str, common: list[str]) -> None:
    env = dict(os.environ)
    if SRC.is_dir():  # run this checkout's mnistlab even when it is not installed
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    job.out.parent.mkdir(parents=True, exist_ok=True)
    cmd = command(job, device, common)
    log = job.log.open("a")
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    # A session of its own, so a timeout can stop the run and anything it started, and nothing else.
    job.proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    log.close()
    job.started = time.monotonic()


def stop(job: Job) -> None:
    try:
        os.killpg(job.proc.pid, signal.SIGTERM)
        job.proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(job.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        job.proc.wait()


def run_all(jobs: list[Job], n_parallel: int, device: str, common: list[str], timeout: float) -> None:
    """Run jobs, at most n_parallel at a time; stop any that passes `timeout` seconds."""
    waiting, running = list(jobs), []
    while waiting or running:
        while waiting and len(running) < n_parallel:
            job = waiting.pop(0)
            start(job, device, common)
            running.append(job)
            print(f"[sweep] started {job.name} (pid {job.proc.pid})", flush=True)
        time.sleep(1.0)
        for job in list(running):
            elapsed = time.monotonic() - job.started
            if job.proc.poll() is None and elapsed > timeout:
                job.timed_out = True
                stop(job)
            if job.proc.poll() is not None:
                job.returncode, job.seconds = job.proc.returncode, round(elapsed, 1)
                running.remove(job)
                state = "timed out" if job.timed_out else f"exit {job.returncode}"
                print(f"[sweep] {job.name}: {state} after {job.seconds:.0f} s", flush=True)


def shares(hist) -> list[float] | None:
    if not hist:
        return None
    total = float(sum(hist)) or 1.0
    return [float(h) / total for h in hist]


def result_row(job: Job) -> dict:
    """What the table shows for one config, from its summary.json (and the exit code when it failed)."""
    path = job.out / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    test = summary.get("test") or {}
    sh = shares(test.get("class_hist"))
    row = {
        "name": job.name,
        "preset": job.preset,
        "set": job.overrides,
        "status": "timed out" if job.timed_out else summary.get("status", f"failed (exit {job.returncode})"),
        "exit_code": job.returncode,
        "fid_mnist": test.get("fid_mnist"),
        "precision": test.get("precision"),
        "recall": test.get("recall"),
        "class_min_share": min(sh) if sh else None,
        "class_max_share": max(sh) if sh else None,
        "class_shares": [round(s, 4) for s in sh] if sh else None,
        "kl_uniform": test.get("kl_uniform"),
        "collapse_warnings": len(summary.get("collapse_warnings", [])),
        "epochs": summary.get("epochs"),
        "train_seconds": summary.get("train_seconds"),
        "wall_seconds": job.seconds or None,  # None: finished earlier, read back
        "run_dir": str(job.out),
    }
    if row["status"] not in ("finished",):
        row["error"] = summary.get("error") or _tail(job.log)
    return row


def _tail(path: Path, n: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return ""


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def add_targets(rows: list[dict], baseline: str = "seed") -> None:
    """The issue's targets per row: every digit within 5% to 15% of the samples, and how many times
    lower its FID-MNIST is than the `baseline` config's (when that one ran)."""
    base = next((r["fid_mnist"] for r in rows if r["name"] == baseline and r["fid_mnist"]), None)
    for r in rows:
        shares = r["class_shares"]
        r["all_digits_5_to_15"] = None if shares is None else all(0.05 <= s <= 0.15 for s in shares)
        r["fid_times_lower_than_seed"] = round(base / r["fid_mnist"], 2) if base and r["fid_mnist"] else None


def markdown(rows: list[dict]) -> str:
    """One line per config, best FID-MNIST first (configs without one last)."""
    rows = sorted(rows, key=lambda r: (r["fid_mnist"] is None, r["fid_mnist"] or 0.0))
    lines = [
        "| config | status | FID-MNIST | x lower than seed | min class | max class | all 5-15% | precision "
        "| recall | warnings | train s |",
        "|---|---|---:|---:|---:|---:|:-:|---:|---:|---:|---:|",
    ]
    yes_no = {True: "yes", False: "no", None: "-"}
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['status']} | {_fmt(r['fid_mnist'], '.2f')} "
            f"| {_fmt(r.get('fid_times_lower_than_seed'), '.1f')} | {_fmt(r['class_min_share'], '.1%')} "
            f"| {_fmt(r['class_max_share'], '.1%')} | {yes_no[r.get('all_digits_5_to_15')]} "
            f"| {_fmt(r['precision'], '.3f')} | {_fmt(r['recall'], '.3f')} "
            f"| {r['collapse_warnings']} | {_fmt(r['train_seconds'], '.0f')} |"
        )
    lines.append("")
    lines += [
        f"- **{r['name']}**: preset {r['preset']}, `{' '.join(r['set']) or '(no overrides)'}`" for r in rows
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--configs", type=Path, default=HERE / "gan_sweep_configs.toml", help="TOML of named configs"
    )
    p.add_argument("--only", default="", help="comma-separated config names to run (default: all)")
    p.add_argument(
        "--common-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an override added to every config (repeatable), e.g. train.epochs=5",
    )
    p.add_argument("--jobs", type=int, default=4, help="configs running at once [4]")
    p.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto = cuda when available [auto]"
    )
    p.add_argument("--timeout", type=float, default=3600, help="seconds before a config is stopped [3600]")
    p.add_argument("--out", type=Path, default=Path("runs/gan-sweep"), help="folder for runs and results")
    p.add_argument("--force", action="store_true", help="rerun configs that already finished")
    args = p.parse_args(argv)

    configs = read_configs(args.configs)
    names = [n for n in args.only.split(",") if n] or list(configs)
    unknown = [n for n in names if n not in configs]
    if unknown:
        raise SystemExit(f"gan_sweep: unknown config(s) {', '.join(unknown)}; known: {', '.join(configs)}")
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"

    jobs, todo = [], []
    for name in names:
        preset, overrides = configs[name]
        job = Job(name, preset, overrides, args.out / name)
        jobs.append(job)
        done = job.out / "summary.json"
        if args.force and job.out.exists():
            shutil.rmtree(job.out)
        elif done.exists() and json.loads(done.read_text()).get("status") in ("finished", "diverged"):
            print(f"[sweep] {name}: already done, reading its summary (--force to rerun)")
            continue
        todo.append(job)
    print(
        f"[sweep] {len(todo)} to run on {device}, {args.jobs} at a time, timeout {args.timeout:.0f} s",
        flush=True,
    )
    run_all(todo, max(1, args.jobs), device, args.common_set, args.timeout)

    rows = [result_row(j) for j in jobs]
    add_targets(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep.json").write_text(
        json.dumps({"device": device, "common_set": args.common_set, "results": rows}, indent=2) + "\n"
    )
    table = markdown(rows)
    (args.out / "sweep.md").write_text(table)
    print(table)
    return 0 if all(r["status"] in ("finished", "diverged") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

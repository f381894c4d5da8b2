"""The benchmark suite's collection logic: which benchmarks there are, running each in its own process,
and the one table of results. `python -m benchmarks` (benchmarks/__main__.py) is its command line.

Each entry names a module run as `python -m MODULE ARGS --json FILE`; the module writes one JSON
object (benchmarks.common.result: "baseline", "mnistlab", "ratio", "fraction_of_peak", ...), and the
suite reads the entry's `metric` from it and compares it with the entry's target. One process per
benchmark keeps their memory apart: the peak RSS printed for each is that process's own (os.wait4).
A module that does not exist (yet) shows as "not available"; a benchmark that fails shows as
"error" with the last line it printed; neither stops the others.

To add a benchmark: write a module with a `--json FILE` option and append an Entry to ENTRIES.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Entry:
    name: str
    module: str  # run as python -m module
    args: tuple[str, ...] = ()  # the full measurement
    quick_args: tuple[str, ...] = ()  # --quick: small sizes, seconds to a minute
    metric: str = "ratio"  # key of the module's JSON compared with the target
    target: float | None = None  # pass when metric >= target (or <= with lower_is_better)
    lower_is_better: bool = False
    unit: str = "x"  # how the metric prints: "x" = ratio to the baseline
    note: str = ""


ENTRIES: list[Entry] = [
    Entry(
        "ae_epoch",
        "benchmarks.ae_speed",
        ("--images", "12800", "--repeats", "2"),
        ("--images", "1024", "--repeats", "1"),
        target=2.5,
        note="AE epoch, seed preset, vs a tutorial loop (PIL Dataset + DataLoader)",
    ),
    Entry(
        "gan_epoch",
        "benchmarks.gan_speed",
        ("--batches", "40", "--repeats", "2"),
        ("--batches", "4", "--repeats", "1"),
        target=1.5,
        note="GAN epoch, batch 200, vs the tutorial GAN loop",
    ),
    Entry(
        "adam_step",
        "benchmarks.adam_kernels",
        ("--steps", "300", "--repeats", "3"),
        ("--steps", "20", "--repeats", "1"),
        target=2.0,
        note="optimizer step (AE + GAN parameters): fused Adam vs torch's per-tensor loop, 1 thread",
    ),
    Entry(
        "probe",
        "benchmarks.probe_speed",
        ("--images", "6000", "--test-images", "2000", "--epochs", "3", "--repeats", "2"),
        ("--images", "1024", "--test-images", "1000", "--epochs", "2", "--repeats", "1"),
        target=None,
        note="frozen linear probe vs encoder-per-batch loop",
    ),
    Entry(
        "tsne",
        "benchmarks.tsne_speed",
        ("--only", "sklearn,opentsne-150+200", "--variants", "150+200"),
        ("--n", "1500", "--only", "sklearn,opentsne-150+200", "--variants", "150+200"),
        target=None,
        note="t-SNE of test codes (untrained encoder unless --run given) vs scikit-learn",
    ),
    Entry(
        "report_build",
        "benchmarks.report_build",
        ("--repeats", "3"),
        ("--repeats", "1"),
        metric="seconds",
        unit="s",
        lower_is_better=True,
        note="build report.html + report.md from a (tiny) finished run",
    ),
    Entry(
        "seed_run_rss",
        "benchmarks.seed_run_rss",
        ("--epochs", "1"),
        ("--epochs", "1"),
        metric="peak_rss_mib",
        target=2048,
        unit="MiB",
        lower_is_better=True,
        note="peak RSS of `mnistlab run --preset seed`, 1 epoch per stage (target < 2 GiB)",
    ),
    Entry(
        "stage_workers",
        "benchmarks.stage_workers",
        ("--rounds", "3"),
        ("--steps", "20", "--rounds", "1"),
        target=1.0,
        note="AE and GAN steps: one 1-thread process per core vs one process with every thread "
        "(why `mnistlab run` runs stages side by side)",
    ),
    Entry(
        "step_choices",
        "benchmarks.step_choices",
        ("--rounds", "3"),
        ("--rounds", "1", "--steps", "3"),
        target=None,
        note="the default preset's CPU step choices against their alternatives, 1 thread: bf16 "
        "(GAN, cGAN; autoencoder not chosen), channels_last (probe networks, VAE); ratio: the smallest",
    ),
    Entry(
        "nearest_images",
        "benchmarks.nearest_images",
        ("--repeats", "3"),
        ("--queries", "256", "--repeats", "1"),
        target=None,
        note="nearest training image of each generated digit (every generation score): exact int8 "
        "search vs the float32 one it replaced, 1 thread",
    ),
    Entry(
        "stages",
        "benchmarks.stages",
        (),
        ("--quick",),
        metric="ratio_to_budget",
        target=1.0,
        lower_is_better=True,
        note="the default study's training stages: images/s, % of the matmul peaks, projected seconds, "
        "critical path; result: projected wall time / this host's budget (1800 s x 158 / fp32 peak)",
    ),
    Entry(
        "study_quick",
        "benchmarks.study",
        ("--preset", "quick"),
        ("--preset", "quick"),
        metric="total_s",
        target=90,
        unit="s",
        lower_is_better=True,
        note="`mnistlab run --preset quick`: seconds per stage and headline numbers (target < 90 s)",
    ),
    Entry(
        "study_default",
        "benchmarks.study",
        ("--preset", "default"),
        ("--preset", "quick"),
        metric="total_s",
        target=1500,
        unit="s",
        lower_is_better=True,
        note="`mnistlab run --preset default`, every stage (target < 25 min); --quick runs the quick preset",
    ),
]


@dataclass
class Outcome:
    entry: Entry
    status: str  # "ok" | "not available" | "error" | "timeout"
    data: dict = field(default_factory=dict)
    seconds: float = 0.0
    peak_rss_mib: float | None = None
    message: str = ""

    @property
    def value(self) -> float | None:
        v = self.data.get(self.entry.metric)
        return float(v) if isinstance(v, (int, float)) else None

    @property
    def verdict(self) -> str:
        if self.status != "ok":
            return self.status
        t, v = self.entry.target, self.value
        if t is None or v is None:
            return "-"
        ok = v <= t if self.entry.lower_is_better else v >= t
        return "pass" if ok else "FAIL"


def available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def run_entry(
    entry: Entry, quick: bool = False, extra: tuple[str, ...] = (), timeout: float | None = None, log=None
) -> Outcome:
    """Run one benchmark in a child process; its JSON, wall time and peak RSS."""
    if not available(entry.module):
        return Outcome(entry, "not available", message=f"no module {entry.module}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            "-m",
            entry.module,
            *(entry.quick_args if quick else entry.args),
            *extra,
            "--json",
            str(out),
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        lines: list[str] = []
        try:
            for line in proc.stdout:  # stream the child's output (progress) and keep it
                lines.append(line.rstrip("\n"))
                if log is not None:
                    log(f"  [{entry.name}] {lines[-1]}")
                if timeout is not None and time.perf_counter() - t0 > timeout:
                    proc.kill()
                    break
        finally:
            # wait4 gives this child's own rusage: ru_maxrss is its peak resident set (KiB on Linux)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
        rss = usage.ru_maxrss / 1024
        if timeout is not None and seconds > timeout:
            return Outcome(
                entry, "timeout", seconds=seconds, peak_rss_mib=rss, message=f"over {timeout:.0f} s"
            )
        if proc.returncode != 0 or not out.exists():
            last = next((ln for ln in reversed(lines) if ln.strip()), "no output")
            return Outcome(
                entry,
                "error",
                seconds=seconds,
                peak_rss_mib=rss,
                message=f"exit {proc.returncode}: {last[:200]}",
            )
        return Outcome(entry, "ok", json.loads(out.read_text()), seconds, rss)


def select(names: list[str] | None) -> list[Entry]:
    """The entries named (all when None); unknown names raise ValueError listing the known ones."""
    if not names:
        return list(ENTRIES)
    known = {e.name: e for e in ENTRIES}
    bad = [n for n in names if n not in known]
    if bad:
        raise ValueError(f"unknown benchmark(s) {', '.join(bad)}; known: {', '.join(known)}")
    return [known[n] for n in names]


def _fmt(v, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def table(outcomes: list[Outcome]) -> str:
    """The results as one plain-text table."""
    head = (
        f"{'benchmark':<14}{'baseline':>11}{'mnistlab':>11}{'result':>10}{'target':>9}{'verdict':>15}"
        f"{'% of peak':>10}{'peak RSS':>10}{'time':>8}  unit / note"
    )
    rows = [head, "-" * len(head)]
    for o in outcomes:
        e, d = o.entry, o.data
        unit = e.unit
        value = f"{o.value:.2f}{'x' if unit == 'x' else ''}" if o.value is not None else "-"
        target = "-" if e.target is None else f"{'<=' if e.lower_is_better else '>='}{e.target:g}"
        frac = d.get("fraction_of_peak")
        rows.append(
            f"{e.name:<14}{_fmt(d.get('baseline'), ',.0f'):>11}{_fmt(d.get('mnistlab'), ',.0f'):>11}{value:>10}"
            f"{target:>9}{o.verdict:>15}{_fmt(frac * 100 if frac is not None else None, '.1f'):>10}"
            f"{_fmt(o.peak_rss_mib, ',.0f'):>7}MiB{o.seconds:>7.0f}s  "
            + (d.get("unit", unit) if o.status == "ok" else o.message)
        )
    return "\n".join(rows)

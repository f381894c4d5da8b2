"""The models bench's measures (by role) and its table as pure functions of the collected entries:
`rows`, `table`, `markdown`, `csv_text`, the notes under the table. bench/compare.py collects the entries."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnistlab.bench.compute import (
    GAIN_SIGMA,
    BenchConfig,
)
from mnistlab.plots.content import num, pct

CACHE_FILE = "compare.json"  # beside a run's summary: what compare computed, by checkpoint hash


@dataclass(frozen=True)
class Measure:
    key: str
    header: str
    role: str | None  # the role a run needs for the measure to apply; None: every run
    kind: str = "num"  # how a cell shows it: num (report.content.num), pct (a percentage), int
    per_sampler: bool = False  # one value per sampler of a generator


MEASURES = (
    Measure("mse", "test MSE", "decoder"),
    Measure("psnr", "test PSNR (dB)", "decoder"),
    Measure("ssim", "test SSIM", "decoder"),
    Measure("denoise_gain", f"PSNR gain at sigma {GAIN_SIGMA:g} (dB)", "denoiser"),
    Measure("probe_acc", "frozen probe", "encoder", "pct"),
    Measure("knn_acc", "k-NN", "encoder", "pct"),
    Measure("fid", "FID-MNIST", "generator", per_sampler=True),
    Measure("precision", "precision", "generator", per_sampler=True),
    Measure("recall", "recall", "generator", per_sampler=True),
    Measure("rarest", "rarest digit", "generator", "pct", True),
    Measure("commonest", "commonest digit", "generator", "pct", True),
    Measure("nn_train", "nearest train image (L2)", "generator", per_sampler=True),
    Measure("n_samples", "scored samples", "generator", "int", True),
    Measure("params", "parameters", None, "int"),
    Measure("train_seconds", "train s", None),
    Measure("images_per_s", "train images/s", None, "int"),
    Measure("n_test", "test images", None, "int"),
)
BY_KEY = {m.key: m for m in MEASURES}


@dataclass
class Entry:
    """One finished run, collected: its measures (key absent: does not apply; None: not known)."""

    label: str
    path: Path
    task: str
    roles: frozenset[str]
    values: dict[str, Any] = field(default_factory=dict)  # run-level measures
    samplers: dict[str, dict[str, Any]] = field(default_factory=dict)  # sampler -> its measures
    figures: list[tuple[str, str, Path]] = field(default_factory=list)  # (kind, caption, PNG)
    computed: list[str] = field(default_factory=list)  # what this call computed from the checkpoint
    notes: list[str] = field(default_factory=list)


def applies(measure: Measure, roles: Iterable[str]) -> bool:
    return measure.role is None or measure.role in set(roles)


# ------------------------------------------------------------------------------------- the table (pure)


def rows(entries: list[Entry]) -> list[dict[str, Any]]:
    """One row per run, or per sampler of a generator run (its first row also holds the run-level
    measures). A key absent from a row: the measure does not apply there."""
    out = []
    for e in entries:
        samplers = list(e.samplers.items()) or ([(None, {})] if "generator" in e.roles else [])
        run_row = {k: v for k, v in e.values.items() if k in BY_KEY}
        if not samplers:
            out.append({"model": e.label, "task": e.task, "sampler": "", **run_row})
        for i, (name, values) in enumerate(samplers):
            gen = {m.key: values.get(m.key) for m in MEASURES if m.per_sampler and applies(m, e.roles)}
            out.append(
                {
                    "model": e.label if i == 0 else f"{e.label} ({name})",
                    "task": e.task,
                    "sampler": name or "",
                    **(run_row if i == 0 else {}),
                    **gen,
                }
            )
    return out


def cell(measure: Measure, value: Any, applied: bool) -> str:
    """'' where the measure does not apply, '-' where it applies but is not known."""
    if not applied:
        return ""
    if value is None:
        return "-"
    if measure.kind == "pct":
        return pct(value)
    if measure.kind == "int":
        return f"{round(value):,}"
    return num(value)


def table(table_rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(headers, cells): model, task, sampler (when any row has one), then the measures that apply to
    at least one row, in MEASURES order."""
    used = [m for m in MEASURES if any(m.key in r for r in table_rows)]
    has_sampler = any(r.get("sampler") for r in table_rows)
    headers = ["model", "task", *(["sampler"] if has_sampler else []), *(m.header for m in used)]
    cells = []
    for r in table_rows:
        head = [r["model"], r["task"], *([r.get("sampler", "")] if has_sampler else [])]
        cells.append(head + [cell(m, r.get(m.key), m.key in r) for m in used])
    return headers, cells


def markdown(headers: list[str], cells: list[list[str]]) -> str:
    def line(items):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in items) + " |"

    return "\n".join([line(headers), "|" + "---|" * len(headers), *(line(r) for r in cells)])


def csv_text(table_rows: list[dict[str, Any]]) -> str:
    """The rows as CSV: raw numbers (no formatting), an empty cell where a measure does not apply or
    is not known; one column per measure key."""
    keys = ["model", "task", "sampler", *(m.key for m in MEASURES if any(m.key in r for r in table_rows))]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in table_rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
    return buf.getvalue()


def table_notes(entries: list[Entry]) -> list[str]:
    """What the table's numbers are, where they disagree in set-up, and what each run computed."""
    notes = []
    ns = {v.get("n_samples") for e in entries for v in e.samplers.values() if v.get("n_samples")}
    if len(ns) > 1:
        notes.append(
            f"The generators' scores come from different sample counts ({', '.join(map(str, sorted(ns)))}); "
            "FID-MNIST grows as the count shrinks, so compare FIDs of equal counts only."
        )
    refs = {v.get("reference") for e in entries for v in e.samplers.values() if v.get("reference")}
    if len(refs) > 1:
        notes.append(
            f"The generators were scored with different reference classifiers ({', '.join(sorted(refs))})."
        )
    tests = {e.values.get("n_test") for e in entries if e.values.get("n_test")}
    if len(tests) > 1:
        notes.append(
            f"The runs were tested on test sets of different sizes ({', '.join(map(str, sorted(tests)))} "
            "images: see the test images column)."
        )
    for e in entries:
        notes += [f"{e.label}: {n}" for n in e.notes]
        if e.computed:
            notes.append(
                f"{e.label}: computed from its checkpoint now (cached in {e.path / CACHE_FILE}): "
                f"{', '.join(e.computed)}."
            )
    return notes


def definitions(cfg: BenchConfig, computed: bool = True) -> str:
    """What each measure is (`computed`: with the settings of the ones computed from checkpoints)."""
    settings = f" (computed ones: {cfg.samples:,} per sampler, seed {cfg.seed})" if computed else ""
    subset = f" (computed ones: over {cfg.nn_samples:,} of the samples)" if computed else ""
    return (
        f"Decoders: test images encoded and decoded (a denoiser's clean inputs). Denoisers: PSNR of the "
        f"output minus PSNR of the input, test images plus Gaussian noise of sigma {GAIN_SIGMA:g} (the run's "
        f"noise seed). Encoders: logistic regression on standardised codes fit on up to {cfg.probe_train:,} "
        f"training images, and {cfg.knn_k}-NN on the raw codes of all training images, test accuracy. "
        f"Generators: samples scored against the test split with the reference classifier{settings}; "
        f"nearest train image: mean L2 distance of a sample to its nearest training image, pixels in [0, 1]"
        f"{subset}. Train s and images/s: from the run's own training. "
        "Blank: the measure does not apply to the model; '-': not known."
    )

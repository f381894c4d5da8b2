"""The models bench's measures (by role, each with the way that is better) and its table as pure functions
of the collected entries: `rows`, `table`, `best` (the cells to mark), `markdown`, `terminal` (the
headline columns), `csv_text`, the notes under the table. bench/compare.py collects the entries."""

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
from mnistlab.plots.content import best_cells, num, pct

CACHE_FILE = "compare.json"  # beside a run's summary: what compare computed, by checkpoint hash


@dataclass(frozen=True)
class Measure:
    key: str
    header: str
    role: str | None  # the role a run needs for the measure to apply; None: every run
    kind: str = "num"  # how a cell shows it: num (report.content.num), pct (a percentage), int
    per_sampler: bool = False  # one value per sampler of a generator
    better: str | None = None  # "higher" or "lower": which way is better; None: a description, no best

    @property
    def shown(self) -> str:
        """The header a table shows: with an arrow that says which way is better."""
        return self.header + {"higher": " ↑", "lower": " ↓"}.get(self.better or "", "")


MEASURES = (
    Measure("mse", "test MSE", "decoder", better="lower"),
    Measure("psnr", "test PSNR (dB)", "decoder", better="higher"),
    Measure("ssim", "test SSIM", "decoder", better="higher"),
    Measure("denoise_gain", f"PSNR gain at sigma {GAIN_SIGMA:g} (dB)", "denoiser", better="higher"),
    Measure("probe_acc", "frozen probe", "encoder", "pct", better="higher"),
    Measure("knn_acc", "k-NN", "encoder", "pct", better="higher"),
    Measure("fid", "FID-MNIST", "generator", per_sampler=True, better="lower"),
    Measure("precision", "precision", "generator", per_sampler=True, better="higher"),
    Measure("recall", "recall", "generator", per_sampler=True, better="higher"),
    # Every digit near its 10% share is best: the rarest as high, the commonest as low as can be.
    Measure("rarest", "rarest digit", "generator", "pct", True, better="higher"),
    Measure("commonest", "commonest digit", "generator", "pct", True, better="lower"),
    # Near 0 is a copy of a training image, large a sample like no digit: no side is better.
    Measure("nn_train", "nearest train image (L2)", "generator", per_sampler=True),
    Measure("n_samples", "scored samples", "generator", "int", True),
    Measure("params", "parameters", None, "int"),
    Measure("train_seconds", "train s", None),
    Measure("images_per_s", "train images/s", None, "int"),
    Measure("n_test", "test images", None, "int"),
)
# The few columns the terminal shows (compare.md and compare.csv hold them all).
HEADLINE = ("psnr", "denoise_gain", "probe_acc", "fid", "precision", "recall")
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


def _used(table_rows: list[dict[str, Any]], keys: Iterable[str] | None = None) -> list[Measure]:
    """The measures that apply to at least one row (of `keys` when given), in MEASURES order."""
    return [m for m in MEASURES if (keys is None or m.key in keys) and any(m.key in r for r in table_rows)]


def table(
    table_rows: list[dict[str, Any]], keys: Iterable[str] | None = None
) -> tuple[list[str], list[list[str]]]:
    """(headers, cells): model, task, sampler (when any row has one), then the measures that apply to
    at least one row (of `keys` when given), in MEASURES order; headers carry the better way's arrow."""
    used = _used(table_rows, keys)
    has_sampler = any(r.get("sampler") for r in table_rows)
    headers = ["model", "task", *(["sampler"] if has_sampler else []), *(m.shown for m in used)]
    cells = []
    for r in table_rows:
        head = [r["model"], r["task"], *([r.get("sampler", "")] if has_sampler else [])]
        cells.append(head + [cell(m, r.get(m.key), m.key in r) for m in used])
    return headers, cells


def best(table_rows: list[dict[str, Any]], keys: Iterable[str] | None = None) -> set[tuple[int, int]]:
    """(row, column) of `table(table_rows, keys)`'s cells that hold the best value of their column (ties:
    each), for the measures with a better way that at least two rows know. Generator scores of
    different sample counts are not ranked: FID-MNIST grows as the count shrinks."""
    used = _used(table_rows, keys)
    first = 3 if any(r.get("sampler") for r in table_rows) else 2
    mixed = len({r.get("n_samples") for r in table_rows if r.get("n_samples")}) > 1
    better = [None if mixed and m.per_sampler else m.better for m in used]
    values = [[r.get(m.key) for m in used] for r in table_rows]
    shown = [lambda v, m=m: cell(m, v, True) for m in used]
    return {(i, j + first) for i, j in best_cells(values, better, shown)}


def markdown(headers: list[str], cells: list[list[str]], bold: set[tuple[int, int]] = frozenset()) -> str:
    """A markdown table; the cells in `bold` (row, column) in bold."""

    def line(items, i=-1):
        shown = (f"**{c}**" if (i, j) in bold and c else str(c) for j, c in enumerate(items))
        return "| " + " | ".join(c.replace("|", "\\|") for c in shown) + " |"

    return "\n".join([line(headers), "|" + "---|" * len(headers), *(line(r, i) for i, r in enumerate(cells))])


def terminal(table_rows: list[dict[str, Any]], arrows: bool = True) -> str:
    """The headline columns (HEADLINE) as aligned text for a terminal, the best of each column followed
    by '*', and a legend; `arrows` False writes the better way as '(+)' / '(-)' for a terminal without
    Unicode."""
    headers, cells = table(table_rows, HEADLINE)
    if not arrows:
        headers = [h.replace(" ↑", " (+)").replace(" ↓", " (-)") for h in headers]
    marked = best(table_rows, HEADLINE)
    cells = [[c + (" *" if (i, j) in marked else "") for j, c in enumerate(r)] for i, r in enumerate(cells)]
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *cells)]

    def line(items):
        return "  ".join(str(c).ljust(w) for c, w in zip(items, widths)).rstrip()

    up, down = ("↑", "↓") if arrows else ("(+)", "(-)")
    legend = f"{up} higher is better, {down} lower is better; * the best of its column."
    return "\n".join([line(headers), line("-" * w for w in widths), *map(line, cells), legend])


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
    subset = f" (computed ones: over {min(cfg.nn_samples, cfg.samples):,} of the samples)" if computed else ""
    return (
        f"Decoders: test images encoded and decoded (a denoiser's clean inputs). Denoisers: PSNR of the "
        f"output minus PSNR of the input, test images plus Gaussian noise of sigma {GAIN_SIGMA:g} (the run's "
        f"noise seed). Encoders: logistic regression on standardised codes fit on up to {cfg.probe_train:,} "
        f"training images, and {cfg.knn_k}-NN on the raw codes of all training images, test accuracy. "
        f"Generators: samples scored against the test split with the reference classifier{settings}; "
        f"nearest train image: mean L2 distance of a sample to its nearest training image, pixels in [0, 1]"
        f"{subset}. Train s and images/s: from the run's own training. "
        "Blank: the measure does not apply to the model; '-': not known. "
        "↑: higher is better, ↓: lower is better; bold: the best value of its column."
    )


# How to read a generation score, once, under `mnistlab score`'s table.
READING = (
    "lower FID-MNIST is better (0: the samples' features match the real test images'); higher precision "
    "is better (samples look like real digits), higher recall too (they cover the real digits' variety)."
)

# Below this many samples a FID-MNIST is too noisy and too biased upward to compare (the bias grows as
# 1/N; the usual count is 10,000): `mnistlab score` says so.
FID_MIN_SAMPLES = 1_000


def small_sample_caution(n: int | None) -> str | None:
    """The caution `mnistlab score` prints for `n` scored samples, or None from FID_MIN_SAMPLES on (and
    for a count not known)."""
    if n is None or n >= FID_MIN_SAMPLES:
        return None
    return (
        f"caution: {n:,} samples is too few for a FID-MNIST to mean much: it is biased upward (more so "
        f"the fewer the samples) and noisy. Score {FID_MIN_SAMPLES:,} or more (10,000 is usual), and "
        "compare FIDs of equal sample counts only."
    )

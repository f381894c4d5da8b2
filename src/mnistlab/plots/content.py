"""The building blocks of the report: tables, figures and sections as plain data, the number formats,
and `RunFolder`, which reads a `mnistlab run` folder's stages, JSON files and figures for the section
builders in report/sections.py (a missing or unreadable file reads as empty, never as a crash)."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Table:
    caption: str
    columns: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)  # (row, column) of the best values
    narrow: bool = False  # on a phone: one card per row, each cell under its header, no sideways scroll


@dataclass
class Figure:
    path: Path  # absolute path of the PNG
    rel: str  # path relative to the run folder (report.md links it)
    caption: str


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    missing: str = ""  # set when the stage has not run: the section says so instead of its content
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    banner: str = ""  # what a reader must know before the numbers (e.g. a smoke-sized preset)
    findings: list[str] = field(default_factory=list)  # what the study found, in a few sentences
    reading: list[str] = field(default_factory=list)  # how to read the numbers: each measure's better way


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text()) if Path(path).is_file() else {}
    except json.JSONDecodeError:
        return {}


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text()) if Path(path).is_file() else {}
    except tomllib.TOMLDecodeError:
        return {}


def num(value: Any, digits: int = 3) -> str:
    """A number for a table cell, one format for every table: whole numbers and values of 1,000 or
    more with thousands separators, others to 3 significant digits; '-' when absent."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def pct(value: Any) -> str:
    """A share as a percentage with one decimal ('-' when absent)."""
    return "-" if value is None else f"{100 * float(value):.1f}%"


def precision(summary: dict) -> str:
    """The words a section adds after a run's training time when its summary says it trained in
    bfloat16 (train.amp), else ""."""
    return " with bfloat16 forward passes" if summary.get("amp") == "bf16" else ""


class RunFolder:
    """A run folder's stages and files, for the section builders."""

    def __init__(
        self,
        root: Path,
        state: dict[str, Any],
        roles: dict[str, frozenset[str]] | None = None,
        encoder: str | None = None,
    ):
        """`roles`: the task stages of the run (name -> the task's roles, from the task registry);
        `encoder`: the study's autoencoder stage, which the probe and latent stages read."""
        self.root, self.state = Path(root), state
        self.stages = {s["name"]: s for s in state.get("stages", [])}
        self.folders = {n: s.get("folder") or n for n, s in self.stages.items()}
        roles = roles or {}
        self.trained = [n for n in self.stages if n in roles]
        encoders = [n for n in self.trained if "encoder" in roles[n]]
        self.encoder = encoder or (encoders[0] if encoders else None)
        generators = [n for n in self.trained if "generator" in roles[n] and "encoder" not in roles[n]]
        self.generator = generators[0] if generators else None

    def folder(self, stage: str) -> str:
        """The folder (relative to the run) a stage wrote into."""
        return self.folders.get(stage, stage)

    def done(self, stage: str) -> bool:
        return self.stages.get(stage, {}).get("status") == "done"

    def not_run(self, stage: str, what: str) -> str:
        """The sentence a section shows when `stage` has not finished ('' when it has)."""
        if self.done(stage):
            return ""
        entry = self.stages.get(stage)
        if entry is None:
            return f"This run has no {stage} stage (the preset does not ask for it), so there is no {what}."
        status = entry.get("status", "pending")
        error = f" Last error: {entry['error']}" if entry.get("error") else ""
        return (
            f"The {stage} stage has not run to the end (status: {status}), so there is no {what} yet.{error}"
        )

    def json(self, rel: str) -> dict[str, Any]:
        return read_json(self.root / rel)

    def figure(self, rel: str, caption: str) -> list[Figure]:
        """[Figure] when the PNG exists, else [] (a figure a stage did not draw is left out)."""
        path = self.root / rel
        return [Figure(path, rel, caption)] if path.is_file() else []


# ------------------------------------------------------------------------- generation scores


def _share(pick):
    def value(scores: dict[str, Any]) -> float | None:
        hist = scores.get("class_hist") or []
        return pick(hist) if hist else None

    return value


@dataclass(frozen=True)
class ScoreColumn:
    value: Any  # score_samples dict -> the number (None when absent)
    better: str | None  # "higher" or "lower"; None: no side is better
    shown: Any = num  # the number -> its cell


# A generation score's columns (header -> ScoreColumn), in the order tables show them; a table picks the
# ones it needs by header, and shows each header with the arrow of its better way.
SCORE_COLUMNS: dict[str, ScoreColumn] = {
    "FID-MNIST": ScoreColumn(lambda s: s.get("fid_mnist"), "lower"),
    "precision": ScoreColumn(lambda s: s.get("precision"), "higher"),
    "recall": ScoreColumn(lambda s: s.get("recall"), "higher"),
    "KL(class | uniform)": ScoreColumn(lambda s: s.get("kl_uniform"), "lower"),
    "rarest digit": ScoreColumn(_share(min), "higher", pct),
    "commonest digit": ScoreColumn(_share(max), "lower", pct),
    # Near 0: copies of training images; large: unlike any digit. No side is better.
    "nearest training image (L2)": ScoreColumn(lambda s: s.get("nn_train_dist"), None),
}
ARROWS = {"higher": " ↑", "lower": " ↓"}


def best_cells(
    values: list[list[float | None]], better: list[str | None], shown=None
) -> set[tuple[int, int]]:
    """(row, column) of the best value of each column of `values` with a better way (ties: each, equal
    as `shown` formats them), where at least two rows have a value."""
    shown = shown or [num] * len(better)
    out = set()
    for j, way in enumerate(better):
        known = [(i, row[j]) for i, row in enumerate(values) if row[j] is not None]
        if way is None or len(known) < 2:
            continue
        top = (max if way == "higher" else min)(v for _, v in known)
        out |= {(i, j) for i, v in known if shown[j](v) == shown[j](top)}
    return out


def score_table(
    title: str,
    rows: list[tuple[str | None, dict[str, Any]]],
    columns: tuple[str, ...] = tuple(SCORE_COLUMNS),
    label: str = "",
    unranked: tuple[str, ...] = (),
) -> Table:
    """A table of generation scores: one row per (name, scores) with the `columns` of SCORE_COLUMNS, each
    header with its better way's arrow and, over two rows or more, the best value of each in bold; a
    first column headed `label` holds the names (none when `label` is empty). Rows named in `unranked`
    (a reference such as the test set's own floor) are shown but never marked best."""
    head = [label] if label else []
    picked = [SCORE_COLUMNS[c] for c in columns]
    values = [[c.value(scores) for c in picked] for _, scores in rows]
    body = [
        ([name] if label else []) + [c.shown(v) for c, v in zip(picked, vals)]
        for (name, _), vals in zip(rows, values)
    ]
    ranked = [vals if name not in unranked else [None] * len(vals) for (name, _), vals in zip(rows, values)]
    bold = best_cells(ranked, [c.better for c in picked], [c.shown for c in picked])
    shift = len(head)
    headers = head + [c + ARROWS.get(p.better or "", "") for c, p in zip(columns, picked)]
    return Table(title, headers, body, {(i, j + shift) for i, j in bold})

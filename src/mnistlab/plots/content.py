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
    def cell(scores: dict[str, Any]) -> str:
        hist = scores.get("class_hist") or []
        return pct(pick(hist)) if hist else "-"

    return cell


# A generation score's columns (header -> the cell of a score_samples dict), in the order tables show
# them; a table picks the ones it needs by header.
SCORE_COLUMNS: dict[str, Any] = {
    "FID-MNIST": lambda s: num(s.get("fid_mnist")),
    "precision": lambda s: num(s.get("precision")),
    "recall": lambda s: num(s.get("recall")),
    "KL(class | uniform)": lambda s: num(s.get("kl_uniform")),
    "rarest digit": _share(min),
    "commonest digit": _share(max),
    "nearest training image (L2)": lambda s: num(s.get("nn_train_dist")),
}


def score_table(
    title: str,
    rows: list[tuple[str | None, dict[str, Any]]],
    columns: tuple[str, ...] = tuple(SCORE_COLUMNS),
    label: str = "",
) -> Table:
    """A table of generation scores: one row per (name, scores) with the `columns` of SCORE_COLUMNS; a
    first column headed `label` holds the names (none when `label` is empty)."""
    head = [label] if label else []
    body = [([name] if label else []) + [SCORE_COLUMNS[c](scores) for c in columns] for name, scores in rows]
    return Table(title, head + list(columns), body)

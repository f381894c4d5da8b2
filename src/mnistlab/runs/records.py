"""The shapes of a run's JSON records, checked where they are read: summary.json, run.json, each
metrics.jsonl line and a sample file's provenance JSON. A record edited by hand with a wrong type
(`"epoch": "3"`, a list where a table belongs) is a one-line ConfigError naming the file and the
field, instead of a TypeError or KeyError deep in whatever reads it next.

Only the fields that code reads are checked, and only their type: a record from an older or newer
mnistlab with fields this one does not know still reads.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnistlab.core.errors import ConfigError

# What a field may hold: (how a message names it, whether a value fits).
Kind = tuple[str, Callable[[Any], bool]]
# Finite: mnistlab never records NaN or infinity (a diverged run says so in its status), and Python's
# json reads the literals NaN and Infinity, and 1e400 as infinity, from a file edited by hand.
NUMBER: Kind = (
    "a finite number",
    lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v),
)
WHOLE: Kind = ("a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool))
TEXT: Kind = ("a string", lambda v: isinstance(v, str))
TABLE: Kind = ("a JSON object", lambda v: isinstance(v, dict))
TEXT_LIST: Kind = ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v))


def maybe(kind: Kind) -> Kind:
    """`kind` or null."""
    return f"{kind[0]} or null", lambda v: v is None or kind[1](v)


SUMMARY_FIELDS = {
    "status": TEXT,
    "task": TEXT,
    "error": maybe(TEXT),
    "checkpoint_sha256": TEXT,
    "test": maybe(TABLE),
    "data": maybe(TEXT),  # the folder the data came from
    "train_seconds": maybe(NUMBER),
    "train_images_per_s": maybe(NUMBER),
    "seconds": maybe(NUMBER),
    "epochs": maybe(WHOLE),
    "n_train": maybe(WHOLE),
    "n_test": maybe(WHOLE),
    "probe_acc": maybe(NUMBER),
    "probe_n_train": maybe(WHOLE),
}

METRICS_FIELDS = {"epoch": WHOLE, "step": WHOLE, "seconds": NUMBER, "lr": maybe(NUMBER)}
METRICS_PREFIXES = ("train_", "val_")  # the loop's per-epoch means: numbers (null: none that epoch)

RUN_FIELDS = {
    "kind": TEXT,
    "status": TEXT,
    "preset": TEXT,
    "overrides": TEXT_LIST,
    "data_dir": maybe(TEXT),
    "device": maybe(TEXT),
    "command": maybe(TEXT),
    "plan": TABLE,
}
STAGE_STATUSES = ("pending", "running", "done", "failed")
STAGE_FIELDS = {
    "name": TEXT,
    "folder": TEXT,
    "status": TEXT,
    "attempts": WHOLE,
    "started": maybe(TEXT),
    "ended": maybe(TEXT),
    "seconds": maybe(NUMBER),
    "cpu_seconds": maybe(NUMBER),
    "peak_rss_mb": maybe(NUMBER),
    "error": maybe(TEXT),
    "inputs": maybe(TEXT),
}

PROVENANCE_FIELDS = {
    "run": TEXT,
    "task": TEXT,
    "sampler": TEXT,
    "n": WHOLE,
    "seed": WHOLE,
    "digit": maybe(WHOLE),
    "data": TABLE,
}
PROVENANCE_DATA_FIELDS = {"dataset": TEXT, "data_dir": TEXT}


def _show(value: Any) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 40 else text[:37] + "..."


def _check_fields(obj: Any, fields: dict[str, Kind], where: str, required: tuple[str, ...] = ()) -> None:
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for name in required:
        if name not in obj:
            raise ConfigError(
                f"{where}: no {name!r} field; the file was not written by mnistlab or was edited"
            )
    for name, fits in fields.items():
        if name in obj and not fits[1](obj[name]):
            raise ConfigError(f"{where}: field {name!r} must be {fits[0]}, got {_show(obj[name])}")


def check_summary(summary: dict[str, Any], path: Path) -> dict[str, Any]:
    """A run's summary.json, its known fields of the right types, and the numbers of its test table
    finite; returned as is."""
    _check_fields(summary, SUMMARY_FIELDS, str(path))
    for key, value in (summary.get("test") or {}).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{path}: field 'test.{key}' must be a finite number, got {_show(value)}")
    return summary


def check_metrics(rows: list[Any], path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl rows: each an object with a whole-number epoch, numbers for its step, seconds,
    learning rate and train_* / val_* means. The line number in the message counts parsed rows."""
    for number, row in enumerate(rows, 1):
        where = f"{path} line {number}"
        _check_fields(row, METRICS_FIELDS, where, required=("epoch",))
        for key, value in row.items():
            if key.startswith(METRICS_PREFIXES) and not maybe(NUMBER)[1](value):
                raise ConfigError(f"{where}: field {key!r} must be a number or null, got {_show(value)}")
    return rows


def check_run(state: Any, path: Path) -> dict[str, Any]:
    """run.json of a study folder: its settings and each stage's entry of the right types."""
    _check_fields(state, RUN_FIELDS, str(path))
    stages = state.get("stages")
    if not isinstance(stages, list):
        raise ConfigError(f"{path}: no stage list; not written by `mnistlab run`")
    for k, entry in enumerate(stages):
        where = f"{path} stages[{k}]"
        _check_fields(entry, STAGE_FIELDS, where, required=("name", "folder", "status"))
        if entry["status"] not in STAGE_STATUSES:
            raise ConfigError(
                f"{where}: field 'status' must be one of {', '.join(STAGE_STATUSES)}, got {_show(entry['status'])}"
            )
    return state


def check_provenance(record: dict[str, Any], path: Path) -> dict[str, Any]:
    """The JSON `mnistlab sample` writes beside its .npy (what `mnistlab score` reads)."""
    _check_fields(record, PROVENANCE_FIELDS, str(path))
    if isinstance(record.get("data"), dict):
        _check_fields(record["data"], PROVENANCE_DATA_FIELDS, f"{path} field 'data'")
    return record

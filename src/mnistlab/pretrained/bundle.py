"""What the shipped bundle holds, read from its files alone: the names of its runs and each run's task,
description, epochs, test numbers, origin and size (`mnistlab pretrained list`).

Why a module of its own: listing the bundle reads a few small TOML and JSON files, and must answer as
fast as `--help` does; the rest of pretrained/ (copying a run out, checking its checkpoint, packing)
needs the run-folder and checkpoint code, which imports torch. So this module
imports only core (the light task catalogue for names, order and descriptions) and the records'
type checks; shipped.py re-exports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnistlab.core import task_catalog
from mnistlab.core.errors import ConfigError
from mnistlab.core.fsio import read_json_file, read_toml
from mnistlab.runs.records import check_summary

BUNDLE = Path(__file__).parents[1] / "_pretrained"
REPORT = "report"  # `mnistlab compare`'s page of the bundle's runs


def available(bundle: Path | None = None) -> list[str]:
    """Names of the shipped runs, in the tasks' listing order (as `tasks.all_tasks()` sorts them)."""
    bundle = bundle or BUNDLE
    if not bundle.is_dir():
        return []
    order = {e.name: i for i, e in enumerate(task_catalog.entries())}
    found = [p.name for p in bundle.iterdir() if (p / "config.toml").is_file()]
    return sorted(found, key=lambda n: (order.get(n, len(order)), n))


def shipped(name: str, bundle: Path | None = None) -> Path:
    """The folder of shipped run `name`; a one-line ConfigError naming the shipped ones otherwise."""
    bundle = bundle or BUNDLE
    names = available(bundle)
    if name not in names:
        raise ConfigError(f"no shipped run named {name!r}; shipped: {', '.join(names) or 'none'}")
    return bundle / name


def describe(name: str, bundle: Path | None = None) -> dict[str, Any]:
    """Task, description, provenance and headline numbers of shipped run `name`."""
    folder = shipped(name, bundle)
    config = folder / "config.toml"
    task = read_toml(config).get("task")
    if not isinstance(task, str):
        raise ConfigError(f'{config}: no task name (task = "...")')
    path = folder / "summary.json"
    summary = check_summary(read_json_file(path), path) if path.exists() else {}
    entry = task_catalog.entry(task)
    return {
        "name": name,
        "task": task,
        "description": entry.description if entry else "",
        "epochs": summary.get("epochs"),
        "test": summary.get("test") or {},
        "pretrained": summary.get("pretrained", {}),
        "megabytes": round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6, 2),
    }

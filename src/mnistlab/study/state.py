"""run.json of `mnistlab run`: the study's record of each stage (pending / running / done / failed,
start and end times, wall and CPU seconds, peak memory, the fingerprint of its inputs), written after
every change so that a crash leaves the last state on disk and a rerun knows what is done."""

from __future__ import annotations

import dataclasses
import logging
import resource
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mnistlab.core.fsio import write_json
from mnistlab.runs import owner
from mnistlab.runs.folder import RUN_FILE, read_run
from mnistlab.study import inputs as run_inputs

log = logging.getLogger("mnistlab")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux: the high-water mark of this process and of finished child processes
    # (search workers), whichever is larger.
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)


def new_entry(name: str, folder: str) -> dict[str, Any]:
    return {
        "name": name,
        "folder": folder,
        "status": "pending",
        "started": None,
        "ended": None,
        "seconds": None,
        "attempts": 0,
        "error": None,
    }


def open_state(
    out: Path, plan: Any, stages: list[tuple[str, str]], settings: dict[str, Any], prints: dict[str, str]
) -> dict[str, Any]:
    """run.json of `out` for `stages` ((name, folder) in order), once `out` is claimed: new, or the
    existing one with the stages whose inputs changed since they ran reset to pending (the files
    mnistlab wrote in their folders removed) and stages the plan added appended."""
    owner.claim(out, "run")  # new, empty or a study's; held (locked) while the study runs
    if not (out / RUN_FILE).exists():
        return {
            "kind": "mnistlab-run",
            "version": 1,
            **settings,
            "status": "pending",
            "created": now(),
            "updated": now(),
            "plan": dataclasses.asdict(plan),
            "stages": [new_entry(n, f) for n, f in stages],
        }
    state = read_run(out)
    same = all(state.get(k) == settings[k] for k in ("preset", "overrides", "data_dir", "device"))
    old = {e["name"]: e for e in state["stages"]}
    entries = [old.get(n) or new_entry(n, f) for n, f in stages]
    rerun = run_inputs.stages_to_rerun(entries, prints, same)
    for entry in entries:
        if entry["name"] in rerun:
            owner.clear(out / entry["folder"])  # trained with other inputs (the user's files stay)
            entry.update(new_entry(entry["name"], entry["folder"]))
    kept = [e["name"] for e in entries if e["status"] == "done"]
    if rerun:
        log.warning(
            "%s: the inputs of %s changed since they ran: rerunning them; keeping %s",
            out,
            ", ".join(rerun),
            ", ".join(kept) or "nothing",
        )
    state.update(settings, plan=dataclasses.asdict(plan), stages=entries)
    return state


def save(out: Path, state: dict[str, Any]) -> None:
    state["updated"] = now()
    write_json(out / RUN_FILE, state)


def finish(
    entry: dict[str, Any], status: str, wall: float, cpu: float, peak_mb: float, error: str | None = None
) -> None:
    """Close a stage's entry: wall and CPU seconds (its process, all threads) summed over attempts."""
    entry.update(status=status, ended=now(), error=error, peak_rss_mb=peak_mb)
    entry["seconds"] = round((entry.get("seconds") or 0.0) + wall, 2)
    entry["cpu_seconds"] = round((entry.get("cpu_seconds") or 0.0) + cpu, 2)

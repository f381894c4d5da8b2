"""The processes of a session, read from /proc: what the fault suite and the hostile pass check for
orphans after a command exits (a command started with `start_new_session=True` leads its own session,
so whatever it left running still carries its session id). Imports nothing heavy."""

from __future__ import annotations

from pathlib import Path


def session_processes(sid: int) -> list[int]:
    """Live processes of session `sid` (zombies excluded), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields: state, ppid, pgrp, session
            found.append(int(entry.name))
    return found

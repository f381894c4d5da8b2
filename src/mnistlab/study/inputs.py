"""What each stage of `mnistlab run` reads, as a fingerprint, so that a study folder rerun with other
settings reruns only the stages whose inputs changed (and the stages that read them), keeping the
finished others, as make or DVC decide from a stage's inputs.

A stage's inputs are what its Stage.inputs returns (a task stage: its resolved config, data included;
the probe: the plan's fields it uses and the probe table), plus the fingerprints of the stages it
reads (Stage.reads), so a change flows downstream.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any


def fingerprint(inputs: Any) -> str:
    """SHA-256 of the canonical JSON of `inputs` (sorted keys, tuples as lists)."""
    text = json.dumps(inputs, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()


def plan_fields(plan: Any, names: tuple[str, ...]) -> dict[str, Any]:
    plain = dataclasses.asdict(plan)
    return {k: plain[k] for k in names}


def stage_fingerprints(stages: list[str], own: dict[str, Any], reads: dict[str, list[str]]) -> dict[str, str]:
    """Fingerprint of every stage (in order): its own inputs plus the fingerprints of what it reads."""
    prints: dict[str, str] = {}
    for name in stages:
        upstream = {r: prints[r] for r in reads.get(name, []) if r in prints}
        prints[name] = fingerprint({"own": own[name], "reads": upstream})
    return prints


def stages_to_rerun(entries: list[dict[str, Any]], prints: dict[str, str], same_settings: bool) -> list[str]:
    """Finished stages whose inputs differ from the ones recorded when they ran. A stage recorded
    before fingerprints existed counts as unchanged only when the command's settings are the same."""
    rerun = []
    for entry in entries:
        if entry.get("status") != "done":
            continue
        recorded = entry.get("inputs")
        if (recorded is None and not same_settings) or (
            recorded is not None and recorded != prints[entry["name"]]
        ):
            rerun.append(entry["name"])
    return rerun


def stage_reads(ctx: Any, stages: list[Any]) -> dict[str, list[str]]:
    """The stages (of `stages`, registry.Stage objects) of the study in `ctx` whose output each stage
    reads: what its fingerprint carries and what must finish before it starts."""
    names = {s.name for s in stages}
    return {s.name: [r for r in s.reads(ctx) if r in names and r != s.name] for s in stages}


def fingerprints(ctx: Any, stages: list[Any]) -> dict[str, str]:
    """Each stage's inputs as a fingerprint: what decides whether it reruns."""
    own = {s.name: s.inputs(ctx) for s in stages}
    return stage_fingerprints([s.name for s in stages], own, stage_reads(ctx, stages))

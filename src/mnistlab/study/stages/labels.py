"""The labels stage: every encoder's frozen code at the plan's label counts, one curve per encoder,
into RUN/label_efficiency/ (with one encoder, the probe stage's own curve says it all: not run)."""

from __future__ import annotations

import dataclasses

from mnistlab.probe.fit import parse_labels_per_class
from mnistlab.probe.labels import run_code_labels
from mnistlab.probe.section import labels_section
from mnistlab.runs import owner
from mnistlab.study.context import StudyContext
from mnistlab.study.registry import Stage, register

FOLDER = "label_efficiency"


def run(ctx: StudyContext, resume: bool) -> None:
    counts = parse_labels_per_class(",".join(ctx.plan.labels_per_class))
    exp = ctx.probe_table()
    if ctx.device:
        exp = dataclasses.replace(exp, linear=dataclasses.replace(exp.linear, device=ctx.device))
    out = ctx.out / FOLDER
    owner.clear(out)  # a few linear probes per encoder: start over (only mnistlab's files go)
    run_code_labels({n: ctx.out / n for n in ctx.encoders()}, exp, counts, out, ctx.progress)


def inputs(ctx: StudyContext) -> dict:
    return {
        "plan": {"labels_per_class": list(ctx.plan.labels_per_class)},
        "device": ctx.device,
        "probe": dataclasses.asdict(ctx.probe_table()),
    }


register(
    Stage(
        name="labels",
        description="every encoder's frozen code at each label count",
        run=run,
        folder=lambda ctx: FOLDER,
        inputs=inputs,
        reads=lambda ctx: tuple(ctx.encoders()),
        include=lambda ctx: bool(ctx.plan.labels_per_class) and len(ctx.encoders()) > 1,
        report=lambda run, name: labels_section(run),
    )
)

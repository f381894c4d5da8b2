"""The probe stage: `mnistlab probe RUN/<autoencoder>` (the frozen code's linear probe, fine-tuning,
label efficiency) into RUN/<autoencoder>/probe/."""

from __future__ import annotations

import dataclasses

from mnistlab.core.errors import ConfigError
from mnistlab.data.datasets import load
from mnistlab.probe.fit import check_labels_per_class, parse_labels_per_class
from mnistlab.probe.run import run_probe
from mnistlab.probe.section import classification_section
from mnistlab.study.context import StudyContext
from mnistlab.study.inputs import plan_fields
from mnistlab.study.registry import Stage, register

FIELDS = ("finetune", "labels_per_class")  # the plan's fields it reads


def run(ctx: StudyContext, resume: bool) -> None:
    labels = ctx.plan.labels_per_class
    counts = parse_labels_per_class(",".join(labels)) if labels else ()
    enc = ctx.out / ctx.encoder
    run_probe(
        enc,
        ctx.preset,
        ctx.overrides.get("probe", []),
        out=enc / "probe",
        finetune=ctx.plan.finetune,
        labels_per_class=counts,
        overwrite=True,
        device=ctx.device,
        progress=ctx.progress,
    )


def inputs(ctx: StudyContext) -> dict:
    return {
        "plan": plan_fields(ctx.plan, FIELDS),
        "device": ctx.device,
        "probe": dataclasses.asdict(ctx.probe_table()),
    }


def check(ctx: StudyContext) -> None:
    """The plan's labelled-subset sizes must fit the autoencoder's training split (checked before the
    first stage: a failure would otherwise come after hours)."""
    labels = ctx.plan.labels_per_class
    if not labels:
        return
    counts = parse_labels_per_class(",".join(labels))
    try:
        check_labels_per_class(load(ctx.experiment(ctx.encoder).data).train.labels, counts)
    except ConfigError as e:
        raise ConfigError(f"run.labels_per_class: {e}") from None


register(
    Stage(
        name="probe",
        description="classifiers on the autoencoder's code: linear probe, fine-tuning, label efficiency",
        run=run,
        folder=lambda ctx: f"{ctx.encoder}/probe",
        inputs=inputs,
        reads=lambda ctx: (ctx.encoder,),
        include=lambda ctx: ctx.autoencoder is not None,
        check=check,
        report=lambda run, name: classification_section(run),
    )
)

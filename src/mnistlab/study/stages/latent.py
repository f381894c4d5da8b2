"""The latent stage: `mnistlab latent RUN/<autoencoder>` (2-D maps of its codes, code samplers and
their scores, interpolations) into RUN/<autoencoder>/latent/."""

from __future__ import annotations

from mnistlab.latent.maps import TSNEConfig
from mnistlab.latent.run import LatentConfig, run_latent
from mnistlab.latent.section import latent_section
from mnistlab.runs import owner
from mnistlab.study.context import StudyContext
from mnistlab.study.inputs import plan_fields
from mnistlab.study.registry import Stage, register
from mnistlab.training.loop import resolve_device

FIELDS = ("latent_samples", "latent_maps", "latent_score", "tsne_iter", "tsne_early_iter")


def run(ctx: StudyContext, resume: bool) -> None:
    plan = ctx.plan
    tsne = TSNEConfig(early_exaggeration_iter=plan.tsne_early_iter, n_iter=plan.tsne_iter)
    cfg = LatentConfig(
        maps=plan.latent_maps, n_samples=plan.latent_samples, score=plan.latent_score, tsne=tsne
    )
    enc = ctx.out / ctx.encoder
    # No checkpoint to resume from: start over, removing only what mnistlab wrote there (the user's files stay).
    owner.clear(enc / "latent")
    run_latent(enc, cfg, resolve_device(ctx.device or "auto"), ctx.progress, out=enc / "latent")


def inputs(ctx: StudyContext) -> dict:
    return {"plan": plan_fields(ctx.plan, FIELDS), "device": ctx.device, "probe": None}


register(
    Stage(
        name="latent",
        description="maps of the autoencoder's codes, code samplers and their scores, interpolations",
        run=run,
        folder=lambda ctx: f"{ctx.encoder}/latent",
        inputs=inputs,
        reads=lambda ctx: (ctx.encoder,),
        include=lambda ctx: ctx.autoencoder is not None,
        report=lambda run, name: latent_section(run),
    )
)

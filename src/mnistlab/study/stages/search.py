"""The search stage: `mnistlab search <autoencoder>` over the plan's grid into RUN/search/, before the
autoencoder stage, which becomes its best trial. Only when the preset's [run] table asks (run.search)."""

from __future__ import annotations

from mnistlab.core.config import to_doc
from mnistlab.search.grid import check_objective, default_workers, run_grid
from mnistlab.search.space import REPORT_GRID, parse_grid
from mnistlab.study.context import StudyContext
from mnistlab.study.inputs import plan_fields
from mnistlab.study.registry import SEARCH, Stage, register

FIELDS = ("search_grid", "search_objective")  # the plan's fields it reads


def run(ctx: StudyContext, resume: bool) -> None:
    plan, task = ctx.plan, ctx.encoder
    grid = parse_grid(list(plan.search_grid)) if plan.search_grid else REPORT_GRID
    workers = plan.search_workers or default_workers()
    run_grid(
        task,
        grid,
        ctx.out / SEARCH,
        ctx.preset,
        ctx.overrides.get(task, []),
        plan.search_objective,
        workers,
        progress=ctx.progress,
    )


def inputs(ctx: StudyContext) -> dict:
    return {"plan": plan_fields(ctx.plan, FIELDS), "config": to_doc(ctx.experiment(ctx.encoder), ctx.encoder)}


register(
    Stage(
        name=SEARCH,
        description="grid search of the autoencoder; its best trial becomes the autoencoder stage",
        run=run,
        folder=lambda ctx: SEARCH,
        inputs=inputs,
        include=lambda ctx: ctx.plan.search and ctx.autoencoder is not None,
        check=lambda ctx: check_objective(ctx.encoder, ctx.plan.search_objective),  # before any stage runs
        exclusive=True,  # its trials run in a worker pool of their own
    )
)

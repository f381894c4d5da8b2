"""`mnistlab run`: the whole study as stages into one run folder, resumable, then the report.

The stages are the registered tasks marked `study` (their order from the registry: ae, dae, vae, gan,
cgan and any plug-in that asks to be one), trained into RUN/<task>/ exactly as `mnistlab train <task>`
would, plus the consumers of the study's encoder stage (the first study task with an encoder and a
decoder, chosen by role):
  search  `mnistlab search <encoder>`          -> RUN/search/   (only when the preset's [run] table asks)
  probe   `mnistlab probe RUN/<encoder>`       -> RUN/<encoder>/probe/
  latent  `mnistlab latent RUN/<encoder>`      -> RUN/<encoder>/latent/
RUN/run.json records the preset, the command and each stage's status (pending / running / done /
failed), start and end times and seconds. Running the same command again skips done stages and
resumes an interrupted training stage from its last epoch checkpoint (probe and latent keep no
checkpoint: they start over). With the plan's `workers` above one the stages run side by side, each
in a process of its own, each started once the stages it reads have finished (stage_pool.py).
Settings come from the preset: the task tables for each stage's training, the [run] table
(run_plan.RunPlan) for what the stages do.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mnistlab import run_inputs, run_state, tasks
from mnistlab.errors import ConfigError
from mnistlab.run_plan import RunPlan
from mnistlab.rundir import command_line
from mnistlab.tasks import load_experiment, load_table

log = logging.getLogger("mnistlab")

# After the autoencoder stages (order < 35), before the GANs:
PROBE_ORDER, LATENT_ORDER, LABELS_ORDER = 35, 36, 37
LABELS_FOLDER = "label_efficiency"  # the labels stage: every encoder's frozen code at each label count


def encoder_task() -> str | None:
    """The study's encoder stage: the first study task whose runs encode and decode."""
    return next((s.name for s in tasks.all_tasks() if s.study and {"encoder", "decoder"} <= s.roles), None)


def study_encoders(plan: RunPlan) -> list[str]:
    """The study's trained tasks whose runs encode (each gets a curve in the labels stage)."""
    return [n for n in study_tasks(plan) if "encoder" in tasks.get(n).roles]


def study_tasks(plan: RunPlan) -> list[str]:
    """The tasks trained by `mnistlab run` under `plan`, in stage order."""
    known = [s.name for s in tasks.all_tasks() if s.study]
    for name in plan.tasks:
        tasks.get(name)  # an unknown name is a one-line error listing the known tasks
    return [n for n in known if not plan.tasks or n in plan.tasks]


@dataclass(frozen=True)
class RunContext:
    """What every stage gets: the run folder, the preset, per-task `--set` overrides and the plan."""

    out: Path
    preset: str
    plan: RunPlan
    overrides: dict[str, list[str]] = field(default_factory=dict)  # task -> ["section.key=value", ...]
    device: str | None = None
    progress: bool = True

    def experiment(self, task: str) -> Any:
        return load_experiment(task, self.preset, self.overrides.get(task, []))

    @property
    def encoder(self) -> str:
        name = encoder_task()
        if name is None:
            raise ConfigError("no registered study task has an encoder and a decoder to probe and map")
        return name


def split_overrides(
    items: list[str], data_dir: str | None = None, device: str | None = None, source: str = "--set"
) -> dict:
    """["ae.train.epochs=1", "data.train_limit=500", "run.search=false"] -> per-task override lists.
    A `data.` item (and --data-dir) applies to every trained task and the plan; --device to the
    trained tasks (probe and latent take it as an argument). `source` names the items in errors."""
    trained = [s.name for s in tasks.all_tasks()]
    per: dict[str, list[str]] = {t: [] for t in (*trained, "probe", "run")}
    shared = [f"data.data_dir={data_dir}"] if data_dir else []
    for item in items:
        head, dot, rest = item.partition(".")
        if head == "data":
            shared.append(item)
        elif dot and head in per:
            per[head].append(rest)
        else:
            known = ", ".join(sorted(per))
            raise ConfigError(
                f"{source} {item!r}: start with a stage table ({known}) or data., e.g. ae.train.epochs=2"
            )
    for task in (*trained, "run"):
        per[task] = shared + per[task]
    if device:
        for task in trained:
            per[task].append(f"train.device={device}")
    return {k: v for k, v in per.items() if v}


# ------------------------------------------------------------------------------------------ stages


def stage_search(ctx: RunContext, resume: bool) -> None:
    from mnistlab.search import default_workers, run_grid
    from mnistlab.search_space import REPORT_GRID, parse_grid

    plan, task = ctx.plan, ctx.encoder
    grid = parse_grid(list(plan.search_grid)) if plan.search_grid else REPORT_GRID
    workers = plan.search_workers or default_workers()
    run_grid(task, grid, ctx.out / "search", ctx.preset, ctx.overrides.get(task, []), plan.search_objective,
             workers, progress=ctx.progress)  # fmt: skip


def best_trial(search_dir: Path) -> Path:
    """The folder of the best trial of a finished search (rank 1 of results.csv, with a value)."""
    path = search_dir / "results.csv"
    if not path.is_file():
        raise ConfigError(f"{search_dir} has no results.csv; the search stage has not finished")
    objective = json.loads((search_dir / "search.json").read_text())["objective"]
    with path.open() as f:
        rows = list(csv.DictReader(f))  # sorted best first
    ranked = [r for r in rows if r.get("status") in ("finished", "complete") and r.get(objective)]
    if not ranked:
        raise ConfigError(f"{search_dir}: no trial finished with a {objective}; see results.md")
    return search_dir / "trials" / ranked[0]["trial"]


def _copy_best_trial(ctx: RunContext, target: Path) -> None:
    """The encoder stage after a search: its best trial, trained with the preset's settings plus its
    grid point, copied into place (through a temporary folder, so a crash leaves no half copy)."""
    from mnistlab import rundir

    source = best_trial(ctx.out / "search")
    tmp = ctx.out / f".{target.name}.copying"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    summary = rundir.read_summary(tmp)
    rundir.write_summary(tmp, {**summary, "search_trial": source.name})
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    log.info("%s: the search's best trial %s", target.name, source.name)


def stage_task(ctx: RunContext, name: str, resume: bool) -> None:
    """Train task `name` into RUN/<name>, as `mnistlab train <name>` would (with its study options)."""
    target = ctx.out / name
    if ctx.plan.search and name == ctx.encoder:
        return _copy_best_trial(ctx, target)
    options = run_inputs.task_options(ctx, name)
    tasks.get(name).train(ctx.experiment(name), target, resume=resume, progress=ctx.progress, **options)


def stage_probe(ctx: RunContext, resume: bool) -> None:
    from mnistlab.training.probe import parse_labels_per_class
    from mnistlab.training.probe_run import run_probe

    labels = ctx.plan.labels_per_class
    counts = parse_labels_per_class(",".join(labels)) if labels else ()
    enc = ctx.out / ctx.encoder
    run_probe(enc, ctx.preset, ctx.overrides.get("probe", []), out=enc / "probe", finetune=ctx.plan.finetune,
              labels_per_class=counts, overwrite=True, device=ctx.device, progress=ctx.progress)  # fmt: skip


def stage_latent(ctx: RunContext, resume: bool) -> None:
    from mnistlab.explore import LatentConfig, run_latent
    from mnistlab.latent import TSNEConfig
    from mnistlab.training.loop import resolve_device

    plan = ctx.plan
    tsne = TSNEConfig(early_exaggeration_iter=plan.tsne_early_iter, n_iter=plan.tsne_iter)
    cfg = LatentConfig(
        maps=plan.latent_maps, n_samples=plan.latent_samples, score=plan.latent_score, tsne=tsne
    )
    enc = ctx.out / ctx.encoder
    shutil.rmtree(enc / "latent", ignore_errors=True)  # no checkpoint to resume from: start over
    run_latent(enc, cfg, resolve_device(ctx.device or "auto"), ctx.progress, out=enc / "latent")


def stage_labels(ctx: RunContext, resume: bool) -> None:
    from mnistlab.training.code_labels import run_code_labels
    from mnistlab.training.probe import parse_labels_per_class

    counts = parse_labels_per_class(",".join(ctx.plan.labels_per_class))
    exp = tasks.load_table("probe", ctx.preset, ctx.overrides.get("probe", []))
    if ctx.device:
        exp = dataclasses.replace(exp, linear=dataclasses.replace(exp.linear, device=ctx.device))
    out = ctx.out / LABELS_FOLDER
    shutil.rmtree(out, ignore_errors=True)  # a few linear probes per encoder: start over
    run_code_labels({n: ctx.out / n for n in study_encoders(ctx.plan)}, exp, counts, out, ctx.progress)


# Stages that train no task: name -> function(ctx, resume); looked up at call time (tests swap them).
STAGES: dict[str, Callable[[RunContext, bool], None]] = {
    "search": stage_search,
    "probe": stage_probe,
    "latent": stage_latent,
    "labels": stage_labels,
}


def stage_list(plan: RunPlan) -> list[tuple[str, str]]:
    """(name, folder inside RUN) of every stage of `plan`, in order."""
    enc = encoder_task()
    order = {s.name: s.order for s in tasks.all_tasks()}
    trained = study_tasks(plan)
    stages = [(order[n], n, n) for n in trained]
    if enc in trained:
        stages += [(PROBE_ORDER, "probe", f"{enc}/probe"), (LATENT_ORDER, "latent", f"{enc}/latent")]
    if plan.labels_per_class and len(study_encoders(plan)) > 1:  # one encoder: the probe stage has its curve
        stages.append((LABELS_ORDER, "labels", LABELS_FOLDER))
    stages.sort(key=lambda s: s[0])
    head = [("search", "search")] if plan.search and enc in trained else []
    return head + [(name, folder) for _, name, folder in stages]


def check_stage_names(names: tuple[str, ...], what: str) -> None:
    """A one-line error for a name that is no stage of any study (a registered task or a command stage)."""
    known = [*STAGES, *(s.name for s in tasks.all_tasks() if s.study)]
    for name in names:
        if name not in known:
            raise ConfigError(f"{what}: unknown stage {name!r}; stages: {', '.join(known)}")


def run_stage(ctx: RunContext, name: str, resume: bool) -> None:
    """Run one stage: a command stage from STAGES, else the registered task of that name."""
    if name in STAGES:
        STAGES[name](ctx, resume)
    else:
        stage_task(ctx, name, resume)


# --------------------------------------------------------------------------------------------- run


def run_study(
    out: Path,
    preset: str = "quick",
    overrides: list[str] | None = None,
    data_dir: str | None = None,
    device: str | None = None,
    progress: bool = True,
    report: bool = True,
) -> dict[str, Any]:
    """Run (or resume) every stage of the study into `out`, then write the report. Returns run.json."""
    out = Path(out)
    overrides = list(overrides or [])
    plan = load_table("run", preset, split_overrides(overrides, data_dir, device).get("run", []))
    # The plan's own stage settings first, so that the command's --set items override them.
    split_overrides(list(plan.set), source="run.set item")  # a bad item named as the preset's, not --set
    per_task = split_overrides([*plan.set, *overrides], data_dir, device)
    ctx = RunContext(out, preset, plan, per_task, device, progress)
    for task in study_tasks(plan):  # check every stage's config before any training
        load_experiment(task, preset, per_task.get(task, []))
    load_table("probe", preset, per_task.get("probe", []))
    check_stage_names(plan.start_first, "run.start_first")
    enc = encoder_task()
    run_inputs.check_plan(ctx, enc, study_tasks(plan))
    stages = stage_list(plan)
    prints = run_inputs.fingerprints(ctx, stages, enc)
    settings = {"preset": preset, "overrides": overrides, "data_dir": data_dir, "device": device,
                "command": command_line()}  # fmt: skip
    state = run_state.open_state(out, plan, stages, settings, prints)
    state["command"] = settings["command"]
    state["status"] = "running"
    run_state.save(out, state)
    n = len(state["stages"])
    bar = tqdm(total=n, desc="mnistlab run", unit="stage", disable=not progress, position=0)
    try:
        for k, entry in enumerate(state["stages"], 1):
            if entry["status"] == "done":
                _say(bar, progress, f"stage {k}/{n}: {entry['name']} (done, skipped)")
                bar.update(1)
        todo = [e for e in state["stages"] if e["status"] != "done"]
        _run_stages(ctx, state, todo, prints, enc, bar)
    except BaseException as e:
        state["status"] = "failed"
        run_state.save(out, state)
        if report and isinstance(e, Exception):
            _report_anyway(out)
        raise
    finally:
        bar.close()
    state["status"] = "done"
    run_state.save(out, state)
    if report:
        from mnistlab.report.build import write_report

        write_report(out)
    return state


def _run_stages(
    ctx: RunContext,
    state: dict[str, Any],
    todo: list[dict[str, Any]],
    prints: dict[str, str],
    enc: str | None,
    bar,
) -> None:
    """Run the stages of `todo` (run.json entries, in stage order): one after another in this process,
    or side by side in worker processes when the plan asks for more than one (stage_pool.py). run.json
    records each start and end as it happens; the first failure is raised once nothing runs."""
    from mnistlab import stage_pool

    out, n = ctx.out, len(state["stages"])
    number = {e["name"]: k for k, e in enumerate(state["stages"], 1)}
    entries = {e["name"]: e for e in todo}
    resume = {e["name"]: (out / e["folder"] / "config.toml").exists() for e in todo}
    clocks: dict[str, float] = {}
    workers = stage_pool.workers_for(ctx.plan.workers, len(todo))

    def start(name: str, running: int) -> None:
        entry = entries[name]
        label = f"stage {number[name]}/{n}: {name}" + (
            " (resuming)" if resume[name] and entry["attempts"] else ""
        )
        _say(bar, ctx.progress, label + (f" ({running} running)" if workers > 1 else ""))
        bar.set_description(f"stage {number[name]}/{n}: {name}")
        entry.update(
            status="running", started=run_state.now(), ended=None, error=None, attempts=entry["attempts"] + 1
        )
        run_state.save(out, state)
        clocks[name] = time.perf_counter()

    def end(name: str, outcome: stage_pool.Outcome) -> None:
        error, wall = outcome.error, time.perf_counter() - clocks[name]
        message = None if error is None else _error_line(error)
        run_state.finish(entries[name], "failed" if error else "done", wall, outcome.cpu_seconds,
                         outcome.peak_rss_mb, message)  # fmt: skip
        if workers > 1:
            _say(bar, ctx.progress, f"stage {number[name]}/{n}: {name} {message or 'done'} ({wall:.0f} s)")
        if error is None:
            entries[name]["inputs"] = prints[name]
            bar.update(1)
        run_state.save(out, state)

    if workers == 1:
        for entry in todo:
            name = entry["name"]
            start(name, 1)
            cpu0 = time.process_time()
            try:
                run_stage(ctx, name, resume[name])
            except BaseException as e:
                end(name, stage_pool.Outcome(time.process_time() - cpu0, run_state.peak_rss_mb(), e))
                raise
            end(name, stage_pool.Outcome(time.process_time() - cpu0, run_state.peak_rss_mb()))
        return
    # Worker processes: no progress bars inside (they would interleave); the stages log instead.
    quiet = dataclasses.replace(ctx, progress=False)
    names = stage_pool.start_order([e["name"] for e in todo], ctx.plan.start_first)
    reads = run_inputs.stage_reads(ctx, names, enc)
    error = stage_pool.run_graph(names, reads, workers, lambda name: (run_stage, (quiet, name, resume[name])),
                                 start, end, exclusive=frozenset({"search"}))  # fmt: skip
    if error is not None:
        raise error


def _error_line(error: BaseException) -> str:
    """A stage's error as run.json records it: one line."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return f"{type(error).__name__}: {error}".splitlines()[0]


def _report_anyway(out: Path) -> None:
    """The report of what has run so far, after a stage failed (its own failure only logged)."""
    from mnistlab.report.build import write_report

    try:
        write_report(out)
    except Exception as e:  # the stage's error is the one to raise
        log.warning("could not write the report of %s: %s", out, e)


def _say(bar, progress: bool, text: str) -> None:
    if progress:
        bar.write(text, file=sys.stderr)
    else:
        log.info(text)

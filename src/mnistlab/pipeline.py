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
checkpoint: they start over). Settings come from the preset: the task tables for each stage's
training, the [run] table (run_plan.RunPlan) for what the stages do.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import resource
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mnistlab import run_inputs, tasks
from mnistlab.errors import ConfigError
from mnistlab.fsio import write_json
from mnistlab.run_plan import RunPlan
from mnistlab.rundir import RUN_FILE, command_line, read_run
from mnistlab.tasks import load_experiment, load_table

log = logging.getLogger("mnistlab")

COMMAND_STAGES = ("search", "probe", "latent", "labels")  # stages that train no task of their own
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


def split_overrides(items: list[str], data_dir: str | None = None, device: str | None = None) -> dict:
    """["ae.train.epochs=1", "data.train_limit=500", "run.search=false"] -> per-task override lists.
    A `data.` item (and --data-dir) applies to every trained task and the plan; --device to the
    trained tasks (probe and latent take it as an argument)."""
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
                f"--set {item!r}: start with a stage table ({known}) or data., e.g. ae.train.epochs=2"
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
    spec = tasks.get(name)
    options = spec.stage_options(ctx.out) if spec.stage_options else {}
    spec.train(ctx.experiment(name), target, resume=resume, progress=ctx.progress, **options)


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


def run_stage(ctx: RunContext, name: str, resume: bool) -> None:
    """Run one stage: a command stage from STAGES, else the registered task of that name."""
    if name in STAGES:
        STAGES[name](ctx, resume)
    else:
        stage_task(ctx, name, resume)


# ---------------------------------------------------------------------------------------- run.json


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux: the high-water mark of this process and of finished child processes
    # (search workers), whichever is larger.
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)


def _entry(name: str, folder: str) -> dict[str, Any]:
    return {"name": name, "folder": folder, "status": "pending", "started": None, "ended": None,
            "seconds": None, "attempts": 0, "error": None}  # fmt: skip


def _open_state(ctx: RunContext, settings: dict[str, Any], prints: dict[str, str]) -> dict[str, Any]:
    """run.json of `ctx.out`: new, or the existing one with the stages whose inputs changed since they
    ran reset to pending (their folders removed) and stages the plan added appended."""
    out, stages = ctx.out, stage_list(ctx.plan)
    if not (out / RUN_FILE).exists():
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ConfigError(f"{out} exists and is not a run folder of `mnistlab run`; choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        return {"kind": "mnistlab-run", "version": 1, **settings, "status": "pending", "created": _now(),
                "updated": _now(), "plan": dataclasses.asdict(ctx.plan),
                "stages": [_entry(n, f) for n, f in stages]}  # fmt: skip
    state = read_run(out)
    same = all(state.get(k) == settings[k] for k in ("preset", "overrides", "data_dir", "device"))
    old = {e["name"]: e for e in state["stages"]}
    entries = [old.get(n) or _entry(n, f) for n, f in stages]
    rerun = run_inputs.stages_to_rerun(entries, prints, same)
    for entry in entries:
        if entry["name"] in rerun:
            shutil.rmtree(out / entry["folder"], ignore_errors=True)  # trained with other inputs
            entry.update(_entry(entry["name"], entry["folder"]))
    kept = [e["name"] for e in entries if e["status"] == "done"]
    if rerun:
        log.warning("%s: the inputs of %s changed since they ran: rerunning them; keeping %s", out,
                    ", ".join(rerun), ", ".join(kept) or "nothing")  # fmt: skip
    state.update(settings, plan=dataclasses.asdict(ctx.plan), stages=entries)
    return state


def _save(out: Path, state: dict[str, Any]) -> None:
    state["updated"] = _now()
    write_json(out / RUN_FILE, state)


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
    per_task = split_overrides([*plan.set, *overrides], data_dir, device)
    ctx = RunContext(out, preset, plan, per_task, device, progress)
    for task in study_tasks(plan):  # check every stage's config before any training
        load_experiment(task, preset, per_task.get(task, []))
    load_table("probe", preset, per_task.get("probe", []))
    enc = encoder_task()
    run_inputs.check_plan(ctx, enc, study_tasks(plan))
    prints = run_inputs.fingerprints(ctx, stage_list(plan), enc)
    settings = {"preset": preset, "overrides": overrides, "data_dir": data_dir, "device": device,
                "command": command_line()}  # fmt: skip
    state = _open_state(ctx, settings, prints)
    state["command"] = settings["command"]
    state["status"] = "running"
    _save(out, state)
    n = len(state["stages"])
    bar = tqdm(total=n, desc="mnistlab run", unit="stage", disable=not progress, position=0)
    try:
        for k, entry in enumerate(state["stages"], 1):
            label = f"stage {k}/{n}: {entry['name']}"
            bar.set_description(label)
            if entry["status"] == "done":
                _say(bar, progress, f"{label} (done, skipped)")
                bar.update(1)
                continue
            folder = entry["folder"]
            resume = (out / folder / "config.toml").exists()
            _say(bar, progress, label + (" (resuming)" if resume and entry["attempts"] else ""))
            entry.update(
                status="running", started=_now(), ended=None, error=None, attempts=entry["attempts"] + 1
            )
            _save(out, state)
            t0 = (time.perf_counter(), time.process_time())
            try:
                run_stage(ctx, entry["name"], resume)
            except BaseException as e:
                message = "interrupted" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"
                _finish(entry, "failed", t0, message.splitlines()[0] if message else type(e).__name__)
                state["status"] = "failed"
                _save(out, state)
                if report and isinstance(e, Exception):
                    _report_anyway(out)
                raise
            _finish(entry, "done", t0)
            entry["inputs"] = prints[entry["name"]]
            _save(out, state)
            bar.update(1)
    finally:
        bar.close()
    state["status"] = "done"
    _save(out, state)
    if report:
        from mnistlab.report.build import write_report

        write_report(out)
    return state


def _report_anyway(out: Path) -> None:
    """The report of what has run so far, after a stage failed (its own failure only logged)."""
    from mnistlab.report.build import write_report

    try:
        write_report(out)
    except Exception as e:  # the stage's error is the one to raise
        log.warning("could not write the report of %s: %s", out, e)


def _finish(entry: dict[str, Any], status: str, t0: tuple[float, float], error: str | None = None) -> None:
    """Close a stage's entry: wall and CPU seconds (this process, all threads) summed over attempts."""
    wall, cpu = time.perf_counter() - t0[0], time.process_time() - t0[1]
    entry.update(status=status, ended=_now(), error=error, peak_rss_mb=_peak_rss_mb())
    entry["seconds"] = round((entry.get("seconds") or 0.0) + wall, 2)
    entry["cpu_seconds"] = round((entry.get("cpu_seconds") or 0.0) + cpu, 2)


def _say(bar, progress: bool, text: str) -> None:
    if progress:
        bar.write(text, file=sys.stderr)
    else:
        log.info(text)

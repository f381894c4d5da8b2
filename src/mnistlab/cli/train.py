"""`mnistlab train`, `eval` and `search`: the commands that train or re-evaluate runs of any task.

Their help lists the tasks from the light catalogue (cli.task_help), so that `--help` imports no
torch; a task's name is checked when the command runs, by the registry (`tasks.get`: one line with a
guess), which knows the plug-ins too.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import re
from pathlib import Path

from mnistlab.cli import task_help
from mnistlab.cli.common import (
    add_config_args,
    add_device,
    add_json,
    experiment_overrides,
    scores,
    shell_path,
)
from mnistlab.core.errors import ConfigError

log = logging.getLogger("mnistlab")


def objective(text: str) -> str:
    """--objective, checked by argparse before any work: probe_acc or a val_* metric name."""
    if text == "probe_acc" or re.fullmatch(r"val_[a-z0-9_]+", text):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: use val_loss (or another val_* metric) or probe_acc")


def _with_option(option: str) -> str:
    """The registered tasks (plug-ins included) that take `option`, for a message at run time."""
    from mnistlab import tasks

    return ", ".join(s.name for s in tasks.all_tasks() if option in s.options) or "none"


def _evaluates_beside_baseline() -> str:
    """The registered tasks whose `evaluate` takes a baseline to compare with (a task may take
    --baseline in training only, to start from it), for a message at run time."""
    from mnistlab import tasks

    names = [
        s.name
        for s in tasks.all_tasks()
        if s.evaluate and "baseline" in inspect.signature(s.evaluate).parameters
    ]
    return ", ".join(names) or "none"


def add_parsers(sub) -> None:
    train = sub.add_parser(
        "train",
        help="train a model into a run folder",
        description="Train a model; the run folder gets config, metrics, checkpoints, figures, "
        f"summary. Tasks: {task_help.task_list()}.",
    )
    train.add_argument("task", metavar="TASK", help="what to train (see the task list above)")
    add_config_args(train)
    train.add_argument("--out", type=Path, help="run folder [runs/<task>-<preset>]")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    train.add_argument(
        "--force", action="store_true", help="replace the run in --out (only the files mnistlab wrote there)"
    )
    train.add_argument(
        "--baseline",
        type=Path,
        metavar="AE_RUN",
        help=f"tasks {task_help.with_option('baseline')}: a plain autoencoder run (the DAE compares with it on "
        "the same noisy test images; with --set init.from_baseline=true a DAE or VAE starts from "
        "its weights)",
    )
    train.add_argument(
        "--gan-run",
        type=Path,
        metavar="GAN_RUN",
        help=f"tasks {task_help.with_option('gan_run')}: a run of `mnistlab train gan` to start from, with "
        "--set init.from_gan=true (its networks, the digit's weights added at 0)",
    )
    add_json(train, "the run folder and its test metrics")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser(
        "eval",
        help="evaluate a trained run on the test set",
        description="Recompute test metrics and figures of a run folder from its checkpoint.",
    )
    ev.add_argument("run_dir", type=Path, help="a run folder written by `mnistlab train`")
    add_device(ev)
    ev.add_argument(
        "--baseline",
        type=Path,
        metavar="AE_RUN",
        help=f"tasks {task_help.evaluating_beside_baseline()}: a plain autoencoder run fed the same noisy test images",
    )
    ev.add_argument(
        "--sigmas",
        metavar="S1,S2,...",
        help=f"tasks {task_help.evaluating_beside_baseline()}: test noise levels [the run's noise.eval_sigmas]",
    )
    ev.set_defaults(func=cmd_eval)
    _add_search_parser(sub)


def _add_search_parser(sub) -> None:
    s = sub.add_parser(
        "search",
        help="grid or Optuna search over any config fields",
        description="Train one run folder per trial and write results.csv/.md, val_curves.png and "
        "best.toml (a preset). Without --grid and --optuna it runs the report's grid: "
        "train.lr=1e-3,2e-2 x train.weight_decay=1e-4,5e-3 x model.latent_dim=2,10,100. "
        "Re-running the same search skips finished trials and resumes interrupted ones.",
    )
    s.add_argument("task", metavar="TASK", help=f"what to train in each trial: {task_help.names()}")
    add_config_args(s)
    s.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="a config field and its values, e.g. --grid train.lr=1e-3,2e-2 (repeatable)",
    )
    s.add_argument(
        "--objective",
        default="val_loss",
        metavar="OBJECTIVE",
        type=objective,
        help="val_loss: best validation loss (minimised; any val_* metric the task logs works, e.g. "
        "val_recon_nll for a VAE, and accuracies such as val_accuracy are maximised); probe_acc: "
        "logistic regression on the frozen codes, fit on train, "
        "scored on validation (maximised; tasks with an encoder)",
    )
    s.add_argument("--out", type=Path, help="search folder [runs/search-<task>-<preset>]")
    s.add_argument(
        "--workers",
        type=int,
        help="local worker processes, one torch thread each unless train.threads is set "
        "[one per core, at most 4: measured faster than one worker with all the threads]",
    )
    o = s.add_argument_group("Optuna")
    o.add_argument("--optuna", action="store_true", help="TPE sampling with median pruning instead of a grid")
    o.add_argument("--trials", type=int, help="trials the study should hold in all [20]")
    o.add_argument("--space", type=Path, help="search space TOML [configs/spaces/<task>.toml]")
    o.add_argument(
        "--storage",
        help="any SQLAlchemy RDB URL, e.g. postgresql+psycopg2://user@host/db "
        "[sqlite file study.db in the search folder]",
    )
    o.add_argument("--study-name", help="study name inside the storage [<task>-search]")
    o.add_argument(
        "--seed",
        type=int,
        help="sampler seed for a repeatable study; local worker k uses seed+k. "
        "Leave it out when several machines share a study [fresh per process]",
    )
    o.add_argument("--no-prune", action="store_true", help="never stop a trial early")
    o.add_argument(
        "--heartbeat",
        type=int,
        default=None,
        help="seconds between worker heartbeats; a trial "
        "silent for twice this is failed and retried [the StudySpec default]",
    )
    s.set_defaults(func=cmd_search)


def cmd_train(args: argparse.Namespace) -> int:
    from mnistlab import tasks
    from mnistlab.core import distributed
    from mnistlab.runs import folder as rundir
    from mnistlab.runs import owner
    from mnistlab.training import run_folder

    spec = tasks.get(args.task)
    options = {}
    if args.baseline is not None:
        if "baseline" not in spec.options:
            raise ConfigError(f"--baseline is for tasks {_with_option('baseline')}, not {spec.name}")
        options["baseline"] = args.baseline
    if args.gan_run is not None:
        if "gan_run" not in spec.options:
            raise ConfigError(f"--gan-run is for tasks {_with_option('gan_run')}, not {spec.name}")
        options["gan_run"] = args.gan_run
    exp = tasks.load_experiment(spec.name, args.preset, experiment_overrides(args))
    out = args.out or Path("runs") / f"{spec.name}-{Path(args.preset).stem}"
    # Under torchrun (WORLD_SIZE > 1): join the process group; rank 0 writes the run folder and prints.
    world = distributed.init(exp.train.device)
    if world.enabled:
        distributed.check_batch(exp.train.batch_size, world)  # before rank 0 creates the run folder
    if world.is_main:  # rank 0 writes the run folder: it claims it (and holds it while training)
        if args.resume and args.force:
            raise ConfigError("--resume continues the run in --out and --force replaces it: pass one")
        if args.resume:
            run_folder.check_resumable(out)
        owner.claim(out, "train", force=args.force)
        # The loop's start line follows once the data is in memory: epochs, images, steps, device, folder.
        resuming = ", resuming" if args.resume else ""
        log.info("mnistlab train %s, preset %s%s: loading the data", spec.name, args.preset, resuming)
    try:
        summary = spec.train(exp, out, resume=args.resume, progress=not args.no_progress, **options)
    except KeyboardInterrupt as e:
        if world.is_main and not rundir.checkpoint_path(out).is_file():
            _nothing_saved(e, out)
        raise
    distributed.shutdown()  # only after success: a failed rank exits and torchrun stops the others
    if world.is_main:
        if args.json:
            print(json.dumps({"run": str(out), "test": summary.get("test")}, indent=2))
        else:
            print(_finished_lines(spec, out, summary))
    return 0


def _nothing_saved(error: KeyboardInterrupt, out: Path) -> None:
    """Training stopped before its first epoch ended: no checkpoint, so --resume has nothing to resume
    from; the message says so and names the command that starts over (error.saved, error.next_step,
    read by the CLI's interrupt line)."""
    error.saved = "no epoch had finished, so nothing was saved"
    started = (out / "config.toml").exists()  # the folder holds a run's files: a plain rerun is refused
    error.next_step = "rerun with --force to start over" if started else "rerun the same command to start"


def _finished_lines(spec, out: Path, summary: dict) -> str:
    """What a finished `mnistlab train` prints: the folder, the test numbers, the next commands."""
    test = summary.get("test")
    numbers = scores(test) if isinstance(test, dict) else ""
    lines = [f"{spec.name} trained into {out}" + (f"; test: {numbers}" if numbers else "")]
    folder = shell_path(out)
    steps = []
    if spec.evaluate is not None:
        steps.append(f"`mnistlab eval {folder}` (test metrics and figures again)")
    if "generator" in spec.roles or {"encoder", "decoder"} <= spec.roles:
        steps.append(f"`mnistlab serve {folder}` (the explorer in a browser)")
    if steps:
        lines.append("next: " + ", or ".join(steps))
    lines.append(f"all of it: {out}/summary.json, figures in {out}/figures, curves in {out}/metrics.jsonl")
    return "\n".join(lines)


def cmd_eval(args: argparse.Namespace) -> int:
    from mnistlab import tasks
    from mnistlab.runs import owner
    from mnistlab.training.loop import resolve_device

    task, exp = tasks.load_run_config(args.run_dir)
    spec = tasks.get(task)
    if spec.evaluate is None:
        raise ConfigError(f"{args.run_dir} holds a {task} run, which `mnistlab eval` cannot evaluate")
    options = {}
    if args.baseline is not None or args.sigmas:
        if "baseline" not in inspect.signature(spec.evaluate).parameters:
            raise ConfigError(
                f"{args.run_dir} holds a {task!r} run; --baseline and --sigmas apply to "
                f"runs of {_evaluates_beside_baseline()}"
            )
        from mnistlab.data.noise import parse_sigmas

        options = {"baseline": args.baseline, "sigmas": parse_sigmas(args.sigmas) if args.sigmas else None}
    owner.claim(args.run_dir, "train")  # eval rewrites the run's summary and figures
    result = spec.evaluate(args.run_dir, exp, resolve_device(args.device), **options)
    shown = {k: result[k] for k in ("test", "denoising") if k in result}
    print(json.dumps({"run": str(args.run_dir), **shown}, indent=2))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from mnistlab import tasks
    from mnistlab.search.grid import default_workers, run_grid
    from mnistlab.search.space import REPORT_GRID, default_space_path, load_space, parse_grid

    tasks.get(args.task)  # an unknown task: one line with a guess, before anything is read or written
    exp_overrides = experiment_overrides(args)
    workers = default_workers() if args.workers is None else args.workers
    kind = "optuna" if args.optuna else "search"
    out = args.out or Path("runs") / f"{kind}-{args.task}-{Path(args.preset).stem}"
    if args.optuna:
        from mnistlab.search.optuna import StudySpec, run_optuna

        if args.grid:
            raise ConfigError("--grid and --optuna exclude each other; declare Optuna ranges in --space")
        space = load_space(args.space or default_space_path(args.task))
        n_trials = 20 if args.trials is None else args.trials
        extra = {} if args.heartbeat is None else {"heartbeat_s": args.heartbeat}
        spec = StudySpec(
            task=args.task,
            out=out,
            space=tuple(space),
            n_trials=n_trials,
            preset=args.preset,
            overrides=tuple(exp_overrides),
            objective=args.objective,
            storage=args.storage or "",
            study_name=args.study_name or "",
            seed=args.seed,
            prune=not args.no_prune,
            progress=not args.no_progress,
            **extra,
        )
        rows = run_optuna(spec, workers)
    else:
        if args.space or args.storage or args.study_name or args.trials is not None:
            raise ConfigError("--trials, --space, --storage and --study-name need --optuna")
        grid = parse_grid(args.grid) if args.grid else REPORT_GRID
        rows = run_grid(
            args.task,
            grid,
            out,
            args.preset,
            exp_overrides,
            args.objective,
            workers,
            progress=not args.no_progress,
        )
    print((out / "results.md").read_text(), end="")
    best = rows[0] if rows and rows[0].get(args.objective) is not None else None
    print(
        json.dumps(
            {"search": str(out), "best": best and best["trial"], "preset": best and str(out / "best.toml")}
        )
    )
    return 0

"""`mnistlab run` (the whole study into one folder, resumable) and `mnistlab report`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mnistlab.cli.common import add_json, shell_path


def add_parsers(sub) -> None:
    r = sub.add_parser(
        "run",
        help="the whole study: AE (+ search), DAE, VAE, probes, latent, GAN, cGAN, report",
        description="Run every stage into one run folder (search/, ae/, ae/probe/, ae/latent/, "
        "dae/, vae/, label_efficiency/, gan/, cgan/, run.json) and write report.html and report.md. "
        "The same command again "
        "skips finished stages and resumes an interrupted one from its checkpoint.",
    )
    r.add_argument(
        "--preset",
        default="quick",
        help="quick, seed, default or a .toml preset [quick: the study "
        "trains every model, so the long default study is asked for by name]",
    )
    r.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="STAGE.KEY=VALUE",
        help="override a stage's setting, e.g. --set ae.train.epochs=2, --set gan.gan.final_samples=500, "
        "--set run.search=false, --set data.train_limit=5000 (every stage) (repeatable)",
    )
    r.add_argument("--data-dir", help="folder with the four IDX files (gzip or raw) to use instead of MNIST")
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to train [config: auto]")
    r.add_argument("--out", type=Path, help="run folder [runs/run-<preset>]")
    r.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="stages at once, each in a process of its own "
        "with the cores shared out, each started when what it reads is done; 0 = one per core, "
        "1 = one after another in this process [preset's run.workers: 0]",
    )
    r.add_argument("--no-report", action="store_true", help="skip writing report.html / report.md")
    r.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (none is drawn off a terminal anyway: a log gets one line per stage)",
    )
    add_json(r, "the run folder, its status, each stage's seconds and the report's path")
    rep = sub.add_parser(
        "report",
        help="write report.html and report.md of a `mnistlab run` folder",
        description="Rebuild the self-contained HTML report (figures embedded) and the Markdown "
        "report from a run folder's JSON and PNG files, without training.",
    )
    rep.add_argument("run_dir", type=Path, help="a run folder written by `mnistlab run`")
    r.set_defaults(func=cmd_run)
    rep.set_defaults(func=cmd_report)


def cmd_run(args: argparse.Namespace) -> int:
    from mnistlab.report.build import write_report
    from mnistlab.study.run import run_study

    out = args.out or Path("runs") / f"run-{Path(args.preset).stem}"
    overrides = args.overrides + ([f"run.workers={args.workers}"] if args.workers is not None else [])
    state = run_study(
        out,
        args.preset,
        overrides,
        args.data_dir,
        args.device,
        progress=not args.no_progress,
        report=None if args.no_report else write_report,
    )
    stages = {s["name"]: s["seconds"] for s in state["stages"]}
    report = str(out / "report.html") if not args.no_report else None
    if args.json:
        print(
            json.dumps(
                {"run": str(out), "status": state["status"], "seconds": stages, "report": report}, indent=2
            )
        )
    elif report is not None:
        print(f"open {report}, or `mnistlab serve {shell_path(out)}`")
    else:
        print(f"study done in {out}; `mnistlab report {shell_path(out)}` writes its report")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from mnistlab.report.build import write_report
    from mnistlab.runs import owner
    from mnistlab.runs.folder import read_run

    read_run(args.run_dir)  # a study folder (one line if not), then claimed: no study writes it meanwhile
    owner.claim(args.run_dir, "run")
    paths = write_report(args.run_dir)
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return 0

"""`mnistlab pretrained list|path|pack|make`: the trained runs shipped inside the package."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mnistlab.cli.common import add_device, add_progress

HEADLINE = ("mse", "psnr", "ssim", "kl", "fid_mnist", "precision", "recall", "accuracy")  # what `list` shows


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "pretrained",
        help="trained runs shipped with mnistlab (list, path, pack, make)",
        description="Runs trained with each task's default preset ship inside the package. "
        "`path NAME` prints a writable copy of one (in $MNISTLAB_HOME or ~/.cache/mnistlab) that "
        "every command takes: sample, score, probe, latent, eval, serve, compare.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = actions.add_parser("list", help="the shipped runs with their test numbers and origin")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=cmd_list, light=True)  # reads the bundle's files, writes nothing: no torch
    pa = actions.add_parser("path", help="print the folder of a writable copy of a shipped run")
    pa.add_argument("name", help="a shipped run's name (see `mnistlab pretrained list`)")
    pa.set_defaults(func=cmd_path)
    pk = actions.add_parser(
        "pack",
        help="pack finished runs into a bundle (the package's, by default)",
        description="Copy finished run folders (or the task stages of `mnistlab run` study "
        "folders) into a bundle with weights-only checkpoints, re-evaluate them, build the "
        "explorer's start-up cache and the `mnistlab compare` page; replaces the bundle in --out "
        "(only its own files) and writes beside a folder that is not a bundle.",
    )
    pk.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="finished run folders or study folders")
    pk.add_argument("--out", help="bundle folder [the package's src/mnistlab/_pretrained]")
    pk.add_argument(
        "--float32", action="store_true", help="keep the weights bit for bit [float16: half the size]"
    )
    pk.add_argument(
        "--no-compare", action="store_true", help="skip the compare page (it scores every sampler)"
    )
    add_device(pk, "cpu")
    pk.set_defaults(func=cmd_pack)
    mk = actions.add_parser(
        "make",
        help="train every task's default preset, then pack: the bundle from scratch",
        description="Train each registered task with its default preset into --work "
        "(finished runs are kept, interrupted ones resumed), then pack them into --out.",
    )
    mk.add_argument(
        "--work", type=Path, default=Path("runs/pretrained"), help="training folder [runs/pretrained]"
    )
    mk.add_argument("--out", help="bundle folder [the package's src/mnistlab/_pretrained]")
    add_device(mk, "cpu")
    add_progress(mk)
    mk.set_defaults(func=cmd_make)


def cmd_list(args: argparse.Namespace) -> int:
    from mnistlab.pretrained import bundle  # the bundle's files only: no torch

    rows = [bundle.describe(n) for n in bundle.available()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no trained runs ship with this installation")
        return 0
    print(f"{'name':<12}{'task':<12}{'epochs':>7}{'MB':>7}  test numbers / made by")
    for r in rows:
        test = ", ".join(
            f"{k} {r['test'][k]:.4g}" for k in HEADLINE if isinstance(r["test"].get(k), int | float)
        )
        made = r["pretrained"]
        print(f"{r['name']:<12}{r['task']:<12}{r['epochs'] or '-':>7}{r['megabytes']:>7}  {test or '-'}")
        print(f"{'':<38}{made.get('command') or '-'} ({made.get('machine') or '?'})")
    print(
        "`mnistlab pretrained path NAME` prints a folder to use with any command; `mnistlab serve` opens them all."
    )
    return 0


def cmd_path(args: argparse.Namespace) -> int:
    from mnistlab.pretrained import shipped as pretrained

    print(pretrained.path(args.name))
    return 0


def _sources(runs: list[Path]) -> dict[str, Path]:
    from mnistlab import tasks
    from mnistlab.bench import compare as bench
    from mnistlab.core.errors import ConfigError

    sources: dict[str, Path] = {}
    for run in runs:
        for _, folder in bench.expand(run)[0]:  # a run folder, or a study folder's finished task stages
            name = tasks.load_run_config(folder)[0]
            if name in sources:
                raise ConfigError(
                    f"two runs named {name!r} ({sources[name]} and {folder}); pack one per task"
                )
            sources[name] = Path(folder)
    return sources


def _bundle_out(out: str | None) -> Path:
    """--out as a folder (the package's bundle when not given); an empty one would be the current
    folder, written beside or into without the user having named it: refused."""
    from mnistlab.core.errors import ConfigError
    from mnistlab.pretrained import shipped as pretrained

    if out is None:
        return pretrained.BUNDLE
    if not out.strip():
        raise ConfigError("--out is empty; name the bundle's folder (or leave --out out for the package's)")
    return Path(out)


def cmd_pack(args: argparse.Namespace) -> int:
    from mnistlab.pretrained import pack as pretrained_pack

    out = _bundle_out(args.out)  # before the runs are read: nothing is done for a bad --out
    records = pretrained_pack.pack(
        _sources(args.runs),
        out,
        args.device,
        compare=not args.no_compare,
        half=not args.float32,
    )
    print(json.dumps(records, indent=2))
    return 0


def cmd_make(args: argparse.Namespace) -> int:
    from mnistlab.pretrained import pack as pretrained_pack

    records = pretrained_pack.make(
        args.work, _bundle_out(args.out), args.device, progress=not args.no_progress
    )
    print(json.dumps(records, indent=2))
    return 0

"""Command line: parse, build the config, call one function per subcommand. Nothing else lives here.

Exit codes: 0 done, 2 bad input (one-line message), 3 training stopped on a non-finite loss,
130 interrupted (the last epoch's checkpoint is kept; rerun with --resume).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2
EXIT_NON_FINITE = 3

# Task -> (module, function) that trains it into a run folder: f(exp, out, resume, progress) -> summary.
TRAINERS = {
    "ae": ("mnistlab.train.autoencoder", "train_autoencoder"),
    "gan": ("mnistlab.train.gan_run", "train_gan"),
}


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset",
        default="default",
        help="preset name (quick, seed, default) or path to a .toml preset [default]",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config field, e.g. --set model.latent_dim=2 (repeatable)",
    )
    p.add_argument("--data-dir", help="folder with the four IDX files (gzip or raw) to use instead of MNIST")
    p.add_argument("--dataset", help="a known dataset name (mnist, fashion-mnist, kmnist) from the cache")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to train [config: auto]")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnistlab", description="Train, evaluate and explore autoencoders and GANs on MNIST-like digits."
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train a model into a run folder",
                           description="Train a model; the run folder gets config, metrics, checkpoints, figures, summary.")  # fmt: skip
    train.add_argument(
        "task",
        choices=sorted(TRAINERS),
        help="what to train: ae (convolutional autoencoder), gan (the report's GAN)",
    )
    _add_config_args(train)
    train.add_argument("--out", type=Path, help="run folder [runs/<task>-<preset>]")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )

    ev = sub.add_parser("eval", help="evaluate a trained run on the test set",
                        description="Recompute test metrics and figures of a run folder from its checkpoint.")  # fmt: skip
    ev.add_argument("run_dir", type=Path, help="a run folder written by `mnistlab train`")
    ev.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")

    data = sub.add_parser(
        "data", help="inspect or download datasets", description="Inspect or download datasets."
    )
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    info = dsub.add_parser("info", help="show where a dataset comes from and its sizes",
                           description="Load a dataset (verifying checksums) and print its sizes.")  # fmt: skip
    info.add_argument("--data-dir", help="a folder with the four IDX files")
    info.add_argument("--dataset", default="mnist", help="a known dataset name [mnist]")
    dl = dsub.add_parser("download", help="download a known dataset into the cache, verifying checksums",
                         description="Download a known dataset (mnist, fashion-mnist, kmnist) into the cache.")  # fmt: skip
    dl.add_argument("name", help="dataset name")
    dl.add_argument("--dest", type=Path, help="target folder [~/.cache/mnistlab/<name> or $MNISTLAB_CACHE]")
    return parser


def _experiment(args: argparse.Namespace, task: str):
    from mnistlab.config import load_experiment

    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    if args.dataset:
        overrides.append(f"data.dataset={args.dataset}")
    if args.device:
        overrides.append(f"train.device={args.device}")
    return load_experiment(task, args.preset, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    module, function = TRAINERS[args.task]
    trainer = getattr(importlib.import_module(module), function)
    exp = _experiment(args, args.task)
    out = args.out or Path("runs") / f"{args.task}-{Path(args.preset).stem}"
    summary = trainer(exp, out, resume=args.resume, progress=not args.no_progress)
    print(json.dumps({"run": str(out), "test": summary.get("test")}, indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from mnistlab import rundir
    from mnistlab.data import load
    from mnistlab.train.autoencoder import evaluate_autoencoder, load_autoencoder
    from mnistlab.train.loop import resolve_device

    exp, model = load_autoencoder(args.run_dir)
    device = resolve_device(args.device)
    result = evaluate_autoencoder(args.run_dir, model.to(device), load(exp.data), device)
    summary = {**rundir.read_summary(args.run_dir), **result}
    rundir.write_summary(args.run_dir, summary)
    print(json.dumps({"run": str(args.run_dir), "test": result["test"]}, indent=2))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from mnistlab.data import DataConfig, download, load

    if args.data_command == "download":
        print(download(args.name, args.dest))
        return 0
    data = load(DataConfig(dataset=args.dataset, data_dir=args.data_dir or "", val_fraction=0.0))
    info = {"source": data.source, "train": len(data.train), "test": len(data.test),
            "train_class_counts": data.train.labels.bincount(minlength=10).tolist()}  # fmt: skip
    print(json.dumps(info, indent=2))
    return 0


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "data": cmd_data}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    from mnistlab.data import DataError
    from mnistlab.errors import ConfigError
    from mnistlab.train.checkpoint import CheckpointError
    from mnistlab.train.loop import NonFiniteLossError

    try:
        return COMMANDS[args.command](args)
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"mnistlab: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NonFiniteLossError as e:
        print(f"mnistlab: training diverged: {e}", file=sys.stderr)
        return EXIT_NON_FINITE
    except KeyboardInterrupt:
        print("mnistlab: interrupted; the last finished epoch is checkpointed, rerun with --resume",
              file=sys.stderr)  # fmt: skip
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""What several command modules share: the preset / --set / data / device options and turning them
into the overrides a task's config takes."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

DEVICES = ("auto", "cpu", "cuda")
# Metrics a reader looks for first in a run's test results, whichever task wrote them.
HEADLINE = ("accuracy", "mse", "psnr", "ssim", "fid_mnist", "precision", "recall")


def add_config_args(p: argparse.ArgumentParser, preset_default: str = "default") -> None:
    p.add_argument(
        "--preset",
        default=preset_default,
        help=f"preset name (quick, seed, default) or path to a .toml preset [{preset_default}]",
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
    add_device(p, None)
    add_progress(p)


def add_device(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    what = "[config: auto]" if default is None else f"[{default}]"
    p.add_argument(
        "--device",
        choices=DEVICES,
        default=default,
        help=f"where to compute: auto (cuda when available), cpu or cuda {what}",
    )


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (none are drawn off a terminal anyway: a log gets one line per epoch)",
    )


def add_json(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", action="store_true", help=f"end with {what} as JSON, for scripts")


def shell_path(path: Path | str) -> str:
    """A path as a shell command line takes it (quoted only when it needs to be)."""
    return shlex.quote(str(path))


def scores(values: dict, most: int = 6) -> str:
    """ "mse 0.00992, psnr 21.09, ssim 0.8808": the float entries of a summary's metrics, the usual
    headline ones first, at most `most` (the rest are in summary.json)."""
    floats = {k: v for k, v in values.items() if isinstance(v, float)}
    first = [k for k in HEADLINE if k in floats]
    keys = (first + [k for k in floats if k not in first])[:most]
    return ", ".join(f"{k} {floats[k]:.4g}" for k in keys)


def experiment_overrides(args: argparse.Namespace) -> list[str]:
    """--set items plus the ones --data-dir, --dataset and --device stand for."""
    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    if args.dataset:
        overrides.append(f"data.dataset={args.dataset}")
    if args.device:
        overrides.append(f"train.device={args.device}")
    return overrides


def names(text: str) -> tuple[str, ...]:
    """ "a, b,c" -> ("a", "b", "c")."""
    return tuple(x.strip() for x in text.split(",") if x.strip())

"""Trained runs shipped inside the package, so that `mnistlab serve` opens a model at once.

The bundle (src/mnistlab/_pretrained/) holds one run folder per task trained with its default preset:
config.toml, command.txt, metrics.jsonl, figures, summary.json and a weights-only checkpoint (the
module tensors in float16 unless packed with --float32, without the optimizer and RNG state that only
resuming needs), plus the explorer's start-up cache and `mnistlab compare`'s measures and page
(report/). Each summary records where the run came from under "pretrained": the training command,
the source checkpoint's SHA-256, the commit and the machine; `mnistlab eval` on a shipped run
reproduces its recorded test numbers to within the relative change that packing measured (recorded
beside them).

Users never write into the installed package: `path(name)` copies a shipped run into the user's
folder (MNISTLAB_HOME, else ~/.cache/mnistlab) the first time, and again whenever the shipped
checkpoint differs, and every command takes that copy like any run folder.

Packing and remaking the bundle live in pretrained/pack.py.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from mnistlab import tasks
from mnistlab.core.errors import ConfigError
from mnistlab.runs import folder as rundir
from mnistlab.runs import owner
from mnistlab.runs.checkpoint import file_sha256

log = logging.getLogger("mnistlab")

BUNDLE = Path(__file__).parents[1] / "_pretrained"
REPORT = "report"  # `mnistlab compare`'s page of the bundle's runs


def available(bundle: Path | None = None) -> list[str]:
    """Names of the shipped runs, in the registry's stage order."""
    bundle = bundle or BUNDLE
    if not bundle.is_dir():
        return []
    order = {s.name: i for i, s in enumerate(tasks.all_tasks())}
    found = [p.name for p in bundle.iterdir() if (p / "config.toml").is_file()]
    return sorted(found, key=lambda n: (order.get(n, len(order)), n))


def describe(name: str, bundle: Path | None = None) -> dict[str, Any]:
    """Task, description, provenance and headline numbers of shipped run `name`."""
    folder = _shipped(name, bundle)
    task, _ = tasks.load_run_config(folder)
    summary = rundir.read_summary(folder)
    return {
        "name": name,
        "task": task,
        "description": tasks.get(task).description,
        "epochs": summary.get("epochs"),
        "test": summary.get("test", {}),
        "pretrained": summary.get("pretrained", {}),
        "megabytes": round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6, 2),
    }


def user_root() -> Path:
    """Where shipped runs are copied for use: $MNISTLAB_HOME/pretrained, else ~/.cache/mnistlab/pretrained."""
    home = os.environ.get("MNISTLAB_HOME")
    return (Path(home) if home else Path.home() / ".cache" / "mnistlab") / "pretrained"


def path(name: str, bundle: Path | None = None, root: Path | None = None) -> Path:
    """A writable copy of shipped run `name`, refreshed when the shipped checkpoint differs: the files
    of the previous copy are replaced and the user's own files in it stay (a copy whose files cannot
    be told apart, or where a user's file is in the way, is moved aside, and the log says where)."""
    source = _shipped(name, bundle)
    target = (root or user_root()) / name
    ckpt = rundir.checkpoint_path(source)
    copy = rundir.checkpoint_path(target)
    if copy.is_file() and file_sha256(copy) == file_sha256(ckpt):
        return target
    with owner.session():
        if target.is_dir() and not _refreshable(source, target):
            aside = _aside(target)
            target.rename(aside)
            log.warning("moved the previous copy of the shipped %s run aside, to %s", name, aside)
        owner.claim(target, "train")
        owner.clear(target, nested=False)  # the previous copy's files; outputs made from it stay
        # The checkpoint last: a copy cut short has none (or the old one's hash) and is redone.
        keep = shutil.ignore_patterns(*owner.BOOKKEEPING)
        shutil.copytree(
            source,
            target,
            ignore=shutil.ignore_patterns("checkpoints", *owner.BOOKKEEPING),
            dirs_exist_ok=True,
        )
        shutil.copytree(source / "checkpoints", target / "checkpoints", ignore=keep, dirs_exist_ok=True)
    log.info("copied the shipped %s run to %s", name, target)
    return target


def _refreshable(source: Path, target: Path) -> bool:
    """Whether copy `target` can be refreshed in place: it has a manifest (which files are the
    previous copy's) and no file of the user's lies where a shipped file goes."""
    if owner.manifest(target) is None or not owner.claimable(target, "train"):
        return False
    ours = owner.owned_files(target)
    shipped = (
        f.relative_to(source).as_posix()
        for f in source.rglob("*")
        if f.is_file() and f.name not in owner.BOOKKEEPING
    )
    return not any((target / n).exists() and n not in ours for n in shipped)


def _aside(target: Path) -> Path:
    for k in range(1, 1000):
        aside = target.with_name(f"{target.name}.old" + (f"-{k}" if k > 1 else ""))
        if not aside.exists():
            return aside
    raise ConfigError(f"{target}: no free name to move the previous copy aside; remove {target}.old*")


def bundle_path(bundle: Path | None = None, root: Path | None = None) -> Path:
    """A writable copy of every shipped run (a folder `serve` takes whole, like a study folder)."""
    bundle = bundle or BUNDLE
    names = available(bundle)
    if not names:
        raise ConfigError(
            f"this installation ships no trained runs ({bundle} is empty); train one, e.g. "
            "`mnistlab run --preset quick`, and serve its folder"
        )
    for name in names:
        path(name, bundle, root)
    report = bundle / REPORT
    target = (root or user_root()) / REPORT
    if report.is_dir() and not target.is_dir():
        shutil.copytree(report, target)
    return root or user_root()


def _shipped(name: str, bundle: Path | None) -> Path:
    bundle = bundle or BUNDLE
    names = available(bundle)
    if name not in names:
        raise ConfigError(f"no shipped run named {name!r}; shipped: {', '.join(names) or 'none'}")
    return bundle / name

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

Listing the bundle (`available`, `describe`) lives in pretrained/bundle.py, which imports no torch so
that `mnistlab pretrained list` answers at once; packing and remaking it live in pretrained/pack.py.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from mnistlab.core.errors import ConfigError
from mnistlab.pretrained import bundle as files
from mnistlab.runs import folder as rundir
from mnistlab.runs import owner
from mnistlab.runs.checkpoint import file_sha256

log = logging.getLogger("mnistlab")

BUNDLE = files.BUNDLE  # every function here reads this name when given no bundle (tests point it elsewhere)
REPORT = files.REPORT


def available(bundle: Path | None = None) -> list[str]:
    """Names of the shipped runs, in the tasks' listing order."""
    return files.available(bundle or BUNDLE)


def describe(name: str, bundle: Path | None = None) -> dict[str, Any]:
    """Task, description, provenance and headline numbers of shipped run `name`."""
    return files.describe(name, bundle or BUNDLE)


def user_root() -> Path:
    """Where shipped runs are copied for use: $MNISTLAB_HOME/pretrained, else ~/.cache/mnistlab/pretrained."""
    home = os.environ.get("MNISTLAB_HOME")
    return (Path(home) if home else Path.home() / ".cache" / "mnistlab") / "pretrained"


def path(name: str, bundle: Path | None = None, root: Path | None = None) -> Path:
    """A writable copy of shipped run `name`, refreshed when the shipped checkpoint differs: the files
    of the previous copy are replaced and the user's own files in it stay (a copy whose files cannot
    be told apart, or where a user's file is in the way, is moved aside, and the log says where)."""
    source = files.shipped(name, bundle or BUNDLE)
    target = (root or user_root()) / name
    ckpt = rundir.checkpoint_path(source)
    copy = rundir.checkpoint_path(target)
    if copy.is_file() and file_sha256(copy) == file_sha256(ckpt) and _has_nested_checkpoints(source, target):
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

        def all_but_the_checkpoint(folder: str, names: list[str]) -> set[str]:
            # Only the run's own checkpoints/ waits; a probe's (probe/linear/checkpoints) is copied.
            return keep(folder, names) | ({"checkpoints"} if Path(folder) == source else set())

        shutil.copytree(source, target, ignore=all_but_the_checkpoint, dirs_exist_ok=True)
        shutil.copytree(source / "checkpoints", target / "checkpoints", ignore=keep, dirs_exist_ok=True)
    log.info("copied the shipped %s run to %s", name, target)
    return target


def _has_nested_checkpoints(source: Path, target: Path) -> bool:
    """Whether copy `target` holds every checkpoint of `source` below the run's own (a probe's): a
    copy made without them (an earlier version skipped them) is refreshed."""
    nested = (
        f.relative_to(source) for f in source.rglob("*.safetensors") if f.parent != source / "checkpoints"
    )
    return all((target / rel).is_file() for rel in nested)


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

"""Who may write an output folder, and which of its files are mnistlab's.

Every command that writes claims its folder here first (`claim`), or the files it writes into a
folder it does not own (`claim_files`: `sample --out`, `score --json`). The rule:

- a folder may be claimed when it is new or empty, or when it holds an output of the same kind that
  mnistlab made (a train run for `train`/`eval`/`latent`, a study for `run`, ...); anything else is a
  one-line ConfigError naming what is there;
- the folder's manifest (MANIFEST, a small JSON file in it) lists the files mnistlab wrote there, and
  only those are ever deleted or replaced (`clear`, `force=True`); the user's own files stay;
- one process writes a folder at a time: an advisory lock (the `filelock` package) with the holder's
  PID in a side file, so that a second writer is told who holds it; a lock whose process has died
  is taken over (the kernel drops a flock with its process);
- nothing under the installed mnistlab package is written (a shipped run is copied out first:
  `mnistlab pretrained path`); only `pretrained pack`/`make` may rewrite the bundle, and only in a
  source checkout.

Which files are mnistlab's is worked out from the folder rather than told by every writer: a claim
records the files present that are not mnistlab's ("foreign"), and whatever else is there when the
claim is released (or, after a crash, at the next claim) was written under it. A folder of an older
mnistlab, without a manifest, is adopted when it holds the file its kind always writes (LEGACY).

Claims made inside `session()` (every CLI command, each study stage, each search trial) hold the lock
until the session ends; a claim made outside one (a library call such as `mnistlab.train`) checks
ownership and the lock, records the claim, and lets the lock go at once, since nothing tells it when
the call is over.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from mnistlab.core.errors import ConfigError
from mnistlab.core.fsio import MAX_RECORD_BYTES, atomic_write_bytes, read_regular_bytes, read_toml, write_json

log = logging.getLogger("mnistlab")

MANIFEST = ".mnistlab.json"
LOCK = ".mnistlab.lock"
PID_FILE = ".mnistlab.lock.pid"  # the holder's PID: the lock file itself is truncated by each try
BOOKKEEPING = frozenset({MANIFEST, LOCK, PID_FILE})

# The file an older mnistlab always wrote into a folder of each kind (no manifest then); config.toml
# is a train run's, or a probe's when its task is "probe".
# study.db: the Optuna storage of a search, which the API may open before the search claims its folder.
LEGACY = {
    "run.json": "run",
    "search.json": "search",
    "study.db": "search",
    "bundle.json": "bundle",
    "config.toml": "train",
}

# What each kind of output is, for messages (a plug-in may claim a kind of its own).
KINDS = {
    "train": "a training run (`mnistlab train`)",
    "run": "a study (`mnistlab run`)",
    "probe": "a probe (`mnistlab probe`)",
    "latent": "a latent analysis (`mnistlab latent --out`)",
    "search": "a search (`mnistlab search`)",
    "bundle": "a bundle of trained runs (`mnistlab pretrained pack`)",
    "files": "single files of mnistlab's (`mnistlab sample`, `score --json`)",
}

PACKAGE = Path(__file__).resolve().parents[1]  # the mnistlab package directory
BUNDLE = PACKAGE / "_pretrained"  # the shipped runs (pretrained/shipped.py)
SHOWN = 3  # foreign files named in an error
STAGING = ".packing-"  # `pretrained pack` builds a bundle in a folder beside it named .<bundle>.packing-*


@dataclasses.dataclass
class _Held:
    path: Path  # as the user gave it, for messages
    kind: str
    lock: FileLock
    foreign: frozenset[str]
    depth: int = 1


_held: dict[Path, _Held] = {}  # resolved folder -> this process's claim on it (inside a session)
_sessions: list[list[Path]] = []  # the claims made in each open session, innermost last


# --------------------------------------------------------------------------------------- claiming


def claim(
    folder: Path | str, kind: str, *, force: bool = False, lock: bool = True, bundle: bool = False
) -> Path:
    """Claim `folder` for an output of `kind`: created if new; refused (one line) when it holds files
    mnistlab did not write, or another kind's output, or another process is writing it. With `force`
    the files mnistlab wrote there before are deleted (the user's stay). `lock=False` only checks
    (an Optuna study several launchers share on purpose). `bundle` lets `pretrained pack` write the
    package's own bundle in a source checkout. Returns `folder`."""
    path = Path(folder)
    real = path.resolve()
    check_outside_package(path, allow_bundle=bundle)
    held = _held.get(real)
    if held is not None:  # this process already writes it (a command, then its trainer)
        if held.kind != kind:
            raise ConfigError(f"{path} holds {_what(held.kind)}, not {_what(kind)}; choose another folder")
        held.depth += 1
        _note(real)
        if force:
            clear(path)
        return path
    if real.exists() and not real.is_dir():
        raise ConfigError(f"{path} is a file, not a folder; choose another --out")
    if real.is_dir():
        _ours(real, path, kind)  # refused before anything (even a lock file) is written into it
        _check_links(real, path)
    try:
        real.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create {path}: {e.strerror}") from None
    flock = _lock(real, path) if lock else None
    try:
        ours = _ours(real, path, kind)
        if force:
            clear(path)
            ours = set()
        foreign = frozenset(set(_walk(real)) - ours)
        _write_manifest(real, {"kind": kind, "files": sorted(ours), "open": sorted(foreign)})
    except BaseException:
        if flock is not None:
            _unlock(real, flock)
        raise
    if flock is None:
        return path
    if not _sessions:  # no end to wait for: the manifest stays open until the next claim
        _unlock(real, flock)
        return path
    _held[real] = _Held(path, kind, flock, foreign)
    _note(real)
    return path


def release(folder: Path | str) -> None:
    """End this process's claim on `folder` (the last of nested claims): the manifest records every
    file there that was not the user's at the claim, and the lock is let go."""
    real = Path(folder).resolve()
    held = _held.get(real)
    if held is None:
        return
    held.depth -= 1
    if held.depth > 0:
        return
    del _held[real]
    try:
        if real.is_dir():
            files = set(_walk(real)) - held.foreign
            _write_manifest(real, {"kind": held.kind, "files": sorted(files)})
    finally:
        _unlock(real, held.lock)


@contextmanager
def session() -> Iterator[None]:
    """Claims made inside hold their folder's lock until the block ends, then are released."""
    _sessions.append([])
    try:
        yield
    finally:
        for real in reversed(_sessions.pop()):
            release(real)


def claimable(folder: Path | str, kind: str) -> bool:
    """Whether `claim(folder, kind)` would find the folder its own (new, empty or of `kind`), leaving
    aside locks and the package."""
    real = Path(folder).resolve()
    if not real.exists():
        return True
    if not real.is_dir():
        return False
    try:
        _ours(real, Path(folder), kind)
    except ConfigError:
        return False
    return True


def owned_files(folder: Path | str) -> set[str]:
    """The files of `folder` that mnistlab wrote (present now; an older mnistlab's output: all)."""
    real = Path(folder).resolve()
    if not real.is_dir():
        return set()
    doc, present = _read_manifest(real), set(_walk(real))
    if doc is None:
        return present if _legacy_kind(real) else set()
    ours = set(doc["files"]) | (present - set(doc["open"]) if "open" in doc else set())
    return ours & present


def holds(folder: Path | str) -> bool:
    """Whether this process holds a claim on `folder` (inside a session)."""
    return Path(folder).resolve() in _held


def claim_files(paths: Iterable[Path | str]) -> None:
    """Claim single files a command is about to write (next to other things, e.g. `sample --out
    d/digits.npy`, or into a run folder: compare's and the explorer's caches): each must be new or one
    mnistlab wrote. A file belongs to the nearest folder above it that keeps a manifest (a run's
    figures/ are the run's) or that this process has claimed, else to its own folder; it is listed in
    that manifest before it is written (a folder an older mnistlab wrote, without a manifest, is
    mnistlab's throughout and gets none)."""
    by_folder: dict[Path, list[Path]] = {}
    for p in map(Path, paths):
        if p.is_dir():
            raise ConfigError(f"{p} is a folder; name a file to write")
        top = _manifest_folder(p.parent.resolve())
        if top not in _held:  # a folder this process claimed passed the package check then
            check_outside_package(p)
        by_folder.setdefault(top, []).append(p)
    for top, files in by_folder.items():
        for p in files:
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ConfigError(f"cannot create {p.parent}: {e.strerror}") from None
        flock = None if top in _held else _lock(top, files[0].parent)
        try:
            doc = _read_manifest(top)
            legacy = doc is None and _legacy_kind(top) is not None
            ours = owned_files(top)
            names = {(p.parent.resolve() / p.name).relative_to(top).as_posix(): p for p in files}
            for name, p in names.items():
                if os.path.lexists(p) and name not in ours:
                    raise ConfigError(
                        f"{p} exists and was not written by mnistlab; choose another --out or remove it"
                    )
            if not legacy:
                doc = doc or {"kind": "files", "files": []}
                doc["files"] = sorted(set(doc["files"]) | set(names))
                _write_manifest(top, doc)
        finally:
            if flock is not None:
                _unlock(top, flock)


def clear(folder: Path | str, nested: bool = True) -> list[str]:
    """Delete the files mnistlab wrote in `folder` (and, with `nested`, in the folders claimed inside
    it), then the folders left empty; the user's files stay. A folder without a manifest of its own
    inside a claimed one (a study's label_efficiency/) is cleared by the manifest above it. Returns
    what was deleted (relative)."""
    real = Path(folder).resolve()
    if not real.is_dir():
        return []
    doc = _read_manifest(real)
    if doc is None and _legacy_kind(real) is None:
        top = _manifest_folder(real.parent, legacy=True)
        if (top / MANIFEST).is_file() or _legacy_kind(top) is not None:
            return _clear_inside(top, real, nested)
    ours = owned_files(real)
    removed = []
    for name in sorted(ours):
        (real / name).unlink(missing_ok=True)
        removed.append(name)
    if nested:
        removed += _clear_nested(real)
    _remove_empty_dirs(real)
    if doc is not None or ours:
        left = set(_walk(real))
        _write_manifest(
            real, {**(doc or {"kind": _legacy_kind(real) or "files"}), "files": [], "open": sorted(left)}
        )
    return removed


def _clear_inside(top: Path, real: Path, nested: bool) -> list[str]:
    """clear() of folder `real`, which has no manifest, by the manifest of `top` above it."""
    prefix = real.relative_to(top).as_posix() + "/"
    ours = {name for name in owned_files(top) if name.startswith(prefix)}
    for name in sorted(ours):
        (top / name).unlink(missing_ok=True)
    removed = sorted(name[len(prefix) :] for name in ours)
    if nested:
        removed += _clear_nested(real)
    _remove_empty_dirs(real)
    doc = _read_manifest(top)
    if doc is not None and ours:  # a name listed there and gone must not make a later file of the user's ours
        _write_manifest(top, {**doc, "files": sorted(set(doc["files"]) - ours)})
    return removed


def _clear_nested(real: Path) -> list[str]:
    removed = []
    for sub in _nested(real):
        removed += [f"{sub.relative_to(real)}/{n}" for n in clear(sub)]
        if set(os.listdir(sub)) <= BOOKKEEPING and sub.resolve() not in _held:
            for name in BOOKKEEPING:
                (sub / name).unlink(missing_ok=True)
    return removed


def _manifest_folder(real: Path, legacy: bool = False) -> Path:
    """The nearest folder from `real` up that keeps a manifest or that this process has claimed (with
    `legacy`, or that an older mnistlab wrote), whose files under it it lists; `real` if none."""
    for folder in (real, *real.parents):
        if folder in _held or (folder / MANIFEST).is_file():
            return folder
        if legacy and folder.is_dir() and _legacy_kind(folder) is not None:
            return folder
    return real


def check_outside_package(path: Path | str, allow_bundle: bool = False) -> None:
    """A one-line error when `path` lies inside the installed mnistlab package, which no command writes
    (`allow_bundle`: the package's bundle of shipped runs, in a source checkout, for `pretrained pack`)."""
    real = Path(path).resolve()
    if real != PACKAGE and PACKAGE not in real.parents:
        return
    if allow_bundle and _bundle_place(real) and source_checkout():
        return
    hint = (
        "; `mnistlab pretrained path NAME` gives a writable copy of a shipped run"
        if real == BUNDLE or BUNDLE in real.parents
        else ""
    )
    raise ConfigError(
        f"{path} is inside the installed mnistlab package ({PACKAGE}), which no command writes{hint}"
    )


def _bundle_place(real: Path) -> bool:
    """Whether `real` lies in the package's bundle or in a folder `pretrained pack` builds it in beside
    it (BUNDLE's sibling STAGING...), which then replaces the bundle's files."""
    staging = f".{BUNDLE.name}{STAGING}"
    return any(
        p == BUNDLE or (p.parent == PACKAGE and p.name.startswith(staging)) for p in (real, *real.parents)
    )


def source_checkout() -> bool:
    """Whether the package is a source tree (src/mnistlab next to pyproject.toml), where the shipped
    bundle is remade, rather than an installed copy."""
    return PACKAGE.parent.name == "src" and (PACKAGE.parents[1] / "pyproject.toml").is_file()


def manifest(folder: Path | str) -> dict[str, Any] | None:
    """The manifest of `folder` ({"kind", "files", and "open" while a claim is open}), None if none."""
    return _read_manifest(Path(folder).resolve())


# ---------------------------------------------------------------------------------------- helpers


def _ours(real: Path, path: Path, kind: str) -> set[str]:
    """The files of `real` mnistlab wrote, checking that it may be claimed for `kind`."""
    doc = _read_manifest(real)
    present = set(_walk(real))
    if doc is None:
        if not present:
            return set()
        if _legacy_kind(real) == kind:  # an older mnistlab's output: everything in it was written by it
            return present
        raise ConfigError(
            f"{path} holds files mnistlab did not write ({_names(present)}); choose a new or empty folder"
        )
    if doc["kind"] != kind:
        raise ConfigError(f"{path} holds {_what(doc['kind'])}, not {_what(kind)}; choose another folder")
    ours = set(doc["files"])
    if (
        "open" in doc
    ):  # a claim that was never released (a crash, a library call): what appeared since is ours
        ours |= present - set(doc["open"])
    return ours & present


def _check_links(real: Path, path: Path) -> None:
    """A one-line error when a folder inside `real` is a symbolic link to a place outside it: what a
    command writes there (a run's figures/, checkpoints/) would land in a folder it never claimed,
    over whatever is there. Links to files are harmless: a write replaces the link, not its target."""
    for root, dirs, _ in os.walk(real):
        here = Path(root)
        for d in dirs:
            link = here / d
            if link.is_symlink():
                target = link.resolve()
                if target != real and real not in target.parents:
                    raise ConfigError(
                        f"{path}: {link.relative_to(real)} is a link to {target}, outside the folder; "
                        "mnistlab writes only inside the folders it claims: replace the link by a folder"
                    )


def _what(kind: str) -> str:
    return KINDS.get(kind, f"a {kind} output of mnistlab's")


def _legacy_kind(real: Path) -> str | None:
    """The kind of output an older mnistlab left in `real` (no manifest), None if none."""
    kind = next((k for marker, k in LEGACY.items() if (real / marker).is_file()), None)
    if kind == "train":
        try:
            task = read_toml(real / "config.toml").get("task")
        except ConfigError:
            return None
        if not isinstance(task, str):  # a config.toml of the user's own, not a run's
            return None
        return "probe" if task == "probe" else kind
    if kind is None and _latent_summary(real / "summary.json"):
        return "latent"  # `mnistlab latent --out`: its summary, without a config
    return kind


def _latent_summary(path: Path) -> bool:
    try:
        doc = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "run" in doc and "cluster_quality" in doc


def _walk(real: Path) -> Iterator[str]:
    """Files under `real` (relative, '/'-separated), leaving out the bookkeeping files and the folders
    claimed on their own (those with a manifest: a study's stages, a search's trials)."""
    for root, dirs, files in os.walk(real):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not (here / d / MANIFEST).is_file())
        for name in files:
            if here == real and name in BOOKKEEPING:
                continue
            yield (here / name).relative_to(real).as_posix()


def _nested(real: Path) -> list[Path]:
    found = []
    for root, dirs, _ in os.walk(real):
        here = Path(root)
        for d in list(dirs):
            if (here / d / MANIFEST).is_file():
                found.append(here / d)
                dirs.remove(d)
    return found


def _remove_empty_dirs(real: Path) -> None:
    for root, _dirs, _files in os.walk(real, topdown=False):
        here = Path(root)
        if here != real and not os.listdir(here):
            here.rmdir()


def _names(files: set[str]) -> str:
    tops = sorted({f.split("/", 1)[0] for f in files})
    return ", ".join(tops[:SHOWN]) + (f" and {len(tops) - SHOWN} more" if len(tops) > SHOWN else "")


def _read_manifest(real: Path) -> dict[str, Any] | None:
    path = real / MANIFEST
    if not os.path.lexists(path):
        return None
    try:  # a regular file only: a FIFO or a link to a device there cannot hang or flood the reader
        doc = json.loads(read_regular_bytes(path, MAX_RECORD_BYTES))
    except ConfigError as e:
        raise ConfigError(f"{e}; remove it to reclaim the folder") from None
    except (OSError, ValueError, RecursionError) as e:
        raise ConfigError(
            f"{path}: not a manifest mnistlab can read ({e}); remove it to reclaim the folder"
        ) from None
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("kind"), str)
        or not isinstance(doc.get("files"), list)
    ):
        raise ConfigError(f"{path}: not a manifest mnistlab wrote; remove it to reclaim the folder")
    return doc


def _write_manifest(real: Path, doc: dict[str, Any]) -> None:
    try:
        write_json(real / MANIFEST, doc)
    except OSError as e:
        raise ConfigError(f"cannot write in {real}: {e.strerror}") from None


def _lock(real: Path, path: Path) -> FileLock:
    """This process's lock on folder `real`, its PID in PID_FILE; a one-line error naming the holder."""
    lock = FileLock(real / LOCK, timeout=0, fallback_to_soft=False)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(
            f"{path} is being written by another mnistlab process (PID {_holder(real)}); "
            "wait for it to finish or stop it"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot lock {path}: {e.strerror}") from None
    stale = _holder(real)
    if stale not in ("?", str(os.getpid())):
        log.info("%s: took over the lock of process %s, which has ended", path, stale)
    try:
        atomic_write_bytes(real / PID_FILE, f"{os.getpid()}\n".encode())
    except OSError as e:
        lock.release()
        raise ConfigError(f"cannot write in {path}: {e.strerror}") from None
    return lock


def _unlock(real: Path, lock: FileLock) -> None:
    if _holder(real) == str(os.getpid()):
        (real / PID_FILE).unlink(missing_ok=True)
    lock.release()


def _holder(real: Path) -> str:
    try:
        return (real / PID_FILE).read_text().strip() or "?"
    except OSError:
        return "?"


def _note(real: Path) -> None:
    if _sessions:
        _sessions[-1].append(real)


def move_into(staging: Path, target: Path) -> None:
    """Move every file of `staging` into claimed folder `target` (replacing files mnistlab wrote
    there), then remove `staging`: how a bundle built aside replaces the old one. A file of the
    user's in the way is a one-line error before anything moves."""
    staging, real = Path(staging), Path(target).resolve()
    doc = _read_manifest(real) or {"files": []}
    present = set(_walk(real))
    ours = set(doc["files"]) | (present - set(doc.get("open", present)))
    names = sorted(_walk(staging))
    clash = [n for n in names if n in present and n not in ours]
    if clash:
        raise ConfigError(f"{target}: {_names(set(clash))} would replace files mnistlab did not write")
    for name in names:
        dest = real / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, dest)
    shutil.rmtree(staging, ignore_errors=True)

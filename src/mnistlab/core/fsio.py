"""Small file helpers shared by every writer: atomic writes, so a crash never leaves half a file."""

from __future__ import annotations

import json
import os
import secrets
import tomllib
from pathlib import Path
from typing import Any

from mnistlab.core.errors import ConfigError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Temp file in the same folder, flush, fsync, rename: a crash leaves the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new, empty temp file next to `path`, opened for writing.

    Created with mode 0o666 so that the kernel applies the umask (and a folder's default ACL), as for
    a file written with open(): tempfile.mkstemp would make every file 0600 whatever the umask, and
    reading the umask instead (os.umask sets it too) would race with other threads creating files.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)  # O_BINARY: Windows only
    for _ in range(100):  # a name already taken (by a concurrent writer) is tried again, as mkstemp does
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temporary file name for {path.name}")


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML document in `path`; a one-line ConfigError naming the file when it does not parse."""
    try:
        return tomllib.loads(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:  # TOML is UTF-8 by definition; a Latin-1 or binary file is no preset
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {e.start}); save it as UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML ({e})") from None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a last line cut short by a crash is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def read_json_file(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; a one-line ConfigError naming the file for anything else."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(
            f"{path}: not a readable JSON file ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj

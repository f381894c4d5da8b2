"""Small file helpers shared by every writer: atomic writes, so a crash never leaves half a file."""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
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
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.filename is None and e.errno is not None:  # a failed write() names no file: name it (disk full)
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
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


# Bounds checked before tomllib parses a file: its parser recurses once per nested table or array (a
# file nested thousands deep raised RecursionError), and Python's int() of a 5,000-digit number raises
# ValueError past sys.get_int_max_str_digits. No preset comes near either bound.
MAX_TOML_BYTES = 1 << 20
MAX_TOML_DEPTH = 32
MAX_TOML_DIGITS = 100  # of one number; a float64 needs 17 significant digits, a seed 10
_TOML_NUMBER = re.compile(rb"[0-9][0-9_]{%d,}" % MAX_TOML_DIGITS)
_TOML_OPEN = re.compile(rb"[\[{]")


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML document in `path`; a one-line ConfigError naming the file when it does not parse,
    is too large, too deeply nested or holds a number of more than MAX_TOML_DIGITS digits."""
    raw = read_regular_bytes(path, MAX_TOML_BYTES)
    try:
        text = raw.decode("utf-8")
        _check_toml_bounds(path, raw)
        return tomllib.loads(text)
    except UnicodeDecodeError as e:  # TOML is UTF-8 by definition; a Latin-1 or binary file is no preset
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {e.start}); save it as UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML ({e})") from None


def _check_toml_bounds(path: Path, raw: bytes) -> None:
    """Refuse a document whose brackets could nest past MAX_TOML_DEPTH or that holds a huge number.
    The bracket count is an upper bound of the depth (brackets inside strings count too), so it is
    only computed exactly, line by line, when the file holds that many brackets at all."""
    if _TOML_NUMBER.search(raw):
        raise ConfigError(f"{path}: a number of more than {MAX_TOML_DIGITS} digits; no setting takes one")
    if len(_TOML_OPEN.findall(raw)) <= MAX_TOML_DEPTH:
        return
    depth = 0
    for byte in raw:  # inline tables and arrays nest; a [table] header opens and closes on one line
        if byte in b"[{":
            depth += 1
            if depth > MAX_TOML_DEPTH:
                raise ConfigError(f"{path}: nested more than {MAX_TOML_DEPTH} deep; no setting needs that")
        elif byte in b"]}":
            depth = max(0, depth - 1)


def read_regular_bytes(path: Path, limit: int) -> bytes:
    """The bytes of `path`, which must be a regular file of at most `limit` bytes. A FIFO, a device or
    a socket is refused before it is read (opening a FIFO for reading would wait for a writer forever,
    so it is opened non-blocking and checked with fstat first); a file larger than `limit` is refused
    before it is read into memory. OSError (missing, unreadable) propagates."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: not a regular file; a run's records are plain files")
        if info.st_size > limit:
            raise ConfigError(f"{path}: {info.st_size:,} bytes, larger than a valid file can be ({limit:,})")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:  # grew while being read
        raise ConfigError(f"{path}: larger than a valid file can be ({limit:,} bytes)")
    return data


# A run's JSON records (summary.json, metrics.jsonl, run.json) stay far below this: metrics.jsonl at
# the most epochs a config allows is some 50 MB.
MAX_RECORD_BYTES = 64 << 20


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file ([] when there is none); the last line, when a crash cut it short, is
    skipped, and blank lines are; any other line that is not JSON is a one-line ConfigError (a file
    that is not a JSON-lines file at all is not read as an empty history). What each row must hold is
    checked by its reader (mnistlab.runs.records)."""
    path = Path(path)
    if not path.exists():
        return []
    lines = _record_text(path).splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except (ValueError, RecursionError) as e:  # not JSON; a number past int's digits; nested deep
            if number == len(lines):  # cut short by a crash as it was written
                continue
            raise ConfigError(f"{path} line {number}: not a JSON line ({_first_line(e)})") from None
    return rows


def read_json_file(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; a one-line ConfigError naming the file for anything else (a FIFO or
    other non-file included: it is refused before it is read, so it cannot hang the reader)."""
    text = _record_text(path)
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError; a 5,000-digit number; nested deep
        raise ConfigError(f"{path}: not a readable JSON file (not valid JSON: {_first_line(e)})") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _record_text(path: Path) -> str:
    try:
        return read_regular_bytes(path, MAX_RECORD_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"{path}: not a readable JSON file ({type(e).__name__}: {_first_line(e)})"
        ) from None


def _first_line(error: BaseException) -> str:
    lines = str(error).splitlines()
    return lines[0][:200] if lines else type(error).__name__

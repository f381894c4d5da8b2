"""Experiment configs: frozen dataclasses read from TOML presets, with dotted `--set section.key=value`
overrides that are type-checked; unknown keys are errors, never ignored.

This module knows no task: it builds any config dataclass from a preset's tables. Which dataclass a
task name means, and a task's own preset tables, come from the task registry (`mnistlab.tasks`), which
calls in here. A preset file holds a shared [data] table and one table per task, e.g. [ae.model] and
[ae.train]; a run folder's config.toml uses the same layout plus `task = "..."`, so it is itself a
valid preset. The [probe.*] and [run] tables belong to no task: they configure a command, and the
package that owns the command registers its config class here (`register_table`).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any

import tomli_w

from mnistlab.core.errors import ConfigError, show_value
from mnistlab.core.fsio import atomic_write_bytes, read_toml


def presets_dir() -> Path:
    packaged = Path(__file__).parents[1] / "_configs"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[3] / "configs"


def preset_names() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.toml"))


def preset_path(preset: str) -> Path:
    """The file of a preset name (quick, seed, default) or of a .toml path; a one-line error otherwise."""
    path = Path(preset)
    candidate = presets_dir() / f"{preset}.toml"
    if path.suffix != ".toml" and str(path) == path.name and candidate.is_file():
        return candidate  # a bare built-in name, even where the working folder holds a folder so named
    if path.suffix == ".toml" or path.exists():
        if path.is_dir():
            raise ConfigError(f"preset {path} is a folder; give a .toml file or a preset name")
        if not path.is_file():
            raise ConfigError(f"preset file {path} does not exist")
        return path
    if not candidate.is_file():
        names = preset_names()
        close = difflib.get_close_matches(preset, names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"unknown preset {preset!r}; {hint}choose one of {', '.join(names)} or a .toml path"
        )
    return candidate


def preset_name(preset: str) -> str | None:
    """The name of a built-in preset (for a task's own preset tables), None for a file given by path."""
    path = preset_path(preset)
    return path.stem if path.resolve().parent == presets_dir().resolve() else None


def _coerce(value: Any, typ: Any, where: str, text: bool) -> Any:
    """Check `value` (a TOML value: `text` False) or parse it (a `--set` string: `text` True) as `typ`.
    Only a command-line string is parsed: in a TOML file `epochs = "3"` is a string, and a string where
    a number belongs is the file's mistake, refused rather than guessed at."""
    origin = typing.get_origin(typ)
    if origin is tuple:
        inner = typing.get_args(typ)[0]
        # "a,b" -> (a, b); "" -> () (`--set run.labels_per_class=` asks for none)
        items = (value.split(",") if value.strip() else []) if text and isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {show_value(value)}")
        return tuple(_coerce(v, inner, where, text) for v in items)
    if isinstance(value, str) and typ is not str and not text:
        raise ConfigError(
            f"{where}: expected {typ.__name__}, got the string {show_value(value)}; drop the quotes"
        )
    if isinstance(value, str) and typ is not str:
        text = value.strip()
        try:
            if typ is bool:
                if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return text.lower() in ("true", "1", "yes")
            if typ is int:
                return int(text)
            if typ is float:
                return float(text)
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not a valid {typ.__name__}") from None
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is bool and not isinstance(value, bool) or typ is not bool and isinstance(value, bool):
        raise ConfigError(f"{where}: expected {typ.__name__}, got {value!r}")
    if not isinstance(value, typ):
        raise ConfigError(f"{where}: expected {typ.__name__}, got {type(value).__name__} {value!r}")
    return value


def _apply(obj: Any, updates: dict[str, Any], where: str, text: bool = False) -> Any:
    """Return a copy of dataclass `obj` with `updates` (nested dicts for nested dataclasses); `text`:
    the values are `--set` strings, to be parsed."""
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in updates.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            close = difflib.get_close_matches(key, sorted(names), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"unknown key {path!r}; {hint}known keys here: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                first = dataclasses.fields(current)[0].name
                raise ConfigError(f"{path} is a table, set its keys (e.g. {path}.{first}=...)")
            changes[key] = _apply(current, value, path, text)
        else:
            changes[key] = _coerce(value, hints[key], path, text)
    return dataclasses.replace(obj, **changes)


def _nest(overrides: list[str]) -> dict[str, Any]:
    """["train.lr=1e-3", "model.latent_dim=2"] -> {"train": {"lr": "1e-3"}, "model": {...}}."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        *parents, leaf = key.strip().split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {p} is set twice")
        node[leaf] = value
    return nested


def build(
    exp_type: type,
    name: str,
    doc: dict[str, Any],
    source: str,
    overrides: list[str],
    base: dict[str, Any] | None = None,
) -> Any:
    """`exp_type` built from: its defaults, the preset's shared [data], `base` (a task's own table for
    this preset), the preset's [`name`] tables, then the `--set` overrides (dotted strings)."""
    exp = exp_type()
    if "data" in doc and any(f.name == "data" for f in dataclasses.fields(exp)):
        exp = _apply(exp, {"data": doc["data"]}, "")
    if base:
        exp = _apply(exp, base, "")
    table = doc.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: {name} must be a table, not {type(table).__name__}")
    exp = _apply(exp, table, "")
    return _apply(exp, _nest(overrides), "", text=True)


def to_doc(exp: Any, task: str) -> dict[str, Any]:
    """The preset-shaped dict of `exp`: [data] shared, everything else under [task]."""
    plain = dataclasses.asdict(exp)
    data = plain.pop("data")
    return {"task": task, "data": data, task: plain}


def save_experiment(path: Path, exp: Any, task: str) -> None:
    atomic_write_bytes(path, tomli_w.dumps(to_doc(exp, task)).encode())


# --------------------------------------------------------------------------- command tables

# Preset tables that configure a command rather than a task. The names are reserved here, below every
# package, so that any layer can tell a command's table from a typo; the config class is registered
# by the package that owns the command when it is imported (probe/config.py, study/plan.py).
COMMAND_TABLES = ("probe", "run")
_TABLE_TYPES: dict[str, type] = {}


def register_table(name: str, cls: type) -> type:
    """Register `cls` as the config class of the command table `name` (one of COMMAND_TABLES)."""
    if name not in COMMAND_TABLES:
        raise ValueError(f"{name!r} is no command table; reserved names: {', '.join(COMMAND_TABLES)}")
    _TABLE_TYPES[name] = cls
    return cls


def table_type(name: str) -> type:
    """The config class of command table `name` (its owner's package must have been imported)."""
    if name not in _TABLE_TYPES:
        raise ConfigError(f"no config class registered for the [{name}] table")
    return _TABLE_TYPES[name]


def load_table(
    name: str, preset: str = "default", overrides: list[str] | None = None, cls: type | None = None
) -> Any:
    """The config of command table `name` ("probe" or "run") of a preset name or .toml file, plus
    `--set` style overrides; `cls`: its config class (default: the one registered for it)."""
    path = preset_path(preset)
    return build(cls or table_type(name), name, read_toml(path), str(path), list(overrides or []))

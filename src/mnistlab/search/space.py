"""What a search explores: grids of config values (`--grid train.lr=1e-3,2e-2`) and Optuna search
spaces declared in TOML. Pure parsing and naming only; running trials lives in search/grid.py and search/optuna.py.

A grid point and an Optuna trial both end up as a list of `--set`-style overrides
(["train.lr=0.001", "model.latent_dim=10"]) applied on top of a preset, so every trial is a normal
experiment config, checked by `config.load_experiment` like any other.

Search-space TOML: one table per dotted config key, holding a `type` and its bounds::

    [train.lr]
    type = "float"        # float | log-float | int | categorical
    low = 1e-4
    high = 3e-2
    log = true            # sample on a log scale ("log-float" is the same as float with log = true)

    [model.latent_dim]
    type = "categorical"
    choices = [2, 10, 100]
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistlab.core.config import presets_dir
from mnistlab.core.errors import ConfigError
from mnistlab.core.fsio import read_toml

# The report's grid: 2 learning rates x 2 weight decays x 3 latent sizes = 12 trials.
REPORT_GRID: dict[str, list[str]] = {
    "train.lr": ["1e-3", "2e-2"],
    "train.weight_decay": ["1e-4", "5e-3"],
    "model.latent_dim": ["2", "10", "100"],
}

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_SAFE = re.compile(r"[^A-Za-z0-9_.=+-]")


# ------------------------------------------------------------------------------------------ grids


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """["train.lr=1e-3,2e-2", "model.latent_dim=2,10"] -> {"train.lr": ["1e-3", "2e-2"], ...}.

    Raises ConfigError with a one-line message for a missing '=', a key that is not dotted, an empty
    value, a repeated value or a key given twice."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"--grid {item!r}: expected section.key=v1,v2,... (e.g. train.lr=1e-3,2e-2)")
        if not _KEY.match(key):
            raise ConfigError(f"--grid {item!r}: {key!r} is not a dotted config key such as train.lr")
        if key in grid:
            raise ConfigError(f"--grid {item!r}: {key} is given twice; list all its values in one --grid")
        parts = [v.strip() for v in values.split(",")]
        if not parts or any(not v for v in parts):
            raise ConfigError(f"--grid {item!r}: empty value; write {key}=v1,v2 with no empty items")
        if len(set(parts)) != len(parts):
            raise ConfigError(f"--grid {item!r}: a value is repeated")
        grid[key] = parts
    return grid


def grid_points(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Cartesian product in the order given: the last key varies fastest."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def overrides_of(point: dict[str, Any]) -> list[str]:
    """{"train.lr": 0.001} -> ["train.lr=0.001"] (floats written with repr, so they round-trip)."""
    return [f"{k}={_text(v)}" for k, v in point.items()]


def _text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def trial_name(point: dict[str, Any]) -> str:
    """A folder name that is a pure function of the overrides, e.g. "lr=1e-3_weight_decay=1e-4_latent_dim=2".

    Leaf names are used where they are unique among the point's keys, the dotted key elsewhere. A
    name that had to be cleaned or shortened gets a hash of the exact overrides, so two different
    points never share a folder."""
    leaves = [k.rsplit(".", 1)[-1] for k in point]
    labels = [leaf if leaves.count(leaf) == 1 else key for leaf, key in zip(leaves, point)]
    raw = "_".join(f"{label}={_text(v)}" for label, v in zip(labels, point.values())) or "base"
    safe = _SAFE.sub("-", raw)
    if safe != raw or len(safe) > 100:
        digest = hashlib.sha256("\n".join(overrides_of(point)).encode()).hexdigest()[:8]
        safe = f"{safe[:90]}-{digest}"
    return safe


# ---------------------------------------------------------------------------------- Optuna spaces

_FIELDS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}


@dataclass(frozen=True)
class Param:
    """One searched config key and its distribution."""

    key: str  # dotted config key, e.g. "train.lr"
    kind: str  # "float" | "int" | "categorical"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def first(self) -> Any:
        """A value inside the space, used to check that the key exists in the task's config."""
        return self.choices[0] if self.kind == "categorical" else self.low


def _leaves(doc: dict[str, Any], prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Flatten nested TOML tables to (dotted key, table) for every table that has a `type`."""
    out = []
    for name, value in doc.items():
        key = f"{prefix}.{name}" if prefix else name
        if not isinstance(value, dict):
            raise ConfigError(f"search space: {key} must be a table with a type, not {value!r}")
        if "type" in value:
            out.append((key, value))
        else:
            out.extend(_leaves(value, key))
    return out


def _param(key: str, spec: dict[str, Any], source: str) -> Param:
    where = f"{source}: [{key}]"
    kind = spec["type"]
    log = bool(spec.get("log", False))
    if kind == "log-float":
        kind, log = "float", True
    if kind not in _FIELDS:
        raise ConfigError(f"{where}: type must be float, log-float, int or categorical, not {kind!r}")
    unknown = set(spec) - _FIELDS[kind]
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))} for type {kind}")
    if not _KEY.match(key):
        raise ConfigError(f"{where}: {key!r} is not a dotted config key such as train.lr")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: categorical needs a non-empty list `choices`")
        if any(isinstance(c, (list, dict)) for c in choices):
            raise ConfigError(f"{where}: choices must be numbers, strings or booleans")
        return Param(key, kind, choices=tuple(choices))
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: {kind} needs `low` and `high`")
    low, high, step = spec["low"], spec["high"], spec.get("step")
    number = int if kind == "int" else (int, float)
    for name, v in (("low", low), ("high", high), ("step", step)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, number)):
            raise ConfigError(f"{where}: {name} must be {'an integer' if kind == 'int' else 'a number'}")
    if not low < high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log scale needs low > 0, got {low}")
    if log and step is not None:
        raise ConfigError(f"{where}: step and log cannot be combined")
    if kind == "float":
        low, high = float(low), float(high)
    return Param(key, kind, low, high, log, step)


def parse_space(doc: dict[str, Any], source: str = "search space") -> list[Param]:
    params = [_param(key, spec, source) for key, spec in _leaves(doc)]
    if not params:
        raise ConfigError(f"{source}: declares no parameters (add tables such as [train.lr] with a type)")
    return params


def load_space(path: Path) -> list[Param]:
    """Read and check a search-space TOML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search space file {path} does not exist")
    return parse_space(read_toml(path), str(path))


def default_space_path(task: str) -> Path:
    """The search space shipped for `task` (configs/spaces/<task>.toml)."""
    path = presets_dir() / "spaces" / f"{task}.toml"
    if not path.is_file():
        raise ConfigError(f"no default search space for task {task!r}; pass --space FILE.toml")
    return path


def suggest(trial: Any, space: list[Param]) -> dict[str, Any]:
    """Ask an Optuna trial (or FixedTrial) for one value per parameter: {dotted key: value}."""
    point = {}
    for p in space:
        if p.kind == "categorical":
            point[p.key] = trial.suggest_categorical(p.key, list(p.choices))
        elif p.kind == "int":
            point[p.key] = trial.suggest_int(p.key, p.low, p.high, step=p.step or 1, log=p.log)
        else:
            point[p.key] = trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)
    return point

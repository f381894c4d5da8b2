"""Experiment configs: frozen dataclasses composed per task, read from TOML presets, with dotted
`--set section.key=value` overrides that are type-checked; unknown keys are errors, never ignored.

A preset file holds a shared [data] table and one table per task, e.g. [ae.model] and [ae.train].
A run folder's config.toml uses the same layout plus `task = "..."`, so it is itself a valid preset.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from mnistlab.data import DataConfig
from mnistlab.errors import ConfigError, check
from mnistlab.fsio import atomic_write_bytes, read_toml
from mnistlab.models.autoencoder import AEConfig
from mnistlab.models.classifier import ClassifierConfig
from mnistlab.models.gan import GANConfig
from mnistlab.noise import NoiseConfig
from mnistlab.run_plan import RunPlan
from mnistlab.train.gan import GANTrainConfig
from mnistlab.train.loop import TrainConfig
from mnistlab.train.probe_config import ProbeExperiment


@dataclass(frozen=True)
class AEExperiment:
    data: DataConfig = field(default_factory=DataConfig)
    model: AEConfig = field(default_factory=AEConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class DAEExperiment:
    """The autoencoder trained on noisy inputs against clean targets."""

    data: DataConfig = field(default_factory=DataConfig)
    model: AEConfig = field(default_factory=AEConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)


@dataclass(frozen=True)
class AugmentConfig:
    max_shift: int = 2  # each training digit moves by a random whole number of pixels in [-s, s]

    def __post_init__(self):
        check(0 <= self.max_shift <= 8, f"augment.max_shift must be in [0, 8], got {self.max_shift}")


@dataclass(frozen=True)
class ClassifierExperiment:
    """The reference digit classifier (reference.py) that the generation metrics measure against."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ClassifierConfig = field(default_factory=ClassifierConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class GANExperiment:
    data: DataConfig = field(default_factory=DataConfig)
    model: GANConfig = field(default_factory=GANConfig)
    train: TrainConfig = field(default_factory=TrainConfig)  # train.lr is the generator's
    gan: GANTrainConfig = field(default_factory=GANTrainConfig)


# Task name -> experiment type. "probe" is not trained by `mnistlab train`: `mnistlab probe RUN_DIR`
# reads its [probe.*] tables; "run" is the [run] table of `mnistlab run` (which stages, how).
TASKS: dict[str, type] = {
    "ae": AEExperiment,
    "dae": DAEExperiment,
    "probe": ProbeExperiment,
    "classifier": ClassifierExperiment,
    "gan": GANExperiment,
    "run": RunPlan,
}


def presets_dir() -> Path:
    packaged = Path(__file__).parent / "_configs"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "configs"


def preset_names() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.toml"))


def _preset_path(preset: str) -> Path:
    path = Path(preset)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"preset file {path} does not exist")
        return path
    candidate = presets_dir() / f"{preset}.toml"
    if not candidate.is_file():
        raise ConfigError(
            f"unknown preset {preset!r}; choose one of {', '.join(preset_names())} or a .toml path"
        )
    return candidate


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Check (TOML values) or parse (CLI strings) `value` as `typ`."""
    origin = typing.get_origin(typ)
    if origin is tuple:
        inner = typing.get_args(typ)[0]
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(v, inner, where) for v in items)
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


def _apply(obj: Any, updates: dict[str, Any], where: str) -> Any:
    """Return a copy of dataclass `obj` with `updates` (nested dicts for nested dataclasses)."""
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in updates.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise ConfigError(f"unknown key {path!r}; known keys here: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{path} is a table, set its keys (e.g. {path}.{next(iter(hints))})")
            changes[key] = _apply(current, value, path)
        else:
            changes[key] = _coerce(value, hints[key], path)
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


def load_experiment(task: str, preset: str = "default", overrides: list[str] | None = None) -> Any:
    """Build the frozen experiment config for `task` from a preset and `--set` overrides."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; known: {', '.join(sorted(TASKS))}")
    path = _preset_path(preset)
    return experiment_from_doc(read_toml(path), task, str(path), overrides or [])


def experiment_from_doc(doc: dict[str, Any], task: str, source: str, overrides: list[str]) -> Any:
    unknown = set(doc) - set(TASKS) - {"data", "task"}
    if unknown:
        raise ConfigError(f"{source}: unknown table(s) {', '.join(sorted(unknown))}")
    exp = TASKS[task]()
    if "data" in doc:
        exp = _apply(exp, {"data": doc["data"]}, "")
    exp = _apply(exp, doc.get(task, {}), "")
    return _apply(exp, _nest(overrides), "")


def to_doc(exp: Any, task: str) -> dict[str, Any]:
    """The preset-shaped dict of `exp`: [data] shared, everything else under [task]."""
    plain = dataclasses.asdict(exp)
    data = plain.pop("data")
    return {"task": task, "data": data, task: plain}


def save_experiment(path: Path, exp: Any, task: str) -> None:
    atomic_write_bytes(path, tomli_w.dumps(to_doc(exp, task)).encode())


def load_run_config(run_dir: Path) -> tuple[str, Any]:
    """(task, experiment) of a run folder, from its config.toml."""
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no config.toml)")
    doc = read_toml(path)
    task = doc.get("task")
    if task not in TASKS:
        raise ConfigError(f"{path}: unknown task {task!r}")
    return task, experiment_from_doc(doc, task, str(path), [])

"""The task registry: every model mnistlab trains is a task, described by one `TaskSpec`.

A task module (tasks/ae.py, dae.py, vae.py, gan.py, cgan.py, classifier.py, or a third party's module
named by an entry point of the group `mnistlab.tasks`) calls `register(TaskSpec(...))`. Everything
else asks this registry: `get(name)` for a task (an unknown name is a one-line error listing the known
ones), `with_role(role)` for the tasks whose trained runs can encode, decode, generate, denoise or
classify, `load_experiment` for a task's config from a preset, and `load_run` for a finished run folder
as a `TrainedRun`, whose roles are methods. No consumer compares task names (timm's register_model /
create_model; Pythae's one folder per model).

A task's preset tables live in its own module (`TaskSpec.presets`: preset name -> tables); a preset
file's [<task>.*] tables override them, so a new task needs no edit of the shared preset files.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mnistlab.core import config
from mnistlab.core.errors import ConfigError
from mnistlab.core.fsio import read_toml
from mnistlab.core.plugins import load_plugins
from mnistlab.runs.folder import check_task
from mnistlab.training.loop import resolve_device

log = logging.getLogger("mnistlab")

ROLES = ("encoder", "decoder", "generator", "denoiser", "classifier")
# The kinds of trained run a task's `train` can read (TaskSpec.run_inputs) and a task's runs can serve
# as (TaskSpec.provides): "autoencoder" is a plain autoencoder run that a denoiser compares with and
# starts from, a VAE starts from, and the study's probe and latent stages read; "gan" is a run of the
# report's unconditional GAN, which a conditional GAN starts from.
RUN_KINDS = ("autoencoder", "gan")
ENTRY_POINT_GROUP = "mnistlab.tasks"


@dataclass(frozen=True)
class TaskSpec:
    """Everything the rest of mnistlab needs to know about a task.

    train(exp, out, resume=False, progress=True, **options) -> summary dict: trains into run folder
        `out` (config.toml, metrics.jsonl, checkpoints/, figures/, summary.json); `options` are the
        names in `options`, and `on_epoch_end` when `prunable` (Optuna's pruner calls through it).
    load(run_dir, exp, device) -> TrainedRun: the finished run, its roles as methods.
    evaluate(run_dir, exp, device, **options) -> dict: recompute the test numbers (`mnistlab eval`).
    report(run, stage) -> plots.content.Section: the task's part of the study report.
    run_inputs(exp) -> {option: kind}: the trained runs its `train` reads under config `exp`, by the
        option that takes the folder and the kind of run (RUN_KINDS); `mnistlab run` passes its
        stage of that kind, `mnistlab train` the user's --baseline (autoencoder) or --gan-run (gan).
    provides: the kinds of run (RUN_KINDS) its runs can serve as.
    sample_options: the SampleRequest fields beyond sampler, n, seed and digit that its generator reads
        (`mnistlab sample --steps/--guidance`); its generator lists them as `options` too.
    val_metrics: the names its training's `evaluate()` returns, which the loop logs as val_<name> in
        metrics.jsonl: a search refuses an objective outside them before training anything (() = not
        declared: the search finds out after its first trial).
    The whole contract, with summary.json's layout: docs/plugins.md.
    """

    name: str
    description: str
    experiment: type  # a frozen dataclass with at least `data` (DataConfig) and `train` (TrainConfig)
    train: Callable[..., dict]
    load: Callable[[Path, Any, torch.device], TrainedRun]
    roles: frozenset[str] = frozenset()
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    evaluate: Callable[..., dict] | None = None
    report: Callable[[Any, str], Any] | None = None
    run_inputs: Callable[[Any], Mapping[str, str]] = field(default=lambda exp: {})
    provides: frozenset[str] = frozenset()
    order: int = 100  # its place in listings (smaller first)
    options: tuple[str, ...] = ()
    prunable: bool = False
    conditional: bool = False  # its generator can be asked for a digit
    sample_options: tuple[str, ...] = ()  # SampleRequest fields its generator reads: "steps", "guidance"
    val_metrics: tuple[str, ...] = ()  # what its `evaluate()` returns in training (logged as val_<name>)

    def __post_init__(self):
        unknown = set(self.roles) - set(ROLES)
        if unknown:
            raise ValueError(f"task {self.name!r}: unknown roles {sorted(unknown)}; roles are {ROLES}")
        kinds = set(self.provides) - set(RUN_KINDS)
        if kinds:
            raise ValueError(f"task {self.name!r}: unknown run kinds {sorted(kinds)}; kinds are {RUN_KINDS}")
        if not self.name.isidentifier():
            raise ValueError(f"task name {self.name!r} must be an identifier (it names preset tables)")


_TASKS: dict[str, TaskSpec] = {}
_BROKEN: dict[str, str] = {}  # entry point name -> why it failed to load
_loaded = False


def register(spec: TaskSpec, replace: bool = False) -> TaskSpec:
    """Add `spec` to the registry (a second task of the same name is an error unless `replace`)."""
    if not isinstance(spec, TaskSpec):
        raise TypeError(f"register() takes a TaskSpec, got {type(spec).__name__}")
    if spec.name in _TASKS and not replace and _TASKS[spec.name] is not spec:
        raise ValueError(f"a task named {spec.name!r} is already registered")
    if spec.name in config.COMMAND_TABLES or spec.name in ("data", "task"):
        raise ValueError(f"{spec.name!r} names a preset table of its own; choose another task name")
    _TASKS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a task (tests register temporary ones)."""
    _TASKS.pop(name, None)


def _load_all() -> None:
    """Import every module of this package (the built-in tasks: a new one is a new file here, nothing
    to edit), then the entry points of ENTRY_POINT_GROUP, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    _BROKEN.update(load_plugins(__name__, ENTRY_POINT_GROUP, register, TaskSpec, "task"))


def get(name: str) -> TaskSpec:
    """The task called `name`; a one-line ConfigError naming the known tasks otherwise."""
    _load_all()
    if name in _TASKS:
        return _TASKS[name]
    if name in _BROKEN:
        raise ConfigError(_BROKEN[name])
    close = difflib.get_close_matches(str(name), list(_TASKS), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"unknown task {name!r}; {hint}known tasks: {', '.join(names())}")


def all_tasks() -> list[TaskSpec]:
    _load_all()
    return sorted(_TASKS.values(), key=lambda s: (s.order, s.name))


def names() -> list[str]:
    return [s.name for s in all_tasks()]


def with_role(role: str) -> list[TaskSpec]:
    """The tasks whose trained runs have `role` (in listing order)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    return [s for s in all_tasks() if role in s.roles]


def plain_coder(roles: frozenset[str]) -> bool:
    """Encodes and decodes without denoising: the autoencoder a denoiser is compared with (and starts
    from), the one whose code the explorer maps."""
    return {"encoder", "decoder"} <= roles and "denoiser" not in roles


# --------------------------------------------------------------------------------- configs


def check_tables(doc: dict[str, Any], source: str) -> None:
    """A preset's top-level tables must be [data], a task's or a command's ([probe], [run])."""
    known = {"data", "task", *config.COMMAND_TABLES, *names()}
    unknown = sorted(set(doc) - known)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"{source}: unknown table(s) {', '.join(unknown)}{hint}; tasks are {', '.join(names())}"
        )


def experiment_from_doc(
    doc: dict[str, Any], task: str, source: str, overrides: list[str], preset: str | None = None
) -> Any:
    """The config of `task` from a preset document: the task's own table for the built-in `preset`
    (if any), overridden by the document's tables and then `overrides`."""
    check_tables(doc, source)
    if task in config.COMMAND_TABLES:
        return config.build(config.table_type(task), task, doc, source, overrides)
    spec = get(task)
    base = dict(spec.presets.get(preset, {})) if preset else {}
    return config.build(spec.experiment, task, doc, source, overrides, base)


def load_experiment(task: str, preset: str = "default", overrides: list[str] | None = None) -> Any:
    """The frozen config of `task` (a registered task, or a command table such as "probe") from a
    preset name or a .toml file, plus `--set` style overrides ("train.lr=1e-3")."""
    if task not in config.COMMAND_TABLES:
        get(task)  # an unknown task is named before the preset is read
    path = config.preset_path(preset)
    return experiment_from_doc(
        read_toml(path), task, str(path), list(overrides or []), config.preset_name(preset)
    )


def load_run_config(run_dir: Path) -> tuple[str, Any]:
    """(task, config) of a run folder, from its config.toml."""
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no config.toml)")
    doc = read_toml(path)
    task = doc.get("task")
    if not isinstance(task, str):
        raise ConfigError(f'{path}: no task name (task = "...")')
    check_task(run_dir, task)  # a config.toml edited to name another task than the run's records
    return task, experiment_from_doc(doc, task, str(path), [])


# --------------------------------------------------------------------------------- trained runs


class RoleError(ConfigError):
    """A run was asked for something its task cannot do."""


def as_images(images: Any) -> torch.Tensor:
    """uint8 (0..255) or float (0..1) images, (N, 28, 28) or (N, 1, 28, 28), as float (N, 1, 28, 28)."""
    x = torch.as_tensor(images)
    if x.ndim == 2:
        x = x[None]
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise ConfigError(f"images must be (N, 28, 28) or (N, 1, 28, 28), got {tuple(x.shape)}")
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


class TrainedRun:
    """A finished run folder, loaded: what its task can do, as methods. Each method of a role the
    task lacks raises a one-line RoleError naming the tasks that have it. Subclasses (in the task
    modules) override the methods of their roles."""

    def __init__(self, spec: TaskSpec, path: Path, exp: Any, device: torch.device):
        self.spec, self.path, self.exp, self.device = spec, Path(path), exp, device

    @property
    def task(self) -> str:
        return self.spec.name

    @property
    def roles(self) -> frozenset[str]:
        return self.spec.roles

    def require(self, role: str) -> None:
        if role not in self.roles:
            can = ", ".join(s.name for s in with_role(role)) or "none"
            raise RoleError(
                f"{self.path} holds a {self.task} run, which has no {role}; tasks with one: {can}"
            )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.task} {self.path} roles={sorted(self.roles)}>"

    # Roles. Images in: uint8 or float (see as_images). Images out: float (N, 28, 28) in [0, 1],
    # except generate: uint8 (N, 28, 28), as `mnistlab sample` writes them.
    def encode(self, images: Any) -> torch.Tensor:  # -> codes (N, d)
        self.require("encoder")
        raise NotImplementedError

    def decode(self, codes: Any) -> torch.Tensor:
        self.require("decoder")
        raise NotImplementedError

    def generate(
        self, n: int, digit: int | None = None, seed: int = 0, sampler: str | None = None
    ) -> torch.Tensor:
        self.require("generator")
        raise NotImplementedError

    def denoise(self, images: Any) -> torch.Tensor:
        self.require("denoiser")
        raise NotImplementedError

    def classify(self, images: Any) -> torch.Tensor:  # -> class probabilities (N, 10)
        self.require("classifier")
        raise NotImplementedError

    # What consumers that train or map with the networks use (probe, latent, the explorer).
    def modules(self, role: str) -> Any:
        """encoder: nn.Module (B, 1, 28, 28) -> (B, d); decoder: (B, d) -> (B, 1, 28, 28)."""
        self.require(role)
        raise NotImplementedError

    def generator(self) -> Any:
        """An object with `samplers` (names, the first the default) and `sample(request) -> uint8
        (n, 28, 28)` for a latent.SampleRequest; conditional tasks also take `request.digit`."""
        self.require("generator")
        raise NotImplementedError


def load_run(run_dir: Path | str, device: str | torch.device = "cpu", role: str | None = None) -> TrainedRun:
    """The finished run in `run_dir` as a TrainedRun; with `role`, a run without it is a one-line
    error. A run that has not finished (no checkpoint) is a one-line error too."""
    run_dir = Path(run_dir)
    task, exp = load_run_config(run_dir)
    spec = get(task)
    if role is not None and role not in spec.roles:  # before loading any weights
        TrainedRun(spec, run_dir, exp, torch.device("cpu")).require(role)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    return spec.load(run_dir, exp, dev)


def train(
    task: str,
    preset: str = "default",
    overrides: list[str] | None = None,
    out: Path | str | None = None,
    resume: bool = False,
    progress: bool = True,
    **options: Any,
) -> dict:
    """Train `task` with `preset` plus `overrides` into run folder `out` (default runs/<task>-<preset>);
    returns its summary. `options` are the task's own (e.g. a DAE's `baseline`)."""
    spec = get(task)
    unknown = set(options) - set(spec.options) - ({"on_epoch_end"} if spec.prunable else set())
    if unknown:
        allowed = ", ".join(spec.options) or "none"
        raise ConfigError(
            f"task {task} takes no option {', '.join(sorted(unknown))} (its options: {allowed})"
        )
    exp = load_experiment(task, preset, overrides)
    out = Path(out) if out is not None else Path("runs") / f"{task}-{Path(preset).stem}"
    return spec.train(exp, out, resume=resume, progress=progress, **options)

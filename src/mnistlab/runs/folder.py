"""A run folder: runs/<name>/ with config.toml, command.txt, metrics.jsonl, summary.json,
checkpoints/, figures/ and tensorboard/. This module creates, checks and reads them."""

from __future__ import annotations

import shlex
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import tomli_w

from mnistlab.core.config import build, save_experiment, to_doc
from mnistlab.core.errors import ConfigError
from mnistlab.core.fsio import atomic_write_bytes, read_json_file, read_jsonl, read_toml, write_json
from mnistlab.runs import owner
from mnistlab.runs.checkpoint import CheckpointError, module_state, read_checkpoint
from mnistlab.runs.records import check_metrics, check_run, check_summary

_cli_args: list[str] | None = None  # the arguments of the `mnistlab` command being run, if any


@contextmanager
def cli_command(args: list[str]) -> Iterator[None]:
    """While the CLI runs `mnistlab ARGS`, the run folders it writes record that command, and the
    folders it claims stay locked until it ends (owner.session)."""
    with recording_command(args), owner.session():
        yield


def cli_args() -> list[str] | None:
    """The arguments of the `mnistlab` command this process runs under (None outside the CLI): what
    a process it starts for a study stage passes on to `recording_command`."""
    return None if _cli_args is None else list(_cli_args)


@contextmanager
def recording_command(args: list[str] | None) -> Iterator[None]:
    """Run folders written inside record `mnistlab ARGS` as their command (None: this process's own
    command line); a study stage's process runs inside its parent's."""
    global _cli_args
    outer, _cli_args = _cli_args, None if args is None else list(args)
    try:
        yield
    finally:
        _cli_args = outer


def command_line() -> str:
    """How this run was started, for command.txt and the report: `mnistlab ...` under the CLI; a run
    started from Python (a notebook, a test) records the Python process's own command line."""
    if _cli_args is not None:
        return shlex.join(["mnistlab", *_cli_args])
    return "python: " + shlex.join(sys.argv)


def prepare(out: Path, exp: Any, task: str, resume: bool) -> Path:
    """Claim `out` for a run (owner.claim: new, empty or a run of mnistlab's) and create it, or check
    that a resumed run has the same config."""
    out = owner.claim(out, "train")
    cfg_path = out / "config.toml"
    if cfg_path.exists():
        if not resume:
            raise ConfigError(
                f"{out} already holds a run; pass --resume to continue it, --force to replace it "
                "or choose another --out"
            )
        changed = _changed_keys(out, exp, task)
        if changed:
            raise ConfigError(
                f"{out}: --resume with a different config than the run's config.toml ({', '.join(changed)})"
            )
    try:
        (out / "figures").mkdir(parents=True, exist_ok=True)
        (out / "checkpoints").mkdir(exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create run folder {out}: {e.strerror}") from None
    save_experiment(cfg_path, exp, task)
    atomic_write_bytes(out / "command.txt", (command_line() + "\n").encode())
    return out


def _changed_keys(out: Path, exp: Any, task: str) -> list[str]:
    """Dotted config keys whose values differ between the run folder's config.toml and `exp`.

    The saved file is parsed like any run config, so a field that did not exist when the run started
    takes its default: a run folder from an older mnistlab resumes when nothing it set has changed.
    """
    saved_task, saved = load_config(out, type(exp))
    if saved_task != task:
        return [f"task {saved_task} -> {task}"]
    old, new = _flat(_roundtrip(to_doc(saved, task))), _flat(_roundtrip(to_doc(exp, task)))
    return [
        f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
        for k in sorted(old.keys() | new.keys())
        if old.get(k) != new.get(k)
    ]


def load_config(run_dir: Path, exp_type: type, expect: str | None = None) -> tuple[str, Any]:
    """(task, config) of a run folder, its config.toml read as `exp_type` (for loaders that know the
    type; `mnistlab.tasks.load_run_config` finds the type from the task name); `expect` names the
    only task accepted."""
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no config.toml)")
    doc = read_toml(path)
    task = doc.get("task")
    if not isinstance(task, str):
        raise ConfigError(f'{path}: no task name (task = "...")')
    check_task(run_dir, task)
    if expect is not None and task != expect:
        raise ConfigError(f"{run_dir} holds a {task!r} run, not a {expect} run")
    return task, build(exp_type, task, doc, str(path), [])


def check_task(run_dir: Path, task: str) -> None:
    """A one-line error when config.toml names task `task` but the run's summary.json was written by
    a run of another task (a config edited by hand): its weights and records are that task's."""
    recorded = read_summary(run_dir).get("task")
    if recorded is not None and recorded != task:
        raise ConfigError(
            f"{run_dir}: config.toml names task {task!r} but summary.json records a {recorded!r} run; "
            f'restore task = "{recorded}" in config.toml'
        )


def _flat(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _roundtrip(doc: dict[str, Any]) -> dict[str, Any]:
    return tomllib.loads(tomli_w.dumps(doc))


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    write_json(Path(run_dir) / "summary.json", summary)


def read_summary(run_dir: Path) -> dict[str, Any]:
    """A run's summary.json ({} before it has one); a file that is not a JSON object is one line."""
    path = Path(run_dir) / "summary.json"
    return check_summary(read_json_file(path), path) if path.exists() else {}


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return check_metrics(read_jsonl(path), path)


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "last.safetensors"


def read_run_checkpoint(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, state) of a run's last checkpoint, verified against the run's records: the hash
    written next to it, and summary.json's checkpoint_sha256 once the run finished. Every loader of a
    run's checkpoint goes through here (load_weights, a resumed fit)."""
    path = checkpoint_path(run_dir)
    if not path.exists():
        raise ConfigError(f"{run_dir} has no checkpoint ({path}); train it first")
    return read_checkpoint(path, expected_sha256=read_summary(run_dir).get("checkpoint_sha256"))


def load_weights(run_dir: Path, module: Any, name: str = "model") -> Any:
    """Load module `name` of a run's last checkpoint into `module` (safetensors only, verified)."""
    path = checkpoint_path(run_dir)
    tensors, _ = read_run_checkpoint(run_dir)
    try:
        module.load_state_dict(module_state(tensors, name))
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the run's config ({e})") from e
    return module


# ----------------------------------------------------------------------- study folders (`mnistlab run`)

RUN_FILE = "run.json"


def read_run(out: Path) -> dict[str, Any]:
    """The run.json of a `mnistlab run` study folder; a one-line error when it is not one."""
    path = Path(out) / RUN_FILE
    if not path.is_file():
        raise ConfigError(f"{out} is not a run folder of `mnistlab run` (no {RUN_FILE})")
    return check_run(read_json_file(path), path)  # the file's type and each stage's fields checked

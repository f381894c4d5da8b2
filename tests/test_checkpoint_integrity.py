"""Checkpoints are written deterministically and verified on every load: against the hash recorded
next to them as they are written, and against summary.json's checkpoint_sha256 once a run finished."""

from __future__ import annotations

import dataclasses
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

import mnistlab
from mnistlab import cli
from mnistlab.data.datasets import Split
from mnistlab.runs import checkpoint as ckpt
from mnistlab.runs import folder as rundir
from mnistlab.runs.checkpoint import CheckpointError
from mnistlab.training.loop import TrainConfig, fit
from tests.conftest import assert_one_line_error, write_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = [
    "--set",
    "train.epochs=1",
    "--set",
    "train.batch_size=16",
    "--set",
    "model.latent_dim=3",
    "--device",
    "cpu",
    "--no-progress",
]

# Builds the same small model and Adam state in any process, then saves them to each of PATHS. The
# RNGs are seeded again just before saving, since their states are part of the checkpoint.
SAVE_SCRIPT = """
import random, sys
import numpy as np, torch
from mnistlab.runs.checkpoint import save_checkpoint

def seed():
    random.seed(1); np.random.seed(1); torch.manual_seed(1)

seed()
model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
model(torch.ones(5, 4)).square().sum().backward()
opt.step()
seed()
for path in PATHS:
    save_checkpoint(path, {"model": model}, {"model": opt}, epoch=3, step=7, extra={"z": 1, "a": 2})
"""


def _save_in_subprocess(path: Path) -> None:
    src = str(Path(mnistlab.__file__).resolve().parents[1])  # the mnistlab under test, not another copy
    script = f"PATHS = [{str(path)!r}]\n{SAVE_SCRIPT}"
    env = {"PYTHONPATH": src, "PATH": "/usr/bin:/bin"}  # a fresh PYTHONHASHSEED too
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)


def _save_here(paths: list[Path]) -> None:
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        exec(SAVE_SCRIPT, {"PATHS": paths})
    finally:  # leave the other tests' RNGs as they were
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def test_the_same_state_saved_twice_and_by_two_processes_gives_identical_bytes(tmp_path):
    # safetensors writes metadata keys in a random order per save, so several saves in one process
    # already tell a deterministic writer from one that is right only by chance.
    here = [tmp_path / f"a{i}.safetensors" for i in range(6)]
    _save_here(here)
    _save_in_subprocess(tmp_path / "b.safetensors")
    reference = here[0].read_bytes()
    assert all(p.read_bytes() == reference for p in [*here[1:], tmp_path / "b.safetensors"])


def _flip_last_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01  # a tensor byte: the file still parses as safetensors, only its hash tells
    path.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory) -> Path:
    """A finished `mnistlab train ae` run folder; tests change copies of it."""
    base = tmp_path_factory.mktemp("integrity")
    data = write_dataset(base / "idx", n_train=64, n_test=16)
    out = base / "run"
    argv = ["-q", "train", "ae", "--preset", "quick", "--data-dir", str(data), "--out", str(out), *TINY]
    assert cli.main(argv) == 0
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def test_eval_refuses_a_checkpoint_with_one_flipped_byte(ae_run, tmp_path, capsys):
    run = _copy(ae_run, tmp_path)
    assert cli.main(["-q", "eval", str(run), "--device", "cpu"]) == 0  # intact, it evaluates
    capsys.readouterr()
    _flip_last_byte(rundir.checkpoint_path(run))
    assert cli.main(["-q", "eval", str(run), "--device", "cpu"]) == 2
    err = assert_one_line_error(capsys, "last.safetensors: changed since it was written")
    assert "last.safetensors.sha256" in err


def test_a_run_folder_from_before_the_sidecar_is_verified_by_its_summary(ae_run, tmp_path, capsys):
    """Old layout (format as a second metadata key), no sidecar, summary.json holding the hash."""
    run = _copy(ae_run, tmp_path)
    path = rundir.checkpoint_path(run)
    tensors, state = ckpt.read_checkpoint(path)
    state.pop("format")
    path.write_bytes(st_save(tensors, metadata={"format": ckpt.FORMAT, "state": json.dumps(state)}))
    ckpt.sidecar_path(path).unlink()
    rundir.write_summary(run, {**rundir.read_summary(run), "checkpoint_sha256": ckpt.file_sha256(path)})
    assert cli.main(["-q", "eval", str(run), "--device", "cpu"]) == 0
    capsys.readouterr()

    _flip_last_byte(path)
    assert cli.main(["-q", "eval", str(run), "--device", "cpu"]) == 2
    err = assert_one_line_error(capsys)
    assert re.search(
        r"changed since it was written \(SHA-256 [0-9a-f]{16}\.\.\., the run's summary\.json "
        r"recorded [0-9a-f]{16}\.\.\.\)",
        err,
    ), err


def test_a_run_folder_with_neither_record_loads_as_before(ae_run, tmp_path, capsys):
    run = _copy(ae_run, tmp_path)
    ckpt.sidecar_path(rundir.checkpoint_path(run)).unlink()
    summary = rundir.read_summary(run)
    del summary["checkpoint_sha256"]
    rundir.write_summary(run, summary)
    _flip_last_byte(rundir.checkpoint_path(run))  # nothing recorded, so nothing can tell
    assert cli.main(["-q", "eval", str(run), "--device", "cpu"]) == 0


class TinyTask:
    """The smallest task the loop trains (one weight on the mean pixel), free of any model registry."""

    def __init__(self):
        self.net = torch.nn.Linear(1, 1)
        opt = torch.optim.SGD(self.net.parameters(), lr=0.1)
        opt.param_groups[0]["base_lr"] = 0.1  # the loop scales each group's base_lr by its schedule
        self.modules, self.optimizers = {"model": self.net}, {"model": opt}

    def train_step(self, images, labels):
        loss = (self.net(images.float().mean((1, 2)).unsqueeze(1) / 255) - 1).square().mean()
        self.optimizers["model"].zero_grad()
        loss.backward()
        self.optimizers["model"].step()
        return {"loss": loss.item()}

    def evaluate(self):
        return {}


def test_resume_refuses_a_changed_checkpoint(tmp_path):
    train = Split(torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8), torch.zeros(8, dtype=torch.int64))
    cfg = TrainConfig(epochs=1, batch_size=4, device="cpu")
    fit(TinyTask(), train, cfg, tmp_path / "a", progress=False)  # an unfinished run: no summary.json
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    more = dataclasses.replace(cfg, epochs=2)
    resumed = fit(TinyTask(), train, more, tmp_path / "b", resume=True, progress=False)  # intact: resumes
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    _flip_last_byte(tmp_path / "a" / "checkpoints" / "last.safetensors")
    with pytest.raises(CheckpointError, match=r"last\.safetensors: changed since it was written") as e:
        fit(TinyTask(), train, more, tmp_path / "a", resume=True, progress=False)
    assert_one_line_error(e)


def _linear():
    model = torch.nn.Linear(2, 2)
    return {"model": model}, {"model": torch.optim.SGD(model.parameters(), lr=0.1)}


def test_a_save_cut_off_between_its_record_and_the_swap_leaves_a_loadable_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.safetensors"
    modules, optimizers = _linear()
    ckpt.save_checkpoint(path, modules, optimizers, epoch=1, step=1)
    real_write = ckpt.atomic_write_bytes

    def killed_before_the_swap(target, data):
        if Path(target) == path:
            raise KeyboardInterrupt
        real_write(target, data)

    monkeypatch.setattr(ckpt, "atomic_write_bytes", killed_before_the_swap)
    with torch.no_grad():
        modules["model"].weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(path, modules, optimizers, epoch=2, step=2)
    monkeypatch.undo()
    assert len(ckpt.recorded_sha256(path)) == 2  # the record already names the file that never landed
    assert ckpt.read_checkpoint(path)[1]["epoch"] == 1
    sha = ckpt.save_checkpoint(path, modules, optimizers, epoch=2, step=2)
    assert ckpt.read_checkpoint(path)[1]["epoch"] == 2 and ckpt.recorded_sha256(path)[0] == sha

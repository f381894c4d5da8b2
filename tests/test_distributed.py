"""Data-parallel training on the CPU with gloo: two processes train the autoencoder (through torchrun and
the CLI) and the GAN (torch.multiprocessing.spawn); only rank 0 writes the run folder; the weights match a
single-process run with the same global batch; a run resumes with another number of processes.

Tolerance, from the arithmetic rather than from one host's measurement: DDP averages the two half-batch
gradients, a single process takes the mean over the whole batch. The two are equal in exact arithmetic;
in float32 the summation order differs (per-half sums, then gloo's all-reduce, and the CPU kernels
themselves: AVX2, AVX-512 and the default kernels sum in other orders), so gradients differ in their
last bits, and Adam, which divides by the root of the running squared gradient, can blow such a
difference up to the size of a step for a weight whose gradient is near zero. So single weights may
differ by a good part of one step, whatever the host. What a bug (a slice missing, doubled, or the
wrong batch) changes is every weight's path, by about a step per step. The test therefore bounds the
root-mean-square difference over all weights by 1% of the largest distance Adam can move a weight
(lr per step, times the steps taken): RMS_SHARE * lr * steps. Measured RMS differences are far below
(see the printed ratio); a wrong batch gives ratios of order 0.1-1.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mnistlab.core import distributed
from mnistlab.core.errors import ConfigError
from mnistlab.runs import folder as rundir
from mnistlab.runs.checkpoint import read_checkpoint
from mnistlab.tasks import load_experiment
from mnistlab.training.autoencoder import train_autoencoder
from mnistlab.training.gan_run import train_gan
from tests.dist_worker import run_rank

RMS_SHARE = 0.01  # of lr x steps: see the module docstring
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo")

# 160 images, 32 held out -> 128 training images = 4 global batches of 32 (16 per rank), no short batch.
AE = [
    "data.train_limit=160",
    "data.test_limit=32",
    "model.dropout=0",
    "train.batch_size=32",
    "train.epochs=3",
    "train.lr=4e-3",
    "train.schedule=onecycle",
    "train.device=cpu",
]
# 24 train + 8 test images merged = 32 = 2 global batches of 16; R1, instance noise and the G average on.
GAN = [
    "data.train_limit=24",
    "data.test_limit=8",
    "train.batch_size=16",
    "train.epochs=3",
    "train.device=cpu",
    "gan.eval_samples=0",
    "gan.final_samples=0",
    "gan.grid_epochs=1,3",
    "gan.grid_size=4",
    "train.lr=2e-4",
    "gan.d_lr=2e-4",
    "gan.loss=bce_logits",
    "gan.r1=1",
    "gan.d_noise=0.1",
    "gan.g_ema=0.9",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weights(run: Path) -> dict[str, torch.Tensor]:
    tensors, _ = read_checkpoint(rundir.checkpoint_path(run))
    return {k: v for k, v in tensors.items() if k.startswith("module/")}


def assert_close(a: Path, b: Path, lr: float, steps: int) -> float:
    """RMS weight difference of two runs, checked against RMS_SHARE of Adam's largest total movement."""
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert not any(".module." in k or "/module." in k for k in wa)  # plain state dicts, no DDP prefix
    sq = sum(((wa[k].double() - wb[k].double()) ** 2).sum().item() for k in wa)
    n = sum(wa[k].numel() for k in wa)
    rms = (sq / n) ** 0.5
    bound = RMS_SHARE * lr * steps
    print(f"RMS weight difference {rms:.3g}, {rms / (lr * steps):.2g} of lr x steps (bound {RMS_SHARE})")
    assert rms < bound, (rms, bound)
    return rms


def losses(run: Path, key: str) -> list[float]:
    return [r[key] for r in rundir.read_history(run)]


def test_autoencoder_crash_on_one_process_resumes_under_torchrun_on_two(tmp_path):
    exp = load_experiment("ae", "seed", AE)
    train_autoencoder(exp, tmp_path / "one", progress=False)

    def crash(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt  # before epoch 2's checkpoint: the run folder holds epoch 1

    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(exp, tmp_path / "two", progress=False, on_epoch_end=crash)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "mnistlab",
        "-q",
        "train",
        "ae",
        "--preset",
        "seed",
        "--no-progress",
        "--resume",
        "--json",
        "--out",
        str(tmp_path / "two"),
        *[a for o in AE for a in ("--set", o)],
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"run"') == 1  # rank 0 alone prints the result

    assert_close(tmp_path / "one", tmp_path / "two", lr=4e-3, steps=3 * 4)
    run = tmp_path / "two"
    assert [r["epoch"] for r in rundir.read_history(run)] == [1, 2, 3]  # each epoch logged once
    assert losses(run, "train_loss") == pytest.approx(losses(tmp_path / "one", "train_loss"), rel=1e-4)
    assert len(list((run / "tensorboard").iterdir())) == 2  # one event file per launch, not per rank
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs"] == 3
    assert read_checkpoint(rundir.checkpoint_path(run))[1]["epoch"] == 3


def test_gan_on_two_processes_matches_one_and_resumes_on_one(tmp_path):
    exp = load_experiment("gan", "seed", GAN)
    train_gan(exp, tmp_path / "one", progress=False)
    # Two ranks; both stop at step 3 (the first of epoch 2), so the folder holds epoch 1 from rank 0.
    args = (2, free_port(), "gan", GAN, str(tmp_path / "two"), 3)
    mp.start_processes(run_rank, args=args, nprocs=2, start_method="spawn")
    run = tmp_path / "two"
    assert [r["epoch"] for r in rundir.read_history(run)] == [1]
    assert read_checkpoint(rundir.checkpoint_path(run))[1]["epoch"] == 1
    assert sorted(p.name for p in (run / "grids").iterdir()) == ["epoch_001.safetensors"]
    assert not (run / "summary.json").exists()  # crashed before the end
    first = rundir.read_history(tmp_path / "one")[0]
    for key in ("train_d_loss", "train_g_loss", "train_d_real", "train_r1"):  # global-batch means
        assert rundir.read_history(run)[0][key] == pytest.approx(first[key], rel=1e-4, abs=1e-6)

    train_gan(exp, run, resume=True, progress=False)  # one process takes over
    assert_close(tmp_path / "one", run, lr=2e-4, steps=3 * 2)
    assert [r["epoch"] for r in rundir.read_history(run)] == [1, 2, 3]
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"


# ----------------------------------------------------------------------- helpers, one process


def test_one_process_is_a_world_of_one():
    world = distributed.current()
    assert not world.enabled and world.is_main and world.world_size == 1
    idx = torch.arange(10)
    assert distributed.shard(idx, world) is idx
    assert distributed.mean_metrics({"loss": 1.5}) == {"loss": 1.5}
    assert distributed.on_main(lambda x: x + 1, 1) == 2


def test_shards_are_equal_contiguous_slices_of_the_global_batch():
    idx = torch.arange(100, 132)
    parts = [distributed.shard(idx, distributed.Dist(r, 4)) for r in range(4)]
    assert torch.equal(torch.cat(parts), idx) and all(len(p) == 8 for p in parts)
    short = torch.arange(10)  # a last batch of 10 on 4 ranks: 2 each, 2 images left out
    assert [distributed.shard(short, distributed.Dist(r, 4)).tolist() for r in range(4)] == [
        [0, 1],
        [2, 3],
        [4, 5],
        [6, 7],
    ]
    draw = torch.arange(12).reshape(6, 2)
    assert distributed.local_rows(draw, distributed.Dist(1, 3)).tolist() == [[4, 5], [6, 7]]


def test_batch_not_divisible_by_the_processes_is_a_one_line_error():
    assert distributed.check_batch(64, distributed.Dist(0, 4)) == 16
    with pytest.raises(ConfigError, match="train.batch_size=30 is not divisible by the 4 processes"):
        distributed.check_batch(30, distributed.Dist(1, 4))


def test_launcher_without_rendezvous_variables_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for var in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="start the processes with torchrun"):
        distributed.init("cpu")

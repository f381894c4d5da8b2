"""The training loop and checkpoints: steps change weights, exact resume, atomic saves, NaN guard,
and refusal of pickled checkpoints."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from mnistlab.core.fsio import read_jsonl
from mnistlab.data.datasets import load
from mnistlab.metrics import images as image_metrics
from mnistlab.models import build_model
from mnistlab.runs import checkpoint as ckpt
from mnistlab.training.autoencoder import AutoencoderTask, evaluate_reconstruction
from mnistlab.training.loop import NonFiniteLossError, TrainConfig, fit, lr_factor, make_optimizer
from mnistlab.training.run_folder import seed_everything
from tests.conftest import not_called, with_train


def make_task(exp):
    seed_everything(exp.train.seed)
    data = load(exp.data)
    model = build_model("conv_autoencoder", exp.model)
    return AutoencoderTask(model, exp.train, data.val, torch.device("cpu")), data


def test_a_step_changes_every_weight(tiny_exp):
    task, data = make_task(tiny_exp)
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    out = task.train_step(data.train.images[:16], data.train.labels[:16])
    assert out["loss"] > 0
    after = task.model.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)


def test_validation_scores_only_the_mse_it_reports_and_the_same_mse(tiny_exp, monkeypatch):
    task, data = make_task(tiny_exp)
    full = evaluate_reconstruction(task.model.eval(), data.val, torch.device("cpu"), task.eval_batch_size)
    assert set(full) == {"mse", "psnr", "ssim"}
    for name in ("psnr", "ssim"):  # an epoch's validation must not compute them
        monkeypatch.setitem(image_metrics.QUALITY, name, not_called)
    assert task.evaluate() == {"loss": full["mse"]}  # the same batches: the same sum, bit for bit
    monkeypatch.undo()
    only = evaluate_reconstruction(
        task.model, data.val, torch.device("cpu"), task.eval_batch_size, scores=("ssim",)
    )
    assert only == {"ssim": full["ssim"]}


def test_fit_writes_metrics_and_checkpoint(tiny_exp, tmp_path):
    task, data = make_task(tiny_exp)
    result = fit(task, data.train, tiny_exp.train, tmp_path, progress=False)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert all({"train_loss", "val_loss", "lr"} <= set(r) for r in result.history)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    tensors, state = ckpt.read_checkpoint(tmp_path / "checkpoints" / "last.safetensors")
    assert state["epoch"] == 3 and state["step"] == 3 * 6
    assert result.checkpoint_sha256 == ckpt.file_sha256(tmp_path / "checkpoints" / "last.safetensors")
    assert list((tmp_path / "tensorboard").iterdir())


def test_checkpoint_round_trip_restores_models_optimizers_and_rng(tiny_exp, tmp_path):
    task, data = make_task(tiny_exp)
    task.train_step(data.train.images[:16], data.train.labels[:16])
    path = tmp_path / "c.safetensors"
    ckpt.save_checkpoint(path, task.modules, task.optimizers, epoch=1, step=1, extra={"note": "x"})
    expected_rand = torch.rand(3)
    fresh, _ = make_task(tiny_exp)
    tensors, state = ckpt.read_checkpoint(path)
    ckpt.restore(tensors, state, fresh.modules, fresh.optimizers)
    for k, v in task.model.state_dict().items():
        assert torch.equal(v, fresh.model.state_dict()[k])
    a, b = task.optimizers["model"].state_dict(), fresh.optimizers["model"].state_dict()
    assert a["param_groups"] == b["param_groups"]
    for pid in a["state"]:
        for key in a["state"][pid]:
            assert torch.equal(torch.as_tensor(a["state"][pid][key]), torch.as_tensor(b["state"][pid][key]))
    assert torch.equal(torch.rand(3), expected_rand) and state["note"] == "x"


class CrashAt:
    """Wraps a task and raises at a given global step, as a killed process would stop."""

    def __init__(self, task, crash_step: int):
        self.task, self.crash_step, self.calls = task, crash_step, 0
        self.modules, self.optimizers = task.modules, task.optimizers

    def train_step(self, images, labels):
        self.calls += 1
        if self.calls == self.crash_step:
            raise KeyboardInterrupt
        return self.task.train_step(images, labels)

    def evaluate(self):
        return self.task.evaluate()


def test_resume_after_crash_equals_uninterrupted_bit_for_bit(tiny_exp, tmp_path):
    exp = with_train(tiny_exp, epochs=4, schedule="onecycle")
    exp = exp.__class__(data=exp.data, model=exp.model.__class__(latent_dim=4, dropout=0.2), train=exp.train)
    task, data = make_task(exp)
    full = fit(task, data.train, exp.train, tmp_path / "a", progress=False)

    task2, data2 = make_task(exp)
    with pytest.raises(KeyboardInterrupt):
        fit(CrashAt(task2, crash_step=6 * 2 + 3), data2.train, exp.train, tmp_path / "b", progress=False)
    torch.manual_seed(999)  # a resumed process starts with whatever RNG state it has
    task3, data3 = make_task(exp)
    resumed = fit(task3, data3.train, exp.train, tmp_path / "b", resume=True, progress=False)

    for k, v in task.model.state_dict().items():
        assert torch.equal(v, task3.model.state_dict()[k]), k
    assert [r["train_loss"] for r in full.history] == [r["train_loss"] for r in resumed.history]
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 4
    # time runs on across the resume: the rows' seconds never go back, the total includes epoch 1
    seconds = [r["seconds"] for r in resumed.history]
    assert seconds == sorted(seconds) and resumed.seconds >= seconds[-1] > seconds[0] > 0


@pytest.mark.parametrize("killed_in", ["_append", "save_checkpoint"])
def test_a_kill_at_an_epochs_end_loses_no_metrics_row(tiny_exp, tmp_path, monkeypatch, killed_in):
    """Killed while epoch 2's row or checkpoint is being written, a resume keeps one row per epoch."""
    from mnistlab.training import loop

    exp = with_train(tiny_exp, epochs=3)
    real = getattr(loop, killed_in)
    calls = []

    def dies_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            real(*args, **kwargs)  # written, then the process dies before the other write
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, killed_in, dies_on_the_second)
    task, data = make_task(exp)
    with pytest.raises(KeyboardInterrupt):
        fit(task, data.train, exp.train, tmp_path / "r", progress=False)
    monkeypatch.setattr(loop, killed_in, real)
    task2, data2 = make_task(exp)
    resumed = fit(task2, data2.train, exp.train, tmp_path / "r", resume=True, progress=False)
    rows = [r["epoch"] for r in read_jsonl(tmp_path / "r" / "metrics.jsonl")]
    assert rows == [1, 2, 3] and [r["epoch"] for r in resumed.history] == [1, 2, 3]


def test_interrupted_save_keeps_previous_checkpoint(tiny_exp, tmp_path, monkeypatch):
    task, _ = make_task(tiny_exp)
    path = tmp_path / "ck" / "last.safetensors"
    ckpt.save_checkpoint(path, task.modules, task.optimizers, epoch=1, step=5)
    before = path.read_bytes()

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(path, task.modules, task.optimizers, epoch=2, step=10)
    assert path.read_bytes() == before
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["last.safetensors", "last.safetensors.sha256"]  # no temp file left behind
    assert ckpt.read_checkpoint(path)[1]["epoch"] == 1


class NaNAt:
    def __init__(self, task, bad_step):
        self.task, self.bad_step, self.calls = task, bad_step, 0
        self.modules, self.optimizers = task.modules, task.optimizers

    def train_step(self, images, labels):
        self.calls += 1
        out = self.task.train_step(images, labels)
        return {"loss": float("nan")} if self.calls == self.bad_step else out

    def evaluate(self):
        return self.task.evaluate()


def test_non_finite_loss_stops_cleanly_and_keeps_last_good_checkpoint(tiny_exp, tmp_path):
    task, data = make_task(tiny_exp)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 8.*last good checkpoint"):
        fit(NaNAt(task, bad_step=8), data.train, tiny_exp.train, tmp_path, progress=False)
    state = ckpt.read_checkpoint(tmp_path / "checkpoints" / "last.safetensors")[1]
    assert state["epoch"] == 1
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


class Payload:
    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_checkpoint_is_refused_without_running_it(tmp_path):
    Payload.marker = tmp_path / "pwned"
    for i, writer in enumerate((lambda p, o: torch.save(o, p), lambda p, o: p.write_bytes(pickle.dumps(o)))):
        path = tmp_path / f"{i}.safetensors"
        writer(path, {"model": Payload()})
        with pytest.raises(ckpt.CheckpointError, match="never unpickles"):
            ckpt.read_checkpoint(path)
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ckpt.CheckpointError, match="not a valid"):
        ckpt.read_checkpoint(garbage)
    assert not Payload.marker.exists()


def test_lr_schedules():
    assert lr_factor("constant", 50, 100) == 1.0
    peak = lr_factor("onecycle", 25, 100, warmup=0.25)
    assert abs(peak - 1.0) < 1e-3 and lr_factor("onecycle", 0, 100) < 0.05
    assert lr_factor("onecycle", 100, 100) < 1e-3 and lr_factor("cosine", 100, 100) < 1e-9


def test_optimizer_uses_the_fused_kernel_and_takes_the_per_tensor_loops_step():
    # Fine-tuning passes param groups whose "params" are generators: both groups must still be stepped.
    torch.manual_seed(0)
    enc, head = torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)
    cfg = TrainConfig(optimizer="adamw", lr=1e-2, weight_decay=1e-4)
    groups = [{"params": enc.parameters(), "lr": 1e-3}, {"params": head.parameters()}]
    fused = make_optimizer(groups, cfg)
    start = enc.weight.detach().clone()
    assert fused.defaults["fused"] is True and [len(g["params"]) for g in fused.param_groups] == [2, 2]
    twins = [torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)]
    for twin, net in zip(twins, (enc, head)):
        twin.load_state_dict(net.state_dict())
    plain = torch.optim.AdamW(
        [{"params": twins[0].parameters(), "lr": 1e-3}, {"params": twins[1].parameters()}],
        lr=1e-2,
        weight_decay=1e-4,
    )
    x = torch.randn(8, 4)
    for opt, (a, b) in ((fused, (enc, head)), (plain, twins)):
        for _ in range(5):
            opt.zero_grad()
            b(a(x)).square().mean().backward()
            opt.step()
    for net, twin in zip((enc, head), twins):
        for p, q in zip(net.parameters(), twin.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert not torch.equal(enc.weight, start)  # the encoder's group was stepped too

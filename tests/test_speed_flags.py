"""The GPU path's flags on the CPU: bf16 autocast and channels_last train every task (torch runs both on
the CPU too), bad values are one-line errors, and data stays where it is off the GPU."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from mnistlab import cli
from mnistlab.core.errors import ConfigError
from mnistlab.data.datasets import Split, load, to_float
from mnistlab.models import build_model
from mnistlab.models.autoencoder import AEConfig
from mnistlab.models.classifier import ClassifierConfig
from mnistlab.models.gan import GANConfig
from mnistlab.training import loop
from mnistlab.training.autoencoder import AutoencoderTask
from mnistlab.training.classifier import AugmentConfig, ClassifierTask
from mnistlab.training.gan import GANTask, GANTrainConfig
from mnistlab.training.loop import TrainConfig, amp_mode, autocast, on_device
from mnistlab.training.run_folder import seed_everything
from tests.conftest import assert_one_line_error

CPU = torch.device("cpu")
FAST = {"amp": "bf16", "channels_last": True}


def batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8), torch.arange(n) % 10


def changed(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(not torch.equal(before[k], v) for k, v in module.state_dict().items())


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("flags", [{"amp": "bf16"}, {"channels_last": True}, FAST])
def test_autoencoder_step_with_flags_trains_fp32_weights(tiny_exp, flags):
    seed_everything(0)
    data = load(tiny_exp.data)
    cfg = TrainConfig(batch_size=16, lr=2e-3, device="cpu", **flags)
    task = AutoencoderTask(build_model("conv_autoencoder", tiny_exp.model), cfg, data.val, CPU)
    if cfg.channels_last:
        conv = task.model.encoder.net[2].weight  # (48, 24, 3, 3)
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    before = snapshot(task.model)
    out = task.train_step(data.train.images[:16], data.train.labels[:16])
    assert 0 < out["loss"] < 1 and changed(task.model, before)
    assert all(p.dtype == torch.float32 for p in task.model.parameters())  # autocast leaves weights fp32
    assert task.evaluate()["loss"] > 0


def test_channels_last_computes_the_same_and_bf16_nearly_the_same():
    seed_everything(0)
    model = build_model("conv_autoencoder", AEConfig(latent_dim=4)).eval()
    nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = to_float(batch()[0])  # (16, 1, 28, 28)
    with torch.no_grad():
        ref = model(x).recon
        assert torch.allclose(nhwc(x.contiguous(memory_format=torch.channels_last)).recon, ref, atol=1e-5)
        with autocast(TrainConfig(amp="bf16"), CPU)():
            low = model(x).recon
    assert low.dtype == torch.bfloat16  # the forward really ran in bfloat16 ...
    assert (low.float() - ref).abs().max() < 0.02  # ... and stays within bf16's ~3 significant digits


def test_gan_step_with_bf16_and_channels_last_updates_both_networks():
    torch.manual_seed(0)
    gan = build_model("report_gan", GANConfig())
    cfg = TrainConfig(lr=2e-4, batch_size=8, device="cpu", **FAST)
    task = GANTask(
        gan, cfg, GANTrainConfig(channels_last=False, r1=1.0, loss="bce_logits"), CPU, total_steps=4
    )
    assert task.memory_format == torch.channels_last  # train.channels_last turns it on for the GAN too
    g0, d0 = snapshot(task.G), snapshot(task.D)
    out = task.train_step(*batch(8))
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values())
    assert changed(task.G, g0) and changed(task.D, d0)
    assert {p.dtype for p in gan.parameters()} == {torch.float32}


def test_classifier_step_with_bf16_and_channels_last():
    torch.manual_seed(0)
    model = build_model("digit_cnn", ClassifierConfig())
    images, labels = batch(16)
    task = ClassifierTask(model, TrainConfig(lr=1e-3, **FAST), AugmentConfig(), Split(images, labels), CPU)
    before = snapshot(task.model)
    out = task.train_step(images, labels)
    assert out["loss"] > 0 and 0 <= out["accuracy"] <= 1
    assert any(not torch.equal(before[k], v) for k, v in task.model.state_dict().items())


def test_bad_amp_values_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="train.amp must be one of off, bf16, auto, not 'fp16'"):
        TrainConfig(amp="fp16")
    with pytest.raises(ConfigError, match="supported on cuda and cpu"):
        autocast(TrainConfig(amp="bf16"), torch.device("meta"))
    assert autocast(TrainConfig(), CPU)() is not None  # "off": a no-op context


@pytest.mark.parametrize("has_bf16", [True, False])
def test_amp_auto_is_bf16_only_on_a_cpu_with_bfloat16_instructions(monkeypatch, has_bf16):
    monkeypatch.setattr(loop, "cpu_has_bf16", lambda: has_bf16)
    auto = TrainConfig(amp="auto")
    assert amp_mode(auto, CPU) == ("bf16" if has_bf16 else "off")
    assert amp_mode(auto, torch.device("cuda")) == "off"  # no GPU measurement backs bf16 there
    assert amp_mode(TrainConfig(amp="bf16"), CPU) == "bf16" and amp_mode(TrainConfig(), CPU) == "off"
    x = to_float(batch(2)[0])
    with autocast(auto, CPU)():
        y = torch.nn.functional.linear(x.flatten(1), torch.ones(3, 784))
    assert y.dtype == (torch.bfloat16 if has_bf16 else torch.float32)


def test_data_stays_in_host_memory_off_the_gpu():
    split = Split(*batch(4))
    assert on_device(split, CPU, TrainConfig()) is split
    assert on_device(split, None, TrainConfig()) is split


def test_cli_trains_with_the_flags_and_rejects_a_bad_value(idx_dir, tmp_path, capsys):
    common = [
        "-q",
        "train",
        "ae",
        "--preset",
        "quick",
        "--data-dir",
        str(idx_dir),
        "--device",
        "cpu",
        "--no-progress",
        "--set",
        "train.epochs=1",
        "--set",
        "train.batch_size=32",
    ]
    out = tmp_path / "run"
    assert (
        cli.main([*common, "--out", str(out), "--set", "train.amp=bf16", "--set", "train.channels_last=true"])
        == 0
    )
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"
    assert 'amp = "bf16"' in (out / "config.toml").read_text()
    assert cli.main([*common, "--out", str(tmp_path / "bad"), "--set", "train.amp=fp8"]) == 2
    assert_one_line_error(capsys, "train.amp must be one of off, bf16")


def test_gpu_check_runs_on_the_cpu_and_names_the_device(capsys):
    from benchmarks import gpu_check

    result = gpu_check.main(["--device", "cpu", "--limit", "32", "--warmup", "1", "--variants", "fp32,bf16"])
    out = capsys.readouterr().out
    assert out.startswith("device: CPU") and result["device"].startswith("CPU")
    assert [(r["model"], r["variant"]) for r in result["rows"]] == [
        ("ae", "fp32"),
        ("gan", "fp32"),
        ("ae", "bf16"),
        ("gan", "bf16"),
    ]
    assert all(r["images"] == 32 and r["images_per_s"] > 0 for r in result["rows"])
    assert "| gan | bf16 | 32 |" in out


@pytest.mark.parametrize(
    "cap, hidden", [("AVX2", True), ("avx512_core_vnni", True), ("AVX512_CORE_BF16", False)]
)
def test_a_onednn_isa_cap_below_bf16_hides_the_bf16_units(monkeypatch, cap, hidden):
    # The CPU's flags say bf16 either way: the cap decides whether oneDNN may use those units, so
    # train.amp=auto must not pick bf16 (software-converted, several times slower) under a lower cap.
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert loop.cpu_has_bf16() is not hidden
    cfg = TrainConfig(amp="auto")
    assert amp_mode(cfg, torch.device("cpu")) == ("off" if hidden else "bf16")

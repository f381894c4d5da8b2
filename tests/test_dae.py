"""The denoising autoencoder: noise config and draws, the noisy training step, exact resume with fresh
per-step noise, the multi-sigma evaluation beside a plain autoencoder, and one-line errors."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from mnistlab import cli
from mnistlab.core.errors import ConfigError
from mnistlab.data.datasets import DataConfig, load, to_float
from mnistlab.data.noise import NoiseConfig, TrainingNoise, apply_noise, fixed_noise, parse_sigmas
from mnistlab.metrics import images as image_metrics
from mnistlab.models import build_model
from mnistlab.models.autoencoder import AEConfig
from mnistlab.tasks import load_experiment
from mnistlab.tasks.dae import load_baseline
from mnistlab.tasks.dae import train as train_dae
from mnistlab.training.autoencoder import AEExperiment, train_autoencoder
from mnistlab.training.denoise import DAEExperiment, DenoisingTask, InitConfig, denoising_scores
from mnistlab.training.loop import TrainConfig, fit
from mnistlab.training.run_folder import seed_everything
from tests.conftest import assert_one_line_error, not_called
from tests.tiny_idx import write_blocks

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    return write_blocks(tmp_path_factory.mktemp("idx"))


def tiny(idx_dir, cls=DAEExperiment, epochs=2, **noise):
    parts = dict(
        data=DataConfig(data_dir=str(idx_dir), val_fraction=0.25),
        model=AEConfig(latent_dim=4),
        train=TrainConfig(epochs=epochs, batch_size=32, lr=3e-3, device="cpu", eval_batch_size=64),
    )
    if cls is DAEExperiment:
        parts["noise"] = NoiseConfig(**{"sigma": 0.5, **noise})
    return cls(**parts)


@pytest.mark.parametrize(
    "kwargs", [{"sigma": 0.0}, {"sigma": -1.0}, {"sigma": float("nan")}, {"sigma": 11.0}, {"eval_sigmas": ()}]
)
def test_noise_config_rejects_bad_levels(kwargs):
    with pytest.raises(ConfigError) as e:
        NoiseConfig(**kwargs)
    assert_one_line_error(e)


@pytest.mark.parametrize("text", ["0.25,abc", "0", "-0.5", "nan", "0.5,,1"])
def test_unknown_sigma_is_a_one_line_error(text):
    with pytest.raises(ConfigError) as e:
        parse_sigmas(text)
    assert_one_line_error(e, "--sigmas")
    assert parse_sigmas(" 0.25, 1") == (0.25, 1.0)


def test_presets_define_the_dae_with_the_reports_noise():
    for preset in ("seed", "default", "quick"):
        exp = load_experiment("dae", preset)
        ae = load_experiment("ae", preset)
        assert exp.noise.sigma == 1.0 and not exp.noise.clip
        # the same network, trained the same way (the default AE alone trains longer, for its code)
        assert exp.model == ae.model and exp.train == dataclasses.replace(ae.train, epochs=exp.train.epochs)
    assert load_experiment("dae", "quick", ["noise.sigma=0.5", "noise.clip=true"]).noise.clip
    with pytest.raises(ConfigError, match="noise.sigma"):
        load_experiment("dae", "quick", ["noise.sigma=-1"])


def test_training_noise_is_fresh_per_step_and_reproducible_from_its_step():
    cfg = NoiseConfig(sigma=1.0, seed=3)
    x = torch.zeros(4, 1, 28, 28)
    a, b = TrainingNoise(cfg), TrainingNoise(cfg)
    first, second = a(x), a(x)
    assert not torch.equal(first, second)  # fresh noise every batch
    assert torch.equal(b(x), first)  # step 0 is the same draw in any run with this seed
    c = TrainingNoise(cfg)
    c.load_state_dict(a.state_dict())  # what a checkpoint restores
    assert torch.equal(c(x), a(x))
    assert not torch.equal(TrainingNoise(NoiseConfig(seed=4))(x), first)
    clipped = TrainingNoise(NoiseConfig(sigma=1.0, clip=True))(x)
    assert clipped.min() >= 0 and clipped.max() <= 1


def test_fixed_noise_is_seeded_and_streams_differ():
    assert torch.equal(fixed_noise(5, 0, "test"), fixed_noise(5, 0, "test"))
    assert not torch.equal(fixed_noise(5, 0, "test"), fixed_noise(5, 0, "val"))
    assert not torch.equal(fixed_noise(5, 0, "test"), fixed_noise(5, 1, "test"))
    assert torch.equal(fixed_noise(3, 0, "test"), fixed_noise(5, 0, "test")[:3])


def test_step_feeds_noisy_input_and_targets_the_clean_image(idx_dir):
    exp = tiny(idx_dir)
    data = load(exp.data)
    seed_everything(0)
    task = DenoisingTask(build_model("conv_autoencoder", exp.model), exp.train, data.val, CPU, exp.noise)
    seen = []
    task.model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    out = task.train_step(data.train.images[:32], data.train.labels[:32])
    clean = to_float(data.train.images[:32])
    residual = seen[0] - clean
    assert abs(residual.std().item() - 0.5) < 0.02  # sigma 0.5, unclipped
    recon = task.model(seen[0]).recon.detach()
    assert out["loss"] > 0 and not math.isclose(out["loss"], torch.mean((recon - seen[0]) ** 2).item())
    assert all(not torch.equal(before[k], v) for k, v in task.model.state_dict().items())
    val = task.evaluate()
    assert set(val) == {"loss", "noisy_mse"} and abs(val["noisy_mse"] - 0.25) < 0.02


class CrashAt:
    """Raises KeyboardInterrupt at the n-th train step, as a killed process would stop."""

    def __init__(self, task, n):
        self.task, self.n, self.calls = task, n, 0
        self.modules, self.optimizers = task.modules, task.optimizers

    def train_step(self, images, labels):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.task.train_step(images, labels)

    def evaluate(self):
        return self.task.evaluate()


def test_resume_equals_an_uninterrupted_run_with_fresh_noise(idx_dir, tmp_path):
    exp = tiny(idx_dir, epochs=3)
    data = load(exp.data)

    def make():
        seed_everything(exp.train.seed)
        return DenoisingTask(build_model("conv_autoencoder", exp.model), exp.train, data.val, CPU, exp.noise)

    full = make()
    fit(full, data.train, exp.train, tmp_path / "full", progress=False)
    crashed = make()
    with pytest.raises(KeyboardInterrupt):
        fit(CrashAt(crashed, 8), data.train, exp.train, tmp_path / "resumed", progress=False)  # epoch 2
    resumed = make()
    fit(resumed, data.train, exp.train, tmp_path / "resumed", resume=True, progress=False)
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert int(resumed.modules["noise"].step) == int(full.modules["noise"].step) == 3 * 5


def test_scores_of_the_noisy_input_follow_sigma(idx_dir):
    data = load(tiny(idx_dir).data)
    eps = fixed_noise(len(data.test), 0, "test")
    model = build_model("conv_autoencoder", AEConfig(latent_dim=4))
    for sigma in (0.25, 0.5, 1.0):
        s = denoising_scores({"dae": model}, data.test, eps, sigma, False, CPU, 16)
        assert abs(s["noisy"]["psnr"] + 20 * math.log10(sigma)) < 0.3  # PSNR of x + N(0, s^2) = -20 log10 s
        assert set(s) == {"noisy", "dae"} and set(s["dae"]) == {"mse", "psnr", "ssim"}
    clipped = apply_noise(torch.full((2, 1, 28, 28), 0.5), eps[:2], 1.0, clip=True)
    assert clipped.min() >= 0 and clipped.max() <= 1


def test_epoch_validation_scores_only_the_mses_it_reports(idx_dir, monkeypatch):
    exp = tiny(idx_dir)
    data = load(exp.data)
    task = DenoisingTask(build_model("conv_autoencoder", exp.model), exp.train, data.val, CPU, exp.noise)

    def scores(*which):
        eps, batch = task.val_eps, exp.train.eval_batch_size
        return denoising_scores({"dae": task.model}, data.val, eps, exp.noise.sigma, False, CPU, batch, which)

    full = scores("mse", "psnr", "ssim")
    for name in ("psnr", "ssim"):  # from here on, computing them fails the test
        monkeypatch.setitem(image_metrics.QUALITY, name, not_called)
    assert task.evaluate() == {"loss": full["dae"]["mse"], "noisy_mse": full["noisy"]["mse"]}
    assert scores("mse") == {n: {"mse": s["mse"]} for n, s in full.items()}


def test_train_and_eval_dae_beside_a_plain_autoencoder(idx_dir, tmp_path, capsys):
    ae_dir = tmp_path / "ae"
    train_autoencoder(tiny(idx_dir, AEExperiment), ae_dir, progress=False)
    dae_dir = tmp_path / "dae"
    summary = train_dae(tiny(idx_dir), dae_dir, progress=False, baseline=ae_dir)
    assert [r["sigma"] for r in summary["denoising"]] == [0.25, 0.5, 0.75, 1.0]
    for row in summary["denoising"]:
        assert set(row) == {"sigma", "noisy", "dae", "ae"}
    assert summary["test"]["psnr"] > summary["test_noisy_input"]["psnr"]  # it learned something
    assert summary["baseline"]["run"] == str(ae_dir)
    for name in ("loss_curves", "denoising_metrics", "denoising_examples"):
        assert (dae_dir / "figures" / f"{name}.png").stat().st_size > 1000
    on_disk = json.loads((dae_dir / "summary.json").read_text())
    assert on_disk["status"] == "finished" and len(on_disk["denoising"]) == 4

    assert cli.main(["-q", "eval", str(dae_dir), "--sigmas", "0.5", "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["sigma"] for r in printed["denoising"]] == [0.5] and "ae" not in printed["denoising"][0]
    after = json.loads((dae_dir / "summary.json").read_text())
    assert "baseline" not in after and after["status"] == "finished"

    for run, bad in (
        (dae_dir, ["--sigmas", "0.5,x"]),
        (ae_dir, ["--sigmas", "0.5"]),
        (dae_dir, ["--baseline", str(tmp_path / "nothing")]),
    ):
        assert cli.main(["-q", "eval", str(run), *bad]) == 2
        assert assert_one_line_error(capsys).startswith("mnistlab: error:"), bad


def test_train_dae_refuses_a_bad_baseline_before_training(idx_dir, tmp_path, capsys):
    out = tmp_path / "dae"
    exp = dataclasses.replace(tiny(idx_dir), train=dataclasses.replace(tiny(idx_dir).train, epochs=1))
    with pytest.raises(ConfigError, match="not a run folder"):
        train_dae(exp, out, progress=False, baseline=tmp_path / "missing")
    assert not out.exists()
    code = cli.main(
        ["-q", "train", "ae", "--preset", "quick", "--baseline", str(tmp_path), "--out", str(out)]
    )
    assert code == 2
    assert_one_line_error(capsys, "--baseline")


def test_warm_start_begins_from_the_baseline_autoencoder(idx_dir, tmp_path, monkeypatch):
    ae_dir = tmp_path / "ae"
    train_autoencoder(tiny(idx_dir, AEExperiment), ae_dir, progress=False)
    exp = dataclasses.replace(tiny(idx_dir, epochs=1), init=InitConfig(from_baseline=True))
    with pytest.raises(ConfigError, match="--baseline"):
        train_dae(exp, tmp_path / "cold", progress=False)
    # The weights the denoising task starts training from: the baseline's, bit for bit.
    started = {}
    real_init = DenoisingTask.__init__

    def record(self, model, *args, **kwargs):
        started.update({k: v.clone() for k, v in model.state_dict().items()})
        real_init(self, model, *args, **kwargs)

    monkeypatch.setattr(DenoisingTask, "__init__", record)
    train_dae(exp, tmp_path / "warm", progress=False, baseline=ae_dir)
    base = load_baseline(ae_dir)[2].state_dict()
    assert started.keys() == base.keys() and all(torch.equal(started[k], base[k].cpu()) for k in base)
    wide = dataclasses.replace(exp, model=AEConfig(latent_dim=6))
    with pytest.raises(ConfigError, match="6"):
        train_dae(wide, tmp_path / "wide", progress=False, baseline=ae_dir)

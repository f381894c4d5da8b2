"""The GAN: networks, losses, the two-phase step, exact resume, divergence, and the CLI, on tiny slices."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mnistlab import cli
from mnistlab.core.errors import ConfigError
from mnistlab.data.datasets import Split
from mnistlab.models import build_model
from mnistlab.models.gan import GANConfig, train_step_flops
from mnistlab.runs import folder as rundir
from mnistlab.runs.checkpoint import read_checkpoint
from mnistlab.tasks import load_experiment
from mnistlab.training import gan_run
from mnistlab.training.gan import (
    GANDivergedError,
    GANTask,
    GANTrainConfig,
    bce,
    discriminator_loss,
    ema_decay,
    generate,
    r1_penalty,
)
from mnistlab.training.loop import NonFiniteLossError, TrainConfig
from tests.conftest import assert_one_line_error

# A run small enough for seconds: 24 train images + 6 test, merged = 30 (val_fraction 0.2 moves
# 5 of the train images to val, merged back in), batch 15 -> 2 steps per epoch; no scoring.
TINY = [
    "data.train_limit=24",
    "data.test_limit=6",
    "train.batch_size=15",
    "train.epochs=2",
    "train.device=cpu",
    "gan.eval_samples=0",
    "gan.final_samples=0",
    "gan.grid_epochs=1,2",
    "gan.grid_size=4",
    "train.lr=2e-4",
    "gan.d_lr=2e-4",
    "gan.loss=bce_logits",
]


def tiny(*extra: str, preset: str = "seed"):
    return load_experiment("gan", preset, [*TINY, *extra])


def fake_batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8), torch.zeros(
        n, dtype=torch.long
    )


def make_task(**gan_kwargs) -> GANTask:
    torch.manual_seed(0)
    gan = build_model("report_gan", GANConfig())
    cfg = TrainConfig(lr=2e-4, batch_size=8, device="cpu")
    return GANTask(gan, cfg, GANTrainConfig(**gan_kwargs), torch.device("cpu"), total_steps=10)


# ------------------------------------------------------------------------------------ networks


@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_generator_output_shape_and_range(scale):
    gan = build_model("report_gan", GANConfig())
    with torch.no_grad():
        x = gan.generator(scale * torch.randn(5, 100))
    assert x.shape == (5, 1, 28, 28)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_discriminator_is_sigmoid_of_logits_and_shapes():
    gan = build_model("report_gan", GANConfig())
    x = torch.rand(3, 1, 28, 28)
    assert gan.discriminator.logits(x).shape == (3,)
    assert torch.allclose(gan.discriminator(x), torch.sigmoid(gan.discriminator.logits(x)))
    layers = [m for m in gan.discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(m.in_channels, m.out_channels, m.stride, m.padding) for m in layers] == [
        (1, 64, (2, 2), (1, 1)),
        (64, 128, (2, 2), (1, 1)),
        (128, 256, (2, 2), (0, 0)),
    ]


def test_step_flops_match_the_issue_estimate():
    assert 120e6 < train_step_flops() < 130e6  # "about 125 MFLOP per image per step"


def test_bad_model_and_gan_values_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="noise_dim"):
        GANConfig(noise_dim=0)
    with pytest.raises(ConfigError, match="gan.loss"):
        tiny("gan.loss=hinge")
    with pytest.raises(ConfigError, match="real_label"):
        tiny("gan.real_label=0.3")
    with pytest.raises(ConfigError, match="unknown key"):
        tiny("gan.lr=1")


def test_seed_preset_is_the_report():
    exp = load_experiment("gan", "seed")
    assert (exp.train.lr, exp.gan.d_lr, exp.gan.beta1, exp.gan.beta2) == (0.02, 0.02, 0.5, 0.999)
    assert (exp.train.batch_size, exp.train.epochs, exp.gan.loss) == (200, 15, "bce_probs")
    assert exp.gan.merge_test and exp.gan.grid_epochs == (1, 5, 10, 15) and exp.model.noise_dim == 100
    for preset in ("default", "quick"):
        load_experiment("gan", preset)  # every preset has a valid GAN table


# -------------------------------------------------------------------------------------- losses


def test_losses_probs_clamp_where_logits_do_not():
    s = torch.tensor([-200.0, -200.0])  # D is certain these are fake
    assert bce(s, 1.0, "bce_probs").item() == pytest.approx(100.0)  # BCELoss clamps log at -100
    assert bce(s, 1.0, "bce_logits").item() == pytest.approx(200.0)  # exact: softplus(200)
    assert (
        discriminator_loss(torch.full((4,), 30.0), torch.full((4,), -30.0), 1.0, "bce_logits").item() < 1e-9
    )
    smooth = discriminator_loss(torch.full((4,), 30.0), torch.full((4,), -30.0), 0.9, "bce_logits")
    assert smooth.item() == pytest.approx(0.1 * 30.0, rel=1e-3)  # one-sided smoothing penalises certainty


# ---------------------------------------------------------------------------------------- step


@pytest.mark.parametrize(
    "kw",
    [{}, {"loss": "bce_logits", "real_label": 0.9, "d_noise": 0.1, "d_lr": 4e-4, "r1": 5.0, "g_ema": 0.9}],
)
def test_a_step_updates_both_networks(kw):
    task = make_task(**kw)
    before = {n: [p.detach().clone() for p in m.parameters()] for n, m in task.modules.items()}
    out = task.train_step(*fake_batch())
    assert set(out) >= {"loss", "d_loss", "g_loss", "d_real", "d_fake"}
    assert all(math.isfinite(v) for v in out.values())
    assert 0 <= out["d_real"] <= 1 and 0 <= out["d_fake"] <= 1
    for name, module in task.modules.items():
        for p0, p1 in zip(before[name], module.parameters()):
            assert not torch.equal(p0, p1), f"a {name} parameter did not move"
    assert all(p.requires_grad for p in task.D.parameters())  # unfrozen after the G phase


def test_discriminator_phase_does_not_reach_the_generator():
    """fake.detach(): when D's optimizer steps, D's loss has given the generator no gradient."""
    task = make_task()
    seen = []
    opt_d = task.optimizers["discriminator"]
    original = opt_d.step
    opt_d.step = lambda *a, **k: (seen.append([p.grad for p in task.G.parameters()]), original(*a, **k))[1]
    task.train_step(*fake_batch())
    assert seen and all(g is None for g in seen[0])
    assert all(p.grad is not None for p in task.G.parameters())  # the G phase did reach it


@pytest.mark.parametrize("loss", ["bce_probs", "bce_logits"])
def test_step_matches_a_tutorial_step(loss):
    """The same update as the usual way (BCELoss on D's probabilities, D called twice, D's grads left
    on in the G phase), so the speed-ups change nothing but float rounding."""
    task = make_task(loss=loss)
    torch.manual_seed(1)
    ref = build_model("report_gan", GANConfig())
    ref.load_state_dict(task.gan.state_dict())
    # Plain SGD on both sides: Adam would amplify the rounding of near-zero gradients to a full step.
    task.optimizers = {
        "generator": torch.optim.SGD(task.G.parameters(), lr=0.5),
        "discriminator": torch.optim.SGD(task.D.parameters(), lr=0.5),
    }
    opt_g = torch.optim.SGD(ref.generator.parameters(), lr=0.5)
    opt_d = torch.optim.SGD(ref.discriminator.parameters(), lr=0.5)
    images, labels = fake_batch(16)
    for _ in range(2):
        torch.manual_seed(7)
        task.train_step(images, labels)
        torch.manual_seed(7)
        x = images.unsqueeze(1).float() / 255
        fake = ref.generator(torch.randn(16, 100))
        bce_ = torch.nn.BCELoss()
        ones, zeros = torch.ones(16), torch.zeros(16)
        d_loss = bce_(ref.discriminator(x), ones) + bce_(ref.discriminator(fake.detach()), zeros)
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = bce_(ref.discriminator(fake), ones)
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
    for (name, a), b in zip(task.gan.state_dict().items(), ref.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4), (name, (a - b).abs().max())


def test_r1_penalty_is_the_squared_input_gradient():
    w = torch.randn(1, 1, 28, 28)
    x = torch.rand(4, 1, 28, 28, requires_grad=True)
    scores = (x * w).flatten(1).sum(1)  # a linear "discriminator": its input gradient is w
    assert r1_penalty(scores, x).item() == pytest.approx(w.pow(2).sum().item(), rel=1e-5)


def test_generator_average_follows_the_generator():
    task = make_task(g_ema=0.5)
    assert task.sampler is task.G_ema and "generator_ema" in task.modules
    e0 = [p.clone() for p in task.G_ema.parameters()]
    g0 = [p.detach().clone() for p in task.G.parameters()]
    task.train_step(*fake_batch())
    for pe0, p0, pe, p in zip(e0, g0, task.G_ema.parameters(), task.G.parameters()):
        assert torch.allclose(pe, 0.1 * pe0 + 0.9 * p)  # first step: decay (1 + 0) / (10 + 0)
        assert torch.equal(pe0, p0)  # it started as a copy
    assert not any(p.requires_grad for p in task.G_ema.parameters())


def test_ema_decay_warms_up_to_its_target():
    assert ema_decay(0.999, 0) == pytest.approx(0.1)
    assert ema_decay(0.999, 90) == pytest.approx(0.91)
    assert ema_decay(0.999, 100_000) == 0.999


def test_generate_is_uint8_and_leaves_training_mode():
    task = make_task()
    task.G.train()
    imgs = generate(task.G, torch.randn(7, 100), batch_size=3)
    assert imgs.shape == (7, 28, 28) and imgs.dtype == torch.uint8
    assert task.G.training


def test_pinned_losses_stop_or_are_flagged():
    task = make_task(pinned_loss=1e-6, pinned_steps=2)  # every step counts as pinned
    task.train_step(*fake_batch())
    with pytest.raises(GANDivergedError, match="pinned .* 2 steps in a row"):
        task.train_step(*fake_batch())
    flag = make_task(pinned_loss=1e-6, pinned_steps=2, stop_on_divergence=False)
    for _ in range(3):
        flag.train_step(*fake_batch())
    assert flag.diverged_at == 1


# ------------------------------------------------------------------------------------ whole runs


def _weights(run_dir):
    tensors, state = read_checkpoint(rundir.checkpoint_path(run_dir))
    return {k: v for k, v in tensors.items() if k.startswith(("module/", "optim/"))}, state


def test_run_folder_figures_and_summary(tmp_path):
    summary = gan_run.train_gan(tiny(), tmp_path / "run", progress=False)
    assert summary["status"] == "finished" and summary["epochs"] == 2 and summary["n_train"] == 30
    run = tmp_path / "run"
    for name in ("loss_curves", "d_outputs", "epoch_grids", "samples_final"):
        assert (run / "figures" / f"{name}.png").stat().st_size > 1000
    assert sorted(p.name for p in (run / "grids").iterdir()) == [
        "epoch_001.safetensors",
        "epoch_002.safetensors",
    ]
    rows = rundir.read_history(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_d_loss", "train_g_loss", "train_d_real", "train_d_fake", "collapse_warnings"} <= set(
        rows[0]
    )
    assert "collapse" in summary and isinstance(summary["collapse_warnings"], list)
    exp, gan = gan_run.load_gan(run)
    assert exp.gan.grid_size == 4 and not gan.training
    assert gan_run.sample_gan(run, 5, device="cpu").shape == (5, 28, 28)


def test_scores_at_grid_epochs_sample_and_score_commands(tmp_path, capsys):
    run = tmp_path / "run"
    exp = tiny("data.test_limit=10", "gan.eval_samples=8", "gan.final_samples=12", "gan.grid_epochs=2")
    summary = gan_run.train_gan(exp, run, progress=False)
    rows = rundir.read_history(run)
    assert "fid_mnist" not in rows[0] and math.isfinite(rows[1]["fid_mnist"])  # scored at grid epochs only
    assert rows[1]["class_max_share"] >= 0.1 and sum(
        rows[1][f"class_share_{d}"] for d in range(10)
    ) == pytest.approx(1, abs=1e-3)
    test = summary["test"]
    assert summary["amp"] == "off"  # the precision it trained in: the seed preset's fp32 on every host
    assert test["n_samples"] == 12 and {
        "fid_mnist",
        "precision",
        "recall",
        "class_hist",
        "nn_train_dist",
    } <= set(test)
    assert summary["collapse"]["stats"]["max_class_share"] == pytest.approx(max(test["class_hist"]), abs=1e-3)
    for name in ("class_histogram", "fid_by_epoch"):
        assert (run / "figures" / f"{name}.png").exists()
    out = tmp_path / "s.npy"
    assert cli.main(["-q", "sample", str(run), "--n", "7", "--out", str(out), "--device", "cpu"]) == 0
    arr = np.load(out)
    assert arr.shape == (7, 28, 28) and arr.dtype == np.uint8
    assert np.array_equal(arr, gan_run.sample_gan(run, 7, seed=0, device="cpu").numpy())  # seeded
    assert cli.main(["-q", "sample", str(run), "--n", "7", "--out", str(out), "--sampler", "gmm"]) == 2
    assert_one_line_error(capsys, "unknown sampler 'gmm'")
    # `mnistlab eval` redraws the final samples from the same noise: the recorded test numbers again.
    (run / "summary.json").write_text(json.dumps({**summary, "test": {"fid_mnist": -1.0}}))
    assert cli.main(["-q", "eval", str(run), "--device", "cpu"]) == 0
    again = json.loads((run / "summary.json").read_text())["test"]
    assert again["fid_mnist"] == pytest.approx(test["fid_mnist"], rel=1e-6)
    assert again["class_hist"] == test["class_hist"] and again["precision"] == test["precision"]


def test_resume_equals_uninterrupted_bit_for_bit(tmp_path, monkeypatch):
    # Instance-noise annealing needs the step count back, R1 every 2nd step too; the G average is a module.
    exp = tiny(
        "gan.d_noise=0.2",
        "gan.real_label=0.9",
        "gan.r1=2",
        "gan.r1_every=2",
        "gan.g_ema=0.9",
        "train.epochs=3",
    )
    gan_run.train_gan(exp, tmp_path / "full", progress=False)

    original = gan_run.EpochWatch.__call__

    def crash_in_epoch_2(self, epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt  # before epoch 2's checkpoint: the run holds epoch 1
        original(self, epoch, row)

    monkeypatch.setattr(gan_run.EpochWatch, "__call__", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        gan_run.train_gan(exp, tmp_path / "cut", progress=False)
    assert _weights(tmp_path / "cut")[1]["epoch"] == 1
    monkeypatch.setattr(gan_run.EpochWatch, "__call__", original)
    gan_run.train_gan(exp, tmp_path / "cut", resume=True, progress=False)

    (full, s_full), (cut, s_cut) = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert s_full["epoch"] == s_cut["epoch"] == 3 and full.keys() == cut.keys()
    assert any(k.startswith("module/generator_ema/") for k in full)
    assert all(torch.equal(full[k], cut[k]) for k in full)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in rundir.read_history(tmp_path / "full")]
    assert strip == [
        {k: v for k, v in r.items() if k != "seconds"} for r in rundir.read_history(tmp_path / "cut")
    ]


def test_divergence_keeps_last_good_checkpoint_and_a_whole_run_folder(tmp_path):
    # 2 steps per epoch; every step "pinned"; 3 in a row -> stopped in epoch 2, epoch 1 kept.
    exp = tiny("gan.pinned_loss=1e-9", "gan.pinned_steps=3", "gan.stop_on_divergence=true")
    with pytest.raises(GANDivergedError, match=r"last good checkpoint is .*\(epoch 1\)"):
        gan_run.train_gan(exp, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    summary = rundir.read_summary(run)
    assert summary["status"] == "diverged" and "pinned" in summary["error"]
    assert summary["last_good_checkpoint"].endswith("last.safetensors")
    assert _weights(run)[1]["epoch"] == 1
    assert [r["epoch"] for r in rundir.read_history(run)] == [1]
    assert (run / "config.toml").exists() and (run / "figures" / "loss_curves.png").exists()
    assert not list(run.rglob("*.tmp"))


def test_non_finite_loss_writes_a_diverged_summary(tmp_path, monkeypatch):
    original = GANTask.train_step

    def nan_on_step_2(self, images, labels):
        out = original(self, images, labels)
        return {**out, "d_loss": float("nan")} if self.step == 2 else out

    monkeypatch.setattr(GANTask, "train_step", nan_on_step_2)
    with pytest.raises(NonFiniteLossError, match="no checkpoint was written yet"):
        gan_run.train_gan(tiny(), tmp_path / "run", progress=False)
    summary = rundir.read_summary(tmp_path / "run")
    assert summary["status"] == "diverged" and summary["last_good_checkpoint"] is None


def test_cli_trains_and_exits_3_on_divergence(tmp_path, capsys):
    args = [f"--set={s}" for s in TINY]
    assert (
        cli.main(["-q", "train", "gan", "--preset", "seed", "--json", "--out", str(tmp_path / "a"), *args])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["run"] == str(tmp_path / "a")
    bad = [
        *args,
        "--set=gan.pinned_loss=1e-9",
        "--set=gan.pinned_steps=1",
        "--set=gan.stop_on_divergence=true",
    ]
    assert (
        cli.main(
            ["-q", "train", "gan", "--preset", "seed", "--no-progress", "--out", str(tmp_path / "b"), *bad]
        )
        == 3
    )
    assert "training diverged" in capsys.readouterr().err
    assert rundir.read_summary(tmp_path / "b")["status"] == "diverged"


def test_without_merging_d_is_scored_on_held_out_images(tmp_path):
    summary = gan_run.train_gan(
        tiny("gan.merge_test=false", "train.epochs=1"), tmp_path / "run", progress=False
    )
    assert summary["n_train"] == 19  # 24 - 5 validation images; the test images stay out
    row = rundir.read_history(tmp_path / "run")[0]
    assert 0 <= row["val_d_real"] <= 1 and 0 <= row["val_d_fake"] <= 1


def test_merge_test_uses_all_splits():
    data = gan_run.Data(
        Split(torch.zeros(3, 28, 28, dtype=torch.uint8), torch.zeros(3, dtype=torch.long)),
        Split(torch.ones(2, 28, 28, dtype=torch.uint8), torch.ones(2, dtype=torch.long)),
        Split(torch.full((4, 28, 28), 2, dtype=torch.uint8), torch.full((4,), 2)),
        "x",
    )
    m = gan_run.merged(data)
    assert len(m) == 9 and m.labels.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2]


def test_tile_lays_images_row_by_row():
    from mnistlab.plots.gan import tile

    imgs = torch.stack([torch.full((28, 28), v, dtype=torch.uint8) for v in (0, 255, 51)])
    t = tile(imgs, rows=2, pad=2)
    assert t.shape == (58, 58)
    assert t[0, 0] == 0.0 and t[0, 30] == 1.0 and t[30, 0] == pytest.approx(0.2)
    assert t[30, 30] == 0.5 and t[28, 0] == 0.5  # the empty cell and the padding are grey

"""The conditional GAN (task `cgan`): the label conditions both networks, a tiny cGAN learns to draw the
class it is asked for, `--digit` is refused for unconditional runs, exact resume, two gloo processes
equal one, and the run folder's per-digit summary and report section."""

from __future__ import annotations

import dataclasses
import json
import math
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mnistlab import cli, tasks
from mnistlab.core.errors import ConfigError
from mnistlab.data.datasets import DataConfig, load
from mnistlab.latent import sample as sampling
from mnistlab.models.cgan import CGAN, CGANConfig, warm_start
from mnistlab.models.gan import GAN, GANConfig
from mnistlab.plots.content import RunFolder
from mnistlab.runs import folder as rundir
from mnistlab.runs.checkpoint import read_checkpoint
from mnistlab.tasks import cgan
from mnistlab.training.gan import fixed_noise
from mnistlab.training.gan_run import load_gan
from mnistlab.training.loop import fit
from mnistlab.training.run_folder import seed_everything
from tests.conftest import assert_one_line_error, write_dataset
from tests.dist_worker import run_rank

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# MNIST slices: 24 train + 8 test images merged = 32 = 2 global batches of 16 (8 per rank under two
# processes); R1 every other step, instance noise and the G average on; nothing scored.
TINY = [
    "data.train_limit=24",
    "data.test_limit=8",
    "train.batch_size=16",
    "train.epochs=3",
    "train.device=cpu",
    "train.lr=2e-4",
    "gan.d_lr=2e-4",
    "gan.loss=bce_logits",
    "gan.r1=1",
    "gan.r1_every=2",
    "gan.d_noise=0.1",
    "gan.g_ema=0.9",
    "gan.eval_samples=0",
    "gan.final_samples=0",
    "cgan.check_samples=0",
    "gan.grid_epochs=1,3",
    "gan.grid_size=3",
]


def test_the_label_conditions_both_networks():
    torch.manual_seed(0)
    model = CGAN(CGANConfig()).eval()
    z = torch.randn(4, 100)
    with torch.no_grad():
        threes, fives = model.generator(z, torch.full((4,), 3)), model.generator(z, torch.full((4,), 5))
        assert threes.shape == (4, 1, 28, 28) and 0 <= threes.min() and threes.max() <= 1
        assert (threes - fives).abs().flatten(1).amax(1).min() > 1e-4  # every image changes with the label
        x = torch.rand(4, 1, 28, 28)
        d3, d5 = (
            model.discriminator.logits(x, torch.full((4,), 3)),
            model.discriminator.logits(x, torch.full((4,), 5)),
        )
        assert d3.shape == (4,) and not torch.allclose(d3, d5)
        assert torch.allclose(model.discriminator(x, torch.full((4,), 3)), torch.sigmoid(d3))


def test_the_optional_auxiliary_classifier_trains_with_both_networks():
    exp = tasks.load_experiment(
        "cgan", "default", ["model.aux_classifier=true", "cgan.aux_weight=0.5", "train.device=cpu"]
    )
    torch.manual_seed(0)
    model = CGAN(exp.model)
    scores, classes = model.discriminator.scores(torch.rand(3, 1, 28, 28), torch.tensor([1, 2, 3]))
    assert scores.shape == (3,) and classes.shape == (3, 10)
    assert (
        CGAN(CGANConfig()).discriminator.scores(torch.rand(3, 1, 28, 28), torch.tensor([1, 2, 3]))[1] is None
    )
    task = cgan.cgan_task(model, exp.train, exp.gan, torch.device("cpu"), 10, aux_weight=exp.cgan.aux_weight)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = task.train_step(torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8), torch.arange(8))
    assert out["d_loss"] > 0.5 * math.log(10)  # the class cross-entropy of an untrained classifier is in it
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert {
        "discriminator.classifier.weight",
        "generator.embed.weight",
        "discriminator.embed.weight",
    } <= changed


def test_presets_are_the_gan_recipes_conditioned():
    for preset in ("seed", "default"):
        c, g = tasks.load_experiment("cgan", preset), tasks.load_experiment("gan", preset)
        # The default cGAN trains longer (8 epochs against 4) for its per-digit accuracy, at the rate it
        # was measured with (1e-3; the GAN's is 2e-3 since it trains 4 epochs instead of 6).
        same_length = dataclasses.replace(c.train, epochs=g.train.epochs, lr=g.train.lr)
        assert same_length == g.train and c.model.noise_dim == g.model.noise_dim
        same_rate = dataclasses.replace(c.gan, grid_epochs=g.gan.grid_epochs, d_lr=g.gan.d_lr)
        assert same_rate == g.gan and (c.train.lr, c.gan.d_lr) == (
            (1e-3, 1e-3) if preset == "default" else (g.train.lr, g.gan.d_lr)
        )
        assert max(c.gan.grid_epochs) == c.train.epochs and c.train.epochs >= g.train.epochs
    seed = tasks.load_experiment("cgan", "seed")
    assert (seed.train.lr, seed.gan.d_lr, seed.gan.loss, seed.train.batch_size) == (
        0.02,
        0.02,
        "bce_probs",
        200,
    )
    assert (seed.gan.beta1, seed.gan.beta2, seed.train.epochs, seed.gan.merge_test) == (0.5, 0.999, 15, True)
    quick = tasks.load_experiment("cgan", "quick")
    assert quick.data.train_limit <= 5000 and quick.train.epochs <= 3
    assert tasks.get("cgan").conditional and tasks.get("cgan").roles == {"generator"}


def test_a_tiny_cgan_draws_the_class_it_is_asked_for(tmp_path):
    """Blobs of two classes (each a bright square at its own place); after 48 steps, samples asked for
    either class are read as that class by a nearest-class-mean classifier on the training images."""
    data = load(
        DataConfig(data_dir=str(write_dataset(tmp_path / "idx", n_train=1200, n_test=10)), val_fraction=0)
    )
    train = data.train.take((data.train.labels == 3) | (data.train.labels == 5))  # 253 images
    # fp32 on every host (the default's amp "auto" would be bf16 on some)
    exp = tasks.load_experiment(
        "cgan",
        "default",
        [
            "train.epochs=3",
            "train.batch_size=16",
            "train.lr=2e-3",
            "gan.d_lr=2e-3",
            "gan.g_ema=0",
            "train.device=cpu",
            "train.amp=off",
        ],
    )
    seed_everything(0)
    task = cgan.cgan_task(CGAN(exp.model), exp.train, exp.gan, torch.device("cpu"), total_steps=48)
    fit(task, train, exp.train, None, progress=False)
    means = torch.stack([train.images[train.labels == c].float().mean(0).flatten() for c in (3, 5)])
    for c in (3, 5):
        x = cgan.generate(task.sampler, fixed_noise(200, 100, 1, "cpu"), cgan.digit_labels(200, c))
        read = torch.tensor([3, 5])[torch.cdist(x.float().flatten(1), means).argmin(1)]
        assert (read == c).float().mean() > 0.8, (c, (read == c).float().mean())


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """(a one-epoch GAN run, a one-epoch cGAN run) on MNIST slices, shared by the sampling tests."""
    root = tmp_path_factory.mktemp("runs")
    gan_tiny = [o for o in TINY if not o.startswith("cgan.")]
    tasks.train("gan", "seed", [*gan_tiny, "train.epochs=1"], out=root / "gan", progress=False)
    tasks.train("cgan", "seed", [*TINY, "train.epochs=1"], out=root / "cgan", progress=False)
    return root / "gan", root / "cgan"


def test_digit_is_refused_for_an_unconditional_run(tiny_runs, tmp_path):
    gan_run = tiny_runs[0]
    with pytest.raises(
        ConfigError, match="cannot be asked for a digit; --digit needs a conditional task"
    ) as e:
        sampling.sample_to_file(gan_run, tmp_path / "s.npy", None, 5, digit=3)
    assert_one_line_error(e, "cgan")
    assert not (tmp_path / "s.npy").exists()
    with pytest.raises(ConfigError, match="cannot be asked for a digit"):
        tasks.load_run(gan_run).generate(5, digit=3)


def test_a_conditional_run_draws_the_digit_asked_for_or_equal_shares(tiny_runs, tmp_path):
    run = tiny_runs[1]
    result = sampling.sample_to_file(run, tmp_path / "sevens.npy", None, 12, seed=2, digit=7)
    sevens = np.load(tmp_path / "sevens.npy")
    assert result["digit"] == 7 and sevens.shape == (12, 28, 28) and sevens.dtype == np.uint8
    loaded = tasks.load_run(run)
    assert loaded.generator().samplers == ("prior",)
    assert np.array_equal(loaded.generate(12, digit=7, seed=2).numpy(), sevens)
    with torch.no_grad():  # digit None: equal shares, 0, 1, ..., 9, 0, ... with the seed's noise
        expected = loaded.model.generator(fixed_noise(12, 100, 2, "cpu"), torch.arange(12) % 10)
    assert torch.equal(loaded.generate(12, seed=2), expected.squeeze(1).mul(255).round().to(torch.uint8))
    with pytest.raises(ConfigError, match="--digit must be in"):
        loaded.generate(3, digit=10)


def test_the_sample_command_refuses_digit_for_an_unconditional_run(tiny_runs, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["sample", "--help"])
    if "--digit" not in capsys.readouterr().out:
        pytest.skip(
            "cli/explore.py's `sample` has no --digit option yet (sampling.sample_to_file takes digit)"
        )
    out = tmp_path / "x.npy"
    assert cli.main(["-q", "sample", str(tiny_runs[0]), "--n", "5", "--digit", "3", "--out", str(out)]) == 2
    assert_one_line_error(capsys, "cannot be asked for a digit")
    assert not out.exists()
    assert cli.main(["-q", "sample", str(tiny_runs[1]), "--n", "5", "--digit", "3", "--out", str(out)]) == 0
    assert np.array_equal(np.load(out), tasks.load_run(tiny_runs[1]).generate(5, digit=3).numpy())
    assert (
        cli.main(["-q", "sample", str(tiny_runs[1]), "--n", "12", "--digit", "all", "--out", str(out)]) == 0
    )
    assert np.array_equal(np.load(out), tasks.load_run(tiny_runs[1]).generate(12).numpy())  # equal shares
    assert cli.main(["-q", "sample", str(tiny_runs[0]), "--n", "5", "--digit", "all", "--out", str(out)]) == 2


def _weights(run):
    tensors, state = read_checkpoint(rundir.checkpoint_path(run))
    return {k: v for k, v in tensors.items() if k.startswith("module/")}, state


def test_resume_equals_uninterrupted_bit_for_bit(tmp_path, monkeypatch):
    exp = tasks.load_experiment("cgan", "seed", TINY)
    cgan.train(exp, tmp_path / "full", progress=False)
    original = cgan.DigitWatch.__call__

    def crash_in_epoch_2(self, epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt  # before epoch 2's checkpoint: the run holds epoch 1
        original(self, epoch, row)

    monkeypatch.setattr(cgan.DigitWatch, "__call__", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        cgan.train(exp, tmp_path / "cut", progress=False)
    assert _weights(tmp_path / "cut")[1]["epoch"] == 1
    monkeypatch.setattr(cgan.DigitWatch, "__call__", original)
    torch.manual_seed(123)  # a new process: another RNG state until the checkpoint restores it
    cgan.train(exp, tmp_path / "cut", resume=True, progress=False)
    (full, s_full), (cut, s_cut) = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert s_full["epoch"] == s_cut["epoch"] == 3 and full.keys() == cut.keys()
    assert {"module/generator_ema/embed.weight", "module/discriminator/embed.weight"} <= full.keys()
    assert all(torch.equal(full[k], cut[k]) for k in full)
    rows = [
        [{k: v for k, v in r.items() if k != "seconds"} for r in rundir.read_history(tmp_path / p)]
        for p in ("full", "cut")
    ]
    assert rows[0] == rows[1] and [r["epoch"] for r in rows[0]] == [1, 2, 3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo")
def test_two_gloo_processes_match_one(tmp_path):
    """Each rank's noise is its rows of the global batch's draw and its labels its slice of the batch, so
    two processes take the steps one process takes (to float rounding: see test_distributed's bound)."""
    tasks.get("cgan").train(tasks.load_experiment("cgan", "seed", TINY), tmp_path / "one", progress=False)
    mp.start_processes(
        run_rank,
        args=(2, _free_port(), "cgan", TINY, str(tmp_path / "two"), 0),
        nprocs=2,
        start_method="spawn",
    )
    wa, wb = _weights(tmp_path / "one")[0], _weights(tmp_path / "two")[0]
    assert wa.keys() == wb.keys()
    sq = sum(((wa[k].double() - wb[k].double()) ** 2).sum().item() for k in wa)
    rms = (sq / sum(v.numel() for v in wa.values())) ** 0.5
    assert rms < 0.01 * 2e-4 * 6, rms  # 1% of lr x steps (lr 2e-4, 3 epochs of 2 steps)
    assert rundir.read_summary(tmp_path / "two")["status"] == "finished"


def test_summary_scores_every_digit_and_the_report_shows_them(tmp_path):
    run = tmp_path / "cgan"
    overrides = [
        *TINY,
        "data.test_limit=100",
        "gan.eval_samples=40",
        "gan.final_samples=60",
        "cgan.check_samples=30",
        "gan.grid_epochs=2",
        "train.epochs=2",
    ]
    summary = tasks.train("cgan", "seed", overrides, out=run, progress=False)
    assert summary["status"] == "finished" and summary["n_samples_scored"] == 60
    assert {"fid_mnist", "precision", "recall", "class_hist"} <= set(summary["test"])
    digits = summary["per_digit"]
    assert [d["digit"] for d in digits] == list(range(10)) and all(d["n"] == 6 for d in digits)
    assert all(0 <= d["share_as_digit"] <= 1 for d in digits)
    assert any("fid_mnist" in d for d in digits)  # digits with more than 3 test images among the first 100
    rows = rundir.read_history(run)
    assert "fid_mnist" not in rows[0] and "fid_mnist" in rows[1] and "digit_share_min" in rows[0]
    assert isinstance(summary["collapse_warnings"], list) and isinstance(summary["collapse_epochs"], list)
    for name in ("epoch_grids", "samples_final", "loss_curves", "digit_share_by_epoch", "class_histogram"):
        assert (run / "figures" / f"{name}.png").is_file(), name
    grids = sorted(p.name for p in (run / "grids").iterdir())
    assert grids == ["epoch_002.safetensors"]
    # `mnistlab eval` redraws the final samples from the same noise and digits: the same numbers.
    (run / "summary.json").write_text(json.dumps({**summary, "per_digit": []}))
    assert cli.main(["-q", "eval", str(run), "--device", "cpu"]) == 0
    again = json.loads((run / "summary.json").read_text())
    assert again["per_digit"] == digits and again["test"]["fid_mnist"] == pytest.approx(
        summary["test"]["fid_mnist"]
    )

    folder = RunFolder(
        tmp_path, {"stages": [{"name": "cgan", "status": "done"}]}, {"cgan": frozenset({"generator"})}
    )
    sec = tasks.get("cgan").report(folder, "cgan")
    assert not sec.missing and len(sec.tables) == 2 and len(sec.tables[1].rows) == 10
    assert {f.rel.rsplit("/", 1)[1] for f in sec.figures} >= {"epoch_grids.png", "digit_share_by_epoch.png"}
    missing = tasks.get("cgan").report(RunFolder(tmp_path, {"stages": []}), "cgan")
    assert missing.missing and not missing.tables
    # The intro says when the run trained in bfloat16 (train.amp), read from its summary.
    assert summary["amp"] == "off" and "bfloat16" not in sec.intro
    (run / "summary.json").write_text(json.dumps({**again, "amp": "bf16"}))
    assert "with bfloat16 forward passes" in tasks.get("cgan").report(folder, "cgan").intro
    # ... and when D also classified the digit (model.aux_classifier).
    assert summary["aux_classifier"] is False and "class head" not in sec.intro
    (run / "summary.json").write_text(json.dumps({**again, "aux_classifier": True}))
    assert "projection discriminator with a class head" in tasks.get("cgan").report(folder, "cgan").intro


def test_a_cgan_started_from_a_gan_is_that_gan_for_every_digit():
    """models/cgan.warm_start: G's and D's layers copied, the label's weights at 0, so the pair starts
    as the GAN whatever the digit; a step then moves the label's weights (they learn)."""
    torch.manual_seed(0)
    gan = GAN(GANConfig()).eval()
    model = CGAN(CGANConfig(aux_classifier=True)).eval()
    warm_start(model, gan.generator, gan.discriminator)
    z, x = torch.randn(6, 100), torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        for digit in (0, 7):
            y = torch.full((6,), digit)
            assert torch.allclose(model.generator(z, y), gan.generator(z), atol=1e-6)
            assert torch.allclose(model.discriminator.logits(x, y), gan.discriminator.logits(x), atol=1e-5)
    model.train()
    loss = model.discriminator.logits(model.generator(z, torch.arange(6)), torch.arange(6)).sum()
    loss.backward()
    assert model.generator.net.net[0].weight.grad[:, 100:].abs().sum() > 0
    assert model.discriminator.embed.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="the GAN's noise has 100 values, this cGAN's 64"):
        warm_start(CGAN(CGANConfig(noise_dim=64)), gan.generator, gan.discriminator)
    with pytest.raises(ValueError, match="LeakyReLU slope 0.2, this cGAN's 0.1"):
        warm_start(CGAN(CGANConfig(leak=0.1)), gan.generator, gan.discriminator)


def test_init_from_gan_starts_from_the_runs_networks_and_refuses_other_runs(tiny_runs, tmp_path):
    gan_run, cgan_run = tiny_runs
    exp = tasks.load_experiment("cgan", "seed", [*TINY, "train.epochs=1", "init.from_gan=true"])
    with pytest.raises(
        ConfigError, match=r"init.from_gan=true needs the GAN to start from: --gan-run GAN_RUN"
    ) as e:
        cgan.train(exp, tmp_path / "a", progress=False)
    assert_one_line_error(e)
    with pytest.raises(
        ConfigError, match=r"--gan-run .* holds a cgan run; give a run of `mnistlab train gan`"
    ):
        cgan.train(exp, tmp_path / "b", progress=False, gan_run=cgan_run)
    with pytest.raises(ConfigError, match="is not a run folder"):
        cgan.train(exp, tmp_path / "c", progress=False, gan_run=tmp_path)
    assert not any((tmp_path / n).exists() for n in "abc")
    model = cgan.build_cgan(exp, cgan.gan_to_start_from(exp, gan_run), gan_run)
    _, trained = load_gan(gan_run)
    z = torch.randn(4, 100)
    with torch.no_grad():
        assert torch.allclose(model.eval().generator(z, torch.arange(4)), trained.generator(z), atol=1e-6)
    assert cgan.run_inputs(exp) == {"gan_run": "gan"}
    assert cgan.run_inputs(tasks.load_experiment("cgan", "seed", TINY)) == {}


def test_the_cli_passes_gan_to_the_cgan_only(tiny_runs, tmp_path, capsys):
    gan_run = tiny_runs[0]
    out = tmp_path / "warm"
    args = [
        "-q",
        "train",
        "cgan",
        "--preset",
        "seed",
        "--out",
        str(out),
        "--no-progress",
        "--gan-run",
        str(gan_run),
    ]
    sets = [a for o in [*TINY, "train.epochs=1", "init.from_gan=true"] for a in ("--set", o)]
    assert cli.main([*args, *sets]) == 0
    assert rundir.read_summary(out)["started_from"] == str(gan_run)
    folder = RunFolder(
        tmp_path, {"stages": [{"name": "warm", "status": "done"}]}, {"warm": frozenset({"generator"})}
    )
    assert f"started from the GAN run {gan_run}" in cgan.report_section(folder, "warm").intro
    assert (
        cli.main(
            ["-q", "train", "ae", "--preset", "seed", "--gan-run", str(gan_run), "--out", str(tmp_path / "x")]
        )
        == 2
    )
    assert_one_line_error(capsys, "--gan-run is for tasks cgan, not ae")

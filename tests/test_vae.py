"""The VAE task: shapes, the losses as pure functions, a step changes the weights, exact resume, two
gloo processes equal one, and its roles (mean code, prior samples) through the registry."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mnistlab import tasks
from mnistlab.data.datasets import load
from mnistlab.metrics import images as image_metrics
from mnistlab.models.vae import VAE, CodePrior, VAEConfig, kl_divergence, mmd_to_prior, reconstruction_nll
from mnistlab.runs import folder as rundir
from mnistlab.runs.checkpoint import read_checkpoint
from mnistlab.tasks.vae import VAETask, beta_at
from mnistlab.training.loop import fit
from mnistlab.training.run_folder import seed_everything
from mnistlab.training.variational import evaluate_vae, fit_code_prior
from tests.conftest import assert_one_line_error, not_called
from tests.dist_worker import run_rank

pytestmark = pytest.mark.usefixtures("one_torch_thread")
# 160 images, 32 held out: 128 = 4 global batches of 32 (16 per rank under two processes). One stage
# unless a test adds the second (the presets' code_prior would shift every later random draw).
TINY = [
    "data.train_limit=160",
    "data.test_limit=32",
    "train.batch_size=32",
    "train.epochs=3",
    "train.device=cpu",
    "train.lr=2e-3",
    "vae.kl_warmup=0.5",
    "vae.eval_samples=0",
    "model.latent_dim=4",
    "model.code_prior=0",
]


def test_shapes_and_the_mean_code():
    vae = VAE(VAEConfig(latent_dim=6)).eval()
    x = torch.rand(5, 1, 28, 28)
    out = vae(x)
    assert out.recon.shape == out.logits.shape == (5, 1, 28, 28) and out.mu.shape == out.logvar.shape == (
        5,
        6,
    )
    assert torch.equal(out.z, out.mu) and torch.equal(vae.encoder(x), out.mu)  # the encoder role: the mean
    assert vae.decoder(out.mu).shape == (5, 1, 28, 28) and 0 <= out.recon.min() and out.recon.max() <= 1
    noisy = vae(x, torch.randn(5, 6))
    assert not torch.equal(noisy.recon, out.recon)  # eps moves the decoded sample


def test_kl_is_zero_for_a_standard_normal_posterior_and_positive_otherwise():
    zeros = torch.zeros(3, 4)
    assert torch.equal(kl_divergence(zeros, zeros), torch.zeros(3))
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    expected = 0.5 * (1.0 + (torch.e - 1.0 - 1.0))  # 0.5 * sum(mu^2 + var - 1 - logvar)
    assert kl_divergence(mu, logvar).item() == pytest.approx(expected)


def test_reconstruction_losses_and_the_warmup_schedule():
    x = torch.rand(2, 1, 28, 28)
    perfect = torch.logit(x.clamp(1e-4, 1 - 1e-4))
    assert reconstruction_nll(perfect, x, "mse").max() < 1e-4
    assert reconstruction_nll(torch.zeros_like(x), x, "bernoulli").shape == (2,)
    assert [beta_at(s, 100, 2.0, 0.5) for s in (0, 25, 50, 90)] == [0.0, 1.0, 2.0, 2.0]
    assert beta_at(0, 100, 1.0, 0.0) == 1.0


def test_the_mmd_term_is_near_zero_for_prior_codes_and_grows_as_codes_leave_the_prior():
    g = torch.Generator().manual_seed(0)
    prior = [mmd_to_prior(torch.randn(64, 10, generator=g)).item() for _ in range(200)]
    shifted = mmd_to_prior(torch.randn(64, 10, generator=g) + 1.0).item()
    squeezed = mmd_to_prior(0.3 * torch.randn(64, 10, generator=g)).item()
    assert abs(sum(prior) / len(prior)) < 2e-3 and max(map(abs, prior)) < 0.02  # unbiased: zero on average
    assert shifted > 0.1 and squeezed > 0.1 and shifted > 20 * max(prior)


def test_a_step_with_the_mmd_term_reports_it_and_pulls_codes_towards_the_prior():
    exp = tasks.load_experiment("vae", "quick", [*TINY, "vae.mmd=1000"])
    task, data = _task(exp)
    first = [task.train_step(data.train.images[:32], data.train.labels[:32])["mmd"] for _ in range(8)]
    assert first[0] > 0 and min(first[-3:]) < first[0]


def _task(exp):
    seed_everything(exp.train.seed)
    data = load(exp.data)
    return VAETask(VAE(exp.model), exp, data.val, torch.device("cpu"), total_steps=12), data


def test_epoch_validation_scores_only_what_its_row_reports(monkeypatch):
    exp = tasks.load_experiment("vae", "quick", TINY)
    task, data = _task(exp)
    full = evaluate_vae(
        task.model, data.val, torch.device("cpu"), exp.vae.likelihood, exp.train.eval_batch_size
    )
    assert {"mse", "psnr", "ssim", "recon_nll", "kl", "active_units"} <= set(full)
    for name in ("psnr", "ssim"):  # an epoch's validation must not compute them
        monkeypatch.setitem(image_metrics.QUALITY, name, not_called)
    assert task.evaluate() == {"loss": full["mse"], "recon_nll": full["recon_nll"], "kl": full["kl"]}


@pytest.mark.parametrize("extra", [[], ["model.code_prior=16"]], ids=["vae", "two-stage"])
def test_a_step_changes_every_weight(extra):
    exp = tasks.load_experiment("vae", "quick", [*TINY, *extra])
    task, data = _task(exp)
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    out = task.train_step(data.train.images[:16], data.train.labels[:16])
    assert out["loss"] > 0 and out["beta"] == 0.0 and int(task.steps.step) == 1
    assert all(not torch.equal(before[k], v) for k, v in task.model.state_dict().items())
    two_stage = any(k.startswith("code_prior.") for k in before)
    assert two_stage == bool(extra) and ("code_nll" in out) == two_stage


@pytest.mark.parametrize("after", [False, True], ids=["joint", "after"])
def test_the_second_stage_does_not_change_how_the_first_stage_trains(after):
    """It trains on the detached codes: the first stage's weights after a step are the same with it.
    Trained after the first stage (vae.code_prior_epochs), the first stage's steps leave it alone."""
    two = ["model.code_prior=16", *(["vae.code_prior_epochs=2"] if after else [])]
    (a, data), (b, _) = (_task(tasks.load_experiment("vae", "quick", [*TINY, *extra])) for extra in ([], two))
    b.model.encoder.load_state_dict(a.model.encoder.state_dict())
    b.model.decoder.load_state_dict(a.model.decoder.state_dict())
    before = {k: v.clone() for k, v in b.model.code_prior.state_dict().items()}
    for task in (a, b):
        torch.manual_seed(5)  # the same first-stage noise (the second stage draws after it)
        out = task.train_step(data.train.images[:16], data.train.labels[:16])
    first = {k: v for k, v in b.model.state_dict().items() if not k.startswith("code_prior.")}
    assert first.keys() == a.model.state_dict().keys()
    assert all(torch.equal(v, a.model.state_dict()[k]) for k, v in first.items())
    untouched = all(torch.equal(v, b.model.code_prior.state_dict()[k]) for k, v in before.items())
    assert untouched == after and ("code_nll" in out) != after


def test_the_second_stage_learns_where_the_codes_are():
    """Codes in two tight clusters at (+-2, 0): N(0, I) draws rarely land near them; the second stage's
    draws mostly do after a short training on them (fit_code_prior: codes drawn from N(mu, sd^2))."""
    torch.manual_seed(0)
    centres = torch.tensor([[2.0, 0.0], [-2.0, 0.0]])
    mu = centres[torch.randint(0, 2, (4096,))]
    stage = CodePrior(latent_dim=2, hidden=64)
    rows = fit_code_prior(stage, mu, torch.full_like(mu, 0.1), epochs=30, batch_size=256, lr=3e-3, seed=0)
    assert [r["epoch"] for r in rows] == list(range(1, 31)) and rows[-1]["code_nll"] < rows[0]["code_nll"]
    assert not stage.training  # left in eval mode, as sampling wants it

    def near(z):  # share of draws within 0.5 of a cluster centre
        return (torch.cdist(z, centres).min(1).values < 0.5).float().mean().item()

    with torch.no_grad():
        u = torch.randn(2000, 2)
        assert near(u) < 0.15 and near(stage(u)) > 0.6, (near(u), near(stage(u)))
    torch.manual_seed(0)
    first, second = CodePrior(2, 8), CodePrior(2, 8)
    second.load_state_dict(first.state_dict())
    for stage in (first, second):  # the same inputs and seed train the same stage
        fit_code_prior(stage, mu[:512], torch.full_like(mu[:512], 0.1), 2, 128, 3e-3, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


@pytest.mark.parametrize("extra", [[], ["model.code_prior=16"]], ids=["vae", "two-stage"])
def test_resume_equals_uninterrupted_bit_for_bit(tmp_path, extra):
    exp = tasks.load_experiment("vae", "quick", [*TINY, *extra])
    task, data = _task(exp)
    fit(task, data.train, exp.train, tmp_path / "a", progress=False)

    class CrashAt:  # stops at the 7th step, in epoch 2 (epoch 1 is checkpointed)
        def __init__(self, inner):
            self.inner, self.calls = inner, 0
            self.modules, self.optimizers = inner.modules, inner.optimizers

        def train_step(self, images, labels):
            self.calls += 1
            if self.calls == 7:
                raise KeyboardInterrupt
            return self.inner.train_step(images, labels)

        def evaluate(self):
            return self.inner.evaluate()

    task2, data2 = _task(exp)
    with pytest.raises(KeyboardInterrupt):
        fit(CrashAt(task2), data2.train, exp.train, tmp_path / "b", progress=False)
    torch.manual_seed(123)  # a new process: another RNG state until the checkpoint restores it
    task3, data3 = _task(exp)
    fit(task3, data3.train, exp.train, tmp_path / "b", resume=True, progress=False)
    for k, v in task.model.state_dict().items():
        assert torch.equal(v, task3.model.state_dict()[k]), k
    assert int(task3.steps.step) == int(task.steps.step) == 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo")
@pytest.mark.parametrize(
    "extra", [[], ["vae.mmd=100"], ["model.code_prior=16"]], ids=["elbo", "mmd", "two-stage"]
)
def test_two_gloo_processes_match_one(tmp_path, extra):
    """The reparameterisation noise of each rank is its rows of the global batch's draw, and the MMD
    term sees the global batch's codes, so two processes take the steps one process takes (to float
    rounding: see test_distributed's bound)."""
    one, overrides = tmp_path / "one", [*TINY, *extra]
    tasks.get("vae").train(tasks.load_experiment("vae", "seed", overrides), one, progress=False)
    mp.start_processes(
        run_rank,
        args=(2, _free_port(), "vae", overrides, str(tmp_path / "two"), 0),
        nprocs=2,
        start_method="spawn",
    )
    wa, wb = (read_checkpoint(rundir.checkpoint_path(p))[0] for p in (one, tmp_path / "two"))
    keys = [k for k in wa if k.startswith("module/model/")]
    sq = sum(((wa[k].double() - wb[k].double()) ** 2).sum().item() for k in keys)
    rms = (sq / sum(wa[k].numel() for k in keys)) ** 0.5
    assert rms < 0.01 * 1e-3 * 12, rms  # 1% of lr x steps (seed preset: lr 1e-3, 12 steps)


def test_the_run_encodes_with_its_mean_and_generates_from_its_prior(tmp_path):
    out = tmp_path / "vae"
    summary = tasks.train("vae", "quick", [*TINY, "vae.eval_samples=0"], out=out, progress=False)
    assert summary["status"] == "finished" and "active_units" in summary["test"]
    run = tasks.load_run(out)
    images = torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8)
    assert torch.allclose(run.encode(images), run.model(images.float()[:, None] / 255).mu, atol=1e-6)
    assert run.generate(6, seed=2).shape == (6, 28, 28)
    assert torch.equal(run.generate(6, seed=2), run.generate(6, seed=2))
    assert run.generator().samplers[0] == "prior"


def test_a_two_stage_run_draws_through_its_second_stage_and_scores_both(tmp_path):
    out = tmp_path / "vae2"
    overrides = [*TINY, "model.code_prior=16", "vae.eval_samples=200"]
    summary = tasks.train("vae", "quick", overrides, out=out, progress=False)
    assert {"prior", "stage1"} <= summary["generation"].keys()
    assert summary["generation"]["prior"]["fid_mnist"] != summary["generation"]["stage1"]["fid_mnist"]
    run = tasks.load_run(out)
    two, one = run.generate(6, seed=2), run.generate(6, seed=2, sampler="stage1")
    assert two.shape == one.shape == (6, 28, 28) and not torch.equal(two, one)


def test_on_the_cpu_it_trains_channels_last_and_steps_as_in_nchw():
    """channels_last is a speed choice only: a step from the same weights and noise has the NCHW
    step's gradients to float rounding."""
    exp = tasks.load_experiment("vae", "quick", [*TINY, "model.code_prior=16"])
    (fast, data), (plain, _) = _task(exp), _task(exp)
    assert fast.model.encoder.body.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    plain.model.to(memory_format=torch.contiguous_format)
    plain.model.load_state_dict(fast.model.state_dict())
    assert plain.model.encoder.body.net[0].weight.is_contiguous()
    for task in (fast, plain):
        seed_everything(1)
        task.train_step(data.train.images[:16], data.train.labels[:16])
    for (name, a), b in zip(fast.model.named_parameters(), plain.model.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-7), name  # left on the weights after it


def test_warm_start_decodes_the_mean_code_as_the_autoencoder_did_on_standardised_codes():
    from mnistlab.core.errors import ConfigError
    from mnistlab.models.autoencoder import AEConfig, ConvAutoencoder
    from mnistlab.models.vae import WARM_LOGVAR, warm_start

    torch.manual_seed(0)
    ae = ConvAutoencoder(AEConfig(latent_dim=4, dropout=0.1)).eval()  # dropout layers shift no weights
    x = torch.rand(64, 1, 28, 28)
    with torch.no_grad():
        codes = ae.encoder(x) * 3 + 1  # codes of another scale and centre than N(0, I)
        ae.encoder.net[-1].weight.mul_(3)
        ae.encoder.net[-1].bias.mul_(3).add_(1)
        target = ae.decoder(ae.encoder(x))
    vae = VAE(VAEConfig(latent_dim=4)).eval()
    warm_start(vae, ae.encoder, ae.decoder, codes)
    with torch.no_grad():
        out = vae(x)
    assert torch.allclose(out.recon, target, atol=1e-5)  # the same reconstruction
    assert torch.allclose(out.mu.mean(0), torch.zeros(4), atol=1e-4)  # standardised codes
    assert torch.allclose(out.mu.std(0), torch.ones(4), atol=1e-4)
    assert torch.equal(out.logvar, torch.full_like(out.logvar, WARM_LOGVAR))
    with pytest.raises(ConfigError, match="4-d code, the VAE model.latent_dim=6"):
        warm_start(VAE(VAEConfig(latent_dim=6)), ae.encoder, ae.decoder, codes)
    with pytest.raises(ConfigError, match="do not match"):
        warm_start(VAE(VAEConfig(latent_dim=4, hidden=64)), ae.encoder, ae.decoder, codes)


def test_a_vae_run_starts_from_the_baseline_autoencoder_only_when_asked(tmp_path, capsys):
    from mnistlab import cli
    from mnistlab.core.errors import ConfigError

    ae_dir = tmp_path / "ae"
    tasks.train(
        "ae", "quick", [*TINY[:5], "model.latent_dim=4", "train.epochs=1"], out=ae_dir, progress=False
    )
    spec = tasks.get("vae")
    warm = tasks.load_experiment("vae", "quick", [*TINY, "init.from_baseline=true", "train.epochs=1"])
    with pytest.raises(ConfigError, match="--baseline"):
        spec.train(warm, tmp_path / "cold", progress=False)
    summary = spec.train(warm, tmp_path / "warm", progress=False, baseline=ae_dir)
    assert summary["started_from"] == str(ae_dir)
    cold = tasks.load_experiment("vae", "quick", [*TINY, "train.epochs=1"])
    assert spec.train(cold, tmp_path / "plain", progress=False, baseline=ae_dir)["started_from"] is None
    wide = tasks.load_experiment("vae", "quick", [*TINY, "init.from_baseline=true", "model.latent_dim=6"])
    with pytest.raises(ConfigError, match="init.from_baseline: .*6"):
        spec.train(wide, tmp_path / "wide", progress=False, baseline=ae_dir)
    # Its evaluation compares with no baseline: a one-line error, not a traceback.
    assert cli.main(["-q", "eval", str(tmp_path / "warm"), "--baseline", str(ae_dir)]) == 2
    assert_one_line_error(capsys, "--baseline and --sigmas apply to runs of dae")


def test_a_second_stage_after_the_first_trains_into_the_checkpoint_and_resumes(tmp_path, monkeypatch):
    """vae.code_prior_epochs: a fresh second stage trains on the frozen codes into the last checkpoint;
    a run stopped inside it trains it again to the same weights, and a finished run resumed keeps it."""
    from mnistlab.core.errors import ConfigError
    from mnistlab.tasks import vae as vae_task

    spec = tasks.get("vae")
    after = tasks.load_experiment(
        "vae", "quick", [*TINY, "train.epochs=2", "model.code_prior=16", "vae.code_prior_epochs=2"]
    )
    summary = spec.train(after, tmp_path / "a", progress=False)
    a = read_checkpoint(rundir.checkpoint_path(tmp_path / "a"))[0]
    torch.manual_seed(after.train.seed)
    fresh = CodePrior(4, 16).state_dict()
    second = {k: a[f"module/model/code_prior.{k}"] for k in fresh}
    assert all(not torch.equal(v, second[k]) for k, v in fresh.items())  # every weight of it trained
    assert summary["code_prior_after"]["epoch"] == 2 and summary["code_prior_after"]["seconds"] > 0
    assert tasks.load_run(tmp_path / "a").generate(4, seed=1).shape == (4, 28, 28)  # its hash verified

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    real = vae_task.refit_code_prior
    monkeypatch.setattr(vae_task, "refit_code_prior", stop)
    with pytest.raises(KeyboardInterrupt):
        spec.train(after, tmp_path / "b", progress=False)
    monkeypatch.setattr(vae_task, "refit_code_prior", real)
    torch.manual_seed(123)  # a new process: another RNG state
    spec.train(after, tmp_path / "b", resume=True, progress=False)
    b = read_checkpoint(rundir.checkpoint_path(tmp_path / "b"))[0]
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("module/model/"))
    monkeypatch.setattr(vae_task, "refit_code_prior", stop)  # finished: not trained again
    again = spec.train(after, tmp_path / "a", resume=True, progress=False)
    assert again["code_prior_after"] == summary["code_prior_after"]
    with pytest.raises(ConfigError, match="model.code_prior > 0"):
        tasks.load_experiment("vae", "quick", [*TINY, "vae.code_prior_epochs=2"])


@pytest.mark.parametrize(
    "given, expected",
    [([], (8, 2e-3)), (["vae.code_prior_batch_size=32", "vae.code_prior_lr=0.004"], (32, 4e-3))],
)
def test_the_second_stage_after_the_first_takes_its_own_batch_size_and_rate(
    tmp_path, monkeypatch, given, expected
):
    """vae.code_prior_batch_size / code_prior_lr (0: the first stage's) reach the second stage's fit
    and its summary."""
    from mnistlab.tasks import vae as vae_task

    seen = {}
    real = vae_task.refit_code_prior

    def spy(model, moments, epochs, batch_size, lr, seed, **schedules):
        seen.update(batch_size=batch_size, lr=lr)
        return real(model, moments, epochs, batch_size, lr, seed, **schedules)

    monkeypatch.setattr(vae_task, "refit_code_prior", spy)
    exp = tasks.load_experiment(
        "vae",
        "quick",
        [
            *TINY,
            "train.epochs=1",
            "train.batch_size=8",
            "train.lr=0.002",
            "model.code_prior=16",
            "vae.code_prior_epochs=1",
            *given,
        ],
    )
    summary = tasks.get("vae").train(exp, tmp_path / "run", progress=False)
    assert (seen["batch_size"], seen["lr"]) == expected
    assert (summary["code_prior_after"]["batch_size"], summary["code_prior_after"]["lr"]) == expected

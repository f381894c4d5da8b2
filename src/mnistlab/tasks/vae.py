"""The task `vae`: a variational autoencoder on the report's shapes (models/vae.py), the principled
answer to the report's unreadable decoded random codes: its prior N(0, I) is the distribution the
decoder is trained to decode, so prior samples need no sampler fitted after the fact.

Loss per image: reconstruction NLL (Bernoulli: BCE from logits summed over the 784 pixels; or "mse":
the summed squared error) plus beta x KL(q(z|x) || N(0, I)), beta ramped from 0 over the first
`vae.kl_warmup` share of the steps (KL annealing, Bowman et al. 2016). Validation reports the mean
code's reconstruction MSE as val_loss, so runs with different betas compare on reconstruction.
With `model.code_prior` the model carries a second-stage VAE on its codes (models/vae.py says why),
trained in the same steps on the detached codes: its ELBO is added to the loss, its KL warmed up on the
same schedule; or, with `vae.code_prior_epochs`, after them on the first stage's frozen codes (Dai &
Wipf's order). Roles: encoder (the mean of q(z|x)), decoder, generator ("prior": N(0, I) through the
second stage when there is one; "stage1": N(0, I) as the code; or samplers fitted to the codes).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mnistlab.core import distributed
from mnistlab.core.errors import ConfigError, check, check_float, check_int, check_seed
from mnistlab.core.task_catalog import spec_fields
from mnistlab.data.datasets import Data, DataConfig, Split, load, to_float
from mnistlab.metrics.generation import score_samples
from mnistlab.models.code_samplers import AutoencoderGenerator, SampleRequest, check_sampler, decode, encode
from mnistlab.models.vae import (
    VAE,
    GaussianEncoder,
    VAEConfig,
    beta_at,
    kl_divergence,
    mmd_to_prior,
    reconstruction_nll,
    warm_start,
)
from mnistlab.plots.content import RunFolder, Section, Table, num, pct, score_table
from mnistlab.plots.figures import image_rows, plot_curves
from mnistlab.plots.latent import image_grid
from mnistlab.runs import folder as rundir
from mnistlab.runs.checkpoint import save_checkpoint
from mnistlab.tasks import TaskSpec, register
from mnistlab.tasks.ae import AutoencoderRun
from mnistlab.tasks.dae import load_baseline
from mnistlab.training import run_folder
from mnistlab.training.denoise import InitConfig
from mnistlab.training.loop import TrainConfig, conv_channels_last, make_optimizer, total_steps
from mnistlab.training.reference import load_reference
from mnistlab.training.variational import evaluate_vae, refit_code_prior

LIKELIHOODS = ("bernoulli", "mse")


@dataclass(frozen=True)
class VAETrainConfig:
    beta: float = 1.0  # weight of the KL term (1: the ELBO)
    kl_warmup: float = 0.0  # share of the training steps over which beta ramps up from 0
    likelihood: str = "bernoulli"  # "bernoulli" (BCE) or "mse"
    mmd: float = 0.0  # weight of MMD(codes of the global batch, N(0, I)): InfoVAE's aggregate-posterior term
    eval_samples: int = 10_000  # prior samples scored at the end (FID-MNIST, coverage); 0 = none
    sample_seed: int = 0
    # 0: the second stage (model.code_prior) trains in the first stage's steps; N: a fresh one trains N
    # epochs after them on the frozen codes, with the first stage's schedules.
    code_prior_epochs: int = 0
    # ... in batches of this many codes at this peak rate (0: the first stage's train.batch_size and
    # train.lr). Its MLP on 10 numbers a code runs far below the matmul peak at the first stage's 64.
    code_prior_batch_size: int = 0
    code_prior_lr: float = 0.0

    def __post_init__(self):
        check_float(self.beta, "vae.beta", 0, 1000)
        check_float(self.kl_warmup, "vae.kl_warmup", 0, 1)
        check(self.likelihood in LIKELIHOODS, f"vae.likelihood must be one of {', '.join(LIKELIHOODS)}")
        check_float(self.mmd, "vae.mmd", 0, 1e6)
        check_int(self.eval_samples, "vae.eval_samples", 0, 100_000)
        check_seed(self.sample_seed, "vae.sample_seed")
        check_int(self.code_prior_epochs, "vae.code_prior_epochs", 0, 10_000)
        check_int(
            self.code_prior_batch_size, "vae.code_prior_batch_size", 0, 1_000_000, "0 = train.batch_size"
        )
        check_float(self.code_prior_lr, "vae.code_prior_lr", 0, 10)


@dataclass(frozen=True)
class VAEExperiment:
    data: DataConfig = field(default_factory=DataConfig)
    model: VAEConfig = field(default_factory=VAEConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    vae: VAETrainConfig = field(default_factory=VAETrainConfig)
    init: InitConfig = field(default_factory=InitConfig)  # from_baseline: start from --baseline's autoencoder

    def __post_init__(self):
        check(
            not self.vae.code_prior_epochs or self.model.code_prior > 0,
            "vae.code_prior_epochs trains a second stage: give its width, model.code_prior > 0",
        )


# ----------------------------------------------------------------------------- training


class _Steps(nn.Module):
    """A step counter the checkpoint saves (a buffer), so the KL warm-up resumes where it was."""

    def __init__(self):
        super().__init__()
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))


class VAETask:
    def __init__(self, model: VAE, exp: VAEExperiment, val: Split, device: torch.device, total_steps: int):
        # Conv weights channels_last on the CPU (`conv_channels_last`: faster per step, docs/results.md).
        fmt = torch.channels_last if conv_channels_last(device) else torch.preserve_format
        self.model = self.net = model.to(device, memory_format=fmt)  # net: the model or its DDP wrapper
        self.cfg, self.device, self.val, self.total = exp.vae, device, val, total_steps
        # A second stage trained after these steps is out of them and of DDP's gradients.
        self.joint = model.code_prior is not None and not exp.vae.code_prior_epochs
        if model.code_prior is not None and not self.joint:
            model.code_prior.requires_grad_(False)
        self.eval_batch_size = exp.train.eval_batch_size
        self.steps = _Steps()
        self.modules = {"model": self.model, "steps": self.steps}
        self.optimizers = {"model": make_optimizer(self.model.parameters(), exp.train)}

    def distribute(self, wrap) -> None:
        self.net = wrap(self.model)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        x = to_float(images, self.device)  # (B, 1, 28, 28)
        # The global batch's noise, this rank's rows: torchrun draws what one process would.
        d = self.model.cfg.latent_dim
        eps = distributed.randn_rows(len(x), d, device=self.device)
        # The second stage draws its own noise the same way.
        code_eps = distributed.randn_rows(len(x), d, device=self.device) if self.joint else None
        out = self.net(x, eps, code_eps)
        recon = reconstruction_nll(out.logits, x, self.cfg.likelihood)  # (B,)
        kl = kl_divergence(out.mu, out.logvar)  # (B,)
        step = int(self.steps.step)
        beta = beta_at(step, self.total, self.cfg.beta, self.cfg.kl_warmup)
        loss = (recon + beta * kl).mean()
        logs = {}
        if out.code_nll is not None:  # the second stage: its own ELBO, its KL warmed up like the first's
            warm = beta_at(step, self.total, 1.0, self.cfg.kl_warmup)
            loss = loss + (out.code_nll + warm * out.code_kl).mean()
            logs = {"code_nll": out.code_nll.mean().item(), "code_kl": out.code_kl.mean().item()}
        mmd = torch.zeros(())
        if self.cfg.mmd > 0:  # over the global batch's codes, so torchrun optimises what one process does
            mmd = mmd_to_prior(distributed.gather_rows(out.mu + torch.exp(0.5 * out.logvar) * eps))
            loss = loss + self.cfg.mmd * mmd
        opt = self.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self.steps.step += 1
        return {
            "loss": loss.item(),
            "recon": recon.mean().item(),
            "kl": kl.mean().item(),
            "beta": beta,
            "mmd": mmd.item(),
            **logs,
        }

    def evaluate(self) -> dict[str, float]:
        if len(self.val) == 0:
            return {}
        # MSE only of the image scores: the epoch's row reports nothing else (PSNR and SSIM: the test set).
        s = evaluate_vae(
            self.model, self.val, self.device, self.cfg.likelihood, self.eval_batch_size, ("mse",)
        )
        return {"loss": s["mse"], "recon_nll": s["recon_nll"], "kl": s["kl"]}


def train(
    exp: VAEExperiment,
    out: Path,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end=None,
    baseline: Path | None = None,
) -> dict:
    """Train the VAE of `exp` into run folder `out` (from autoencoder run `baseline` if init.from_baseline)."""
    if exp.init.from_baseline and baseline is None:
        raise ConfigError("init.from_baseline=true needs the autoencoder to start from: --baseline AE_RUN")
    base = load_baseline(baseline) if exp.init.from_baseline else None  # fail before training, not after
    data, device = run_folder.start(exp)
    model = VAE(exp.model)
    if base is not None:  # before the task: its optimizer and channels_last copy see these weights
        ae = base[2].to(device)
        codes = torch.from_numpy(encode(ae.encoder, data.train.images, device))  # (N, d)
        warm_start(model, ae.encoder, ae.decoder, codes, where=f"init.from_baseline: {base[0]}: ")
    total = total_steps(len(data.train), exp.train)
    task = VAETask(model, exp, data.val, device, total)
    run_dir = run_folder.prepare(out, exp, SPEC.name, resume)
    result = run_folder.fit_plain(task, data.train, exp, run_dir, SPEC.name, resume, progress, on_epoch_end)
    if result is None:
        return {}  # not rank 0
    after = (
        _code_prior_after(task, exp, data.train, run_dir, result, progress)
        if exp.vae.code_prior_epochs
        else None
    )
    summary = evaluate(run_dir, exp, device, model=model, data=data, write=False)
    summary.update(
        run_folder.finished(result),
        device=str(device),
        started_from=base and str(base[0]),
        **({"code_prior_after": after} if after else {}),
    )
    rundir.write_summary(run_dir, summary)
    return summary


def _code_prior_after(
    task: VAETask, exp: VAEExperiment, train_split: Split, run_dir: Path, result, progress: bool
) -> dict:
    """A fresh second stage trained on the frozen codes (`vae.code_prior_epochs`), saved into the last
    checkpoint marked in its state: a resumed run keeps a finished one, or trains it again from its seed.
    Updates `result`'s checkpoint SHA-256 and seconds; returns its last epoch's losses and seconds."""
    _, state = rundir.read_run_checkpoint(run_dir)
    after = state.get("code_prior_after")
    if after is None:
        t0, model = time.perf_counter(), task.model
        moments = torch.from_numpy(encode(model.encoder.body, train_split.images, task.device))  # (N, 2d)
        batch_size = exp.vae.code_prior_batch_size or exp.train.batch_size
        lr = exp.vae.code_prior_lr or exp.train.lr
        last = refit_code_prior(
            model,
            moments,
            exp.vae.code_prior_epochs,
            batch_size,
            lr,
            exp.train.seed,
            schedule=exp.train.schedule,
            warmup=exp.train.warmup,
            kl_warmup=exp.vae.kl_warmup,
            progress=progress,
        )
        after = {
            **{k: round(v, 6) for k, v in last.items()},
            "batch_size": batch_size,
            "lr": lr,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        result.checkpoint_sha256 = save_checkpoint(
            rundir.checkpoint_path(run_dir),
            task.modules,
            task.optimizers,
            state["epoch"],
            state["step"],
            {"code_prior_after": after},
        )
    result.seconds += after["seconds"]
    return after


def prior_samples(
    model: VAE, n: int, seed: int, device, batch_size: int = 1000, first_stage: bool = False
) -> np.ndarray:
    """n uint8 digits (n, 28, 28): u ~ N(0, I) from a generator seeded by `seed`, through the second
    stage when the model has one (unless `first_stage`: then u is the code), decoded."""
    u = torch.randn((n, model.cfg.latent_dim), generator=torch.Generator().manual_seed(seed))
    stage = None if first_stage else model.code_prior
    if stage is not None:  # in eval mode and restored after, as latent.decode does for the decoder
        was_training = stage.training
        stage.eval()
        try:
            with torch.no_grad():
                u = torch.cat([model.codes_from_prior(c.to(device)).cpu() for c in u.split(batch_size)])
        finally:
            stage.train(was_training)
    return decode(model.decoder, u.numpy(), device, batch_size)


def evaluate(
    run_dir: Path,
    exp: VAEExperiment,
    device,
    model: VAE | None = None,
    data: Data | None = None,
    write: bool = True,
) -> dict:
    """Test numbers, figures and the prior samples' scores of a VAE run (`mnistlab eval` too)."""
    model = (model or _load_model(run_dir, exp)).to(device).eval()
    data = data or load(exp.data)
    test = evaluate_vae(model, data.test, device, exp.vae.likelihood, exp.train.eval_batch_size)
    figures = Path(run_dir) / "figures"
    history = rundir.read_history(run_dir)
    plot_curves(
        history,
        ("train_recon", "train_kl"),
        figures / "loss_curves.png",
        "VAE: reconstruction NLL and KL per image (training)",
        ylabel="nats",
        log_y=True,
    )
    plot_curves(
        history,
        ("val_loss",),
        figures / "val_mse.png",
        "VAE: validation MSE of the mean code",
        ylabel="MSE",
        log_y=True,
    )
    x = to_float(data.test.images[:12], device)
    with torch.no_grad():
        image_rows(
            [x, model(x).recon],
            ["original", "reconstruction"],
            figures / "reconstructions.png",
            "Test images and their reconstructions (mean code)",
        )
    summary: dict[str, Any] = {
        "task": SPEC.name,
        "test": {k: round(v, 6) for k, v in test.items()},
        "vae": asdict(exp.vae),
        "best_val_loss": min((r["val_loss"] for r in history if "val_loss" in r), default=None),
        "data": data.source,
        "n_train": len(data.train),
        "n_val": len(data.val),
        "n_test": len(data.test),
    }
    n = exp.vae.eval_samples
    samples = prior_samples(model, max(n, 100), exp.vae.sample_seed, device)

    through = " through the second stage" if model.code_prior is not None else ""
    image_grid(samples[:100], figures / "samples_prior.png", f"VAE: decoded draws of N(0, I){through}")
    if n:
        ref = load_reference(exp.data, device)
        scores = score_samples(samples[:n], ref, data.test, data.train, seed=exp.vae.sample_seed)
        summary["generation"] = {"reference": ref.name, "n_samples": n, "prior": scores}
        if model.code_prior is not None:  # what the first stage alone draws, for comparison
            plain = prior_samples(model, n, exp.vae.sample_seed, device, first_stage=True)
            summary["generation"]["stage1"] = score_samples(
                plain, ref, data.test, data.train, seed=exp.vae.sample_seed
            )
    if write:
        rundir.write_summary(run_dir, {**rundir.read_summary(run_dir), **summary})
    return summary


# ---------------------------------------------------------------------------- trained runs


def _load_model(run_dir: Path, exp: VAEExperiment) -> VAE:
    return rundir.load_weights(run_dir, VAE(exp.model)).eval()


class VAEGenerator:
    """The prior N(0, I) decoded (the default), or the code samplers of any autoencoder."""

    # "prior": N(0, I) through the second stage when the run has one; "stage1": N(0, I) as the code.
    samplers = ("prior", "stage1", *AutoencoderGenerator.samplers)

    def __init__(self, model: VAE, codes: AutoencoderGenerator, device):
        self.model, self.codes, self.device = model, codes, device

    def sample(self, request: SampleRequest) -> np.ndarray:
        check_sampler(request.sampler, self.samplers, "VAE")
        if request.sampler in ("prior", "stage1"):
            return prior_samples(
                self.model, request.n, request.seed, self.device, first_stage=request.sampler == "stage1"
            )
        return self.codes.sample(request)


class VAERun(AutoencoderRun):
    def fresh_encoder(self) -> nn.Module:
        return GaussianEncoder(self.exp.model)

    def generator(self) -> VAEGenerator:
        self.require("generator")
        if self._generator is None:
            codes = AutoencoderGenerator(
                self.model.encoder,
                self.model.decoder,
                load(self.exp.data).train.images,
                self.device,
                self.batch_size,
            )
            self._generator = VAEGenerator(self.model, codes, self.device)
        return self._generator


def load_run(run_dir: Path, exp: VAEExperiment, device: torch.device) -> VAERun:
    return VAERun(SPEC, run_dir, exp, device, _load_model(run_dir, exp))


def run_inputs(exp: VAEExperiment) -> dict[str, str]:
    """With init.from_baseline the VAE starts from an autoencoder run."""
    return {"baseline": "autoencoder"} if exp.init.from_baseline else {}


# ---------------------------------------------------------------------------------- report


def report_section(run: RunFolder, stage: str) -> Section:
    sec = Section(stage, "Variational autoencoder")
    sec.missing = run.not_run(stage, "trained VAE")
    if sec.missing:
        return sec
    s = run.json(f"{stage}/summary.json")
    test, v = s.get("test", {}), s.get("vae", {})
    after = (
        f", trained {num(v.get('code_prior_epochs'))} epochs after the first,"
        if s.get("code_prior_after")
        else ""
    )
    sec.intro = (
        f"The report's encoder and decoder as a VAE (beta {num(v.get('beta'))}, KL warm-up over "
        f"{pct(v.get('kl_warmup'))} of the steps, {v.get('likelihood')} likelihood), trained "
        f"{num(s.get('epochs'))} epochs on {num(s.get('n_train'))} images in {num(s.get('train_seconds'))} s"
        + (
            ", starting from the autoencoder's weights (its codes standardised)"
            if s.get("started_from")
            else ""
        )
        + ". Its prior N(0, I) is what the decoder learnt to decode: random codes need no fitted sampler."
        + (
            f" A second-stage VAE on the codes (Dai & Wipf 2019){after} carries N(0, I) draws to where "
            "digits encode."
            if (s.get("generation") or {}).get("stage1")
            else ""
        )
    )
    sec.tables.append(
        Table(
            f"Test set ({num(s.get('n_test'))} images), mean code",
            ["MSE", "PSNR (dB)", "SSIM", "KL (nats)", "active code dimensions"],
            [
                [
                    num(test.get("mse")),
                    num(test.get("psnr")),
                    num(test.get("ssim")),
                    num(test.get("kl")),
                    num(test.get("active_units")),
                ]
            ],
        )
    )
    gen = s.get("generation")
    if gen:
        draws = (
            ("prior", "N(0, I) through the second stage" if "stage1" in gen else "prior N(0, I)"),
            ("stage1", "N(0, I) as the code (first stage alone)"),
        )
        title = (
            f"{num(gen.get('n_samples'))} prior samples scored with {gen.get('reference')} "
            "(compare with the autoencoder's samplers in the latent-space section)"
        )
        columns = ("FID-MNIST", "precision", "recall", "rarest digit", "commonest digit")
        rows = [(name, gen[key]) for key, name in draws if gen.get(key)]
        sec.tables.append(score_table(title, rows, columns, label="draws"))
    f = f"{stage}/figures/"
    sec.figures += run.figure(
        f + "samples_prior.png",
        "Decoded draws from the prior N(0, I), through the second stage when the run has one (image grid).",
    )
    for name, caption in (
        ("reconstructions.png", "Top: test images; bottom: reconstructions of the mean code."),
        ("loss_curves.png", "Training reconstruction NLL and KL per image. x: epoch; y: nats."),
        ("val_mse.png", "Validation MSE of the mean code. x: epoch; y: MSE."),
    ):
        sec.figures += run.figure(f + name, caption)
    return sec


# ---------------------------------------------------------------------------------- presets

# Tuned for prior samples (docs/results.md, "vae"; the tries: docs/history.md): the tuned autoencoder's
# optimiser and schedule, KL warm-up over 30%, 60 epochs (30: FID-MNIST 13.9 -> 11.5 with one stage),
# and a second stage of width 512 on the codes (60 epochs: 11.5 -> 6.5; width 256 at 30 epochs: 8.5).
# fmt: off
_DEFAULT = {
    "model": {"latent_dim": 10, "code_prior": 512},
    "train": {"epochs": 60, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.0, "optimizer": "adamw",
              "schedule": "onecycle"},
    "vae": {"beta": 1.0, "kl_warmup": 0.3, "likelihood": "bernoulli"},
}
PRESETS = {
    # The report's training settings (Adam lr 1e-3, weight decay 1e-4, batch 256, 20 epochs), as a VAE.
    "seed": {
        "model": {"latent_dim": 10},
        "train": {"epochs": 20, "batch_size": 256, "lr": 1e-3, "weight_decay": 1e-4, "optimizer": "adam",
                  "schedule": "constant"},
        "vae": {"beta": 1.0, "kl_warmup": 0.0, "likelihood": "bernoulli"},
    },
    "default": _DEFAULT,
    "quick": {**_DEFAULT, "train": {**_DEFAULT["train"], "epochs": 6}, "vae": {**_DEFAULT["vae"], "eval_samples": 2000}},
}
# fmt: on

SPEC = register(
    TaskSpec(
        **spec_fields("vae"),
        experiment=VAEExperiment,
        train=train,
        load=load_run,
        presets=PRESETS,
        evaluate=evaluate,
        report=report_section,
        prunable=True,
        run_inputs=run_inputs,
    )
)

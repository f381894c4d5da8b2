"""A plug-in generator for mnistlab: a small MLP from noise z ~ N(0, I) to images, trained by matching
the moments of real batches (a Gaussian-kernel MMD on the pixels; one network, no discriminator).
It writes nothing of its own beyond its weights: mnistlab's generic `GeneratorRun` gives it
`mnistlab sample`, `score`, `compare` and `serve`, `finish_generator` its test scores in summary.json,
`evaluate_generator` `mnistlab eval` and `generator_section` its part of the study report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from mnistlab.plugin import (
    DataConfig,
    GeneratorRun,
    TaskSpec,
    TrainConfig,
    evaluate_generator,
    finish_generator,
    finished,
    fit_plain,
    generator_section,
    load_weights,
    make_optimizer,
    prepare,
    start,
    task_fields,
    to_float,
    write_summary,
)
from toy_mnistlab import NOISEGEN

VAL_SAMPLES = 500  # validation images (and as many fixed noise vectors) the per-epoch MMD compares


@dataclass(frozen=True)
class NoiseGenConfig:
    latent_dim: int = 8
    hidden: int = 128
    bandwidths: tuple[float, ...] = (
        4.0,
        8.0,
        16.0,
    )  # kernel widths in pixel-space L2 (digits lie ~5-10 apart)


@dataclass(frozen=True)
class NoiseGenExperiment:
    data: DataConfig = field(default_factory=DataConfig)
    model: NoiseGenConfig = field(default_factory=NoiseGenConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


class NoiseGen(nn.Module):
    def __init__(self, cfg: NoiseGenConfig):
        super().__init__()
        self.generator = nn.Sequential(  # (B, d) -> (B, 1, 28, 28) in [0, 1]
            nn.Linear(cfg.latent_dim, cfg.hidden),
            nn.ReLU(),
            nn.Linear(cfg.hidden, 784),
            nn.Sigmoid(),
            nn.Unflatten(1, (1, 28, 28)),
        )

    def forward(self, z):
        return self.generator(z)


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidths: tuple[float, ...]) -> torch.Tensor:
    """Squared MMD between samples x (N, D) and y (M, D) under a sum of Gaussian kernels (biased V-statistic)."""
    xy = torch.cat([x, y])
    d2 = torch.cdist(xy, xy).pow(2)  # (N + M, N + M)
    k = sum(torch.exp(-d2 / (2 * s * s)) for s in bandwidths)
    n = len(x)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


class NoiseGenTask:
    """The loop's task: a step draws a batch of noise from torch's global RNG (checkpointed, so a
    resumed run draws the same), and validation compares fixed noise's images with held-out digits."""

    def __init__(self, model: NoiseGen, exp: NoiseGenExperiment, val, device):
        self.model, self.cfg, self.device = model.to(device), exp.model, device
        self.modules = {"model": self.model}
        self.optimizers = {"model": make_optimizer(self.model.parameters(), exp.train)}
        self.val = val.images[:VAL_SAMPLES]  # uint8 (V, 28, 28)
        self.val_z = torch.randn(
            len(self.val), exp.model.latent_dim, generator=torch.Generator().manual_seed(1)
        )

    def train_step(self, images, labels):
        x = to_float(images, self.device).flatten(1)  # (B, 784)
        z = torch.randn(len(x), self.cfg.latent_dim).to(self.device)
        loss = mmd(self.model(z).flatten(1), x, self.cfg.bandwidths)
        self.optimizers["model"].zero_grad()
        loss.backward()
        self.optimizers["model"].step()
        return {"loss": loss.item()}  # the contract: a dict of floats with at least "loss"

    @torch.no_grad()
    def evaluate(self):
        if len(self.val) == 0:
            return {}
        fake = self.model(self.val_z.to(self.device)).flatten(1)
        real = to_float(self.val, self.device).flatten(1)
        return {"mmd": mmd(fake, real, self.cfg.bandwidths).item()}  # logged as val_mmd (val_metrics)


def train(exp: NoiseGenExperiment, out: Path, resume: bool = False, progress: bool = True) -> dict:
    data, device = start(exp)
    model = NoiseGen(exp.model)
    run_dir = prepare(out, exp, "noisegen", resume)
    result = fit_plain(
        NoiseGenTask(model, exp, data.val, device), data.train, exp, run_dir, "noisegen", resume, progress
    )
    if result is None:
        return {}
    run = GeneratorRun(SPEC, run_dir, exp, device, model.generator, exp.model.latent_dim)
    summary = {"task": "noisegen", "n_train": len(data.train), **finish_generator(run), **finished(result)}
    write_summary(run_dir, summary)
    return summary


def load(run_dir: Path, exp: NoiseGenExperiment, device) -> GeneratorRun:
    model = load_weights(run_dir, NoiseGen(exp.model))
    return GeneratorRun(SPEC, run_dir, exp, device, model.generator, exp.model.latent_dim)


SPEC = TaskSpec(
    **task_fields("noisegen", NOISEGEN),
    experiment=NoiseGenExperiment,
    train=train,
    load=load,
    evaluate=evaluate_generator,
    report=generator_section,
    presets={"quick": {"train": {"epochs": 2, "batch_size": 100, "lr": 3e-3}}},
)

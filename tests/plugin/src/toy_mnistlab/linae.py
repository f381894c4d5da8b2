"""A plug-in task for mnistlab: a linear autoencoder (784 -> d -> 784), registered through the entry
point group `mnistlab.tasks`. It reuses mnistlab's loop, run folders and autoencoder run, so it gets
`mnistlab train linae`, `sample`, `probe`, `latent`, `serve` and `mnistlab run` without any edit of
mnistlab. Its help facts (description, roles, samplers, validation metrics) are in the package's
light __init__ (the entry point group `mnistlab.task_info`), and its TaskSpec is built from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.plugin import (
    AutoencoderRun,
    DataConfig,
    TaskSpec,
    TrainConfig,
    finished,
    fit_plain,
    load_weights,
    make_optimizer,
    prepare,
    start,
    task_fields,
    to_float,
    write_summary,
)
from toy_mnistlab import LINAE


@dataclass(frozen=True)
class LinearAEConfig:
    latent_dim: int = 8


@dataclass(frozen=True)
class LinearAEExperiment:
    data: DataConfig = field(default_factory=DataConfig)
    model: LinearAEConfig = field(default_factory=LinearAEConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


class Output(NamedTuple):
    recon: torch.Tensor  # (B, 1, 28, 28) in [0, 1]
    z: torch.Tensor  # (B, d)


class LinearAE(nn.Module):
    def __init__(self, cfg: LinearAEConfig):
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, cfg.latent_dim))  # (B, 1, 28, 28) -> (B, d)
        self.decoder = nn.Sequential(
            nn.Linear(cfg.latent_dim, 784), nn.Sigmoid(), nn.Unflatten(1, (1, 28, 28))
        )

    def forward(self, x):
        z = self.encoder(x)
        return Output(self.decoder(z), z)


class LinearAETask:
    """What the generic loop needs: modules, optimizers, a step and a validation."""

    def __init__(self, model: LinearAE, exp: LinearAEExperiment, val, device):
        self.model, self.val, self.device = model.to(device), val, device
        self.modules = {"model": self.model}
        self.optimizers = {"model": make_optimizer(self.model.parameters(), exp.train)}

    def train_step(self, images, labels):
        x = to_float(images, self.device)
        loss = F.mse_loss(self.model(x).recon, x)
        self.optimizers["model"].zero_grad()
        loss.backward()
        self.optimizers["model"].step()
        return {"loss": loss.item()}

    @torch.no_grad()
    def evaluate(self):
        if len(self.val) == 0:
            return {}
        x = to_float(self.val.images, self.device)
        return {"loss": F.mse_loss(self.model(x).recon, x).item()}


def train(exp: LinearAEExperiment, out: Path, resume: bool = False, progress: bool = True) -> dict:
    data, device = start(exp)
    model = LinearAE(exp.model)
    run_dir = prepare(out, exp, "linae", resume)
    result = fit_plain(
        LinearAETask(model, exp, data.val, device), data.train, exp, run_dir, "linae", resume, progress
    )
    if result is None:
        return {}
    summary = {"task": "linae", "n_train": len(data.train), **finished(result)}
    write_summary(run_dir, summary)
    return summary


def load(run_dir: Path, exp: LinearAEExperiment, device) -> AutoencoderRun:
    model = load_weights(run_dir, LinearAE(exp.model))
    run = AutoencoderRun(SPEC, run_dir, exp, device, model)
    run.fresh_encoder = lambda: LinearAE(exp.model).encoder  # the probe's from-scratch baseline
    return run


SPEC = TaskSpec(
    **task_fields("linae", LINAE),  # name, description, roles, val_metrics: what the help shows too
    experiment=LinearAEExperiment,
    train=train,
    load=load,
    presets={"quick": {"train": {"epochs": 2, "batch_size": 64, "lr": 1e-2}}},
)

"""The task `ae`: the report's convolutional autoencoder (models/autoencoder.py) trained to reconstruct
its input (training/autoencoder.py). Roles: encoder, decoder, generator (codes drawn from a sampler fitted
to the training codes, then decoded). `AutoencoderRun` is reused by the other autoencoder tasks.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch

from mnistlab.core.task_catalog import spec_fields
from mnistlab.data.datasets import load
from mnistlab.models.autoencoder import ConvAutoencoder, Encoder
from mnistlab.models.code_samplers import AutoencoderGenerator, SampleRequest
from mnistlab.plots.content import Figure, RunFolder, Section, Table, num
from mnistlab.runs import folder as rundir
from mnistlab.tasks import RoleError, TaskSpec, TrainedRun, as_images, register
from mnistlab.training.autoencoder import (
    AEExperiment,
    evaluate_autoencoder,
    load_autoencoder,
    train_autoencoder,
)


class AutoencoderRun(TrainedRun):
    """A run of any task whose model has `.encoder` and `.decoder` modules (ae, dae, ...): codes,
    decoded images, samples from fitted code samplers; `denoise` for tasks with that role."""

    def __init__(self, spec: TaskSpec, path: Path, exp: Any, device: torch.device, model: ConvAutoencoder):
        super().__init__(spec, path, exp, device)
        self.model = model.to(device).eval()
        self.batch_size = getattr(exp.train, "eval_batch_size", 1000)
        self._generator: AutoencoderGenerator | None = None

    @torch.inference_mode()
    def _map(self, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        out = [
            module(x[i : i + self.batch_size].to(self.device)).cpu()
            for i in range(0, len(x), self.batch_size)
        ]
        return torch.cat(out) if out else module(x[:0].to(self.device)).cpu()

    def encode(self, images: Any) -> torch.Tensor:
        return self._map(self.modules("encoder"), as_images(images))  # (N, d)

    def decode(self, codes: Any) -> torch.Tensor:
        z = torch.as_tensor(codes, dtype=torch.float32)
        return self._map(self.modules("decoder"), z.reshape(-1, z.shape[-1]))[:, 0]  # (N, 28, 28)

    def denoise(self, images: Any) -> torch.Tensor:
        self.require("denoiser")
        recon = _Recon(self.model)
        return self._map(recon, as_images(images))[:, 0]  # a noisy image in, its clean guess out

    def modules(self, role: str) -> torch.nn.Module:
        self.require(role)
        if role not in ("encoder", "decoder"):
            raise RoleError(f"a {self.task} run has no {role} module")
        return self.model.encoder if role == "encoder" else self.model.decoder

    def fresh_encoder(self) -> torch.nn.Module:
        """An untrained encoder of the same architecture (the probe's from-scratch baseline)."""
        return Encoder(self.exp.model)

    def generator(self) -> AutoencoderGenerator:
        self.require("generator")
        if self._generator is None:
            train = load(self.exp.data).train.images
            self._generator = AutoencoderGenerator(
                self.model.encoder, self.model.decoder, train, self.device, self.batch_size
            )
        return self._generator

    def generate(
        self, n: int, digit: int | None = None, seed: int = 0, sampler: str | None = None
    ) -> torch.Tensor:
        self.require("generator")
        if digit is not None:
            raise RoleError(
                f"a {self.task} run cannot be asked for a digit (its generator is not conditional)"
            )
        gen = self.generator()
        return torch.from_numpy(gen.sample(SampleRequest(sampler or gen.samplers[0], n, seed)))


class _Recon(torch.nn.Module):
    """The reconstruction alone of a model that returns (recon, code, ...)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).recon


def load_run(run_dir: Path, exp: Any, device: torch.device) -> AutoencoderRun:
    return AutoencoderRun(SPEC, run_dir, exp, device, load_autoencoder(run_dir, exp))


def evaluate(run_dir: Path, exp: Any, device: torch.device) -> dict:
    """Test MSE / PSNR / SSIM and figures again from the checkpoint; summary.json updated."""
    model = load_autoencoder(run_dir, exp).to(device)
    result = evaluate_autoencoder(run_dir, model, load(exp.data), device, exp.train.eval_batch_size)
    rundir.write_summary(run_dir, {**rundir.read_summary(run_dir), **result})
    return result


def report_section(run: RunFolder, stage: str) -> Section:
    """The autoencoder's part of the study report (with the grid search's table, if one ran)."""
    sec = Section(stage, "Autoencoder")
    if "search" in run.stages:
        sec.figures += _search(run, sec)
    sec.missing = run.not_run(stage, "trained autoencoder")
    if sec.missing:
        return sec
    s = run.json(f"{stage}/summary.json")
    test = s.get("test", {})
    trial = f" It is the search's best trial, {s['search_trial']}." if s.get("search_trial") else ""
    sec.intro = (
        f"The convolutional autoencoder trained {num(s.get('epochs'))} epochs on {num(s.get('n_train'))} "
        f"images in {num(s.get('train_seconds'))} s.{trial}"
    )
    sec.tables.append(
        Table(
            f"Test reconstruction quality ({num(s.get('n_test'))} test images)",
            ["MSE", "PSNR (dB)", "SSIM", "best validation MSE"],
            [
                [
                    num(test.get("mse")),
                    num(test.get("psnr")),
                    num(test.get("ssim")),
                    num(s.get("best_val_loss")),
                ]
            ],
        )
    )
    sec.figures += run.figure(
        f"{stage}/figures/loss_curves.png",
        "Training and validation reconstruction MSE per epoch (log scale). x: epoch; y: MSE.",
    )
    sec.figures += run.figure(
        f"{stage}/figures/reconstructions.png",
        "Top row: test images; bottom row: their "
        "reconstructions (image grid, no axes: one column per digit).",
    )
    return sec


def _search(run: RunFolder, sec: Section) -> list[Figure]:
    missing = run.not_run("search", "grid-search table")
    if missing:
        sec.notes.append(missing)
        return []
    path = run.root / "search" / "results.csv"
    if not path.is_file():
        sec.notes.append(f"The search stage is marked done but {path.name} is missing from search/.")
        return []
    with path.open() as f:
        rows = list(csv.DictReader(f))
    spec = run.json("search/search.json")
    params = list(spec.get("grid", {}))
    objective = spec.get("objective", "val_loss")
    cols = ["rank", "trial", *params, objective, "status", "best_epoch", "test_mse", "train_seconds"]
    cols = list(dict.fromkeys(cols))
    body = [[_cell(r.get(c)) for c in cols] for r in rows]
    sec.tables.append(
        Table(
            f"Grid search: {len(rows)} trials ranked by {objective} (best first); "
            f"preset {spec.get('preset')!r}",
            cols,
            body,
        )
    )
    return run.figure(
        "search/val_curves.png",
        "Validation loss per epoch of every trial (log scale), the "
        "best one thick black. x: epoch; y: validation MSE.",
    )


def _cell(text: str | None) -> str:
    try:
        return num(float(text)) if text not in (None, "") and not str(text).isdigit() else (text or "-")
    except ValueError:
        return text or "-"


SPEC = register(
    TaskSpec(
        **spec_fields("ae"),
        experiment=AEExperiment,
        train=train_autoencoder,
        load=load_run,
        evaluate=evaluate,
        report=report_section,
        provides=frozenset({"autoencoder"}),
        prunable=True,
    )
)

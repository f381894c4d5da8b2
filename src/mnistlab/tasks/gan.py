"""The task `gan`: the report's GAN (models/gan.py) trained by training/gan.py and training/gan_run.py.
Role: generator (noise from the prior N(0, I), through the generator; with gan.g_ema its averaged
weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mnistlab.core.task_catalog import spec_fields
from mnistlab.models.code_samplers import SampleRequest
from mnistlab.plots.content import RunFolder, Section, num, precision, read_toml, score_table
from mnistlab.tasks import RoleError, TaskSpec, TrainedRun, register
from mnistlab.training.gan_run import GANExperiment, GANSampler, evaluate, load_gan, train_gan


class GANRun(TrainedRun):
    def __init__(self, spec: TaskSpec, path: Path, exp: Any, device: torch.device):
        super().__init__(spec, path, exp, device)
        _, gan = load_gan(path, exp)
        self.sampler = GANSampler(exp, gan, device)

    def generator(self) -> GANSampler:
        return self.sampler

    def generate(
        self, n: int, digit: int | None = None, seed: int = 0, sampler: str | None = None
    ) -> torch.Tensor:
        if digit is not None:
            raise RoleError(
                f"a {self.task} run cannot be asked for a digit (its generator is not conditional)"
            )
        return torch.from_numpy(self.sampler.sample(SampleRequest(sampler or "prior", n, seed)))


def load_run(run_dir: Path, exp: Any, device: torch.device) -> GANRun:
    return GANRun(SPEC, run_dir, exp, device)


def report_section(run: RunFolder, stage: str) -> Section:
    """The GAN's part of the study report."""
    sec = Section(stage, "GAN")
    sec.missing = run.not_run(stage, "GAN result")
    if sec.missing:
        return sec
    s = run.json(f"{stage}/summary.json")
    cfg = read_toml(run.root / stage / "config.toml").get(stage, {})
    test = s.get("test", {})
    sec.intro = (
        f"The GAN trained {num(s.get('epochs'))} epochs on {num(s.get('n_train'))} images in "
        f"{num(s.get('train_seconds'))} s{precision(s)} (status {s.get('status')}); grids kept at epochs "
        f"{', '.join(str(e) for e in cfg.get('gan', {}).get('grid_epochs', []) or [])}".rstrip()
        + "."
    )
    if test:
        title = f"Final samples ({num(s.get('n_samples_scored'))}) scored against the test set"
        sec.tables.append(score_table(title, [(None, test)]))
    sec.warnings = list(s.get("collapse_warnings", []))
    if not sec.warnings:
        sec.notes.append("The collapse detector raised no warning.")
    g = f"{stage}/figures/"
    sec.figures += run.figure(
        g + "epoch_grids.png",
        "The same fixed noise decoded at each kept epoch (one panel per epoch; image grids, no axes).",
    )
    sec.figures += run.figure(
        g + "samples_final.png", "Final generator: samples from fixed noise (image grid, no axes)."
    )
    sec.figures += run.figure(
        g + "loss_curves.png", "Discriminator and generator losses (epoch means). x: epoch; y: BCE loss."
    )
    sec.figures += run.figure(
        g + "fid_by_epoch.png", "FID-MNIST of samples at the kept epochs. x: epoch; y: FID-MNIST (log scale)."
    )
    sec.figures += run.figure(
        g + "coverage_by_epoch.png",
        "Share of the rarest and commonest generated digit. x: epoch; y: share of samples.",
    )
    sec.figures += run.figure(
        g + "class_histogram.png",
        "Final samples by digit, as the reference classifier "
        "reads them. x: digit; y: share of samples (red: outside 5%-15%).",
    )
    sec.figures += run.figure(
        g + "d_outputs.png",
        "Mean discriminator output on real and generated images. x: epoch; y: mean D output.",
    )
    return sec


SPEC = register(
    TaskSpec(
        **spec_fields("gan"),
        experiment=GANExperiment,
        train=train_gan,
        load=load_run,
        evaluate=evaluate,
        report=report_section,
        provides=frozenset({"gan"}),
    )
)

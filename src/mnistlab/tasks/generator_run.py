"""The generic run of a noise-to-image generator, for any task whose network maps noise z ~ N(0, I) of
`latent_dim` numbers, (B, latent_dim), to images (B, 1, 28, 28) in [0, 1]: `GeneratorRun` (the
`generator` role: `mnistlab sample`, `score`, `compare`, `serve`), `finish_generator` (its samples
scored against the test set, what a task's `train` puts in summary.json), `evaluate_generator` (the
same again from the checkpoint: `mnistlab eval`) and `generator_section` (its part of the study
report). A plug-in generator uses them instead of copying the GAN's (tests/plugin has one); the
built-in GANs keep their own, which add collapse checks and per-epoch grids.

What they read and write is summary.json's layout for a generator (docs/plugins.md): "test" holds the
scores of `metrics.generation.score_samples` (fid_mnist, precision, recall, class_hist, ...), which
`mnistlab compare` and the report's key results read as the run's default sampler's, and
"n_samples_scored" how many samples they measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mnistlab.data.datasets import load
from mnistlab.models.code_samplers import SampleRequest, check_sampler
from mnistlab.plots.content import RunFolder, Section, num, precision, score_table
from mnistlab.plots.latent import image_grid
from mnistlab.runs import folder as rundir
from mnistlab.tasks import RoleError, TaskSpec, TrainedRun, get, load_run
from mnistlab.training.gan import fixed_noise
from mnistlab.training.gan_run import Scorer, jsonable

# Samples `mnistlab eval` scores: FID-MNIST and precision/recall are biased at small counts, and
# `mnistlab score` cautions below this many.
SCORED_SAMPLES = 1000
SAMPLES_FIGURE = "figures/samples.png"  # the first 100 scored samples, under the run folder


class GeneratorRun(TrainedRun):
    """A finished run of a noise-to-image generator: `network` maps z (B, latent_dim) drawn from
    N(0, I) to images (B, 1, 28, 28) in [0, 1]. Its generator has one sampler, "prior"; the same
    seed gives the same noise, hence the same images, on every call."""

    samplers = ("prior",)

    def __init__(
        self,
        spec: TaskSpec,
        path: Path,
        exp: Any,
        device: torch.device,
        network: nn.Module,
        latent_dim: int,
        batch_size: int | None = None,
    ):
        super().__init__(spec, path, exp, device)
        self.network = network.to(device).eval()
        self.latent_dim = int(latent_dim)
        self.batch_size = batch_size or getattr(getattr(exp, "train", None), "eval_batch_size", 1000)

    @torch.inference_mode()
    def draw(self, n: int, seed: int = 0) -> torch.Tensor:
        """uint8 images (n, 28, 28) on the CPU from n noise vectors of `seed`."""
        z = fixed_noise(n, self.latent_dim, seed, self.device)  # (n, latent_dim)
        out = [
            self.network(z[i : i + self.batch_size])
            .reshape(-1, 28, 28)
            .clamp(0, 1)
            .mul(255)
            .round()
            .to("cpu", torch.uint8)
            for i in range(0, n, self.batch_size)
        ]
        return torch.cat(out) if out else torch.empty(0, 28, 28, dtype=torch.uint8)

    def generator(self) -> GeneratorRun:
        """Itself: `samplers` and `sample(request)`, what `mnistlab sample` and the explorer call."""
        self.require("generator")
        return self

    def sample(self, request: SampleRequest) -> np.ndarray:
        check_sampler(request.sampler, self.samplers, self.task)
        if request.digit is not None:
            raise RoleError(
                f"a {self.task} run cannot be asked for a digit (its generator is not conditional)"
            )
        return self.draw(request.n, request.seed).numpy()

    def generate(
        self, n: int, digit: int | None = None, seed: int = 0, sampler: str | None = None
    ) -> torch.Tensor:
        self.require("generator")
        return torch.from_numpy(self.sample(SampleRequest(sampler or self.samplers[0], n, seed, digit=digit)))


def finish_generator(run: GeneratorRun, n: int = SCORED_SAMPLES, progress: bool = False) -> dict[str, Any]:
    """Score n samples of `run` (seed train.seed) against its data's test split with the reference
    classifier, nearest training images included, and draw SAMPLES_FIGURE: returns the summary.json
    fields {"test": scores, "n_samples_scored": n}."""
    data = load(run.exp.data)
    samples = run.draw(n, getattr(run.exp.train, "seed", 0))  # (n, 28, 28) uint8
    scorer = Scorer(data, run.exp.data, data.train, run.device, progress=progress)
    scores = jsonable(scorer.score(samples, nearest_train=True))
    image_grid(samples[:100].numpy(), run.path / SAMPLES_FIGURE, f"{run.task}: samples from the prior")
    return {"test": scores, "n_samples_scored": n}


def evaluate_generator(run_dir: Path, exp: Any, device: torch.device, n: int = SCORED_SAMPLES) -> dict:
    """`mnistlab eval` of any task whose `load` returns a GeneratorRun (a TaskSpec's `evaluate`): its
    samples drawn again from the checkpoint and rescored; summary.json takes the new numbers."""
    run = load_run(run_dir, device, role="generator")
    if not isinstance(run, GeneratorRun):
        raise RoleError(f"{run_dir}: a {run.task} run is not a GeneratorRun; its task evaluates its own way")
    result = finish_generator(run, n)
    rundir.write_summary(run_dir, {**rundir.read_summary(run_dir), **result})
    return result


def generator_section(run: RunFolder, stage: str) -> Section:
    """The study report's section of a generator task's stage (a TaskSpec's `report`): how it trained,
    its scores and its samples."""
    sec = Section(stage, f"{stage}: {get(stage).description}")
    sec.missing = run.not_run(stage, "generator result")
    if sec.missing:
        return sec
    s = run.json(f"{stage}/summary.json")
    sec.intro = (
        f"It trained {num(s.get('epochs'))} epochs on {num(s.get('n_train'))} images in "
        f"{num(s.get('train_seconds'))} s{precision(s)}."
    )
    test = s.get("test")
    if isinstance(test, dict) and "fid_mnist" in test:
        title = f"Samples from the prior ({num(s.get('n_samples_scored'))}) scored against the test set"
        sec.tables.append(score_table(title, [(None, test)]))
    else:
        sec.notes.append("Its summary holds no scores (`mnistlab eval` on the run adds them).")
    sec.figures += run.figure(f"{stage}/{SAMPLES_FIGURE}", "Samples from the prior (image grid, no axes).")
    return sec

"""A whole GAN run: data, the task in the shared loop, what is watched at each epoch (fixed-noise
grids, FID-MNIST and class coverage at the grid epochs, the collapse detector), the final scores,
figures and summary, and loading a trained run back for sampling.

Run folder additions: grids/epoch_NNN.safetensors (the fixed noise batch as uint8 images at each grid
epoch, kept so that a resumed run can still draw them side by side) and figures/*.png.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save

from mnistlab.core import distributed
from mnistlab.core.errors import ConfigError
from mnistlab.core.fsio import atomic_write_bytes
from mnistlab.data.datasets import Data, DataConfig, Split, load
from mnistlab.metrics.collapse import detect_collapse
from mnistlab.metrics.generation import score_samples
from mnistlab.models import build_model
from mnistlab.models.code_samplers import check_sampler
from mnistlab.models.gan import GAN, GANConfig
from mnistlab.plots import gan as gan_figures
from mnistlab.plots.figures import plot_curves
from mnistlab.runs import folder as rundir
from mnistlab.runs.checkpoint import read_checkpoint
from mnistlab.training import run_folder
from mnistlab.training.gan import GANDivergedError, GANTask, GANTrainConfig, fixed_noise, generate
from mnistlab.training.loop import NonFiniteLossError, TrainConfig, amp_mode, fit, resolve_device, total_steps
from mnistlab.training.reference import load_reference

log = logging.getLogger("mnistlab")

# Seed offsets of the noise streams, so that grid, per-epoch scores and final scores never share noise.
GRID_STREAM, EVAL_STREAM, FINAL_STREAM = 0, 10_007, 20_011


@dataclass(frozen=True)
class GANExperiment:
    data: DataConfig = field(default_factory=DataConfig)
    model: GANConfig = field(default_factory=GANConfig)
    train: TrainConfig = field(default_factory=TrainConfig)  # train.lr is the generator's
    gan: GANTrainConfig = field(default_factory=GANTrainConfig)


def merged(data: Data) -> Split:
    """Train, validation and test images in one split (the report trained on all 70,000)."""
    parts = (data.train, data.val, data.test)
    return Split(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))


class Scorer:
    """FID-MNIST, precision/recall and class coverage of generated digits, measured with the reference
    classifier against the test split (as is usual; with gan.merge_test the GAN has seen it too)."""

    def __init__(self, data: Data, data_cfg: Any, train: Split, device: torch.device, progress: bool = True):
        self._score = score_samples
        self.reference = load_reference(data_cfg, device, progress=progress)
        self.real, self.train = data.test, train

    def score(self, images: torch.Tensor, nearest_train: bool = False) -> dict[str, Any]:
        """Scores of uint8 images (N, 28, 28); with `nearest_train` also each sample's distance to its
        closest training image (a memorisation check, slow: N x training-set distances)."""
        return self._score(images, self.reference, self.real, self.train if nearest_train else None)

    def classes(self, images: torch.Tensor) -> torch.Tensor:
        """(N,) predicted digit of each uint8 image."""
        return torch.as_tensor(self.reference.probs(images)).argmax(1)


def _grid_path(run_dir: Path, epoch: int) -> Path:
    return run_dir / "grids" / f"epoch_{epoch:03d}.safetensors"


SCORE_KEYS = ("fid_mnist", "precision", "recall", "kl_uniform", "mean_confidence", "nn_train_dist")


def score_scalars(scores: dict[str, Any]) -> dict[str, float]:
    """The metrics of a score dict that go into metrics.jsonl (and TensorBoard), per-class shares flat."""
    row = {k: float(scores[k]) for k in SCORE_KEYS if scores.get(k) is not None}
    hist = scores.get("class_hist")
    if hist is not None:
        hist = [float(h) for h in hist]
        total = sum(hist) or 1.0
        shares = [h / total for h in hist]  # counts or shares alike
        row.update({f"class_share_{d}": round(s, 4) for d, s in enumerate(shares)})
        row["class_min_share"], row["class_max_share"] = min(shares), max(shares)
    return row


class EpochWatch:
    """The loop's on_epoch_end: grids, scores and the collapse check, written into the epoch's row."""

    def __init__(self, task: GANTask, exp: Any, run_dir: Path, scorer: Scorer | None, real: torch.Tensor):
        g = exp.gan
        self.task, self.exp, self.run_dir, self.scorer, self.real = task, exp, run_dir, scorer, real
        nd, dev, seed = exp.model.noise_dim, task.device, exp.train.seed
        self.grid_z = fixed_noise(g.grid_size**2, nd, seed + GRID_STREAM, dev)
        self.eval_z = fixed_noise(g.eval_samples if scorer else 0, nd, seed + EVAL_STREAM, dev)
        self.warned: list[str] = []

    def __call__(self, epoch: int, row: dict[str, Any]) -> None:
        g, bs = self.exp.gan, self.exp.train.eval_batch_size
        grid = generate(self.task.sampler, self.grid_z, bs)
        samples, classes = grid, None
        if epoch in g.grid_epochs or epoch == self.exp.train.epochs:
            atomic_write_bytes(_grid_path(self.run_dir, epoch), save({"images": grid.contiguous()}))
            if self.scorer is not None and len(self.eval_z):
                samples = generate(self.task.sampler, self.eval_z, bs)
                scores = self.scorer.score(samples)
                row.update(score_scalars(scores))
        if self.scorer is not None:
            classes = self.scorer.classes(samples)
        history = rundir.read_history(self.run_dir) + [row]
        report = detect_collapse(samples, history, classes, self.real, g.collapse)
        row["collapse_warnings"] = len(report.warnings)
        for w in report.warnings:
            log.warning("epoch %d: possible collapse: %s", epoch, w)
            self.warned.append(f"epoch {epoch}: {w}")


def collapse_reference(train: Split) -> torch.Tensor:
    """The first 1,000 training images: what the collapse detector compares samples with."""
    return train.images[:1000]


def train_gan(exp: Any, out: Path, resume: bool = False, progress: bool = True) -> dict:
    """Train the GAN of `exp` into run folder `out`; score it and draw its figures."""
    data, device = run_folder.start(exp)
    train = merged(data) if exp.gan.merge_test else data.train
    if len(train) == 0:
        raise ConfigError("no training images (check data.train_limit)")
    gan = build_model("report_gan", exp.model)
    total = total_steps(len(train), exp.train)
    task = GANTask(gan, exp.train, exp.gan, device, total, None if exp.gan.merge_test else data.val)
    run_dir = run_folder.prepare(out, exp, "gan", resume)
    main = distributed.current().is_main
    ckpt = rundir.checkpoint_path(run_dir)
    if resume and ckpt.exists():
        task.step = read_checkpoint(ckpt)[1]["step"]
    scoring = exp.gan.eval_samples or exp.gan.final_samples
    scorer = Scorer(data, exp.data, train, device, progress) if scoring and main else None
    watch = EpochWatch(task, exp, run_dir, scorer, collapse_reference(train))  # called on rank 0 only
    base = {
        "task": "gan",
        "data": data.source,
        "n_train": len(train),
        "device": str(device),
        "amp": amp_mode(exp.train, device),
    }
    try:
        result = fit(task, train, exp.train, run_dir, resume=resume, progress=progress, on_epoch_end=watch)
    except NonFiniteLossError as e:
        if not main:
            raise
        message = str(e)
        if isinstance(e, GANDivergedError):
            message += "; " + _last_good(ckpt)
        draw_figures(run_dir, None, None)
        summary = {
            **base,
            "status": "diverged",
            "error": message,
            "collapse_warnings": watch.warned,
            "last_good_checkpoint": str(ckpt) if ckpt.exists() else None,
        }
        rundir.write_summary(run_dir, summary)
        raise type(e)(message) from e
    if not main:
        return {}  # rank 0 scores, draws and writes the summary
    summary = {**base, **finish(run_dir, task.sampler, exp, scorer, watch.real)}
    summary.update(
        run_folder.finished(result),
        diverged_at_step=task.diverged_at,
        collapse_warnings=watch.warned + [f"final: {w}" for w in summary["collapse"]["warnings"]],
        collapse_epochs=[r["epoch"] for r in result.history if r.get("collapse_warnings")],  # kept on resume
    )
    rundir.write_summary(run_dir, summary)
    return summary


def _last_good(ckpt: Path) -> str:
    if not ckpt.exists():
        return "no checkpoint was written yet (it diverged in the first epoch)"
    return f"the last good checkpoint is {ckpt} (epoch {read_checkpoint(ckpt)[1]['epoch']})"


def finish(
    run_dir: Path, generator: torch.nn.Module, exp: Any, scorer: Scorer | None, real: torch.Tensor
) -> dict[str, Any]:
    """Final samples, scores, collapse check and figures of a trained generator."""
    g, bs = exp.gan, exp.train.eval_batch_size
    device = next(generator.parameters()).device
    nd, seed = exp.model.noise_dim, exp.train.seed
    samples = generate(generator, fixed_noise(g.final_samples, nd, seed + FINAL_STREAM, device), bs)
    grid = generate(generator, fixed_noise(g.grid_size**2, nd, seed + GRID_STREAM, device), bs)
    scores, classes = None, None
    if scorer is not None and len(samples):
        scores = scorer.score(samples, nearest_train=True)
        classes = scorer.classes(samples)
    history = rundir.read_history(run_dir)
    report = detect_collapse(samples if len(samples) else grid, history, classes, real, g.collapse)
    for w in report.warnings:
        log.warning("final samples: possible collapse: %s", w)
    draw_figures(run_dir, grid, scores)
    out: dict[str, Any] = {"collapse": report.to_dict()}
    if scores is not None:
        out["test"] = jsonable(scores)
        out["n_samples_scored"] = len(samples)
    return out


def rescore(
    run_dir: Path, exp: Any, device: torch.device, finish_run: Any, generator: torch.nn.Module, real: Any
) -> dict[str, Any]:
    """`mnistlab eval` of a GAN-family run: `finish_run(run_dir, generator, exp, scorer, ...)` again on the
    checkpoint's sampling generator, so the final samples come from the same seeded noise and are scored
    against the same test images as at the end of training; summary.json takes the new numbers."""
    data = load(exp.data)
    train = merged(data) if exp.gan.merge_test else data.train
    scorer = Scorer(data, exp.data, train, device, progress=False) if exp.gan.final_samples else None
    result = finish_run(run_dir, generator.to(device).eval(), exp, scorer, *real(data, train))
    rundir.write_summary(run_dir, {**rundir.read_summary(run_dir), **result})
    return result


def evaluate(run_dir: Path, exp: Any, device: torch.device) -> dict[str, Any]:
    """The GAN's `mnistlab eval`: its final samples redrawn and rescored (see `rescore`)."""
    _, gan = load_gan(run_dir, exp)
    return rescore(
        run_dir, exp, device, finish, gan.generator, lambda data, train: (collapse_reference(train),)
    )


def draw_figures(run_dir: Path, grid: torch.Tensor | None, scores: dict[str, Any] | None) -> None:
    """Every figure the run's files allow: curves from metrics.jsonl, grids from grids/, the final ones."""
    fig, history = Path(run_dir) / "figures", rundir.read_history(run_dir)
    if history:
        plot_curves(
            history,
            ("train_d_loss", "train_g_loss"),
            fig / "loss_curves.png",
            "GAN losses (epoch means)",
            ylabel="BCE loss",
        )
        plot_curves(
            history,
            ("train_d_real", "train_d_fake", "val_d_real", "val_d_fake"),
            fig / "d_outputs.png",
            "Discriminator outputs: D(x) real, D(G(z)) fake",
            ylabel="mean D output",
        )
        if any("fid_mnist" in r for r in history):
            plot_curves(
                history,
                ("fid_mnist",),
                fig / "fid_by_epoch.png",
                "FID-MNIST of samples by epoch",
                ylabel="FID-MNIST (lower is better)",
                log_y=True,
            )
            plot_curves(
                history,
                ("class_min_share", "class_max_share"),
                fig / "coverage_by_epoch.png",
                "Rarest and commonest generated digit by epoch (target: 5% to 15%)",
                ylabel="share of samples",
            )
    grids = {int(p.stem.split("_")[1]): load_file(p)["images"] for p in sorted(Path(run_dir).glob("grids/*"))}
    if grids:
        gan_figures.epoch_grids(grids, fig / "epoch_grids.png", "Fixed noise decoded during training")
    if grid is not None:
        gan_figures.sample_grid(
            grid,
            fig / "samples_final.png",
            "Final generator: 10x10 samples",
            rows=int(math.isqrt(len(grid))) or 1,
        )
    if scores is not None and scores.get("class_hist") is not None:
        shares = [v for k, v in sorted(score_scalars(scores).items()) if k.startswith("class_share_")]
        title = f"Generated digits by class ({scores.get('n_samples', '?')} samples)"
        gan_figures.class_histogram(shares, fig / "class_histogram.png", title)


def jsonable(obj: Any) -> Any:
    if torch.is_tensor(obj):
        return obj.tolist()
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return obj


def load_gan(run_dir: Path, exp: Any = None) -> tuple[Any, GAN]:
    """(experiment, GAN with trained weights, in eval mode) of a GAN run folder (`exp`: its config, read
    from config.toml when not given). With gan.g_ema the generator holds the averaged weights, the ones
    the run sampled and scored with."""
    if exp is None:
        exp = rundir.load_config(run_dir, GANExperiment)[1]
    gan = build_model("report_gan", exp.model)
    rundir.load_weights(run_dir, gan.generator, "generator_ema" if exp.gan.g_ema > 0 else "generator")
    rundir.load_weights(run_dir, gan.discriminator, "discriminator")
    return exp, gan.eval()


def sample_gan(run_dir: Path, n: int, seed: int = 0, device: str = "auto") -> torch.Tensor:
    """n uint8 samples (n, 28, 28) from a trained GAN run, from noise seeded by `seed`."""
    exp, gan = load_gan(run_dir)
    return GANSampler(exp, gan, resolve_device(device)).draw(n, seed)


class GANSampler:
    """A trained GAN run as a `mnistlab sample` generator: noise from the prior N(0, I), decoded."""

    samplers = ("prior",)

    def __init__(self, exp: Any, gan: GAN, device: torch.device):
        self.noise_dim, self.batch_size = exp.model.noise_dim, exp.train.eval_batch_size
        self.generator = gan.generator.to(device).eval()
        self.device = device

    def draw(self, n: int, seed: int) -> torch.Tensor:
        return generate(self.generator, fixed_noise(n, self.noise_dim, seed, self.device), self.batch_size)

    def sample(self, request: Any) -> np.ndarray:
        check_sampler(request.sampler, self.samplers, "GAN")
        return self.draw(request.n, request.seed).numpy()

"""The denoising autoencoder: the plain autoencoder's step with noisy inputs and clean targets, and
its test evaluation at several noise levels, optionally beside a plain autoencoder fed the very same
noisy images (what denoising training buys).

Training noise is fresh every step (`noise.TrainingNoise`, exact on resume); validation and test
noise are fixed draws from the noise seed, so numbers compare between runs and between models.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mnistlab.core.errors import ConfigError, check_bool
from mnistlab.data.datasets import Data, DataConfig, Split, to_float
from mnistlab.data.noise import NoiseConfig, TrainingNoise, apply_noise, fixed_noise
from mnistlab.metrics import images as metrics
from mnistlab.models import build_model
from mnistlab.models.autoencoder import AEConfig, ConvAutoencoder
from mnistlab.plots.evaluation import plot_metric_lines, triplet_grid
from mnistlab.plots.figures import plot_curves
from mnistlab.runs import folder as rundir
from mnistlab.training import run_folder
from mnistlab.training.autoencoder import AutoencoderTask, evaluate_reconstruction
from mnistlab.training.loop import TrainConfig

log = logging.getLogger("mnistlab")
# Keys of the models in the denoising table of summary.json: the denoiser itself and the plain
# autoencoder it is compared with (fixed strings: the report reads run folders of every version).
OWN, BASELINE = "dae", "ae"


@dataclass(frozen=True)
class InitConfig:
    """Where a network's weights start (the DAE's; the VAE's too, tasks/vae.py)."""

    # Start from the baseline autoencoder's trained weights (`--baseline`; in `mnistlab run`, the study's
    # autoencoder stage, for the DAE) instead of random ones: the network refines a trained code.
    from_baseline: bool = False

    def __post_init__(self):
        check_bool(self.from_baseline, "init.from_baseline")


@dataclass(frozen=True)
class DAEExperiment:
    """The autoencoder trained on noisy inputs against clean targets."""

    data: DataConfig = field(default_factory=DataConfig)
    model: AEConfig = field(default_factory=AEConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    init: InitConfig = field(default_factory=InitConfig)


# A plain autoencoder to compare against: (its folder, its task name, the model).
Baseline = tuple[Path, str, ConvAutoencoder]


class DenoisingTask(AutoencoderTask):
    """AutoencoderTask with `corrupt` = fresh Gaussian noise; validation on fixed seeded noise."""

    def __init__(
        self, model: ConvAutoencoder, cfg: TrainConfig, val: Split, device: torch.device, noise: NoiseConfig
    ):
        source = TrainingNoise(noise)
        super().__init__(model, cfg, val, device, corrupt=source)
        self.noise = noise
        self.modules["noise"] = source  # its step counter is checkpointed with the model
        self.val_eps = fixed_noise(len(val), noise.seed, "val")  # (N_val, 1, 28, 28), kept on the CPU

    def evaluate(self) -> dict[str, float]:
        if len(self.val) == 0:
            return {}
        scores = denoising_scores(
            {OWN: self.model},
            self.val,
            self.val_eps,
            self.noise.sigma,
            self.noise.clip,
            self.device,
            self.eval_batch_size,
            ("mse",),  # the epoch's row reports nothing else
        )
        return {"loss": scores[OWN]["mse"], "noisy_mse": scores["noisy"]["mse"]}


@torch.no_grad()
def denoising_scores(
    models: dict[str, ConvAutoencoder],
    split: Split,
    eps: torch.Tensor,
    sigma: float,
    clip: bool,
    device: torch.device,
    batch_size: int = 1000,
    scores: tuple[str, ...] = tuple(metrics.QUALITY),
) -> dict[str, dict[str, float]]:
    """Mean `scores` (of MSE, PSNR, SSIM) against the clean images of `split` for the noisy input
    ("noisy") and for each model's output on that same noisy input. `eps` (N, 1, 28, 28) is standard
    normal noise."""
    if len(eps) != len(split):
        raise ValueError(f"{len(eps)} noise images for {len(split)} images")
    names = ["noisy", *models]
    totals = {n: dict.fromkeys(scores, 0.0) for n in names}
    modes = {n: m.training for n, m in models.items()}
    for m in models.values():
        m.eval()
    try:
        for start in range(0, len(split), batch_size):
            x = to_float(split.images[start : start + batch_size], device)  # (B, 1, 28, 28) clean
            noisy = apply_noise(x, eps[start : start + len(x)], sigma, clip)
            outputs = {"noisy": noisy, **{n: m(noisy).recon for n, m in models.items()}}
            for n, y in outputs.items():
                for k in scores:
                    totals[n][k] += metrics.QUALITY[k](y, x).sum().item()
    finally:
        for n, m in models.items():
            m.train(modes[n])
    return {n: {k: v / max(len(split), 1) for k, v in t.items()} for n, t in totals.items()}


def denoising_table(
    models: dict[str, ConvAutoencoder],
    split: Split,
    noise: NoiseConfig,
    sigmas: tuple[float, ...],
    device: torch.device,
    batch_size: int = 1000,
) -> list[dict]:
    """One row per sigma: {"sigma", "noisy": {mse, psnr, ssim}, <model>: {...}, ...}, all models on the
    same fixed test noise (one standard normal draw, scaled by each sigma)."""
    eps = fixed_noise(len(split), noise.seed, "test")
    rows = []
    for sigma in sigmas:
        scores = denoising_scores(models, split, eps, sigma, noise.clip, device, batch_size)
        rows.append(
            {"sigma": sigma, **{n: {k: round(v, 6) for k, v in s.items()} for n, s in scores.items()}}
        )
    return rows


# ------------------------------------------------------------------------------- whole runs


def train_dae(
    exp, out: Path, resume: bool = False, progress: bool = True, base: Baseline | None = None
) -> dict:
    """Train the denoising autoencoder of `exp` into run folder `out`, then evaluate it on the test set
    (beside the plain autoencoder `base`, if given: loaded by the caller before training)."""
    if exp.init.from_baseline and base is None:
        raise ConfigError("init.from_baseline=true needs the autoencoder to start from: --baseline AE_RUN")
    data, device = run_folder.start(exp)
    model = build_model("conv_autoencoder", exp.model)
    if exp.init.from_baseline:
        warm_start(model, base)  # before the task: its optimizer and channels_last copy see these weights
    task = DenoisingTask(model, exp.train, data.val, device, exp.noise)
    run_dir = run_folder.prepare(out, exp, "dae", resume)
    result = run_folder.fit_plain(task, data.train, exp, run_dir, "dae", resume, progress)
    if result is None:
        return {}  # not rank 0
    summary = evaluate_dae(run_dir, model, data, device, exp.noise, exp.train.eval_batch_size, base)
    summary.update(run_folder.finished(result), device=str(device))
    rundir.write_summary(run_dir, summary)
    return summary


def warm_start(model: ConvAutoencoder, base: Baseline) -> None:
    """Copy the baseline autoencoder's weights into `model` (a resumed run then loads its own checkpoint
    over them); a one-line error when the two networks differ in shape."""
    folder, _, trained = base
    if trained.cfg.latent_dim != model.cfg.latent_dim:
        raise ConfigError(
            f"init.from_baseline: {folder} has a {trained.cfg.latent_dim}-d code, this DAE "
            f"model.latent_dim={model.cfg.latent_dim}; train the DAE with the same latent_dim"
        )
    try:
        model.load_state_dict(trained.state_dict())
    except RuntimeError as e:
        raise ConfigError(f"init.from_baseline: {folder}'s network does not fit this DAE's: {e}") from None
    log.info("denoiser starts from %s's weights", folder)


def evaluate_dae(
    run_dir: Path,
    model: ConvAutoencoder,
    data: Data,
    device: torch.device,
    noise: NoiseConfig,
    batch_size: int = 1000,
    baseline: Baseline | None = None,
    sigmas: tuple[float, ...] | None = None,
) -> dict:
    """The denoising table on the test set at `sigmas` (default: noise.eval_sigmas), its plot, the
    noisy / denoised / original figure and the loss curves; returns the summary's evaluation part."""
    sigmas = tuple(sigmas or noise.eval_sigmas)
    models = {OWN: model.to(device)}
    if baseline is not None:
        models[BASELINE] = baseline[2].to(device)
        if baseline[2].cfg != model.cfg:
            log.warning("baseline %s has model %s, the DAE has %s", baseline[0], baseline[2].cfg, model.cfg)
    table = denoising_table(models, data.test, noise, sigmas, device, batch_size)
    at_train = denoising_table({OWN: model}, data.test, noise, (noise.sigma,), device, batch_size)[0]
    clean = evaluate_reconstruction(model, data.test, device, batch_size)

    figures = Path(run_dir) / "figures"
    history = rundir.read_history(run_dir)
    noisy_val = next((r["val_noisy_mse"] for r in history if "val_noisy_mse" in r), None)
    plot_curves(
        history,
        ("train_loss", "val_loss"),
        figures / "loss_curves.png",
        f"Denoising autoencoder (sigma {noise.sigma:g}): MSE against the clean image"
        + (f"\n(the noisy validation input itself: MSE {noisy_val:.3f})" if noisy_val is not None else ""),
        ylabel="MSE",
        log_y=True,
    )
    labels = {"noisy": "noisy input", OWN: "denoising AE output", BASELINE: "plain AE output"}
    plot_metric_lines(
        [r["sigma"] for r in table],
        {
            metric: {labels[n]: [r[n][metric] for r in table] for n in models.keys() | {"noisy"}}
            for metric in ("psnr", "ssim")
        },
        figures / "denoising_metrics.png",
        xlabel="noise sigma",
        ylabels={"psnr": "PSNR vs clean (dB)", "ssim": "SSIM vs clean"},
        title=f"Test set, {len(data.test)} images, fixed noise seed {noise.seed}",
    )
    _example_figure(models, data.test, noise, sigmas, device, figures / "denoising_examples.png")
    summary = {
        "task": "dae",
        "noise": asdict(noise),
        "test": at_train[OWN],  # denoised output vs clean at the training sigma
        "test_noisy_input": at_train["noisy"],
        "test_clean_input": {k: round(v, 6) for k, v in clean.items()},
        "denoising": table,
        "data": data.source,
        "n_train": len(data.train),
        "n_val": len(data.val),
        "n_test": len(data.test),
    }
    if baseline is not None:
        summary["baseline"] = {"run": str(baseline[0]), "task": baseline[1], "model": asdict(baseline[2].cfg)}
    return summary


@torch.no_grad()
def _example_figure(models, test: Split, noise: NoiseConfig, sigmas, device, path: Path, n: int = 6) -> Path:
    """Rows = sigmas; each row shows n digits as (noisy, model outputs..., original) panels."""
    x = to_float(test.images[:n], device)  # (n, 1, 28, 28)
    eps = fixed_noise(len(test), noise.seed, "test")[:n]  # the table's noise for these digits
    rows = []
    for sigma in sigmas:
        noisy = apply_noise(x, eps, sigma, noise.clip)
        rows.append([noisy.clamp(0, 1)] + [m.eval()(noisy).recon for m in models.values()] + [x])
    names = ["noisy", *("DAE" if k == OWN else "plain AE" for k in models), "original"]
    return triplet_grid(
        rows,
        names,
        [f"sigma {s:g}" for s in sigmas],
        path,
        title="Test digits: noisy input, denoising autoencoder (DAE) output"
        + (", plain autoencoder output" if len(models) > 1 else "")
        + ", original (noisy shown clipped to [0, 1])",
    )

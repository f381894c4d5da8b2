"""The task `dae`: the report's autoencoder trained on noisy inputs against the clean image
(training/denoise.py). Roles: those of the autoencoder, plus denoiser. Its `baseline` option names a
plain autoencoder run fed the same noisy test images; in `mnistlab run` that is the study's encoder
stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mnistlab.core.errors import ConfigError
from mnistlab.core.task_catalog import spec_fields
from mnistlab.data.datasets import load
from mnistlab.plots.content import RunFolder, Section, Table, num
from mnistlab.runs import folder as rundir
from mnistlab.tasks import TaskSpec, register
from mnistlab.tasks import load_run as load_run_folder
from mnistlab.tasks.ae import AutoencoderRun
from mnistlab.training.autoencoder import load_autoencoder
from mnistlab.training.denoise import BASELINE, OWN, DAEExperiment, evaluate_dae, train_dae


def load_baseline(run_dir: Path) -> tuple[Path, str, torch.nn.Module]:
    """(folder, task, model) of the autoencoder run to compare against: a run of any autoencoder task."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise ConfigError(
            f"--baseline {run_dir}: not a run folder; give a folder written by `mnistlab train ae`"
        )
    run = load_run_folder(run_dir, role="decoder")
    if not isinstance(run, AutoencoderRun):
        raise ConfigError(f"--baseline {run_dir} holds a {run.task} run; give an autoencoder run")
    return run_dir, run.task, run.model


def train(
    exp: Any, out: Path, resume: bool = False, progress: bool = True, baseline: Path | None = None
) -> dict:
    base = load_baseline(baseline) if baseline is not None else None  # fail before training, not after
    return train_dae(exp, out, resume=resume, progress=progress, base=base)


def evaluate(
    run_dir: Path,
    exp: Any,
    device: torch.device,
    baseline: Path | None = None,
    sigmas: tuple[float, ...] | None = None,
) -> dict:
    """Re-evaluate at `sigmas` (default: the config's), beside `baseline`; summary.json updated."""
    base = load_baseline(baseline) if baseline is not None else None
    model = load_autoencoder(run_dir, exp)
    result = evaluate_dae(
        run_dir, model, load(exp.data), device, exp.noise, exp.train.eval_batch_size, base, sigmas
    )
    previous = rundir.read_summary(run_dir)
    previous.pop("baseline", None)  # a comparison from an earlier evaluation no longer in the table
    rundir.write_summary(run_dir, {**previous, **result})
    return result


class DenoisingRun(AutoencoderRun):
    """An autoencoder run that also denoises; `noise` is the NoiseConfig it trained with."""

    @property
    def noise(self):
        return self.exp.noise


def load_run(run_dir: Path, exp: Any, device: torch.device) -> DenoisingRun:
    return DenoisingRun(SPEC, run_dir, exp, device, load_autoencoder(run_dir, exp))


def run_inputs(exp: DAEExperiment) -> dict[str, str]:
    """The denoiser reads an autoencoder run: the one it is compared with (and, with
    init.from_baseline, starts from)."""
    return {"baseline": "autoencoder"}


def report_section(run: RunFolder, stage: str) -> Section:
    """The denoising autoencoder's part of the study report."""
    sec = Section(stage, "Denoising autoencoder")
    sec.missing = run.not_run(stage, "denoising result")
    if sec.missing:
        return sec
    s = run.json(f"{stage}/summary.json")
    noise = s.get("noise", {})
    clipped = "clipped to [0, 1]" if noise.get("clip") else "not clipped"
    sec.intro = (
        f"The same network trained on inputs plus Gaussian noise (sigma {num(noise.get('sigma'))}, "
        f"{clipped}) against the clean image, {num(s.get('epochs'))} epochs; tested on fixed, seeded "
        "noise beside the plain autoencoder fed the same noisy images."
    )
    has_ae = any(BASELINE in r for r in s.get("denoising", []))
    cols = ["sigma", "noisy PSNR", "noisy SSIM", "DAE PSNR", "DAE SSIM"]
    cols += ["plain AE PSNR", "plain AE SSIM"] if has_ae else []
    rows = []
    for r in s.get("denoising", []):
        row = [
            num(r.get("sigma")),
            num(r["noisy"]["psnr"]),
            num(r["noisy"]["ssim"]),
            num(r[OWN]["psnr"]),
            num(r[OWN]["ssim"]),
        ]
        if has_ae:
            row += [num(r.get(BASELINE, {}).get("psnr")), num(r.get(BASELINE, {}).get("ssim"))]
        rows.append(row)
    sec.tables.append(
        Table(
            f"Test set ({num(s.get('n_test'))} images): PSNR (dB) and SSIM against the clean "
            "image, of the noisy input and of each model's output",
            cols,
            rows,
        )
    )
    sec.figures += run.figure(
        f"{stage}/figures/denoising_examples.png",
        "Triplets per noise level (one row per "
        "sigma): noisy input, DAE output"
        + (", plain AE output" if has_ae else "")
        + ", original (image grid, no axes).",
    )
    sec.figures += run.figure(
        f"{stage}/figures/denoising_metrics.png",
        "PSNR and SSIM against the noise level. x: noise sigma; y: PSNR (dB) / SSIM against the clean image.",
    )
    sec.figures += run.figure(
        f"{stage}/figures/loss_curves.png",
        "DAE training and validation MSE per epoch. x: epoch; y: MSE against the clean image (log scale).",
    )
    return sec


SPEC = register(
    TaskSpec(
        **spec_fields("dae"),
        experiment=DAEExperiment,
        train=train,
        load=load_run,
        evaluate=evaluate,
        report=report_section,
        run_inputs=run_inputs,
    )
)

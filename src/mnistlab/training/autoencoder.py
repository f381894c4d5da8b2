"""The autoencoder's part of training: one reconstruction step, validation, and test evaluation.

`corrupt` turns clean inputs into what the network sees (identity for the plain autoencoder, added
noise for the denoising one); the loss is always MSE against the clean image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from mnistlab.data.datasets import Data, DataConfig, Split, to_float
from mnistlab.metrics import images as metrics
from mnistlab.models import build_model
from mnistlab.models.autoencoder import AEConfig, ConvAutoencoder
from mnistlab.plots.figures import image_rows, plot_curves
from mnistlab.runs import folder as rundir
from mnistlab.training import run_folder
from mnistlab.training.loop import (
    TrainConfig,
    autocast,
    conv_channels_last,
    make_optimizer,
)

Corrupt = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AEExperiment:
    data: DataConfig = field(default_factory=DataConfig)
    model: AEConfig = field(default_factory=AEConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all pixels, the report's loss."""
    return F.mse_loss(recon, target)


class AutoencoderTask:
    def __init__(
        self,
        model: ConvAutoencoder,
        cfg: TrainConfig,
        val: Split,
        device: torch.device,
        corrupt: Corrupt | None = None,
        val_corrupt: Corrupt | None = None,
    ):
        # channels_last (NHWC) activations and weights (`conv_channels_last`); gradients equal the NCHW
        # ones to float rounding.
        self.channels_last = conv_channels_last(device, cfg.channels_last)
        self.model = (
            model.to(device, memory_format=torch.channels_last) if self.channels_last else model.to(device)
        )
        self.net = self.model  # what the step calls: the model, or its DDP wrapper (distribute)
        self.autocast = autocast(cfg, device)
        self.device = device
        self.val = val
        self.eval_batch_size = cfg.eval_batch_size
        self.corrupt = corrupt
        self.val_corrupt = val_corrupt if val_corrupt is not None else corrupt
        self.modules = {"model": self.model}
        self.optimizers = {"model": make_optimizer(self.model.parameters(), cfg)}

    def distribute(self, wrap: Callable[[torch.nn.Module], torch.nn.Module]) -> None:
        """Train through `wrap(model)` (DistributedDataParallel); modules keep the plain model."""
        self.net = wrap(self.model)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        x = to_float(images, self.device)  # (B, 1, 28, 28)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        inp = self.corrupt(x) if self.corrupt is not None else x
        with self.autocast():
            recon, _ = self.net(inp)
        loss = reconstruction_loss(recon.float(), x)  # fp32 loss whatever the forward ran in
        opt = self.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    def evaluate(self) -> dict[str, float]:
        if len(self.val) == 0:
            return {}
        # MSE only: the epoch's row reports nothing else; PSNR and SSIM are scored on the test set.
        scores = evaluate_reconstruction(
            self.model, self.val, self.device, self.eval_batch_size, self.val_corrupt, ("mse",)
        )
        return {"loss": scores["mse"]}


@torch.no_grad()
def reconstruct(
    model: ConvAutoencoder,
    images: torch.Tensor,
    device: torch.device,
    batch_size: int = 1000,
    corrupt: Corrupt | None = None,
):
    """Yield (clean, input, recon) float batches (B, 1, 28, 28) for uint8 images (N, 28, 28)."""
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(images), batch_size):
            x = to_float(images[start : start + batch_size], device)
            inp = corrupt(x) if corrupt is not None else x
            yield x, inp, model(inp).recon
    finally:
        model.train(was_training)


def evaluate_reconstruction(
    model: ConvAutoencoder,
    split: Split,
    device: torch.device,
    batch_size: int = 1000,
    corrupt: Corrupt | None = None,
    scores: tuple[str, ...] = tuple(metrics.QUALITY),
) -> dict[str, float]:
    """Mean `scores` (of MSE, PSNR in dB, SSIM) of reconstructions against the clean images of `split`."""
    totals = dict.fromkeys(scores, 0.0)
    for x, _, recon in reconstruct(model, split.images, device, batch_size, corrupt):
        for k in scores:
            totals[k] += metrics.QUALITY[k](recon, x).sum().item()
    return {k: v / max(len(split), 1) for k, v in totals.items()}


# ------------------------------------------------------------------------------- whole runs


def train_autoencoder(exp, out: Path, resume: bool = False, progress: bool = True, on_epoch_end=None) -> dict:
    """Train the autoencoder of `exp` into run folder `out`, then evaluate it on the test set.
    `on_epoch_end(epoch, row)` is handed to `fit` (searches use it to report to a pruner)."""
    data, device = run_folder.start(exp)
    model = build_model("conv_autoencoder", exp.model)
    task = AutoencoderTask(model, exp.train, data.val, device)
    run_dir = run_folder.prepare(out, exp, "ae", resume)
    result = run_folder.fit_plain(task, data.train, exp, run_dir, "ae", resume, progress, on_epoch_end)
    if result is None:
        return {}  # not rank 0
    summary = evaluate_autoencoder(run_dir, model, data, device, exp.train.eval_batch_size)
    summary.update(run_folder.finished(result), device=str(device))
    rundir.write_summary(run_dir, summary)
    return summary


def evaluate_autoencoder(
    run_dir: Path, model: ConvAutoencoder, data: Data, device: torch.device, batch_size: int = 1000
) -> dict:
    """Test MSE/PSNR/SSIM, the loss curves and a reconstruction grid for a trained autoencoder."""
    test = evaluate_reconstruction(model, data.test, device, batch_size)
    history = rundir.read_history(run_dir)
    figures = Path(run_dir) / "figures"
    plot_curves(
        history,
        ("train_loss", "val_loss"),
        figures / "loss_curves.png",
        "Autoencoder: reconstruction MSE",
        ylabel="MSE",
        log_y=True,
    )
    x, _, recon = next(reconstruct(model, data.test.images[:12], device))
    image_rows(
        [x, recon],
        ["original", "reconstruction"],
        figures / "reconstructions.png",
        "Test images and their reconstructions",
    )
    return {
        "task": "ae",
        "test": {k: round(v, 6) for k, v in test.items()},
        "best_val_loss": min((r["val_loss"] for r in history if "val_loss" in r), default=None),
        "data": data.source,
        "n_train": len(data.train),
        "n_val": len(data.val),
        "n_test": len(data.test),
    }


def load_autoencoder(run_dir: Path, exp) -> ConvAutoencoder:
    """The trained autoencoder (eval mode) of an ae or dae run folder whose config is `exp`."""
    model = build_model("conv_autoencoder", exp.model)
    rundir.load_weights(run_dir, model)
    return model.eval()

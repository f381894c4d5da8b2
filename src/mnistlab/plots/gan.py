"""Figures of a GAN run: sample grids (one epoch, or several epochs side by side) and the class
histogram of generated digits. Curves (losses, D outputs, FID against epoch) use `figures.plot_curves`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mnistlab.plots.figures import LABEL_PT, TITLE_PT, _save, plt

PANELS_PER_ROW = 3  # epoch panels side by side; more go on the next row


def tile(images: torch.Tensor | np.ndarray, rows: int, pad: int = 2) -> np.ndarray:
    """uint8 images (N, 28, 28) -> one float array (rows*(28+pad)-pad, cols*(28+pad)-pad) in [0, 1],
    filled row by row; padding and missing cells are mid-grey so that black digits stay visible."""
    imgs = np.asarray(images.cpu() if torch.is_tensor(images) else images).reshape(-1, 28, 28)
    n = len(imgs)
    cols = max(1, -(-n // rows))
    out = np.full((rows * (28 + pad) - pad, cols * (28 + pad) - pad), 0.5)
    for k in range(n):
        r, c = divmod(k, cols)
        out[r * (28 + pad) : r * (28 + pad) + 28, c * (28 + pad) : c * (28 + pad) + 28] = imgs[k] / 255.0
    return out


def sample_grid(images: torch.Tensor, path: Path, title: str, rows: int = 10, caption: str = "") -> Path:
    """One grid of uint8 samples (N, 28, 28), `rows` rows."""
    fig, ax = plt.subplots(figsize=(6, 6.4))
    ax.imshow(tile(images, rows), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    if caption:
        fig.text(0.5, 0.02, caption, ha="center", fontsize=10, wrap=True)
    return _save(fig, path)


def epoch_grids(grids: dict[int, torch.Tensor], path: Path, title: str, rows: int = 10) -> Path:
    """The fixed noise batch decoded at several epochs, one panel per epoch, at most PANELS_PER_ROW to a
    row (six in one row were 19 inches wide: a report showed their digits and titles a third as big)."""
    epochs = sorted(grids) or [0]
    cols = min(len(epochs), PANELS_PER_ROW)
    lines = -(-len(epochs) // cols)
    fig, axes = plt.subplots(lines, cols, figsize=(3.6 * cols, 3.6 * lines + 0.8), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, epoch in zip(axes.flat, epochs):
        if epoch in grids:
            ax.imshow(tile(grids[epoch], rows), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"epoch {epoch}", fontsize=LABEL_PT)
    fig.suptitle(title, fontsize=TITLE_PT)
    fig.text(0.5, 0.0, "the same noise vectors in every panel", ha="center", fontsize=LABEL_PT - 1)
    fig.subplots_adjust(wspace=0.08, hspace=0.15)
    return _save(fig, path)


def class_histogram(
    shares: Sequence[float], path: Path, title: str, band: tuple[float, float] = (0.05, 0.15)
) -> Path:
    """Bar chart of the share of generated samples per predicted digit, with the target band shaded."""
    shares = np.asarray(shares, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.axhspan(*band, color="tab:green", alpha=0.12, label=f"target {band[0]:.0%} to {band[1]:.0%}")
    ax.axhline(1 / len(shares), color="grey", lw=0.8, ls="--", label="uniform")
    colors = ["tab:red" if not band[0] <= s <= band[1] else "tab:blue" for s in shares]
    ax.bar(range(len(shares)), shares, color=colors)
    ax.set_xticks(range(len(shares)))
    ax.set_xlabel("digit predicted by the reference classifier")
    ax.set_ylabel("share of generated samples")
    ax.set_ylim(0, max(0.2, float(shares.max()) * 1.1))
    ax.set_title(title)
    ax.legend(fontsize=9)
    return _save(fig, path)

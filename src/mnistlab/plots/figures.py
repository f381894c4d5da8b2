"""Figures as PNG files: training curves and image grids. Each function takes plain data and a
path, draws with matplotlib's Agg backend (no display needed) and returns the path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

# Text sizes of the image grids, in points at the 120 dpi of _save. A grid 10 digits wide is about 9 inches
# (1,100 pixels); the report shows it across its width (about 1,050 pixels), where 12 points are 16
# pixels: readable at 100% zoom, where the 8 to 9 points they had were 10 to 11 pixels (6 for the
# denoising triplets' headers).
LABEL_PT = 12
TITLE_PT = 14


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_curves(
    history: Sequence[dict[str, Any]],
    keys: Sequence[str],
    path: Path,
    title: str,
    ylabel: str = "loss",
    log_y: bool = False,
) -> Path:
    """One line per metric key against epoch, e.g. keys=("train_loss", "val_loss")."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in keys:
        points = [(r["epoch"], r[key]) for r in history if key in r]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", markersize=3, label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers, even for 3 of them
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def image_rows(
    rows: Sequence[torch.Tensor | np.ndarray], labels: Sequence[str], path: Path, title: str = ""
) -> Path:
    """A grid with one row per tensor of images (N, 1, 28, 28) or (N, 28, 28) in [0, 1]."""
    n = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9, len(rows) * 1.0 + 0.6), squeeze=False)
    for i, (row, label) in enumerate(zip(rows, labels)):
        imgs = np.asarray(row.detach().cpu() if torch.is_tensor(row) else row).reshape(len(row), 28, 28)
        for j in range(n):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(imgs):
                ax.imshow(imgs[j], cmap="gray", vmin=0, vmax=1)
        axes[i][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=LABEL_PT)
    if title:
        fig.suptitle(title, fontsize=TITLE_PT)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return _save(fig, path)

"""Figures for latent maps, samples and generation metrics. Each function takes plain arrays and a
path, draws with matplotlib's Agg backend and returns the path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mnistlab.plots.figures import _save, plt


def mosaic(images: np.ndarray, ncols: int, pad: int = 2) -> np.ndarray:
    """uint8 (N, 28, 28) -> one float image in [0, 1], row-major, `pad` blank pixels between digits."""
    n = len(images)
    nrows = max(1, -(-n // ncols))
    side = 28 + pad
    canvas = np.zeros(
        (nrows * side - pad, ncols * side - pad), dtype=np.float32
    )  # 0 = black: white digits on black, as every digit figure
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        canvas[r * side : r * side + 28, c * side : c * side + 28] = img / 255.0
    return canvas


def image_grid(images: np.ndarray, path: Path, title: str, ncols: int = 10) -> Path:
    """A grid of uint8 digits (N, 28, 28), ncols per row."""
    ncols = max(1, min(ncols, len(images)))
    canvas = mosaic(images, ncols)
    h, w = canvas.shape
    fig, ax = plt.subplots(figsize=(max(3.0, w / 40), max(1.2, h / 40) + 0.5))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(title, fontsize=11)
    return _save(fig, path)


def scatter_map(
    points: np.ndarray, labels: np.ndarray, path: Path, title: str, axis: str, caption: str = ""
) -> Path:
    """2-D points coloured by digit with a legend; axes named `axis` 1 and 2."""
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    cmap = plt.get_cmap("tab10")
    size = 2 if len(points) > 3000 else 6
    for digit in range(10):
        sel = labels == digit
        if sel.any():
            ax.scatter(
                points[sel, 0],
                points[sel, 1],
                s=size,
                color=cmap(digit),
                label=str(digit),
                alpha=0.7,
                linewidths=0,
                rasterized=True,
            )
    ax.set_xlabel(f"{axis} 1")
    ax.set_ylabel(f"{axis} 2")
    ax.set_title(title, fontsize=10)
    ax.legend(title="digit", markerscale=4 if size == 2 else 2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    if caption:
        fig.text(0.01, -0.02, caption, fontsize=10, ha="left", va="top", wrap=True)
    return _save(fig, path)


def manifold_figure(images: np.ndarray, grid: np.ndarray, size: int, path: Path, title: str) -> Path:
    """Decoded images of a size x size grid of 2-D codes, drawn at their code coordinates."""
    canvas = mosaic(images, size, pad=0)
    x0, x1 = grid[:, 0].min(), grid[:, 0].max()
    y0, y1 = grid[:, 1].min(), grid[:, 1].max()
    dx = (x1 - x0) / max(size - 1, 1) / 2
    dy = (y1 - y0) / max(size - 1, 1) / 2
    fig, ax = plt.subplots(figsize=(6.4, 6.4))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, extent=(x0 - dx, x1 + dx, y0 - dy, y1 + dy), aspect="auto")
    ax.set_xlabel("latent 1")
    ax.set_ylabel("latent 2")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def interpolation_figure(rows: list[np.ndarray], path: Path, title: str) -> Path:
    """One row per pair: [image a, decoded line from code a to code b ..., image b]."""
    ncols = len(rows[0])
    canvas = mosaic(np.concatenate(rows), ncols)
    fig, ax = plt.subplots(figsize=(ncols * 0.55, len(rows) * 0.55 + 0.6))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([14 + 30 * i for i in (0, 1, ncols - 2, ncols - 1)])  # 28 px + 2 px gap per column
    ax.set_xticklabels(["a", "code a", "code b", "b"], fontsize=10)
    ax.set_yticks([])
    ax.set_title(title, fontsize=11)
    return _save(fig, path)


def evidence_figure(rows: dict[str, dict[str, Any]], path: Path, title: str, caption: str) -> Path:
    """Left: FID-MNIST per scored set (log scale). Middle: precision and recall. Right: the share of
    each predicted digit per set (the dashed line is uniform, 10%)."""
    names = list(rows)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1, 1, 1.4]})
    pos = np.arange(len(names))
    ax = axes[0]
    ax.bar(pos, [max(rows[n]["fid_mnist"], 1e-3) for n in names], color="tab:gray")
    ax.set_yscale("log")
    ax.set_ylabel("FID-MNIST (lower is better)")
    ax.set_xticks(pos, names, rotation=30, ha="right")
    ax.set_title("FID-MNIST")
    ax = axes[1]
    ax.bar(pos - 0.2, [rows[n]["precision"] for n in names], 0.4, label="precision")
    ax.bar(pos + 0.2, [rows[n]["recall"] for n in names], 0.4, label="recall")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share (higher is better)")
    ax.set_xticks(pos, names, rotation=30, ha="right")
    ax.set_title(f"precision / recall (k={rows[names[0]].get('pr_k', 3)})")
    ax.legend(fontsize=9)
    ax = axes[2]
    width = 0.8 / len(names)
    for i, n in enumerate(names):
        ax.bar(np.arange(10) + (i - (len(names) - 1) / 2) * width, rows[n]["class_hist"], width, label=n)
    ax.axhline(0.1, color="k", linestyle="--", linewidth=0.8)
    ax.set_xticks(range(10))
    ax.set_xlabel("digit predicted by the reference classifier")
    ax.set_ylabel("share of samples")
    ax.set_title("class coverage")
    ax.legend(fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.text(0.01, -0.02, caption, fontsize=10, ha="left", va="top", wrap=True)
    fig.tight_layout()
    return _save(fig, path)

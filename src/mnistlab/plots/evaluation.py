"""Figures of evaluation results as PNG files: metric-against-setting lines (denoising quality
against sigma, accuracy against labels), a confusion matrix, and grids of image groups (noisy /
denoised / original). Each function takes plain data and a path and returns the path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mnistlab.plots.figures import LABEL_PT, TITLE_PT, _save, plt

TRIPLET_COLUMNS = 12  # images on one line of a triplet grid: 3 digits of 4 panels


def plot_metric_lines(
    xs: Sequence[float],
    panels: dict[str, dict[str, Sequence[float]]],
    path: Path,
    xlabel: str,
    ylabels: dict[str, str] | None = None,
    title: str = "",
    log_x: bool = False,
    xticklabels: Sequence[str] | None = None,
    bands: dict[str, dict[str, tuple[Sequence[float], Sequence[float]]]] | None = None,
) -> Path:
    """One subplot per panel (e.g. "psnr", "ssim"), one line per series, all against `xs`; `bands`
    [panel][series] = (low, high) shades a range around a line (e.g. min and max over repeats)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4), squeeze=False)
    for ax, (panel, series) in zip(axes[0], panels.items()):
        for label in sorted(series):
            ys = series[label]
            points = [(x, y) for x, y in zip(xs, ys) if y is not None]
            if not points:
                continue
            (line,) = ax.plot(*zip(*points), marker="o", markersize=4, label=label)
            band = (bands or {}).get(panel, {}).get(label)
            if band is not None:
                ax.fill_between(xs, band[0], band[1], color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel((ylabels or {}).get(panel, panel))
        if log_x:
            ax.set_xscale("log")
        if xticklabels is not None:
            ax.set_xticks(list(xs))
            ax.set_xticklabels(xticklabels)
            ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion(matrix: np.ndarray, path: Path, title: str) -> Path:
    """A (C, C) count matrix, rows = true class, columns = predicted; cells show counts, colour shows
    the share of each true class (so rare classes are as readable as common ones)."""
    matrix = np.asarray(matrix)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    n = len(matrix)
    for i in range(n):
        for j in range(n):
            if matrix[i, j]:
                ax.text(
                    j,
                    i,
                    str(int(matrix[i, j])),
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="white" if share[i, j] > 0.5 else "black",
                )
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label="share of the true digit's test images")
    return _save(fig, path)


def triplet_grid(
    rows: Sequence[Sequence[torch.Tensor]],
    panel_names: Sequence[str],
    row_labels: Sequence[str],
    path: Path,
    title: str = "",
) -> Path:
    """rows[r][p] holds n images (n, 1, 28, 28) in [0, 1] for panel p of row r; each row shows the n
    digits one after another as groups of panels (e.g. noisy | denoised | original), wrapped so that a
    line holds at most TRIPLET_COLUMNS images (24 in one line left 44 pixels a header in the report)."""
    n_rows, n_panels = len(rows), len(panel_names)
    n = len(rows[0][0])
    per_line = max(1, TRIPLET_COLUMNS // n_panels)  # digit groups on one line
    lines = -(-n // per_line)  # lines of each row
    cols = min(n, per_line) * n_panels
    fig, axes = plt.subplots(
        n_rows * lines, cols, figsize=(cols * 0.9, n_rows * lines * 0.95 + 1.0), squeeze=False
    )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    for r, panels in enumerate(rows):
        for p, imgs in enumerate(panels):
            imgs = imgs.detach().float().cpu().reshape(-1, 28, 28).clamp(0, 1).numpy()
            for i in range(n):
                line, slot = divmod(i, per_line)
                ax = axes[r * lines + line][slot * n_panels + p]
                ax.imshow(imgs[i], cmap="gray", vmin=0, vmax=1)
                if r == 0 and line == 0:
                    ax.set_title(str(panel_names[p]).replace(" ", "\n"), fontsize=LABEL_PT - 1)
        axes[r * lines][0].set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=LABEL_PT)
    if title:
        fig.suptitle(title, fontsize=TITLE_PT - 1)
    fig.subplots_adjust(wspace=0.05, hspace=0.08)
    return _save(fig, path)

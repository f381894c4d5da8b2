"""Figures of a flow-matching run: the same noise solved with several step counts side by side, and
FID-MNIST against the number of steps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from mnistlab.plots.figures import _save, plt
from mnistlab.plots.gan import tile


def steps_grids(grids: dict[int, torch.Tensor], path: Path, title: str, rows: int = 10) -> Path:
    """uint8 grids (N, 28, 28) keyed by step count, one panel each, fewest steps on the left."""
    steps = sorted(grids)
    n = max(len(steps), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.8), squeeze=False)
    for ax, s in zip(axes[0], steps):
        ax.imshow(tile(grids[s], rows), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{s} step{'s' if s != 1 else ''}")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    fig.text(0.5, 0.01, "the same noise and digits in every panel", ha="center", fontsize=8)
    return _save(fig, path)


def fid_by_steps(steps: Sequence[int], fids: Sequence[float], path: Path, title: str) -> Path:
    """FID-MNIST (log) against solver steps (log), one point per step count."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, fids, marker="o")
    for s, f in zip(steps, fids):
        ax.annotate(f"{f:.3g}", (s, f), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(list(steps))
    ax.set_xticklabels([str(s) for s in steps])
    ax.set_xlabel("network evaluations per sample (solver steps)")
    ax.set_ylabel("FID-MNIST (lower is better)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)

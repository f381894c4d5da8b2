"""What a search leaves behind in its folder: results.csv and results.md (trials sorted by the
objective, best first), val_curves.png (every trial's validation loss per epoch) and best.toml (the
best trial's full config, a preset that `mnistlab train TASK --preset PATH` accepts)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from mnistlab.core.config import save_experiment  # noqa: E402
from mnistlab.core.errors import ConfigError  # noqa: E402
from mnistlab.core.fsio import atomic_write_bytes  # noqa: E402
from mnistlab.runs import folder as rundir  # noqa: E402
from mnistlab.tasks import load_run_config  # noqa: E402

_STATUS_ORDER = {"finished": 0, "complete": 0, "pruned": 1}  # anything else (diverged, failed) after


def _has(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and not math.isfinite(value))


def sort_rows(rows: list[dict[str, Any]], objective: Any) -> list[dict[str, Any]]:
    """Finished trials by objective (best first), then pruned ones, then those without a value."""

    def key(row: dict[str, Any]):
        value = row.get(objective.name)
        sign = 1.0 if objective.direction == "minimize" else -1.0
        return (not _has(value), _STATUS_ORDER.get(row["status"], 2), sign * value if _has(value) else 0.0)

    ranked = sorted(rows, key=key)
    return [{"rank": i + 1, **r} for i, r in enumerate(ranked)]


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def write_results(
    out: Path, rows: list[dict[str, Any]], objective: Any, params: list[str], task: str
) -> list[dict[str, Any]]:
    """Write results.csv, results.md, val_curves.png and best.toml into `out`; return sorted rows."""
    out = Path(out)
    ranked = sort_rows(rows, objective)
    columns = [
        "rank",
        "trial",
        *params,
        objective.name,
        "status",
        "best_val_loss",
        "best_epoch",
        "epochs",
        "test_mse",
        "train_seconds",
    ]
    columns = list(dict.fromkeys(columns))  # objective val_loss is already a column name: keep one
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns + ["run_dir"], extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(ranked)
    atomic_write_bytes(out / "results.csv", buf.getvalue().encode())

    best = next((r for r in ranked if _has(r.get(objective.name)) and r["status"] in _STATUS_ORDER), None)
    lines = [
        f"# Search results: {task}, {len(rows)} trials",
        "",
        f"Objective: {objective.name} ({objective.direction}d"
        + ("; best epoch of each trial" if objective.per_epoch else "; logistic regression on frozen codes")
        + "). Sorted best first.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in ranked]
    if best is not None:
        lines += [
            "",
            f"Best: {best['trial']} ({objective.name} = {_fmt(best[objective.name])}); "
            f"its config is in best.toml (`mnistlab train {task} --preset {out / 'best.toml'}`).",
        ]
        saved_task, exp = load_run_config(Path(best["run_dir"]))
        save_experiment(out / "best.toml", exp, saved_task)
    atomic_write_bytes(out / "results.md", ("\n".join(lines) + "\n").encode())
    title = f"{task}: validation loss of {len(rows)} trials"
    plot_search_curves(ranked, out / "val_curves.png", title, objective.name)
    return ranked


def plot_search_curves(
    rows: list[dict[str, Any]], path: Path, title: str, ranked_by: str = "val_loss", max_legend: int = 20
) -> Path:
    """Validation loss per epoch, one line per trial in rank order (the best drawn thick); log-scale y."""
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.get_cmap("tab20").colors  # 20 distinct colours: the report's grid has 12 trials
    drawn = 0
    for row in rows:
        points = [(r["epoch"], r["val_loss"]) for r in rundir.read_history(row["run_dir"]) if "val_loss" in r]
        points = [(e, v) for e, v in points if math.isfinite(v) and v > 0]
        if not points:
            continue
        xs, ys = zip(*points)
        if drawn == 0 and row["status"] in _STATUS_ORDER:
            style = {"linewidth": 2.6, "color": "black", "zorder": 3}
        else:
            style = {"linewidth": 1.0, "alpha": 0.85, "color": colors[drawn % len(colors)]}
        ls = "--" if row["status"] == "pruned" else "-"
        ax.plot(xs, ys, ls, marker="o", markersize=2.5, label=f"#{row['rank']} {row['trial']}", **style)
        drawn += 1
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss (MSE for autoencoders)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    if 0 < drawn <= max_legend:
        ax.legend(
            fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            title=f"rank by {ranked_by}, trial",
            title_fontsize=8,
        )
    fig.text(
        0.01,
        -0.02,
        f"Thick black: the best trial by {ranked_by}; dashed: pruned trials. "
        "Lower validation loss is better.",
        fontsize=8,
        ha="left",
        va="top",
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def best_trial(search_dir: Path) -> Path:
    """The folder of the best trial of a finished search (rank 1 of results.csv, with a value)."""
    path = search_dir / "results.csv"
    if not path.is_file():
        raise ConfigError(f"{search_dir} has no results.csv; the search stage has not finished")
    objective = json.loads((search_dir / "search.json").read_text())["objective"]
    with path.open() as f:
        rows = list(csv.DictReader(f))  # sorted best first
    ranked = [r for r in rows if r.get("status") in ("finished", "complete") and r.get(objective)]
    if not ranked:
        raise ConfigError(f"{search_dir}: no trial finished with a {objective}; see results.md")
    return search_dir / "trials" / ranked[0]["trial"]

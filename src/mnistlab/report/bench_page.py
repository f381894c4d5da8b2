"""The pages of `mnistlab compare`: compare.md (the table, notes, figures linked by path), compare.csv
(raw numbers) and compare.html (self-contained: the table and each run's key figures side by side,
embedded as base64 PNG; inline CSS, no script, no network), from the entries of mnistlab.bench.compare.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mnistlab.bench import compare as bench
from mnistlab.bench import table as bench_table
from mnistlab.core.errors import ConfigError
from mnistlab.core.fsio import atomic_write_bytes
from mnistlab.report.build import _environment, data_uri

FIGURE_ROWS = (
    ("reconstructions", "Reconstructions"),
    ("denoising", f"Denoising (sigma {bench.GAIN_SIGMA:g})"),
    ("samples", "Samples"),
)


def figure_grid(entries: list[bench.Entry]) -> list[dict[str, Any]]:
    """Rows of the side-by-side figures: one per kind of figure that some run has, one cell per run
    (a list of (caption, PNG path), empty where the run has none of that kind)."""
    rows = []
    for kind, title in FIGURE_ROWS:
        cells = [[(c, p) for k, c, p in e.figures if k == kind or k.startswith(f"{kind}:")] for e in entries]
        if any(cells):
            rows.append({"title": title, "cells": cells})
    return rows


def render(entries: list[bench.Entry], notes: list[str], cfg: bench.BenchConfig, out: Path) -> dict[str, str]:
    """{"html", "markdown", "csv"} texts of the comparison (markdown links figures relative to `out`)."""
    table_rows = bench_table.rows(entries)
    headers, cells = bench_table.table(table_rows)
    bold = bench_table.best(table_rows)
    grid = figure_grid(entries)
    images = {str(p): data_uri(p.read_bytes()) for row in grid for cell in row["cells"] for _, p in cell}
    links = {str(p): Path(os.path.relpath(p, out)).as_posix() for p in map(Path, images)}
    context = {
        "runs": entries,
        "headers": headers,
        "cells": cells,
        "bold": bold,
        "notes": [*notes, *bench_table.table_notes(entries)],
        "definitions": bench_table.definitions(cfg),
        "grid": grid,
        "images": images,
        "links": links,
        "table_md": bench_table.markdown(headers, cells, bold),
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    env = _environment()
    return {
        "html": env.get_template("compare.html.j2").render(**context),
        "markdown": env.get_template("compare.md.j2").render(**context),
        "csv": bench_table.csv_text(table_rows),
    }


def default_out() -> Path:
    return Path("runs") / f"compare-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"


def check_out(out: Path) -> Path:
    """`out` if compare can write its pages there (checked before anything is computed)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: a file, not a folder")
    return out


def write(entries: list[bench.Entry], notes: list[str], cfg: bench.BenchConfig, out: Path) -> dict[str, Path]:
    """Write out/compare.html, compare.md and compare.csv; return their paths."""
    out = check_out(out)
    texts = render(entries, notes, cfg, out.resolve())
    paths = {"html": out / "compare.html", "markdown": out / "compare.md", "csv": out / "compare.csv"}
    try:
        for kind, path in paths.items():
            atomic_write_bytes(path, texts[kind].encode())
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot write ({e.strerror})") from None
    return paths

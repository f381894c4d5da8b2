"""`mnistlab report RUN_DIR`: report.html (self-contained: figures embedded as base64 PNG, inline CSS, no
script, no network) and report.md (figures linked by their paths in the run folder) from a run folder,
without training. The content comes from report/sections.py; the layout from templates/ (jinja2,
autoescaped HTML).
"""

from __future__ import annotations

import base64
import io
import re
from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from mnistlab.core.fsio import atomic_write_bytes
from mnistlab.plots.content import Figure, Section
from mnistlab.plots.figures import plt
from mnistlab.report.sections import build_sections
from mnistlab.runs.folder import read_run

TEMPLATES = Path(__file__).parent / "templates"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["md_cell"] = lambda text: str(text).replace("|", "\\|").replace("\n", " ")
    env.filters["code"] = code_spans
    return env


def code_spans(text: str) -> Markup:
    """Text for HTML with its `backticked` parts as <code> (escaped first): the sections write commands in
    backticks, which report.md shows as code and the HTML showed as literal backticks."""
    return Markup(re.sub(r"`([^`\n]+)`", r"<code>\1</code>", str(escape(text))))


# A figure this many times as wide as high, or this many pixels wide, spans the report's whole width (a
# row of grids, say): in half of it (about 520 pixels) its text would shrink to half its size or less.
WIDE_RATIO = 2.2
WIDE_PIXELS = 1000


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header (its IHDR chunk); (0, 0) for bytes that are no PNG."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or len(png) < 24:
        return 0, 0
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def timing_figure(state: dict) -> bytes | None:
    """Horizontal bars: seconds per stage (summed over attempts), as PNG bytes; None before any stage ran."""
    stages = [(s["name"], s.get("seconds") or 0.0) for s in state.get("stages", []) if s.get("seconds")]
    if not stages:
        return None
    names, secs = zip(*stages)
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(names) + 1.2))
    ax.barh(range(len(names)), secs, color="tab:blue")
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names)
    ax.invert_yaxis()  # first stage on top
    for i, v in enumerate(secs):
        ax.text(v, i, f" {v:.1f} s", va="center", fontsize=8)
    ax.set_xlabel("wall-clock seconds")
    ax.set_ylabel("stage")
    ax.set_xlim(0, max(secs) * 1.2)
    ax.set_title(f"Time per stage ({sum(secs):.0f} s in all)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def render(run_dir: Path, state: dict, sections: list[Section]) -> tuple[str, str]:
    """(html, markdown) of the report."""
    env = _environment()
    timing = timing_figure(state)
    timing_path = Path(run_dir) / "report_timing.png"
    if timing is not None:
        atomic_write_bytes(timing_path, timing)  # report.md links it; the HTML embeds it
        target = next((s for s in sections if s.id == "settings"), sections[0])
        target.figures.insert(
            0,
            Figure(timing_path, timing_path.name, "Wall-clock seconds of each stage. x: seconds; y: stage."),
        )
    pngs = {f.rel: f.path.read_bytes() for s in sections for f in s.figures}
    images = {rel: data_uri(png) for rel, png in pngs.items()}
    sizes = {rel: png_size(png) for rel, png in pngs.items()}
    wide = {rel for rel, (w, h) in sizes.items() if w >= WIDE_PIXELS or (h and w / h >= WIDE_RATIO)}
    context = {
        "run": state,
        "run_name": Path(run_dir).resolve().name,
        "sections": sections,
        "images": images,
        "wide": wide,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return env.get_template("report.html.j2").render(**context), env.get_template("report.md.j2").render(
        **context
    )


def write_report(run_dir: Path) -> dict[str, Path]:
    """Write RUN_DIR/report.html and RUN_DIR/report.md; a one-line error for a folder that is not a run."""
    run_dir = Path(run_dir)
    state = read_run(run_dir)
    html, md = render(run_dir, state, build_sections(run_dir, state))
    paths = {"html": run_dir / "report.html", "markdown": run_dir / "report.md"}
    atomic_write_bytes(paths["html"], html.encode())
    atomic_write_bytes(paths["markdown"], md.encode())
    return paths

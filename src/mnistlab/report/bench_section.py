"""The study report's "Models side by side" section: the `mnistlab compare` table of the study's own
finished model stages, built from their files only (summary.json, the probe and latent stages'
summaries, and RUN/<stage>/compare.json when a compare has run), so the report stays fast: a
measure no file records shows '-', and a note says how to compute it.
"""

from __future__ import annotations

from mnistlab.bench import compare as bench
from mnistlab.bench import table as bench_table
from mnistlab.core.errors import ConfigError
from mnistlab.plots.content import RunFolder, Section, Table


def bench_section(run: RunFolder) -> Section:
    sec = Section("bench", "Models side by side")
    cfg = bench.BenchConfig()
    entries = []
    for stage in run.trained:
        if not run.done(stage):
            continue
        try:
            entries.append(bench.collect(run.root / run.folder(stage), stage, cfg, compute=False))
        except ConfigError as e:  # a stage folder this version cannot read: said, not fatal to the report
            sec.notes.append(f"{stage}: left out ({e}).")
    if not entries:
        sec.missing = "No model stage of this run has finished yet, so there is nothing to compare."
        return sec
    sec.intro = (
        "Every finished model of this run in one table, each measure in the rows of the models it "
        "applies to (by role). " + bench_table.definitions(cfg, computed=False)
    )
    headers, cells = bench_table.table(bench_table.rows(entries))
    sec.tables.append(Table("The study's models, from their run folders' files", headers, cells))
    if any(c == "-" for row in cells for c in row):
        sec.notes.append(
            f"'-': no file of the stage records that measure (the report reads files only). "
            f"`mnistlab compare {run.root}` computes them from the checkpoints and caches them in "
            f"each stage's {bench.CACHE_FILE}; this table then shows them."
        )
    sec.notes += bench_table.table_notes(entries)
    return sec

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
    filled = _study_probe(run, entries)
    if filled:
        sec.notes.append(
            f"Frozen probe of {', '.join(filled)}: the study's own linear probe on every label (the "
            "number the classification and label-efficiency sections show), as no file records the "
            "bench's logistic regression; `mnistlab compare` measures that one."
        )
    sec.intro = (
        "Every finished model of this run in one table, each measure in the rows of the models it "
        "applies to (by role). " + bench_table.definitions(cfg, computed=False)
    )
    table_rows = bench_table.rows(entries)
    headers, cells = bench_table.table(table_rows)
    sec.tables.append(
        Table(
            "The study's models, from their run folders' files", headers, cells, bench_table.best(table_rows)
        )
    )
    if any(c == "-" for row in cells for c in row):
        sec.notes.append(
            f"'-': no file of the stage records that measure (the report reads files only). "
            f"`mnistlab compare {run.root}` computes them from the checkpoints and caches them in "
            f"each stage's {bench.CACHE_FILE}; this table then shows them."
        )
    sec.notes += bench_table.table_notes(entries)
    return sec


def _study_probe(run: RunFolder, entries: list[bench.Entry]) -> list[str]:
    """Fill each encoder's unknown frozen-probe cell with the study's linear probe on all labels (the
    labels stage's, else the probe stage's for the autoencoder it read), so the table does not say '-'
    where another section of the report gives the number; the labels of the entries filled."""
    labels = run.json(f"{run.folder('labels')}/summary.json") if run.done("labels") else {}
    probe = run.json(f"{run.folder('probe')}/summary.json") if run.done("probe") else {}
    filled = []
    for e in entries:
        if "probe_acc" not in e.values or e.values["probe_acc"] is not None:
            continue
        rows = ((labels.get("models") or {}).get(e.label) or {}).get("rows") or []
        value = next((r.get("probe") for r in rows if str(r.get("labels_per_class")) == "all"), None)
        if value is None and e.label == run.encoder:
            value = (probe.get("linear_probe") or {}).get("test_acc")
        if value is not None:
            e.values["probe_acc"] = value
            filled.append(e.label)
    return filled

"""The report's first screen: what the study found (report/findings.py), how to read the numbers, the
headline measure of each stage beside the original report's own number, and, for a smoke-sized run, a
banner saying what the preset is. Read from the run folder by
role (the encoder stage, the denoiser, each generator), like every other section."""

from __future__ import annotations

from typing import Any

from mnistlab.plots.content import RunFolder, Section, Table, num, pct, read_json
from mnistlab.pretrained import shipped as pretrained
from mnistlab.report.findings import READING, findings
from mnistlab.training.denoise import OWN  # the denoiser's column in its summary's table

# The original study's own numbers (its written report), labelled as such wherever they appear.
ORIGINAL_PROBE, ORIGINAL_SUPERVISED = 0.8941, 0.9912
# What the banner says the full study costs: the shipped runs' training time, its longest stage being
# the default VAE's 60 epochs (docs/results.md).
DEFAULT_COST = "its VAE stage alone trains for about 45 minutes on one core of a 2-core CPU"


def _epochs(n: Any) -> str:
    return "-" if n is None else f"{num(n)} epoch{'' if n == 1 else 's'}"


def _share_range(hist: list[float]) -> str:
    return f"{pct(min(hist))} to {pct(max(hist))}" if hist else "-"


def key_results_section(run: RunFolder, roles: dict[str, frozenset[str]]) -> Section:
    sec = Section("key", "Key results")
    st = run.state
    enc = run.encoder
    ae = run.json(f"{enc}/summary.json") if enc else {}
    limit = ae.get("n_train")
    smoke = str(st.get("preset", "")).endswith("quick") or bool(limit and limit < 40_000)
    shipped = _shipped_summaries() if smoke else {}
    if smoke:
        sec.banner = (
            f"Preset {st.get('preset')!r} is a smoke run ({num(limit)} training images, a few epochs): its numbers "
            f"show that every stage works, not what the models reach. The full study is `mnistlab run --preset "
            f"default` ({DEFAULT_COST}). Runs trained with it ship with mnistlab: `mnistlab pretrained "
            "list` shows their test numbers"
            + ("; the last column of the table below holds them." if shipped else ".")
        )
    mine = {n: run.json(f"{n}/summary.json") for n in run.trained if run.done(n)}
    probe = run.json(f"{run.folder('probe')}/summary.json") if run.done("probe") else {}
    sec.findings = findings(mine, probe, enc)
    sec.reading = list(READING)
    rows = _rows(mine, probe, enc, roles)
    columns = ["measure", "this run (measured)", "original report (its own numbers)", "trained"]
    if shipped:
        theirs = {r[0]: r for r in _rows(shipped, shipped.get(f"{enc}/probe", {}), enc, roles)}
        rows = [r + [_with_epochs(theirs.get(r[0]))] for r in rows]
        columns.append("shipped default run (measured)")
    if not rows:
        sec.missing = "No stage has finished yet, so there is no result to show."
    # narrow: on a phone each row becomes a card, so the shipped column is not behind a sideways scroll
    sec.tables.append(
        Table("The headline of each stage (details in the sections below)", columns, rows, narrow=True)
    )
    return sec


def _shipped_summaries() -> dict[str, dict[str, Any]]:
    """Summaries of the runs shipped in the package (and "<name>/probe" of a probed one); {} if none."""
    out: dict[str, dict[str, Any]] = {}
    for name in pretrained.available():
        out[name] = read_json(pretrained.BUNDLE / name / "summary.json")
        if (pretrained.BUNDLE / name / "probe" / "summary.json").is_file():
            out[f"{name}/probe"] = read_json(pretrained.BUNDLE / name / "probe" / "summary.json")
    return out


def _with_epochs(row: list[str] | None) -> str:
    if row is None:  # the shipped runs do not hold it (their probe ran without fine-tuning, say)
        return "not in the shipped runs"
    return f"{row[1]} ({row[3]})" if row[3] else row[1]


def _rows(
    summaries: dict[str, dict[str, Any]],
    probe: dict[str, Any],
    enc: str | None,
    roles: dict[str, frozenset[str]],
) -> list[list[str]]:
    """[measure, value, the original report's number, what was trained] for each headline."""
    rows: list[list[str]] = []
    ae = summaries.get(enc or "", {})
    if ae.get("test"):
        t = ae["test"]
        rows.append(
            [
                f"{enc}: test reconstruction",
                f"MSE {num(t.get('mse'))}, PSNR {num(t.get('psnr'))} dB",
                "-",
                f"{_epochs(ae.get('epochs'))}, {num(ae.get('n_train'))} images",
            ]
        )
    lp, ft = probe.get("linear_probe") or {}, probe.get("finetune") or {}
    if lp:
        rows.append(
            [
                "frozen encoder + linear layer, test accuracy",
                pct(lp.get("test_acc")),
                pct(ORIGINAL_PROBE),
                f"{_epochs(lp.get('epochs'))} on the {num(probe.get('latent_dim'))}-d code",
            ]
        )
    if ft:
        rows.append(
            [
                "fine-tuned encoder, test accuracy",
                pct(ft.get("test_acc")),
                f"{pct(ORIGINAL_SUPERVISED)} (its supervised CNN)",
                _epochs(ft.get("epochs")),
            ]
        )
    for name, s in summaries.items():
        r = roles.get(name, frozenset())
        if "denoiser" in r:
            row = _denoiser_row(name, s)
            if row:
                rows.append(row)
        if "generator" in r:
            rows += _generator_rows(name, s)
        if isinstance(s.get("labels"), dict) and "accuracy" in (s.get("test") or {}):
            rows.append(_labelled_subset_row(name, s))  # a classifier trained from a labelled subset
    return rows


def _labelled_subset_row(name: str, s: dict[str, Any]) -> list[str]:
    """A classifier trained from a labelled subset (the semi-supervised task): its test accuracy, with
    the published numbers its summary names (never measured here) in the third column."""
    lab = s["labels"]
    per_class = lab.get("labels_per_class")
    published = "; ".join(
        f"{p.get('model')} {100 * float(p.get('test_accuracy', 0)):.2f}%" for p in s.get("published") or []
    )
    acc = (s.get("test") or {}).get("accuracy")
    return [
        f"{name}: test accuracy from {num(lab.get('n_labelled'))} labelled images "
        f"({'every label' if per_class is None else f'{per_class} per class'}, label seed {lab.get('label_seed')})",
        "-" if acc is None else f"{100 * float(acc):.2f}%",
        f"published, not measured here: {published}" if published else "-",
        f"{num(s.get('steps'))} steps",
    ]


def _denoiser_row(name: str, s: dict[str, Any]) -> list[str] | None:
    table = s.get("denoising") or []
    if not table:
        return None
    row = max(table, key=lambda r: r.get("sigma", 0))  # the report's sigma 1 is the largest default level
    own = row.get(OWN, {})
    noisy = row.get("noisy", {})
    return [
        f"{name}: PSNR at noise sigma {num(row.get('sigma'))}",
        f"{num(own.get('psnr'))} dB (noisy input {num(noisy.get('psnr'))} dB)",
        "- (shown as pictures)",
        _epochs(s.get("epochs")),
    ]


def _generator_rows(name: str, s: dict[str, Any]) -> list[list[str]]:
    rows = []
    test = s.get("test") if isinstance(s.get("test"), dict) and "fid_mnist" in s.get("test", {}) else None
    if test:
        rows.append(
            [
                f"{name}: FID-MNIST of its samples (lower is better)",
                num(test.get("fid_mnist")),
                "- (not measured)",
                _epochs(s.get("epochs")),
            ]
        )
        rows.append(
            [
                f"{name}: digit shares of its samples",
                _share_range(test.get("class_hist") or []),
                "digits 0, 2, 5, 6, 8 poorly generated (by eye)",
                "",
            ]
        )
    prior = (s.get("generation") or {}).get("prior")
    if prior:
        rows.append(
            [
                f"{name}: FID-MNIST of prior samples",
                num(prior.get("fid_mnist")),
                "- (no VAE in the report)",
                _epochs(s.get("epochs")),
            ]
        )
    return rows

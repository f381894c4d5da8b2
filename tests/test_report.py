"""`mnistlab report`: report.html (self-contained, autoescaped, every section, every figure embedded with
a caption) and report.md from a run folder, rebuilt without training; sections of stages that have not
run say so; a folder that is not a run is a one-line error. A headless-Chromium check opens the HTML
(Debian's chromium driven by Playwright; skipped with the reason when either is missing)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from mnistlab import cli, tasks
from mnistlab.plots.content import RunFolder, num, pct, score_table
from mnistlab.report.bench_section import bench_section
from mnistlab.report.build import code_spans, png_size, write_report
from mnistlab.report.findings import findings
from mnistlab.report.sections import ORIGINAL, build_sections
from mnistlab.study import run as pipeline
from tests.conftest import assert_one_line_error

SECTIONS = [
    "key",
    "settings",
    "ae",
    "classification",
    "latent",
    "dae",
    "vae",
    "labels",
    "gan",
    "bench",
    "original",
]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"


def _sections(html: str) -> dict[str, str]:
    """Section id -> its HTML."""
    parts = re.split(r'<section id="', html)[1:]
    return {p.split('"', 1)[0]: p for p in parts}


def test_report_has_every_section_with_numbers_from_the_run(tiny_study):
    html = (tiny_study / "report.html").read_text()
    sections = _sections(html)
    assert list(sections) == SECTIONS
    for name, body in sections.items():
        assert 'class="missing"' not in body, name  # every stage ran
    probe = json.loads((tiny_study / "ae/probe/summary.json").read_text())
    assert f"{100 * probe['linear_probe']['test_acc']:.1f}%" in sections["original"]
    assert f"{100 * ORIGINAL['probe_acc']:.1f}%" in sections["original"]  # the original report's own number
    assert "original report (its own numbers)" in sections["original"]
    ae = json.loads((tiny_study / "ae/summary.json").read_text())
    assert f"{ae['test']['mse']:.3g}" in sections["ae"]
    assert "Grid search: 2 trials" in sections["ae"]
    assert "Collapse warnings" in sections["gan"] or "no warning" in sections["gan"]
    md = (tiny_study / "report.md").read_text()
    for title in (
        "## 1. Key results",
        "## 2. Settings",
        "## 3. Autoencoder",
        "## 11. Against the original report",
    ):
        assert title in md
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (tiny_study / link).is_file(), link


def test_report_is_self_contained_and_every_figure_has_a_caption(tiny_study):
    html = (tiny_study / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) >= 20 and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"(src|href)=\"(https?:|//)", html) and "<script" not in html
    figures = re.findall(r"<figure[^>]*>(.*?)</figure>", html, re.S)
    assert len(figures) == len(images)
    for fig in figures:
        caption = re.search(r"<figcaption>(.*?)</figcaption>", fig, re.S).group(1)
        assert len(caption.split()) > 5, caption
    assert 'name="viewport"' in html and "@media (max-width" in html  # phone layout


def test_report_rebuilds_without_training(tiny_study, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_study, run)
    (run / "report.html").unlink()
    (run / "report.md").unlink()
    monkeypatch.setattr(pipeline, "run_stage", lambda ctx, name, resume: pytest.fail(f"{name} trained"))
    assert cli.main(["report", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["html"] == str(run / "report.html")
    assert (run / "report.html").stat().st_size > 10_000 and (run / "report.md").is_file()


def test_sections_of_stages_that_have_not_run_say_so(tiny_study, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    state = json.loads((tiny_study / "run.json").read_text())
    for s in state["stages"]:
        s.update(status="pending", started=None, ended=None, seconds=None, attempts=0)
    state["stages"][-1].update(status="failed", error="RuntimeError: power cut")
    state["preset"] = "<b>bold</b>"  # autoescaped, never markup
    (run / "run.json").write_text(json.dumps(state))
    html = write_report(run)["html"].read_text()
    sections = _sections(html)
    assert list(sections) == SECTIONS
    for name in ("ae", "dae", "vae", "classification", "latent", "labels", "gan"):
        assert "has not run" in sections[name], name
    assert "status: failed" in sections["gan"] and "power cut" in sections["gan"]
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold</b>" not in html


def test_label_efficiency_over_several_subsets_shows_their_range(tiny_study, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_study, run)
    path = run / "ae" / "probe" / "summary.json"
    probe = json.loads(path.read_text())
    row = probe["label_efficiency"][0]
    subsets = [{**row, "label_seed": k, "finetune": v} for k, v in enumerate((0.9, 0.95))]
    row.update(finetune=0.925, subsets=subsets)
    path.write_text(json.dumps(probe))
    section = _sections(write_report(run)["html"].read_text())["classification"]
    assert "mean of 2 seeded labelled subsets" in section
    assert "92.5% (90.0-95.0)" in section


@pytest.mark.parametrize("make", [lambda p: None, lambda p: (p / "run.json").write_text("{not json")])
def test_a_folder_that_is_not_a_run_is_a_one_line_error(tmp_path, capsys, make):
    folder = tmp_path / "plain"
    folder.mkdir()
    make(folder)
    assert cli.main(["report", str(folder)]) == 2
    err = assert_one_line_error(capsys)
    assert "not a run folder" in err or "not valid JSON" in err, err


def test_report_in_headless_chromium(tiny_study):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
    )
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            for name, viewport in (
                ("laptop", {"width": 1366, "height": 900}),
                ("phone", {"width": 390, "height": 844}),
            ):
                page = browser.new_page(viewport=viewport)
                errors: list[str] = []
                page.on("console", lambda m, errs=errors: errs.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e, errs=errors: errs.append(str(e)))
                page.goto((tiny_study / "report.html").resolve().as_uri(), wait_until="load")
                broken = page.evaluate(
                    "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt)"
                )
                n_images = page.evaluate("document.images.length")
                overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                shot = ARTIFACTS / f"report_{name}.png"
                page.screenshot(path=str(shot))
                print(f"screenshot: {shot}")
                assert n_images >= 20 and broken == [], broken
                assert errors == [], errors
                assert overflow <= 0, f"{name}: the page is {overflow}px wider than the screen"
        finally:
            browser.close()


def _summary(tiny_study: Path, rel: str) -> dict:
    return json.loads((tiny_study / rel / "summary.json").read_text())


def test_the_report_opens_with_what_the_run_found(tiny_study):
    state = json.loads((tiny_study / "run.json").read_text())
    key = build_sections(tiny_study, state)[0]
    assert 3 <= len(key.findings) <= 5, key.findings
    text = " ".join(key.findings)
    ae, probe, gan = (_summary(tiny_study, r) for r in ("ae", "ae/probe", "gan"))
    # each number read from the run folder
    assert f"PSNR of {num(ae['test']['psnr'])} dB" in text
    assert f"labels {pct(probe['linear_probe']['test_acc'])} of the test digits" in text
    assert f"gan {num(gan['test']['fid_mnist'])}" in text
    html = _sections((tiny_study / "report.html").read_text())["key"]
    assert html.index("What this run found") < html.index("<table")  # before the table
    assert "How to read the numbers" in html and "FID-MNIST (lower is better" in html
    assert "Precision (higher is better)" in html and "Recall (higher is better)" in html
    md = (tiny_study / "report.md").read_text()
    assert "**What this run found.** " + key.findings[0] in md


def test_findings_follow_the_numbers_they_are_given():
    hist = [0.352, 0.02, 0.03, 0.04, 0.045, 0.12, 0.10, 0.10, 0.093, 0.10]
    summaries = {
        "ae": {"test": {"mse": 0.0123, "psnr": 19.1, "ssim": 0.81}},
        "gan": {"test": {"fid_mnist": 7.25, "n_samples": 1000, "class_hist": hist}},
        "cgan": {"test": {"fid_mnist": 3.5, "n_samples": 1000, "class_hist": [0.1] * 10}},
    }
    probe = {"linear_probe": {"test_acc": 0.9123}, "finetune": {"test_acc": 0.9871}, "latent_dim": 10}
    text = " ".join(findings(summaries, probe, "ae"))
    assert "PSNR of 19.1 dB (test MSE 0.0123, SSIM 0.81)" in text and "a code of 10 numbers" in text
    assert "91.2%" in text and "98.7%" in text
    assert "cgan draws the most MNIST-like digits" in text and "cgan 3.5, gan 7.25" in text
    assert "gan, draws 4 digits (1, 2, 3, 4) under 5.0%" in text and "35.2% (digit 0)" in text
    summaries["gan"]["test"]["n_samples"] = 64  # another count: listed with their counts, not ranked
    text = " ".join(findings(summaries, probe, "ae"))
    assert "not ranked" in text and "gan 7.25 (64 samples)" in text and "most MNIST-like" not in text
    assert findings({}, {}, None) == []


def test_the_banner_shows_commands_as_code_and_names_no_file_a_wheel_lacks(tiny_study):
    html = _sections((tiny_study / "report.html").read_text())["key"]
    banner = re.search(r'<p class="banner".*?</p>', html, re.S).group(0)
    assert "<code>mnistlab run --preset default</code>" in banner and "`" not in banner
    assert "<code>mnistlab pretrained list</code>" in banner
    assert "docs/results.md" not in (tiny_study / "report.html").read_text()
    assert code_spans("a <b> `x < y`") == "a &lt;b&gt; <code>x &lt; y</code>"


def test_the_key_table_is_cards_on_a_phone_and_wide_figures_span_the_page(tiny_study):
    html = (tiny_study / "report.html").read_text()
    key = _sections(html)["key"]
    assert '<table class="cards">' in key and 'data-label="this run (measured)"' in key
    assert "table.cards td:not(:first-child)::before" in html
    wide = re.findall(r'<figure class="wide">.*?<small>([^<]+)</small>', html, re.S)
    assert wide, "no figure marked wide"
    for rel in wide:
        w, h = png_size((tiny_study / rel).read_bytes())
        assert w >= 1000 or w / h >= 2.2, rel
    assert png_size(b"not a png") == (0, 0)


def test_the_bench_marks_the_best_and_fills_the_probe_from_the_study(tiny_study):
    state = json.loads((tiny_study / "run.json").read_text())
    run = RunFolder(tiny_study, state, {s.name: s.roles for s in tasks.all_tasks()})
    sec = bench_section(run)
    (table,) = sec.tables
    col = table.columns.index("test PSNR (dB) ↑")
    psnr = {i: float(r[col]) for i, r in enumerate(table.rows) if r[col] not in ("", "-")}
    best = max(psnr.values())
    assert {(i, col) for i, v in psnr.items() if v == best} <= table.bold
    assert not {(i, col) for i, v in psnr.items() if v < best} & table.bold
    # The autoencoder's frozen probe: the number the classification section shows, not '-'.
    ae_row = dict(zip(table.columns, table.rows[0]))
    probe = _summary(tiny_study, "ae/probe")
    assert ae_row["model"] == "ae" and ae_row["frozen probe ↑"] == pct(probe["linear_probe"]["test_acc"])
    assert any("study's own linear probe" in n for n in sec.notes)
    html = _sections((tiny_study / "report.html").read_text())["bench"]
    assert "<strong>" in html and "FID-MNIST ↓" in html


def test_score_tables_mark_the_best_sampler_not_the_reference():
    rows = [
        ("test (floor)", {"fid_mnist": 1.0, "precision": 0.9}),
        ("a", {"fid_mnist": 5.0, "precision": 0.5}),
        ("b", {"fid_mnist": 3.0, "precision": 0.6}),
    ]
    table = score_table("t", rows, ("FID-MNIST", "precision"), label="digits", unranked=("test (floor)",))
    assert table.columns == ["digits", "FID-MNIST ↓", "precision ↑"]
    assert table.bold == {(2, 1), (2, 2)}  # b: the lower FID and the higher precision of the samplers
    assert score_table("t", rows[:1], ("FID-MNIST",)).bold == set()  # one row: nothing to rank

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

from mnistlab import cli
from mnistlab.report.build import write_report
from mnistlab.report.sections import ORIGINAL
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
    figures = re.findall(r"<figure>(.*?)</figure>", html, re.S)
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

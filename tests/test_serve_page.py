"""The explorer's page and its newer routes: sample counts, sample grids as PNG and .npy, the run's
report page; and every control of the page driven in headless Chromium at a desktop (1280x900) and a
phone (390x844) viewport. The browser test fails on a console error, on a control whose use changes
nothing on the page, and on an element wider than the viewport; its screenshots go to tests/artifacts/.

The study (ae + probe + maps, dae, gan, a report) is conftest.py's `serve_study`, built once for the
session; the API tests share its `client`, the page tests its `server`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mnistlab.web.app import create_app
from mnistlab.web.runs import _pick
from tests.conftest import assert_one_line_error
from tests.serve_helpers import browser_page, png_bytes, stroke

TestClient = pytest.importorskip("starlette.testclient").TestClient
pytestmark = pytest.mark.usefixtures("one_torch_thread")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # gitignored


# ------------------------------------------------------------------------------------------ the API


def test_sample_counts_are_checked_on_the_server(client):
    out = client.post("/api/sample", json={"sampler": "gan", "n": 256, "seed": 1}).json()
    assert np.array(out["images"]).shape == (256, 28, 28) and out["n"] == 256
    assert client.get("/api/info").json()["limits"]["sample_counts"] == [16, 64, 256]
    for body, status, words in (
        ({"sampler": "gan", "n": 257}, 422, "'n' must be in 1..256"),
        ({"sampler": "gmm", "n": 0}, 422, "'n' must be in 1..256"),
        ({"sampler": "gmm", "n": "16"}, 400, "whole number"),
        ({"sampler": "gan", "n": 65, "every_digit": True}, 422, "'n' must be in 1..64"),
    ):
        assert_one_line_error(client.post("/api/sample", json=body), words, status=status)


def test_sample_downloads_hold_the_same_digits_as_the_page(client):
    want = np.array(client.post("/api/sample", json={"sampler": "gan", "n": 64, "seed": 3}).json()["images"])
    r = client.get("/api/sample.npy?sampler=gan&n=64&seed=3")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert 'filename="samples-gan-mixed-n64-seed3.npy"' in r.headers["content-disposition"]
    got = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert got.dtype == np.uint8 and got.shape == (64, 28, 28) and np.array_equal(got, want)
    r = client.get("/api/sample.png?sampler=gan&n=64&seed=3")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    grid = np.asarray(Image.open(io.BytesIO(r.content)))
    assert grid.shape == (8 * 30 - 2, 8 * 30 - 2)  # 8x8 digits, 2 px apart
    assert np.array_equal(grid[30:58, 60:88], want[8 + 2])  # row 1, column 2
    for sampler in ("uniform", "gaussian", "gmm"):  # the code samplers download too, any count
        r = client.get(f"/api/sample.npy?sampler={sampler}&n=16&seed=0")
        assert np.load(io.BytesIO(r.content)).shape == (16, 28, 28), sampler
    big = client.get("/api/sample.png?sampler=gmm&n=256")
    assert Image.open(io.BytesIO(big.content)).size == (16 * 30 - 2, 16 * 30 - 2)


BAD_QUERIES = [
    ("?sampler=gan&n=abc", 400, "?n must be a whole number"),
    ("?sampler=gan&n=-1", 400, "?n must be a whole number"),
    ("?sampler=gan&n=1e3", 400, "?n must be a whole number"),
    ("?sampler=gan&n=" + "9" * 5000, 400, "at most 64"),
    ("?sampler=gan&n=257", 422, "'n' must be in 1..256"),
    ("?sampler=gan&n=0", 422, "'n' must be in 1..256"),
    ("?sampler=gan&seed=99999999999", 422, "'seed'"),
    ("?sampler=gan&digit=3", 422, "not conditional"),
    ("?sampler=gan&every_digit=maybe", 400, "?every_digit"),
    ("?sampler=nope", 422, "unknown sampler"),
    ("", 422, "'sampler' must be a string"),
    ("?sampler=gan&sampler=gmm", 400, "more than once"),
    ("?sampler=gan&path=../../etc/passwd", 400, "unknown query key"),
]


@pytest.mark.parametrize("kind", ["png", "npy"])
@pytest.mark.parametrize("query, status, words", BAD_QUERIES, ids=[q[2] for q in BAD_QUERIES])
def test_bad_download_queries_are_one_line_4xx(client, kind, query, status, words):
    assert_one_line_error(client.get(f"/api/sample.{kind}{query}"), words, status=status)


def test_downloads_refuse_other_sites(client):
    r = client.get("/api/sample.png?sampler=gan", headers={"Sec-Fetch-Site": "cross-site"})
    assert_one_line_error(r, "another site", status=403)
    assert (
        client.get("/api/sample.png?sampler=gan&n=1", headers={"Sec-Fetch-Site": "same-origin"}).status_code
        == 200
    )
    assert_one_line_error(client.post("/api/sample.png"), "POST is not allowed", status=405)
    r = client.get("/report", headers={"Sec-Fetch-Site": "same-site"})
    assert_one_line_error(r, "another site", status=403)


def test_the_report_link_serves_only_the_runs_own_page(serve_study, tmp_path):
    from mnistlab.web.explorer import Explorer

    gan = Path(shutil.copytree(serve_study / "gan", tmp_path / "gan"))  # this test writes into it
    ex = Explorer(gan)  # a run folder without a report: no link, a 404
    with TestClient(create_app(ex)) as c:
        assert c.get("/api/info").json()["report"] is None
        assert_one_line_error(c.get("/report"), "has no report page", status=404)
        (gan / "figures").mkdir(exist_ok=True)
        compare = gan / "figures" / "compare.html"
        compare.write_text("<html><body>compare page</body></html>")
        assert c.get("/api/info").json()["report"] == "figures/compare.html"
        r = c.get("/report")
        assert r.status_code == 200 and "compare page" in r.text
        assert "default-src 'none'" in r.headers["content-security-policy"]
        compare.unlink()
        outside = tmp_path / "secret.html"  # a link out of the run folder is not followed
        outside.write_text("secret")
        (gan / "report.html").symlink_to(outside)
        assert c.get("/api/info").json()["report"] is None
        assert c.get("/report").status_code == 404


def test_every_generator_run_gets_a_panel():
    """A VAE beside the autoencoder is a generator panel of its own (its prior); the denoiser is not."""
    runs = [
        ("ae", Path("a")),
        ("dae", Path("d")),
        ("vae", Path("v")),
        ("gan", Path("g")),
        ("cgan", Path("c")),
    ]
    layout = _pick(runs)
    assert layout.encoder == Path("a") and layout.denoiser == Path("d")
    assert list(layout.generators) == ["vae", "gan", "cgan"]
    assert _pick([("vae", Path("v")), ("gan", Path("g"))]).generators == {"gan": Path("g")}


# ------------------------------------------------------------------------------------ the page

SNAPSHOT = """() => {
  const canvases = [...document.querySelectorAll("canvas")].map((c) => c.id + ":" + c.toDataURL());
  const values = [...document.querySelectorAll("input, select")].map((e) => e.id + "=" + e.value);
  const links = [...document.querySelectorAll("a[href]")].map((a) => a.href);
  const shown = [...document.querySelectorAll("[hidden]")].map((e) => e.id);
  return [document.body.innerText, ...canvases, ...values, ...links, ...shown].join("|");
}"""
OVERFLOW = """() => {
  const w = document.documentElement.clientWidth, bad = [];
  for (const el of document.querySelectorAll("body *")) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.height > 0 && (r.right > w + 1 || r.left < -1)) bad.push(`${el.tagName}#${el.id}.${el.className} ${Math.round(r.left)}..${Math.round(r.right)}`);
  }
  if (document.documentElement.scrollWidth > w + 1) bad.push(`page scrolls sideways: ${document.documentElement.scrollWidth} > ${w}`);
  return bad;
}"""
CONTROLS = """() => [...document.querySelectorAll("button, select, input, a[href], [tabindex]")]
  .filter((e) => e.tabIndex >= 0 && !e.disabled && e.getClientRects().length).map((e) => e.id || e.tagName)"""
PIXELS = """(id) => { const c = document.getElementById(id); const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return s; }"""


TILES = """() => [...document.querySelectorAll(".sampler .grid canvas")].map((c) => Math.round(c.getBoundingClientRect().width * 100) / 100)"""
URL_OF = "(id) => document.getElementById(id).toDataURL()"
SLIDERS = (
    "() => [...document.querySelectorAll('#sliders input')].map((s) => [Number(s.value), Number(s.step)])"
)
FILLED = ["pad", "seen", "recon", "noisy", "denoised", "pick", "slider-digit", "end-a", "end-b"]


def opens_full(page) -> None:
    """The page as it opens: a test digit in every panel, the sliders at its code, the state in the
    address."""
    for canvas in FILLED:
        assert page.evaluate(PIXELS, canvas) > 0, f"{canvas} is empty on opening"
    assert page.get_attribute("#prediction", "data-digit") in list("0123456789")
    assert page.locator("#probs .bar").count() == 10
    assert (
        page.locator("#strip canvas").count() == 10
        and page.locator("#sampler-gan .grid canvas").count() == 16
    )
    item = page.evaluate("async () => (await fetch('/api/test/0')).json()")
    # The sliders at the digit's code (each within half its step), decoded as the reconstruction is.
    sliders = page.evaluate(SLIDERS)
    assert all(abs(v - z) <= step / 2 + 1e-6 for (v, step), z in zip(sliders, item["code"], strict=True))
    assert page.evaluate(URL_OF, "slider-digit") == page.evaluate(URL_OF, "recon")
    assert "test digit #0" in page.inner_text("#pad-source") and "test digit #0" in page.inner_text(
        "#pick-caption"
    )
    hash_ = page.evaluate("() => location.hash")
    assert "digit=0" in hash_ and "map=pca" in hash_ and "run=" in hash_


class Driver:
    """Uses controls and fails when one changes nothing on the page."""

    def __init__(self, page, tag: str):
        self.page, self.tag, self.used = page, tag, set()

    def use(self, name: str, action, timeout: float = 15.0) -> None:
        before = self.page.evaluate(SNAPSHOT)
        action()
        deadline = time.monotonic() + timeout
        while self.page.evaluate(SNAPSHOT) == before:
            assert time.monotonic() < deadline, f"{self.tag}: using {name} changed nothing on the page"
            time.sleep(0.1)
        self.used.add(name)
        self.page.wait_for_timeout(150)  # let live requests (latest-wins) settle

    def no_overflow(self, where: str) -> None:
        bad = self.page.evaluate(OVERFLOW)
        assert bad == [], (self.tag, where, bad[:8])


def wait_for(page, condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the page"
        time.sleep(0.05)


def analyses(page) -> int:
    return int(page.get_attribute("body", "data-analyses") or 0)


def drive(page, server_url: str, phone: bool, tmp_path: Path) -> Driver:  # noqa: PLR0915
    d = Driver(page, "phone" if phone else "desktop")
    # File choosers are intercepted from the start (Playwright turns interception on asynchronously
    # when the first listener is added: one added just before the key press can miss the dialog).
    page.on("filechooser", lambda chooser: None)
    page.goto(server_url + "/")
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    page.wait_for_selector("#sampler-gan .grid canvas", timeout=30_000)
    d.no_overflow("start")
    opens_full(page)
    note = page.inner_text("#map-note").lower()
    if phone:  # touch wording: "tap" for one thing only, never "hover", no keyboard help
        assert note.count("tap") == 1 and "hover" not in page.inner_text("#panel-map").lower()
        assert (
            not page.locator("#pad-help .keys").is_visible()
            and not page.locator("#map-help .keys").is_visible()
        )
    else:
        assert "hover" in note and "click" in note and page.locator("#map-help .keys").is_visible()
    legend = page.inner_text("#legend")
    assert "the digit above" in legend and "picked point" in legend
    assert ("keyboard cursor" in legend) is not phone
    tiles = page.evaluate(TILES)  # every sampler's digits at one size, a whole multiple of 28 px
    assert len(set(tiles)) == 1 and (phone or tiles[0] % 28 == 0), tiles

    # The next test digit fills every panel again.
    d.use("next-digit", lambda: page.click("#next-digit"))
    wait_for(page, lambda: "#1 " in page.inner_text("#pad-source"))
    assert "digit=1" in page.evaluate("() => location.hash")
    link = page.locator("#report-link")
    assert link.is_visible() and link.get_attribute("href") == "/report"

    # Keyboard reach: Tab from the top visits the upload button, the pad, the map and the count chooser.
    page.locator("h1").click()
    seen = []
    for _ in range(60):
        page.keyboard.press("Tab")
        seen.append(page.evaluate("() => document.activeElement.id"))
    assert {"upload-button", "pad", "clear", "sigma", "map", "map-select", "report-link"} <= set(seen), seen

    page.locator("#pad").scroll_into_view_if_needed()
    box = page.locator("#pad").bounding_box()
    if phone:

        def touch_stroke():
            for kind, (x, y) in (
                ("pointerdown", (0.2, 0.2)),
                ("pointermove", (0.5, 0.7)),
                ("pointerup", (0.5, 0.7)),
            ):
                page.dispatch_event(
                    "#pad",
                    kind,
                    {
                        "pointerType": "touch",
                        "pointerId": 7,
                        "bubbles": True,
                        "clientX": box["x"] + x * box["width"],
                        "clientY": box["y"] + y * box["height"],
                    },
                )

        d.use("pad", touch_stroke)
    else:

        def mouse_stroke():
            page.mouse.move(box["x"] + 150, box["y"] + 50)
            page.mouse.down()
            for t in range(20):
                page.mouse.move(box["x"] + 145 - t, box["y"] + 50 + 10 * t)
            page.mouse.up()

        d.use("pad", mouse_stroke)
    page.wait_for_selector("#prediction[data-digit]", timeout=15_000)

    # Clear empties the pad and everything computed from it.
    d.use("clear", lambda: page.click("#clear"))
    assert page.inner_text("#prediction") == "–" and page.locator("#probs .bar").count() == 0
    assert all(page.evaluate(PIXELS, c) == 0 for c in ("pad", "seen", "recon", "noisy", "denoised"))
    assert page.is_disabled("#draw-to-sliders")

    # The pad by keyboard: Enter puts the pen down, arrows draw, Enter lifts it and the digit is analysed.
    count = analyses(page)

    def keyboard_stroke():
        page.focus("#pad")
        for key in ["ArrowUp"] * 3 + ["Enter"] + ["ArrowDown"] * 8 + ["Shift+ArrowRight"] + ["Enter"]:
            page.keyboard.press(key)

    d.use("pad (keyboard)", keyboard_stroke)
    wait_for(page, lambda: analyses(page) > count)
    page.wait_for_selector("#prediction[data-digit]", timeout=15_000)

    # Upload by keyboard: the button opens the file chooser; the pad then shows the uploaded digit.
    count = analyses(page)

    def upload():
        page.focus("#upload-button")
        with page.expect_file_chooser() as chooser:
            page.keyboard.press("Enter")
        chooser.value.set_files(
            files=[{"name": "seven.png", "mimeType": "image/png", "buffer": png_bytes(stroke())}]
        )

    d.use("upload-button", upload)
    wait_for(page, lambda: analyses(page) > count)
    uploaded = page.evaluate("() => document.getElementById('seen').toDataURL()")
    noisy = page.evaluate("() => document.getElementById('noisy').toDataURL()")
    assert page.evaluate(PIXELS, "pad") > 0

    # The noise sigma re-analyses the upload, not the earlier drawing.
    count = analyses(page)
    d.use("sigma", lambda: page.select_option("#sigma", "1"))
    wait_for(page, lambda: analyses(page) > count)
    page.wait_for_timeout(300)
    assert page.evaluate("() => document.getElementById('seen').toDataURL()") == uploaded
    assert page.evaluate("() => document.getElementById('noisy').toDataURL()") != noisy

    d.use("draw-to-a", lambda: page.click("#draw-to-a"))
    d.use("draw-to-b", lambda: page.click("#draw-to-b"))
    d.use("draw-to-sliders", lambda: page.click("#draw-to-sliders"))

    # The map: pick by pointer, then by keyboard; another map.
    page.locator("#map").scroll_into_view_if_needed()
    mbox = page.locator("#map").bounding_box()
    if phone:
        d.use("map", lambda: page.tap("#map", position={"x": mbox["width"] / 2, "y": mbox["height"] / 2}))
    else:
        d.use("map (hover)", lambda: page.locator("#map").hover(position={"x": 230, "y": 230}))
        d.use("map", lambda: page.locator("#map").click(position={"x": 237, "y": 237}))
    page.wait_for_selector("#pick[data-kind='decoded']", timeout=15_000)
    d.use("map (keyboard cursor)", lambda: (page.focus("#map"), page.keyboard.press("Shift+ArrowLeft")))
    caption = page.inner_text("#pick-caption")
    d.use("map (keyboard pick)", lambda: page.keyboard.press("Enter"))
    wait_for(page, lambda: page.inner_text("#pick-caption") != caption)
    d.use("pick-to-a", lambda: page.click("#pick-to-a"))
    d.use("pick-to-b", lambda: page.click("#pick-to-b"))
    d.use("pick-to-sliders", lambda: page.click("#pick-to-sliders"))
    d.use("map-select", lambda: page.select_option("#map-select", "tsne"))
    # t-SNE has no inverse: the pick is a test digit there, and the caption says so.
    wait_for(page, lambda: "t-SNE" in page.inner_text("#pick-caption"))
    assert "decoded" not in page.inner_text("#pick-caption") and "nearest" in page.inner_text("#pick-caption")
    assert "no inverse" in page.inner_text("#map-note")
    d.no_overflow("map")

    # Sliders, by keyboard and at random.
    d.use("z0", lambda: (page.focus("#z0"), *[page.keyboard.press("ArrowRight") for _ in range(5)]))
    d.use("slider-random", lambda: page.click("#slider-random"))

    # Samplers: each count, a new batch, every grid downloaded as PNG and .npy.
    for n in ("64", "256"):
        d.use("sample-count", lambda n=n: page.select_option("#sample-count", n))
        wait_for(page, lambda n=n: page.get_attribute("#sampler-gan .grid", "data-count") == n)
    d.no_overflow("256 samples")
    d.use("new-batch", lambda: page.click("#new-batch"))
    for link in page.locator(".downloads a").all():
        with page.expect_download() as dl:
            link.click()
        path = tmp_path / dl.value.suggested_filename
        dl.value.save_as(str(path))
        if path.suffix == ".npy":
            assert np.load(path).shape == (256, 28, 28) and np.load(path).dtype == np.uint8
        else:
            assert Image.open(path).size == (16 * 30 - 2, 16 * 30 - 2)
        d.used.add(link.get_attribute("id"))

    # Interpolation; a bad step count is an error beside the button, not only in the header.
    d.use("random-ends", lambda: page.click("#random-ends"))
    d.use("steps", lambda: (page.fill("#steps", "5"), page.dispatch_event("#steps", "change")))
    d.use("interpolate", lambda: (page.fill("#steps", "7"), page.click("#interpolate")))
    assert page.locator("#strip canvas").count() == 7
    d.use("steps (bad)", lambda: (page.fill("#steps", "1"), page.dispatch_event("#steps", "change")))
    error, button = page.locator("#interp-error"), page.locator("#interpolate")
    assert error.is_visible() and "'steps'" in error.inner_text()
    assert abs(error.bounding_box()["y"] - button.bounding_box()["y"]) < 200
    page.fill("#steps", "10")
    d.use("interpolate (fixed)", lambda: page.click("#interpolate"))
    assert not error.is_visible() and page.inner_text("#status") == ""

    # The report opens in a new tab.
    with page.context.expect_page() as tab:
        page.click("#report-link")
    tab.value.wait_for_load_state()
    assert "the study's report" in tab.value.content()
    tab.value.close()
    d.used.add("report-link")

    d.no_overflow("end")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"explorer-{d.tag}.png"), full_page=True)

    # A file that is not an image: the error shows beside the upload button.
    page.set_input_files(
        "#upload", files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"not a png"}]
    )
    wait_for(page, lambda: "not an image" in page.inner_text("#draw-error"))
    err, up = page.locator("#draw-error").bounding_box(), page.locator("#upload-button").bounding_box()
    assert abs(err["y"] - up["y"]) < 200 and "not an image" in page.inner_text("#status")
    page.screenshot(path=str(ARTIFACTS / f"explorer-{d.tag}-error.png"))
    return d


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_every_control_of_the_page(server, viewport, tmp_path):
    # The report link opens the study's report.html (serve_helpers.REPORT, written by serve_study).
    with browser_page() as first:
        browser = first.context.browser
        options = (
            dict(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
            if viewport == "phone"
            else dict(viewport={"width": 1280, "height": 900})
        )
        context = browser.new_context(accept_downloads=True, **options)
        page = context.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        d = drive(page, server, viewport == "phone", tmp_path)
        controls = set(page.evaluate(CONTROLS))
        skipped = controls - d.used - {"upload", "z1", "z2", "z3", "z4", "z5", "z6", "z7", "z8", "z9"}
        assert not skipped, f"controls never used: {sorted(skipped)}"
        # the refused bad upload (415) and bad step count (422) log as failed loads; nothing else may
        expected = ("status of 415", "status of 422")
        assert [e for e in errors if not any(x in e for x in expected)] == [], errors
        context.close()
    assert os.path.getsize(ARTIFACTS / f"explorer-{viewport}.png") > 10_000


def test_the_view_is_kept_in_the_address_and_a_link_opens_it(server):
    """Run, digit, map, pick, sliders, sigma, sample count and seed, interpolation ends and steps in
    the part after #: a link opens that view (saying so when it was made for another run), and a
    reload restores the view as it was left."""
    view = "#run=someone-elses-run&digit=5&map=tsne&seed=3&n=64&sigma=1&a=7&b=8&steps=6&panel=samplers"
    with browser_page() as page:
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))

        def opened() -> str:
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            wait_for(page, lambda: page.get_attribute("#sampler-gan .grid", "data-count") == "64")
            assert "test digit #5 " in page.inner_text("#pad-source")
            assert page.input_value("#map-select") == "tsne" and page.input_value("#sigma") == "1"
            assert page.inner_text("#batch-seed") == "seed 3" and page.input_value("#sample-count") == "64"
            assert "#7 " in page.inner_text("#end-a-caption") and "#8 " in page.inner_text("#end-b-caption")
            assert page.locator("#strip canvas").count() == 6
            assert "t-SNE" in page.inner_text("#pick-caption")
            return page.evaluate("() => location.hash")

        page.goto(server + "/" + view)
        first = opened()
        assert "made for run someone-elses-run" in page.inner_text("#status")  # and this run is shown
        assert "run=someone-elses-run" not in first and "digit=5" in first
        page.focus("#z0")
        for _ in range(5):
            page.keyboard.press("ArrowRight")
        wait_for(page, lambda: "z=" in page.evaluate("() => location.hash"))
        moved = page.evaluate(SLIDERS)
        page.reload()
        opened()
        assert np.allclose(page.evaluate(SLIDERS), moved, atol=1e-3)  # the sliders as they were left
        assert "Started from: the code in the page's address" in page.inner_text("#panel-sliders")
        assert errors == []


def test_a_samplers_recorded_score_is_in_info(serve_study, tmp_path):
    """The page shows a score beside a grid when the sampler's run recorded one (its summary.json)."""
    from mnistlab.web.explorer import Explorer

    gan = Path(shutil.copytree(serve_study / "gan", tmp_path / "gan"))
    summary = json.loads((gan / "summary.json").read_text())
    summary["test"] = {
        **summary.get("test", {}),
        "fid_mnist": 41.2,
        "precision": 0.46,
        "recall": 0.1,
        "n_samples": 1000,
    }
    (gan / "summary.json").write_text(json.dumps(summary))
    info = Explorer(gan).info()
    score = info["samplers"]["gan"]["score"]
    assert (
        score["fid_mnist"] == 41.2
        and score["n_samples"] == 1000
        and score["where"] == "gan/summary.json: test"
    )
    assert info["samplers"]["gmm"].get("score") is None


QUERY_TEXT = st.lists(
    st.tuples(
        st.sampled_from(["sampler", "n", "seed", "digit", "every_digit", "x", "N", ""]),
        st.one_of(
            st.sampled_from(["gan", "gmm", "1", "0", "256", "257", "-1", "1e9", "\u0663", "%00", ""]),
            st.text(max_size=12),
        ),
    ),
    max_size=5,
).map(lambda items: urlencode(items))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["png", "npy"]), query=QUERY_TEXT)
def test_random_download_queries_never_make_a_500(client, kind, query):
    r = client.get(f"/api/sample.{kind}?{query}")
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert_one_line_error(r)

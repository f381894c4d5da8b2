"""What the `mnistlab serve` tests share besides fixtures (those are in conftest.py): the tiny training
settings of their study, drawings as PNG bytes, a uvicorn server in a thread, and a headless Chromium."""

from __future__ import annotations

import contextlib
import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import SEMI_TINY

AE = [
    "data.train_limit=400",
    "data.test_limit=150",
    "train.epochs=1",
    "train.batch_size=64",
    "train.device=cpu",
]
PROBE = ["linear.epochs=2", "linear.batch_size=64", "options.min_epoch_images=0", "linear.device=cpu"]
GAN = [
    "data.train_limit=64",
    "data.test_limit=16",
    "train.batch_size=32",
    "train.epochs=1",
    "train.device=cpu",
    "gan.eval_samples=0",
    "gan.final_samples=0",
    "gan.grid_epochs=1",
    "gan.grid_size=4",
]
SEMI = SEMI_TINY  # a seconds-long semi-supervised run
# The explorer's JSON POST routes, which the fuzz tests post random bodies to.
JSON_ROUTES = [
    "/api/encode",
    "/api/decode",
    "/api/denoise",
    "/api/classify",
    "/api/sample",
    "/api/interpolate",
    "/api/map/pca/click",
    "/api/map/tsne/click",
]
REPORT = "<html><body><h1>the study's report</h1></body></html>"  # the serve study's report.html


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, "PNG") if mode else Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def photo(digit: np.ndarray, size: int = 300, seed: int = 0, ink: float = 0.8, frame: str = "") -> bytes:
    """A synthetic phone photo of MNIST digit `digit` (uint8 (28, 28)) written on grey paper: a JPEG of
    size x size pixels, the paper lit unevenly (a gradient from 0.50 to 0.83 of white), the digit
    dark ink (`ink`: how much of the paper's light it absorbs) scaled up off-centre, sensor noise
    (std 0.02); `frame`: a dark table shows "around" the page, or at its "corner"."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    paper = 0.50 + 0.25 * xx + 0.08 * yy  # (size, size), lit from the right
    side = size * 2 // 3
    big = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC), np.float32) / 255
    strokes = np.zeros((size, size), np.float32)
    top, left = size // 8, size // 5
    strokes[top : top + side, left : left + side] = np.clip(big, 0, 1)
    img = paper * (1 - ink * strokes) + rng.normal(0, 0.02, (size, size))
    if frame == "around":
        edge = size // 10
        img[:edge], img[-edge:], img[:, :edge], img[:, -edge:] = 0.1, 0.1, 0.1, 0.1
    elif frame == "corner":  # the page's corner on a table: the table along the top and the left
        img[: size // 4], img[:, : size // 4] = 0.1, 0.1
    gray = np.clip(img * 255, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.repeat(gray[..., None], 3, 2)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def stroke(size: int = 200, dark_on_light: bool = False) -> np.ndarray:
    """A thick off-centre '7'-like stroke on a square canvas (uint8)."""
    a = np.zeros((size, size), np.uint8)
    a[30:45, 100:170] = 255  # the bar, top right
    for t in range(120):  # the diagonal
        r, c = 45 + t, 165 - t // 2
        a[r : r + 4, c - 7 : c + 7] = 255
    return 255 - a if dark_on_light else a


@contextlib.contextmanager
def running(app):
    """uvicorn in a thread on a free port of 127.0.0.1; yields the base URL."""
    import uvicorn

    from mnistlab.web.app import bind

    sock = bind("127.0.0.1", 0)
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, log_config=None))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()


FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def browser_page():
    """A page of Debian's chromium driven by Playwright; skips with the reason when either is missing."""
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium); .ci/run installs it")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=FLAGS)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            browser.close()

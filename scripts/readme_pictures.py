"""Remake the README's pictures: the first screen of a study's report.html (its key results) and the
explorer serving the shipped runs, as PNGs in docs/images/. Needs Debian's chromium and Playwright
(the `dev` extra), as the browser tests do.

    python scripts/readme_pictures.py runs/run-quick            # the report of a `mnistlab run` folder
    python scripts/readme_pictures.py runs/run-quick --serve RUN  # explore RUN instead of the shipped runs
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-sync",
]
OUT = Path(__file__).resolve().parent.parent / "docs" / "images"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not answer within {seconds:.0f} s") from None
            time.sleep(0.5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", type=Path, help="a `mnistlab run` folder with report.html")
    ap.add_argument("--serve", type=Path, help="run folder for the explorer picture [the shipped runs]")
    ap.add_argument("--out", type=Path, default=OUT, help=f"folder for the PNGs [{OUT}]")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    report = args.study / "report.html"
    if not report.is_file():
        raise SystemExit(f"{report} is missing: run `mnistlab run` (or `mnistlab report`) first")
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    serve = [
        sys.executable,
        "-m",
        "mnistlab",
        "-q",
        "serve",
        *([str(args.serve)] if args.serve else []),
        "--port",
        str(port),
    ]
    server = subprocess.Popen(serve)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1200, "height": 860})
            page.goto(report.resolve().as_uri(), wait_until="load")
            page.screenshot(path=str(args.out / "report_key_results.png"))
            wait_for(f"http://127.0.0.1:{port}/")
            page.goto(f"http://127.0.0.1:{port}/", wait_until="networkidle")
            page.screenshot(path=str(args.out / "explorer.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {args.out / 'report_key_results.png'} and {args.out / 'explorer.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

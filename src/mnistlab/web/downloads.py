"""Samples as files, and the run's own page: the explorer's routes that answer with something other
than JSON.

  GET /api/sample.png?sampler=&n=&seed=&digit=&every_digit=1&steps=  -> the grid the page shows, as a PNG
  GET /api/sample.npy?(the same)                                -> the digits, uint8 (N, 28, 28), as .npy
  GET /report                                                   -> report.html of the run (or its compare
                                                                   page), 404 when it has none

A download takes the same fields as POST /api/sample, checked the same way (`draw`): the same seed
gives the same digits in the page, the PNG and the .npy. Query values are bounded before they are
converted, an unknown key is a 400, and every refusal is {"error": one line}. The report is found
among fixed names inside the run folder (`runs.find_report`), never from a path the client sends,
and served under a CSP that lets it run no script.
"""

from __future__ import annotations

import io
import math
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from PIL import Image
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from mnistlab.web import parse
from mnistlab.web.errors import ApiError
from mnistlab.web.explorer import MAX_ROW_SAMPLES, MAX_SAMPLE_STEPS, MAX_SAMPLES, Explorer
from mnistlab.web.runs import find_report

SEED_MAX = 2**31 - 1
QUERY_KEYS = ("sampler", "n", "seed", "digit", "every_digit", "steps")
MAX_QUERY_VALUE = 64  # characters
GAP = 2  # pixels between the digits of a grid (PNG)
# The report is a self-contained page (inline CSS, embedded PNGs): it may style itself and show its
# own data: images, and nothing else; no script, no form, not framed by another site.
REPORT_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'self'"
)


def draw(ex: Explorer, body: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
    """The checked fields of a sample request and its digits: uint8 (n, 28, 28), or (10, n, 28, 28)
    with every_digit (row d is digit d, the same noise in each column)."""
    sampler = parse.get_str(body, "sampler")
    rows = body.get("every_digit") is True
    n = parse.get_int(body, "n", 16, 1, MAX_ROW_SAMPLES if rows else MAX_SAMPLES)
    seed, digit, steps = draw_options(body)
    if rows:  # the same noise for every digit: style kept, class changed
        images = np.stack([ex.sample(sampler, n, seed, d, steps) for d in range(10)])
    else:
        images = ex.sample(sampler, n, seed, digit, steps)
    fields = {"sampler": sampler, "n": n, "seed": seed, "digit": digit, "every_digit": rows, "steps": steps}
    return fields, images


def draw_options(body: dict[str, Any]) -> tuple[int, int | None, int | None]:
    """(seed, digit, steps) of a request that draws digits (a sample, its downloads, a trajectory),
    each checked: digit and steps None when not given."""
    seed = parse.get_int(body, "seed", 0, 0, SEED_MAX)
    digit = parse.get_int(body, "digit", None, 0, 9) if body.get("digit") is not None else None
    steps = parse.get_int(body, "steps", None, 1, MAX_SAMPLE_STEPS) if body.get("steps") is not None else None
    return seed, digit, steps


def grid_png(images: np.ndarray, cols: int | None = None) -> bytes:
    """uint8 digits (N, 28, 28) -> one PNG: `cols` per row (default: a near-square grid), GAP px apart."""
    n = len(images)
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    cell = 28 + GAP
    canvas = np.full((rows * cell - GAP, cols * cell - GAP), 96, np.uint8)  # gray lines between digits
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * cell : r * cell + 28, c * cell : c * cell + 28] = img
    buf = io.BytesIO()
    Image.fromarray(canvas, "L").save(buf, "PNG")
    return buf.getvalue()


def npy_bytes(images: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(images, dtype=np.uint8), allow_pickle=False)
    return buf.getvalue()


def query_body(request: Request) -> dict[str, Any]:
    """The query string as a sample request body: whole numbers checked as text before int()."""
    body: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        if key not in QUERY_KEYS:
            raise ApiError(400, f"unknown query key {key[:40]!r}; known: {', '.join(QUERY_KEYS)}")
        if key in body:
            raise ApiError(400, f"?{key} is given more than once")
        if len(value) > MAX_QUERY_VALUE:
            raise ApiError(400, f"?{key} has {len(value)} characters; at most {MAX_QUERY_VALUE}")
        if key == "sampler":
            body[key] = value
        elif key == "every_digit":
            if value not in ("0", "1", "true", "false"):
                raise ApiError(400, f"?every_digit must be 1 or 0, got {value[:20]!r}")
            body[key] = value in ("1", "true")
        elif value.isascii() and value.isdigit() and len(value) <= 12:
            body[key] = int(value)
        elif key == "digit" and value == "":
            continue  # "mixed digits"
        else:
            raise ApiError(400, f"?{key} must be a whole number from 0, got {value[:20]!r}")
    return body


def build_routes(ex: Explorer, heavy: Callable[[Callable[[], Response]], Awaitable[Response]]) -> list[Route]:
    """The routes above; `heavy` runs a function in one of the app's slots for model work."""

    def download(kind: str):
        async def endpoint(request: Request) -> Response:
            body = query_body(request)

            def run() -> Response:
                fields, images = draw(ex, body)
                flat = images.reshape(-1, 28, 28)  # rows: digit 0's row first
                what = (
                    "every-digit"
                    if fields["every_digit"]
                    else (f"digit{fields['digit']}" if fields["digit"] is not None else "mixed")
                )
                name = f"samples-{fields['sampler']}-{what}-n{fields['n']}-seed{fields['seed']}.{kind}"
                if kind == "png":
                    data, media = grid_png(flat, fields["n"] if fields["every_digit"] else None), "image/png"
                else:
                    data, media = npy_bytes(flat), "application/octet-stream"
                return Response(
                    data,
                    media_type=media,
                    headers={
                        "Content-Disposition": f'attachment; filename="{name}"',
                        "X-Content-Type-Options": "nosniff",
                        "Cache-Control": "no-store",
                    },
                )

            return await heavy(run)

        return endpoint

    async def report(request: Request) -> Response:
        path = find_report(ex.run_dir)
        if path is None:
            raise ApiError(
                404, f"{ex.run_dir} has no report page (report.html of `mnistlab run`, or a compare page)"
            )
        return FileResponse(
            path,
            media_type="text/html; charset=utf-8",
            headers={
                "Content-Security-Policy": REPORT_CSP,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

    return [
        Route("/api/sample.png", download("png")),
        Route("/api/sample.npy", download("npy")),
        Route("/report", report),
    ]

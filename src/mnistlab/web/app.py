"""The explorer's HTTP side: routes of the JSON API, the static page, and `serve()` (uvicorn).

API (JSON in and out; images are 28x28 arrays of 0..255; errors are {"error": "one line"}):
  GET  /api/info                  panels available (and why not), latent size and ranges, maps, samplers
  POST /api/analyze               body: the bytes of a PNG (the canvas or an upload); ?sigma=&seed=
                                  -> input as the model sees it, code, reconstruction, noisy + denoised,
                                  probe probabilities, place on each map
  POST /api/encode    {image|png}                 -> {input, code}
  POST /api/decode    {code}                      -> {image}
  POST /api/denoise   {image|png, sigma?, seed?}  -> {input, noisy, denoised}
  POST /api/classify  {image|png | code}          -> {digit, probs}
  POST /api/sample    {sampler, n?, seed?}        -> {sampler, images}   samplers: uniform gaussian gmm gan
  POST /api/interpolate {a, b, steps?}            -> {codes, images}; a and b: {code}|{image}|{png}|{index}
  GET  /api/map/{name}                            -> {x, y, labels, decodable, axis}
  POST /api/map/{name}/click {x, y}               -> decoded point (pca, latent) or nearest test digit
  GET  /api/test/{index}                          -> {index, label, image, code}
Status codes: 400 malformed JSON or wrong type, 404 unknown map / index / route, 405 wrong method,
409 the run folder lacks the model, 413 too large, 415 not an image, 422 a value out of range.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mnistlab.errors import ConfigError
from mnistlab.web import parse
from mnistlab.web.errors import ApiError
from mnistlab.web.explorer import MAX_SAMPLES, MAX_SIGMA, MAX_STEPS, Explorer
from mnistlab.web.preprocess import MAX_UPLOAD_BYTES, preprocess_bytes

log = logging.getLogger("mnistlab")
STATIC = Path(__file__).parent / "static"
SEED_MAX = 2**31 - 1
# The page loads nothing from elsewhere; the browser enforces it.
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'"
)


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"request too large: {length} bytes, at most {limit}")
    size, chunks = 0, []
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request too large: more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _json(request: Request) -> dict[str, Any]:
    return parse.json_body(await _body(request, parse.MAX_BODY_BYTES))


def _code_of(ex: Explorer, spec: Any, key: str) -> np.ndarray:
    """An interpolation end: {code}, {image}, {png} or {index} (a test digit) -> code (d,)."""
    if (
        not isinstance(spec, dict)
        or len(spec) != 1
        or next(iter(spec)) not in ("code", "image", "png", "index")
    ):
        raise ApiError(422, f"{key!r} must be one of {{\"code\": [...]}}, {{\"image\": [[...]]}}, "
                            f"{{\"png\": \"base64\"}}, {{\"index\": test index}}")  # fmt: skip
    if "code" in spec:
        return ex.check_codes(parse.get_code(spec["code"], f"{key}.code"))[0]
    if "index" in spec:
        return ex.test_codes[ex.check_index(parse.get_int(spec, "index", None, 0, SEED_MAX))]
    image = parse.get_pixels(spec["image"]) if "image" in spec else parse.get_png(spec["png"])
    return ex.encode(image[None])[0]


def build_routes(ex: Explorer) -> list:
    """The routes; each handler checks its input, then runs the model in a worker thread."""

    def analyze_sync(data: bytes, sigma: float, seed: int) -> dict[str, Any]:
        x = preprocess_bytes(data)  # (28, 28)
        out: dict[str, Any] = {"input": parse.to_uint8_list(np.round(x * 255)), "unavailable": {}}
        try:
            code = ex.encode(x[None])  # (1, d)
            out["code"] = [round(float(v), 5) for v in code[0]]
            out["reconstruction"] = parse.to_uint8_list(
                ex.decode(np.clip(code, ex.limit_low, ex.limit_high))[0]
            )
            out["positions"] = ex.positions(code[0])
        except ApiError as e:
            out["unavailable"]["reconstruct"] = e.message
            code = None
        if code is not None:
            try:
                probs = ex.classify(code)[0]
                out["probs"] = [round(float(p), 5) for p in probs]
                out["digit"] = int(probs.argmax())
            except ApiError as e:
                out["unavailable"]["classify"] = e.message
        try:
            noisy, clean = ex.denoise(x, sigma, seed)
            out["noisy"], out["denoised"] = parse.to_uint8_list(noisy), parse.to_uint8_list(clean)
        except ApiError as e:
            out["unavailable"]["denoise"] = e.message
        return out

    async def analyze(request: Request) -> JSONResponse:
        q = request.query_params
        try:
            sigma = float(q.get("sigma", "0"))
            seed = int(q.get("seed", "0"))
        except ValueError:
            raise ApiError(400, "?sigma must be a number and ?seed a whole number") from None
        parse.get_float({"sigma": sigma}, "sigma", 0.0, 0.0, MAX_SIGMA)
        parse.get_int({"seed": seed}, "seed", 0, 0, SEED_MAX)
        data = await _body(request, MAX_UPLOAD_BYTES)
        return JSONResponse(await run_in_threadpool(analyze_sync, data, sigma, seed))

    async def info(request: Request) -> JSONResponse:
        return JSONResponse(ex.info())

    async def encode(request: Request) -> JSONResponse:
        body = await _json(request)

        def run():
            x = parse.get_image(body)
            return {"input": parse.to_uint8_list(np.round(x * 255)), "code": [round(float(v), 5) for v in ex.encode(x[None])[0]]}  # fmt: skip

        return JSONResponse(await run_in_threadpool(run))

    async def decode(request: Request) -> JSONResponse:
        code = parse.get_code((await _json(request)).get("code"))
        images = await run_in_threadpool(ex.decode, code)
        return JSONResponse({"image": parse.to_uint8_list(images[0])})

    async def denoise(request: Request) -> JSONResponse:
        body = await _json(request)
        sigma = parse.get_float(body, "sigma", 0.0, 0.0, MAX_SIGMA)
        seed = parse.get_int(body, "seed", 0, 0, SEED_MAX)

        def run():
            x = parse.get_image(body)
            noisy, clean = ex.denoise(x, sigma, seed)
            return {"input": parse.to_uint8_list(np.round(x * 255)), "noisy": parse.to_uint8_list(noisy),
                    "denoised": parse.to_uint8_list(clean)}  # fmt: skip

        return JSONResponse(await run_in_threadpool(run))

    async def classify(request: Request) -> JSONResponse:
        body = await _json(request)

        def run():
            ex.need("probe")
            if "code" in body:
                code = ex.check_codes(parse.get_code(body["code"]))
            else:
                code = ex.encode(parse.get_image(body)[None])
            probs = ex.classify(code)[0]
            return {"digit": int(probs.argmax()), "probs": [round(float(p), 5) for p in probs]}

        return JSONResponse(await run_in_threadpool(run))

    async def sample(request: Request) -> JSONResponse:
        body = await _json(request)
        sampler = parse.get_str(body, "sampler")
        n = parse.get_int(body, "n", 16, 1, MAX_SAMPLES)
        seed = parse.get_int(body, "seed", 0, 0, SEED_MAX)
        images = await run_in_threadpool(ex.sample, sampler, n, seed)
        return JSONResponse({"sampler": sampler, "seed": seed, "images": parse.to_uint8_list(images)})

    async def interpolate(request: Request) -> JSONResponse:
        body = await _json(request)
        steps = parse.get_int(body, "steps", 10, 2, MAX_STEPS)

        def run():
            ex.need("ae")
            z0, z1 = _code_of(ex, body.get("a"), "a"), _code_of(ex, body.get("b"), "b")
            codes, images = ex.interpolate(z0, z1, steps)
            return {
                "codes": np.round(codes.astype(np.float64), 5).tolist(),
                "images": parse.to_uint8_list(images),
            }

        return JSONResponse(await run_in_threadpool(run))

    map_cache: dict[str, bytes] = {}  # a map never changes: encode its ~400 KB of JSON once

    async def map_data(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in map_cache:
            map_cache[name] = JSONResponse(ex.map_data(name)).body
        return Response(map_cache[name], media_type="application/json")

    async def map_click(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        ex.check_map(name)
        body = await _json(request)
        x = parse.get_float(body, "x", None, -1e6, 1e6)
        y = parse.get_float(body, "y", None, -1e6, 1e6)
        return JSONResponse(await run_in_threadpool(ex.click, name, x, y))

    async def test_item(request: Request) -> JSONResponse:
        return JSONResponse(ex.test_item(request.path_params["index"]))

    async def index(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": CSP})

    return [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/analyze", analyze, methods=["POST"]),
        Route("/api/encode", encode, methods=["POST"]),
        Route("/api/decode", decode, methods=["POST"]),
        Route("/api/denoise", denoise, methods=["POST"]),
        Route("/api/classify", classify, methods=["POST"]),
        Route("/api/sample", sample, methods=["POST"]),
        Route("/api/interpolate", interpolate, methods=["POST"]),
        Route("/api/map/{name:str}", map_data),
        Route("/api/map/{name:str}/click", map_click, methods=["POST"]),
        Route("/api/test/{index:int}", test_item),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    message = {404: f"no such page or endpoint: {request.url.path}",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))  # fmt: skip
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("explorer: internal error on %s", request.url.path)  # the traceback stays in the log
    return JSONResponse(
        {"error": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500
    )


def create_app(explorer: Explorer, allowed_hosts: list[str] | None = None) -> Starlette:
    """The ASGI app over a loaded explorer. `allowed_hosts` (Host header names) guards a loopback
    server against DNS rebinding; None accepts any host."""
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)] if allowed_hosts else []
    return Starlette(
        routes=build_routes(explorer),
        middleware=middleware,
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _server_error},
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str, explicit: bool) -> None:
    """A non-loopback address only when the user named it with --host (then a warning: the API has
    no authentication and anyone who can reach the port can use it)."""
    if is_loopback(host):
        return
    if not explicit:
        raise ConfigError(f"refusing to serve on {host}: only 127.0.0.1 unless --host names the address")
    log.warning(
        "serving on %s: anyone who can reach this address can use the explorer (no authentication)", host
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or a one-line ConfigError (port in use, address not on this machine)."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only for such sockets;
    # without it Nagle's algorithm and delayed ACKs add ~40 ms to every keep-alive request (measured).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def serve(run_dir: Path, host: str = "127.0.0.1", port: int = 8000, explicit_host: bool = False,
          threads: int = 1) -> None:  # fmt: skip
    """Load the run folder once, then serve the explorer until interrupted."""
    import torch
    import uvicorn

    check_host(host, explicit_host)
    if threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    sock = bind(host, port)  # before the slow loading, so a busy port fails at once
    try:
        try:
            explorer = Explorer(run_dir)
        except ApiError as e:
            raise ConfigError(f"{run_dir}: nothing to serve ({e.message})") from None
        torch.set_num_threads(threads)  # requests are single images: one thread each answers fastest
        allowed = ["127.0.0.1", "localhost"] if host in ("127.0.0.1", "localhost") else None
        app = create_app(explorer, allowed)
        actual = sock.getsockname()[1]
        log.info(
            "mnistlab explorer: http://%s:%d/ (Ctrl-C stops it)",
            host if ":" not in host else f"[{host}]",
            actual,
        )
        config = uvicorn.Config(app, log_level="warning", access_log=False, log_config=None)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()

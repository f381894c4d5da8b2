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
  POST /api/sample    {sampler, n?, seed?, digit?, every_digit?, steps?} -> {sampler, images | rows};
                                  n in 1..256; steps (1..50) for a generator that solves an ODE
                                  samplers: uniform gaussian gmm, and one per generator run (by task)
  POST /api/trajectory {sampler, seed?, digit?, steps?} -> {images}: an ODE-solving generator's one
                                  digit from noise, the state after each step
  GET  /api/sample.png?sampler=&n=&seed=&digit=&every_digit=&steps=  and  /api/sample.npy?...: the same digits
                                  as a grid PNG / a uint8 (N, 28, 28) .npy file (downloads.py)
  GET  /report                                    the run's report.html or compare page (downloads.py)
  POST /api/interpolate {a, b, steps?}            -> {codes, images}; a and b: {code}|{image}|{png}|{index}
  GET  /api/map/{name}                            -> {x, y, labels, decodable, axis}
  POST /api/map/{name}/click {x, y}               -> decoded point (pca, latent) or nearest test digit
  GET  /api/test/{index}                          -> {index, label, image, code}
Status codes: 400 malformed JSON or wrong type, 404 unknown map / index / route, 405 wrong method,
408 a body sent too slowly, 409 the run folder lacks the model, 413 too large, 415 not an image,
422 a value out of range, 503 too many bodies being sent at once (try again).

Every request is checked before it is routed (`Guard`): a POST body is sent as Content-Type
application/json (analyze: image/*, the file itself), else 415; an Origin header other than this
server's own origin is a 403; a server on a loopback address answers only Host names that are
loopback names or addresses (DNS rebinding), else 400. Bodies, numbers, lists and path segments are
bounded before they are converted (`parse`), and at most HEAVY_SLOTS requests decode or run a model
at once, so a flood of uploads costs bounded memory and /api/info keeps answering. Connections and
request bodies are bounded in number and in time (guard.py's protocol, `Bodies`), so clients that
connect and send nothing, or trickle a body, cannot starve the others either.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mnistlab.core.errors import ConfigError, check_threads
from mnistlab.web import downloads, parse
from mnistlab.web.errors import ApiError, one_line
from mnistlab.web.explorer import MAX_SIGMA, MAX_STEPS, Explorer
from mnistlab.web.guard import (  # noqa: F401
    MAX_CONNECTIONS,
    MAX_HEADER_BYTES,
    UPLOAD_PATHS,
    Guard,
    connection_cap,
    host_policy,
    is_loopback,
    same_origin,
    split_host,
    spread,
    timed_protocol,
)
from mnistlab.web.preprocess import MAX_UPLOAD_BYTES, bound_decoder, preprocess_bytes

log = logging.getLogger("mnistlab")
STATIC = Path(__file__).parent / "static"
SEED_MAX = 2**31 - 1
MAX_SEGMENT = 64  # characters of a path segment or query value read as a number or a name
# The page loads nothing from elsewhere; the browser enforces it.
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'"
)
# Requests that decode an image or run a model, at once. Each costs up to ~130 MB while it decodes a
# 2048x2048 upload (its RGBA pixels as float32 and their gray copies), and more than one per core only
# makes each slower; the rest wait in line without a thread. Cheap requests (info, maps, test digits,
# the page) never take a slot, so they answer while heavy ones queue.
HEAVY_SLOTS = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2))
# Connections waiting to be accepted (listen()'s backlog, uvicorn's default): a burst of new
# connections past it has its SYNs dropped, and the client retries only after a second.
BACKLOG = 2048


# Request bodies. Every body is buffered until complete, so their number, size and time are bounded
# (slow 2 MB POSTs held by a client once took most of the memory). A body declared at most
# SMALL_BODY_BYTES (every JSON call of the page but an uploaded file) is read at once; a bigger one,
# or one of unknown length, first takes one of BODY_SLOTS slots and keeps it until its answer is made
# (while it waits for a model too), so at most BODY_SLOTS big bodies are held; a request that finds
# every slot taken for BODY_WAIT_S is a 503. At most MAX_BODIES bodies of any size (and at most half
# the connections) are received at once, then a 503 at once: the connections left are idle or
# answered quickly, and a new client can take the place of an idle one (guard.py). Each body must
# arrive within BODY_TIMEOUT_S plus one second per BODY_MIN_RATE bytes received (a minimum rate, as
# Apache's mod_reqtimeout has it), else a 408: a trickle of a few bytes a second is cut off after
# BODY_TIMEOUT_S, an upload over a slow link is not. Refusals close the connection. Both times are
# stretched a little at random for each request (guard.spread), so that bodies sent together are not
# all refused together.
SMALL_BODY_BYTES = 16 * 1024
BODY_SLOTS = 16
BODY_WAIT_S = 10.0
BODY_TIMEOUT_S = 10.0
BODY_MIN_RATE = 32 * 1024  # bytes a second
MAX_BODIES = 1024  # (each holds up to uvicorn's 64 KiB read-ahead while it waits for a slot)


def _declared_length(request: Request, limit: int) -> int | None:
    """The Content-Length (None when absent or not a number: h11 has then framed the body some other
    way), refused with 413 when it is past `limit`."""
    length = request.headers.get("content-length", "")
    # A long or non-ASCII "digit" string would make int() raise (or take time): check the text first.
    if not (length.isascii() and length.isdigit()):
        return None
    if len(length) > 15 or int(length) > limit:
        raise ApiError(413, f"request too large: {length[:20]} bytes, at most {limit}", close=True)
    return int(length)


class Bodies:
    """The request bodies of one app being received, bounded in number, in size, in time and (for
    big ones) in slots held until the answer is made. The event loop's thread only."""

    def __init__(self, slots: int = BODY_SLOTS, most: int = MAX_BODIES) -> None:
        self.slots, self.most, self.receiving = anyio.Semaphore(slots), most, 0

    @contextlib.asynccontextmanager
    async def receive(self, request: Request, limit: int) -> AsyncIterator[bytes]:
        """`async with bodies.receive(request, limit) as raw:` the whole body (at most `limit` bytes);
        a big body's slot is held until the block ends."""
        length = _declared_length(request, limit)
        if self.receiving >= self.most:
            raise ApiError(503, "too many requests sending bodies at once; try again", close=True)
        async with contextlib.AsyncExitStack() as stack:
            self.receiving += 1
            try:
                if length is None or length > SMALL_BODY_BYTES:
                    await stack.enter_async_context(self._slot())
                raw = await _read_body(request, limit)
            finally:
                self.receiving -= 1
            yield raw

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        acquired = False
        with anyio.move_on_after(spread(BODY_WAIT_S)):
            await self.slots.acquire()
            acquired = True
        if not acquired:
            raise ApiError(503, "too many requests sending bodies at once; try again", close=True)
        try:
            yield
        finally:
            self.slots.release()


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes and with 408 when it falls behind
    BODY_TIMEOUT_S + received / BODY_MIN_RATE seconds."""
    size, chunks = 0, []
    start, grace = anyio.current_time(), spread(BODY_TIMEOUT_S)
    with anyio.CancelScope(deadline=start + grace) as scope:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"request too large: more than {limit} bytes", close=True)
            chunks.append(chunk)
            scope.deadline = start + grace + size / BODY_MIN_RATE
        return b"".join(chunks)
    raise ApiError(
        408,
        f"request body too slow: {size} bytes in {anyio.current_time() - start:.0f} s; send it within "
        f"{BODY_TIMEOUT_S:g} s plus 1 s per {BODY_MIN_RATE // 1024} KiB",
        close=True,
    )


def _code_of(ex: Explorer, spec: Any, key: str) -> np.ndarray:
    """An interpolation end: {code}, {image}, {png} or {index} (a test digit) -> code (d,)."""
    if (
        not isinstance(spec, dict)
        or len(spec) != 1
        or next(iter(spec)) not in ("code", "image", "png", "index")
    ):
        raise ApiError(
            422,
            f'{key!r} must be one of {{"code": [...]}}, {{"image": [[...]]}}, '
            f'{{"png": "base64"}}, {{"index": test index}}',
        )
    if "code" in spec:
        return ex.check_codes(parse.get_code(spec["code"], f"{key}.code"))[0]
    if "index" in spec:
        return ex.test_codes[ex.check_index(parse.get_int(spec, "index", None, 0, SEED_MAX))]
    image = parse.get_pixels(spec["image"]) if "image" in spec else parse.get_png(spec["png"])
    return ex.encode(image[None])[0]


def _query_number(request: Request, key: str, default: str, convert: Callable[[str], Any]) -> Any:
    text = request.query_params.get(key, default)
    if len(text) > MAX_SEGMENT:
        raise ApiError(400, f"?{key} has {len(text)} characters; at most {MAX_SEGMENT}")
    try:
        return convert(text)
    except ValueError:
        raise ApiError(400, "?sigma must be a number and ?seed a whole number") from None


def build_routes(ex: Explorer, heavy_slots: int = HEAVY_SLOTS, bodies: Bodies | None = None) -> list:
    """The routes. Cheap ones answer on the event loop; a heavy one (it parses a JSON body, decodes an
    image or runs a model) reads its body there (within the bounds of `bodies`), then does the rest,
    down to encoding the response, in a worker thread holding one of `heavy_slots` slots."""
    limiter = anyio.CapacityLimiter(heavy_slots)
    bodies = bodies or Bodies()

    async def heavy(fn: Callable[[], Response]) -> Response:
        return await anyio.to_thread.run_sync(fn, limiter=limiter)

    def json_route(run: Callable[[dict[str, Any]], dict[str, Any]]):
        """An endpoint: its body, parsed and bounded (parse.json_body), passed to `run` in a slot."""

        async def endpoint(request: Request) -> Response:
            async with bodies.receive(request, parse.MAX_BODY_BYTES) as raw:
                return await heavy(lambda: JSONResponse(run(parse.json_body(raw))))

        return endpoint

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

    async def analyze(request: Request) -> Response:
        sigma = _query_number(request, "sigma", "0", float)
        seed = _query_number(request, "seed", "0", int)
        parse.get_float({"sigma": sigma}, "sigma", 0.0, 0.0, MAX_SIGMA)
        parse.get_int({"seed": seed}, "seed", 0, 0, SEED_MAX)
        async with bodies.receive(request, MAX_UPLOAD_BYTES) as data:
            return await heavy(lambda: JSONResponse(analyze_sync(data, sigma, seed)))

    async def info(request: Request) -> JSONResponse:
        return JSONResponse(ex.info())

    def encode(body: dict[str, Any]) -> dict[str, Any]:
        x = parse.get_image(body)
        return {
            "input": parse.to_uint8_list(np.round(x * 255)),
            "code": [round(float(v), 5) for v in ex.encode(x[None])[0]],
        }

    def decode(body: dict[str, Any]) -> dict[str, Any]:
        return {"image": parse.to_uint8_list(ex.decode(parse.get_code(body.get("code")))[0])}

    def denoise(body: dict[str, Any]) -> dict[str, Any]:
        sigma = parse.get_float(body, "sigma", 0.0, 0.0, MAX_SIGMA)
        seed = parse.get_int(body, "seed", 0, 0, SEED_MAX)
        x = parse.get_image(body)
        noisy, clean = ex.denoise(x, sigma, seed)
        return {
            "input": parse.to_uint8_list(np.round(x * 255)),
            "noisy": parse.to_uint8_list(noisy),
            "denoised": parse.to_uint8_list(clean),
        }

    def classify(body: dict[str, Any]) -> dict[str, Any]:
        ex.need("probe")
        if "code" in body:
            code = ex.check_codes(parse.get_code(body["code"]))
        else:
            code = ex.encode(parse.get_image(body)[None])
        probs = ex.classify(code)[0]
        return {"digit": int(probs.argmax()), "probs": [round(float(p), 5) for p in probs]}

    def sample(body: dict[str, Any]) -> dict[str, Any]:
        fields, images = downloads.draw(ex, body)  # (n, 28, 28), or (10, n, 28, 28) for every digit
        out = {"sampler": fields["sampler"], "seed": fields["seed"], "n": fields["n"]}
        if fields["every_digit"]:
            return {**out, "rows": [parse.to_uint8_list(r) for r in images]}
        return {**out, "digit": fields["digit"], "images": parse.to_uint8_list(images)}

    def trajectory(body: dict[str, Any]) -> dict[str, Any]:
        sampler = parse.get_str(body, "sampler")
        seed, digit, steps = downloads.draw_options(body)  # checked as /api/sample checks them
        images = ex.trajectory(sampler, seed, digit, steps)
        return {"sampler": sampler, "seed": seed, "digit": digit, "images": parse.to_uint8_list(images)}

    def interpolate(body: dict[str, Any]) -> dict[str, Any]:
        steps = parse.get_int(body, "steps", 10, 2, MAX_STEPS)
        ex.need("encoder")
        z0, z1 = _code_of(ex, body.get("a"), "a"), _code_of(ex, body.get("b"), "b")
        codes, images = ex.interpolate(z0, z1, steps)
        return {
            "codes": np.round(codes.astype(np.float64), 5).tolist(),
            "images": parse.to_uint8_list(images),
        }

    map_cache: dict[str, bytes] = {}  # a map never changes: encode its ~400 KB of JSON once

    def map_name(request: Request) -> str:
        name = request.path_params["name"]
        if len(name) > MAX_SEGMENT:
            raise ApiError(
                404, f"no map named that ({len(name)} characters); known maps: {', '.join(ex.maps)}"
            )
        ex.check_map(name)
        return name

    async def map_data(request: Request) -> Response:
        name = map_name(request)
        if name not in map_cache:
            map_cache[name] = JSONResponse(ex.map_data(name)).body
        return Response(map_cache[name], media_type="application/json")

    async def map_click(request: Request) -> Response:
        name = map_name(request)  # before the body: an unknown map is a 404 whatever the body holds

        def click(body: dict[str, Any]) -> dict[str, Any]:
            x = parse.get_float(body, "x", None, -1e6, 1e6)
            y = parse.get_float(body, "y", None, -1e6, 1e6)
            return ex.click(name, x, y)

        return await json_route(click)(request)

    async def test_item(request: Request) -> JSONResponse:
        # A str segment checked here, not Starlette's int convertor: that one calls int() on any run of
        # digits, and 5,000 of them raise past Python's int-conversion limit (a 500).
        text = request.path_params["index"]
        if not (text.isascii() and text.isdigit() and len(text) <= 9):
            raise ApiError(404, f"no test digit {text[:20]!r}: the index is a whole number from 0")
        return JSONResponse(ex.test_item(int(text)))

    async def index(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": CSP})

    return [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/analyze", analyze, methods=["POST"]),
        Route("/api/encode", json_route(encode), methods=["POST"]),
        Route("/api/decode", json_route(decode), methods=["POST"]),
        Route("/api/denoise", json_route(denoise), methods=["POST"]),
        Route("/api/classify", json_route(classify), methods=["POST"]),
        Route("/api/sample", json_route(sample), methods=["POST"]),
        Route("/api/trajectory", json_route(trajectory), methods=["POST"]),
        Route("/api/interpolate", json_route(interpolate), methods=["POST"]),
        Route("/api/map/{name:str}", map_data),
        Route("/api/map/{name:str}/click", map_click, methods=["POST"]),
        Route("/api/test/{index:str}", test_item),
        *downloads.build_routes(ex, heavy),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    headers = {"Connection": "close"} if exc.close else None
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    message = {
        404: f"no such page or endpoint: {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }.get(exc.status_code, str(exc.detail))
    return JSONResponse({"error": one_line(message)}, status_code=exc.status_code, headers=exc.headers)


async def _client_gone(request: Request, exc: ClientDisconnect) -> Response:
    # The client closed the connection before its body arrived (a cancelled upload, a closed tab):
    # nobody is there to read an answer, and it is not the server's fault, so no traceback either.
    log.debug("explorer: client disconnected during %s %s", request.method, request.url.path)
    return Response(status_code=400)


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("explorer: internal error on %s", request.url.path)  # the traceback stays in the log
    return JSONResponse(
        {"error": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500
    )


def create_app(
    explorer: Explorer,
    allowed_hosts: list[str] | None = None,
    *,
    bind_host: str | None = None,
    port: int | None = None,
    heavy_slots: int = HEAVY_SLOTS,
    bodies: Bodies | None = None,
) -> Starlette:
    """The ASGI app over a loaded explorer. The Host check that guards against DNS rebinding:
    `bind_host` a loopback address -> loopback Host names only (see `host_policy`); else
    `allowed_hosts` (Host names, any port); neither accepts any Host. Origin and Content-Type are
    always checked (`Guard`). At most `heavy_slots` requests decode or run a model at once; request
    bodies are bounded by `bodies` [Bodies()]."""
    if bind_host is not None:
        host_ok, describe = host_policy(bind_host, port), "requests addressed to a loopback name or address"
    elif allowed_hosts:
        names = {h.lower() for h in allowed_hosts}
        host_ok, describe = (
            (lambda h, p, s: h in names),
            "requests addressed to " + " or ".join(allowed_hosts),
        )
    else:
        host_ok, describe = None, ""
    return Starlette(
        routes=build_routes(explorer, heavy_slots, bodies),
        middleware=[Middleware(Guard, host_ok=host_ok, describe=describe)],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            ClientDisconnect: _client_gone,
            Exception: _server_error,
        },
    )


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
    # without it Nagle's algorithm and delayed ACKs add a delayed-ACK wait to every keep-alive request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def server_config(app: Starlette, max_connections: int = MAX_CONNECTIONS) -> Any:
    """uvicorn's settings for the explorer: a time limit on each request's headers and at most
    `max_connections` connections, an idle one making room for a new one (guard.py's protocol), and
    headers of at most MAX_HEADER_BYTES; bodies are bounded by the routes (`Bodies`). uvicorn's
    `limit_concurrency` is left off: it counts idle connections as requests (guard.MAX_CONNECTIONS)."""
    import uvicorn

    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        log_config=None,
        http=timed_protocol(max_connections),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_keep_alive=5,  # idle seconds between two requests of a connection (uvicorn's default)
    )


def serve(
    run_dir: Path, host: str = "127.0.0.1", port: int = 8000, explicit_host: bool = False, threads: int = 1
) -> None:
    """Load the run folder once, then serve the explorer until interrupted."""
    import torch
    import uvicorn

    check_host(host, explicit_host)
    check_threads(threads, "--threads")  # torch would start as many as asked (100,000: ~32,000 started)
    sock = bind(host, port)  # before the slow loading, so a busy port fails at once
    try:
        try:
            explorer = Explorer(run_dir)
        except ApiError as e:
            raise ConfigError(f"{run_dir}: nothing to serve ({e.message})") from None
        torch.set_num_threads(threads)  # requests are single images: one thread each answers fastest
        bound_decoder()
        actual = sock.getsockname()[1]
        cap = connection_cap()  # raises the soft limit of open files when it is lower
        app = create_app(
            explorer, bind_host=host, port=actual, bodies=Bodies(most=max(1, min(MAX_BODIES, cap // 2)))
        )
        log.info(
            "mnistlab explorer: http://%s:%d/ (Ctrl-C stops it)",
            host if ":" not in host else f"[{host}]",
            actual,
        )
        uvicorn.Server(server_config(app, cap)).run(sockets=[sock])
    finally:
        sock.close()

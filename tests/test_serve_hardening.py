"""`mnistlab serve` under hostile input (issue 17, "the explorer never a 5xx"): random JSON bodies with
numbers past Python's int-conversion limit, deep nesting and long lists, random path segments, requests
from other sites (content type, Origin), DNS rebinding on every loopback bind, decompression bombs,
clients that hang up mid-upload, and the limiter on heavy requests. Starlette's TestClient or the ASGI
app called directly; no sockets. Memory and latency under a flood of uploads are measured in
benchmarks/serve_abuse.py, not here.

The study is a small ae run with its probe (no dae, gan or t-SNE map: their routes answer 409/404,
which is what the bad-input paths need): conftest.py's `serve_ae_run`, trained once for the session and
copied for this module, whose `explorer` it is (conftest.py's `client` serves it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import shutil
import socket
import struct
import threading
import time
import zlib
from pathlib import Path
from urllib.parse import quote

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from mnistlab.web import parse, preprocess
from mnistlab.web.app import create_app, host_policy
from mnistlab.web.explorer import Explorer
from tests.conftest import assert_one_line_error
from tests.serve_helpers import JSON_ROUTES, png_bytes, stroke

TestClient = pytest.importorskip("starlette.testclient").TestClient

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def explorer(serve_ae_run, tmp_path_factory) -> Explorer:
    """The explorer over a copy of the session's ae run (its start writes a cache file into the folder)."""
    run = shutil.copytree(serve_ae_run, tmp_path_factory.mktemp("hardening") / "ae")
    return Explorer(run)


JSON = {"Content-Type": "application/json"}
PNG = {"Content-Type": "image/png"}


def assert_clean(r, path: str = "") -> None:
    """No 5xx; a 4xx carries {"error": one short line}."""
    assert r.status_code < 500, (path[:80], r.status_code, r.text[:300])
    if r.status_code >= 400:
        msg = assert_one_line_error(r)
        assert len(msg) <= 300, msg


# ------------------------------------------------------------------------------------ JSON bodies

FIELDS = ["code", "image", "png", "sampler", "n", "seed", "steps", "sigma", "a", "b", "x", "y", "index"]


def _obj(items: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in items) + "}"


def _array(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


# JSON text, not Python values: json.dumps cannot even write an int of 5,000 digits.
NUMBERS = st.one_of(
    st.integers(1, 6000).map(lambda n: "9" * n),  # past the 4,300-digit int-conversion limit from 4,301
    st.integers(1, 6000).map(lambda n: "-1" + "0" * n),
    st.integers(1, 3000).map(lambda n: "0." + "1" * n + "e5"),
    st.sampled_from(["1e309", "-1e309", "1E400", "1e-400", "NaN", "Infinity", "-Infinity", "-0", "0.5"]),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
SCALARS = st.one_of(
    NUMBERS,
    st.text(max_size=10).map(json.dumps),
    st.sampled_from(['"gmm"', '"gan"', '"uniform"', '"\\ud800"', "null", "true", "false"]),
)
DEEP = st.integers(2, 3000).flatmap(
    lambda d: st.sampled_from(["[" * d + "]" * d, '{"a":' * d + "0" + "}" * d])
)
LONG = st.integers(0, 20_000).map(lambda n: _array(["0"] * n))
WIDE = st.integers(0, 2000).map(lambda n: _obj([(f"k{i}", "0") for i in range(n)]))
CODE = st.tuples(st.integers(0, 9), NUMBERS).map(
    lambda t: _array(["0.1"] * t[0] + [t[1]] + ["0.1"] * (9 - t[0]))
)
IMAGE = st.tuples(st.integers(0, 27 * 28 + 27), NUMBERS).map(
    lambda t: _array([_array([t[1] if r * 28 + c == t[0] else "0" for c in range(28)]) for r in range(28)])
)
END = st.one_of(
    CODE.map(lambda v: _obj([("code", v)])),
    NUMBERS.map(lambda v: _obj([("index", v)])),
    IMAGE.map(lambda v: _obj([("image", v)])),
)
VALUES = st.recursive(
    st.one_of(SCALARS, DEEP, LONG, WIDE, CODE, IMAGE, END),
    lambda inner: st.one_of(
        st.lists(inner, max_size=6).map(_array),
        st.lists(st.tuples(st.sampled_from(FIELDS), inner), max_size=4).map(_obj),
    ),
    max_leaves=12,
)
BODIES = st.one_of(st.lists(st.tuples(st.sampled_from(FIELDS), VALUES), max_size=5).map(_obj), VALUES)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(path=st.sampled_from(JSON_ROUTES), body=BODIES)
def test_random_json_bodies_never_make_a_5xx(client, path, body):
    assert_clean(client.post(path, content=body.encode("utf-8", "surrogatepass"), headers=JSON), path)


HUGE = "9" * 5000  # written into a body where it says HUGE
HOSTILE = [
    ("/api/sample", '{"sampler": "gmm", "n": HUGE}', 422, "5000 characters"),
    ("/api/sample", '{"sampler": "gmm", "seed": -HUGE}', 422, "characters"),
    ("/api/decode", '{"code": [HUGE, 0, 0, 0, 0, 0, 0, 0, 0, 0]}', 422, "at most 40"),
    ("/api/map/pca/click", '{"x": HUGE, "y": 0}', 422, "characters"),
    ("/api/interpolate", '{"a": {"index": HUGE}, "b": {"index": 1}}', 422, "characters"),
    ("/api/map/pca/click", '{"x": 1e309, "y": 0}', 400, "finite"),
    ("/api/denoise", '{"image": [[0]], "sigma": NaN}', 400, "finite"),
    ("/api/decode", '{"code": [1e309, 0, 0, 0, 0, 0, 0, 0, 0, 0]}', 422, "non-finite"),
    ("/api/sample", '{"sampler": "gmm", "n": 1e300}', 422, "'n' must be in"),
    ("/api/decode", '{"code": ' + _array(["0"] * 100_000) + "}", 422, "100000 items; at most 4096"),
    ("/api/decode", _obj([(f"k{i}", "0") for i in range(1000)]), 422, "1000 keys"),
    ("/api/decode", '{"code": ' + "[" * 50 + "]" * 50 + "}", 422, "nested more than"),
    ("/api/sample", '{"sampler": "\\ud800"}', 422, "unknown sampler"),
]


@pytest.mark.parametrize("path, body, status, words", HOSTILE, ids=[f"{h[0]}-{h[3]}" for h in HOSTILE])
def test_hostile_bodies_are_a_4xx(client, path, body, status, words):
    r = client.post(path, content=body.replace("HUGE", HUGE).encode(), headers=JSON)
    assert_one_line_error(r, words, status=status)
    assert_clean(r)


def test_number_hook_refuses_before_converting():
    """The bound is applied to the token's text: no int() is called on it (that call is what raised)."""
    with pytest.raises(parse.ApiError) as e:
        parse.json_body(b'{"n": ' + b"1" * 100_000 + b"}")
    assert e.value.status == 422 and "100000 characters" in e.value.message
    ok = parse.json_body(b'{"n": 12345, "x": 0.30000000000000004}')
    assert ok == {"n": 12345, "x": 0.30000000000000004}


# ---------------------------------------------------------------------------------- paths, queries

SEGMENTS = st.one_of(
    st.text(min_size=1, max_size=40),
    st.integers(1, 6000).map(lambda n: "9" * n),
    st.integers(1, 6000).map(lambda n: "a" * n),
    st.sampled_from(["-1", "0", "1e3", "\u0663", "\xb2", "..", "%00", "pca", "tsne", "latent", "\n", " 1"]),
)


TEMPLATES = [
    "/api/test/{}",
    "/api/map/{}",
    "/api/map/{}/click",
    "/static/{}",
    "/api/{}",
    "/{}",
    "/api/analyze?sigma={}",
    "/api/analyze?seed={}",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(template=st.sampled_from(TEMPLATES), segment=SEGMENTS)
def test_random_path_segments_never_make_a_5xx(client, template, segment):
    path = template.format(quote(segment, safe=""))
    if template.endswith("/click"):
        r = client.post(path, json={"x": 0, "y": 0})
    elif "analyze" in template:
        r = client.post(path, content=png_bytes(stroke()), headers=PNG)
    else:
        r = client.get(path)
    assert_clean(r, path)


def test_long_digit_segments_and_queries_are_a_4xx(client, explorer):
    assert client.get(f"/api/test/{HUGE}").status_code == 404
    assert client.get("/api/test/7").json()["index"] == 7  # the str segment still reads an index
    assert client.get("/api/test/\u0663").status_code == 404  # a non-ASCII digit is not an index
    r = client.post(f"/api/analyze?seed={HUGE}", content=png_bytes(stroke()), headers=PNG)
    assert_one_line_error(r, "?seed", status=400)
    r = client.get("/api/" + quote("x\ny" * 400, safe=""))
    assert len(assert_one_line_error(r, status=404)) <= 300


# ------------------------------------------------------------------- content type, Origin, Host


@pytest.mark.parametrize(
    "ctype",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "image/png"],
)
def test_a_json_route_refuses_other_content_types(client, monkeypatch, explorer, ctype):
    ran = []
    monkeypatch.setattr(explorer, "sample", lambda *a: ran.append(a))
    r = client.post("/api/sample", content=b'{"sampler": "gmm", "n": 2}', headers={"Content-Type": ctype})
    assert_one_line_error(r, "application/json", status=415)
    assert ran == []
    assert_clean(r)


def test_json_and_image_content_types_are_accepted(client):
    for ctype in ("application/json", "application/json; charset=utf-8", "Application/JSON"):
        r = client.post("/api/sample", content=b'{"sampler": "gmm", "n": 2}', headers={"Content-Type": ctype})
        assert r.status_code == 200, (ctype, r.text)
    for ctype in ("image/png", "image/jpeg"):  # what the page's JS sends for the canvas and for uploads
        assert (
            client.post(
                "/api/analyze", content=png_bytes(stroke()), headers={"Content-Type": ctype}
            ).status_code
            == 200
        )
    for ctype in ("text/plain", "application/json", "application/x-www-form-urlencoded"):
        r = client.post("/api/analyze", content=png_bytes(stroke()), headers={"Content-Type": ctype})
        assert_one_line_error(r, "image/png", status=415)


def test_the_page_sends_the_content_types_the_server_wants():
    static = Path(preprocess.__file__).parent / "static"
    js = "".join(p.read_text() for p in static.glob("*.js"))  # app.js and the modules it imports
    assert '"Content-Type": raw ? "image/png" : "application/json"' in js
    assert "/api/analyze" in js


@pytest.mark.parametrize(
    "origin, status",
    [
        ("http://evil.com", 403),
        ("null", 403),
        ("https://testserver", 403),
        ("http://testserver:8080", 403),
        ("http://testserver.evil.com", 403),
        ("garbage", 403),
        ("http://testserver", 200),
        ("http://TestServer:80", 200),
    ],
)
def test_origin_must_be_this_server(client, origin, status):
    post = client.post("/api/sample", json={"sampler": "gmm", "n": 1}, headers={"Origin": origin})
    get = client.get("/api/info", headers={"Origin": origin})
    assert post.status_code == get.status_code == status, (post.text, get.text)
    assert_clean(post)
    if status == 403:
        assert_one_line_error(post, "cross-origin")


@pytest.mark.parametrize("bind", ["::1", "127.0.0.1", "127.3.4.5", "localhost"])
@pytest.mark.parametrize(
    "host, ok",
    [
        ("evil.com", False),
        ("evil.com:8000", False),
        ("[::1]:8000", True),
        ("localhost:8000", True),
        ("LOCALHOST", True),
        ("127.0.0.1", True),
        ("127.9.9.9:8000", True),
        ("[::1]:9999", False),
        ("localhost:8001", False),
        ("localhost.evil.com:8000", False),
        ("0.0.0.0:8000", False),
        ("[::ffff:7f00:1]:8000", False),
        ("::1", False),
        ("localhost:80000", False),
        ("", False),
    ],
)
def test_loopback_binds_answer_loopback_host_names_only(explorer, bind, host, ok):
    with TestClient(create_app(explorer, bind_host=bind), base_url="http://[::1]:8000") as c:
        r = c.get("/api/info", headers={"Host": host})
        assert r.status_code == (200 if ok else 400), (host, r.text)
        assert_clean(r)
        if not ok:
            assert_one_line_error(r, "loopback")


def test_the_server_port_comes_from_serve_when_given(explorer):
    with TestClient(create_app(explorer, bind_host="::1", port=8123), base_url="http://[::1]:8000") as c:
        assert c.get("/api/info", headers={"Host": "[::1]:8123"}).status_code == 200
        assert c.get("/api/info", headers={"Host": "[::1]:8000"}).status_code == 400


def test_a_named_non_loopback_host_keeps_answering_any_host(explorer):
    assert host_policy("0.0.0.0") is None and host_policy("192.168.1.5") is None and host_policy("::") is None
    with TestClient(create_app(explorer, bind_host="0.0.0.0")) as c:
        assert c.get("/api/info", headers={"Host": "evil.com"}).status_code == 200


# -------------------------------------------------------------------------------- images, bombs


def png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height (8-bit gray) with a few bytes of pixel data: its
    header is valid, its pixels would cost width * height bytes to decode."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("width, height", [(100_000, 100_000), (3000, 3000), (2049, 16)])
def test_an_oversized_png_header_is_refused_before_decoding(client, monkeypatch, width, height):
    loads = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self.size))
    r = client.post("/api/analyze", content=png_header(width, height), headers=PNG)
    assert_one_line_error(r, "pixels", status=422)
    r = client.post("/api/encode", json={"png": base64.b64encode(png_header(width, height)).decode()})
    assert r.status_code == 422 and loads == [], (r.text, loads)


def test_bound_decoder_lowers_pillows_bomb_bound(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored afterwards
    Image.open(io.BytesIO(png_header(3000, 3000)))  # 9 megapixels: under Pillow's default bound
    preprocess.bound_decoder()
    assert Image.MAX_IMAGE_PIXELS == preprocess.MAX_SIDE**2
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(png_header(3000, 3000)))


# ------------------------------------------------------------------------------- disconnects


def _scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 5000),
    }


def _call(app, scope: dict, messages: list[dict]) -> list[dict]:
    """Run the ASGI app on one request whose body arrives as `messages`; return what it sent."""
    sent: list[dict] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


@pytest.mark.parametrize(
    "path, ctype", [("/api/analyze", b"image/png"), ("/api/encode", b"application/json")]
)
def test_a_client_that_hangs_up_mid_upload_is_not_an_internal_error(explorer, caplog, path, ctype):
    app = create_app(explorer)
    first = {"type": "http.request", "body": png_bytes(stroke())[:100], "more_body": True}
    with caplog.at_level(logging.DEBUG):
        sent = _call(app, _scope(path, [(b"content-type", ctype)]), [first, {"type": "http.disconnect"}])
    starts = [m["status"] for m in sent if m["type"] == "http.response.start"]
    assert all(s < 500 for s in starts), starts
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert loud == [], [r.getMessage() for r in loud]
    assert any("disconnected" in r.getMessage() for r in caplog.records)  # noted at debug level only


@pytest.mark.parametrize("length", [b"9" * 5000, b"\xb2", b"-1", b"12abc"])
def test_a_garbage_content_length_is_not_a_500(explorer, length):
    app = create_app(explorer)
    body = {"type": "http.request", "body": b'{"sampler": "gmm", "n": 1}', "more_body": False}
    sent = _call(
        app,
        _scope("/api/sample", [(b"content-type", b"application/json"), (b"content-length", length)]),
        [body],
    )
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    assert status == (413 if length == b"9" * 5000 else 200)


# ----------------------------------------------------------------------------------- the limiter


def test_heavy_requests_are_bounded_and_cheap_ones_do_not_wait(explorer, monkeypatch):
    """16 threads post uploads and sample requests whose model call blocks on a gate: exactly `slots`
    of them run at once, the rest queue, and /api/info answers while they are stuck."""
    slots, lock, gate = 3, threading.Lock(), threading.Event()
    running, peak = [0], [0]

    def blocking(real):
        def run(*args):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            try:
                assert gate.wait(30), "the gate was never opened"
                return real(*args)
            finally:
                with lock:
                    running[0] -= 1

        return run

    monkeypatch.setattr(explorer, "sample", blocking(explorer.sample))
    monkeypatch.setattr(explorer, "encode", blocking(explorer.encode))  # what analyze runs after decoding
    drawing = png_bytes(stroke())
    statuses: list[int] = []
    info: list[int] = []
    with TestClient(create_app(explorer, heavy_slots=slots)) as c:

        def heavy(k: int) -> None:
            if k % 2:
                r = c.post("/api/analyze", content=drawing, headers=PNG)
            else:
                r = c.post("/api/sample", json={"sampler": "gmm", "n": 4, "seed": k})
            statuses.append(r.status_code)

        threads = [threading.Thread(target=heavy, args=(k,), daemon=True) for k in range(16)]
        try:
            for t in threads:
                t.start()
            deadline = time.monotonic() + 30
            while running[0] < slots and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.3)  # time for more handlers to start, were the limiter letting them
            stuck = running[0]
            probe = threading.Thread(target=lambda: info.append(c.get("/api/info").status_code), daemon=True)
            probe.start()
            probe.join(10)
        finally:
            gate.set()  # also when an assertion fails, so that no request is left hanging
            for t in threads:
                t.join(60)
    assert stuck == slots, f"{stuck} heavy handlers ran at once; the limit is {slots}"
    assert info == [200], "/api/info waited behind the heavy requests"
    assert sorted(statuses) == [200] * 16 and peak[0] == slots, (statuses, peak)


# ---------------------------------------------------------------- held connections, slow bodies


@contextlib.contextmanager
def _served(app, max_connections: int):
    """uvicorn with the explorer's own settings (web.app.server_config) in a thread; yields its port."""
    import uvicorn

    from mnistlab.web.app import bind, server_config

    sock = bind("127.0.0.1", 0)
    srv = uvicorn.Server(server_config(app, max_connections))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert srv.started, "uvicorn did not start"
        yield sock.getsockname()[1]
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()


def _connect(port: int, data: bytes = b"") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    if data:
        s.sendall(data)
    return s


def _answer(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (b"" when it closed at once)."""
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def _until(condition, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def _closed(s: socket.socket, within: float = 5.0) -> bool:
    s.settimeout(within)
    try:
        return _answer(s) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


GET = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def test_a_new_connection_takes_the_place_of_the_longest_idle_one():
    """At the cap, a new connection closes the one that has waited longest for its headers; a
    connection busy with a request is never the one closed, and with every one busy the new one is."""
    gate, started = threading.Event(), []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/wait":
            started.append(scope["path"])
            while not gate.is_set():
                await asyncio.sleep(0.01)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    with _served(app, max_connections=3) as port:
        try:
            busy = _connect(port, b"GET /wait HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert _until(lambda: len(started) == 1)
            idle = [_connect(port), _connect(port, b"GET / HTTP/1.1\r\nHost: 1")]  # nothing; half a header
            time.sleep(0.2)
            fresh = _connect(port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # kept alive
            response = b""
            while not response.endswith(b"ok"):  # the whole response, so that nothing is left unread
                response += fresh.recv(100)
            assert response.startswith(b"HTTP/1.1 200"), "a real request was not answered at the cap"
            assert _closed(idle[0]), "the longest idle connection was kept"
            assert _answer(_connect(port, GET)).startswith(b"HTTP/1.1 200")
            assert _closed(idle[1]), "the half header was kept"  # it had waited longer than `fresh`
            held = [_connect(port, b"GET /wait HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") for _ in range(2)]
            assert _closed(fresh), "the idle keep-alive connection was kept"
            assert _until(lambda: len(started) == 3)
            assert _closed(_connect(port, GET)), "a connection past the cap was kept with none idle"
        finally:
            gate.set()
        for s in [busy, *held]:
            s.settimeout(5)
            assert s.recv(100).startswith(b"HTTP/1.1 200"), "a busy connection was closed"
            s.close()


def test_connection_cap_raises_the_open_file_limit_within_the_hard_limit(monkeypatch):
    from mnistlab.web import guard

    class Limits:
        RLIMIT_NOFILE, RLIM_INFINITY = 7, -1

        def __init__(self, soft, hard):
            self.now = (soft, hard)

        def getrlimit(self, which):
            return self.now

        def setrlimit(self, which, limits):
            assert limits[0] <= self.now[1], "soft limit raised past the hard limit"
            self.now = limits

    low = Limits(256, 300)  # the hard limit leaves room for fewer connections than asked
    monkeypatch.setattr(guard, "resource", low)
    assert guard.connection_cap(2048) == 300 - guard.FD_RESERVE and low.now == (300, 300)
    roomy = Limits(1024, 1 << 20)
    monkeypatch.setattr(guard, "resource", roomy)
    assert guard.connection_cap(2048) == 2048 and roomy.now == (2048 + guard.FD_RESERVE, 1 << 20)
    monkeypatch.setattr(guard, "resource", None)  # not POSIX
    assert guard.connection_cap(64) == 64


def _body_request(chunks: list[bytes], pause: float = 0.0, length: int | None = None, gate=None):
    """A Starlette request whose body arrives as `chunks`, `pause` seconds apart (or when `gate` is set)."""
    from starlette.requests import Request

    messages = [
        {"type": "http.request", "body": c, "more_body": k < len(chunks) - 1} for k, c in enumerate(chunks)
    ]

    async def receive():
        if gate is not None:
            while not gate.is_set():
                await asyncio.sleep(0.01)
        if pause:
            await asyncio.sleep(pause)
        return messages.pop(0)

    headers = [] if length is None else [(b"content-length", str(length).encode())]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive)


async def _read(bodies, request, limit: int = 10_000) -> bytes:
    async with bodies.receive(request, limit) as raw:
        return raw


def test_small_bodies_pass_while_every_slot_is_held(monkeypatch):
    from mnistlab.web import app
    from mnistlab.web.errors import ApiError

    monkeypatch.setattr(app, "BODY_WAIT_S", 0.2)
    small, big = app.SMALL_BODY_BYTES, app.SMALL_BODY_BYTES + 1

    async def scenario():
        bodies = app.Bodies(slots=1)
        async with bodies.receive(_body_request([b"x" * big], length=big), 2 * big) as raw:
            assert len(raw) == big and bodies.slots.value == 0  # held until the answer is made
            assert await _read(bodies, _body_request([b"y" * small], length=small), big) == b"y" * small
            with pytest.raises(ApiError) as busy:  # big or of unknown length: waits, then 503
                await _read(bodies, _body_request([b"z"]))
            assert busy.value.status == 503 and busy.value.close
        assert bodies.slots.value == 1

    anyio.run(scenario)


def test_bodies_received_at_once_are_bounded():
    from mnistlab.web import app
    from mnistlab.web.errors import ApiError

    async def scenario():
        bodies, gate = app.Bodies(slots=4, most=2), threading.Event()
        results = []

        async def one():
            results.append(await _read(bodies, _body_request([b"ab"], length=2, gate=gate)))

        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            tg.start_soon(one)
            await anyio.sleep(0.05)
            assert bodies.receiving == 2
            with pytest.raises(ApiError) as many:  # refused at once, not after a wait
                with anyio.fail_after(1):
                    await _read(bodies, _body_request([b"cd"], length=2))
            assert many.value.status == 503 and many.value.close
            gate.set()
        assert results == [b"ab", b"ab"] and bodies.receiving == 0

    anyio.run(scenario)


def test_a_body_must_keep_a_minimum_rate_after_its_grace(monkeypatch):
    from mnistlab.web import app
    from mnistlab.web.errors import ApiError

    monkeypatch.setattr(app, "BODY_TIMEOUT_S", 0.2)
    monkeypatch.setattr(app, "BODY_MIN_RATE", 1000)  # bytes a second

    async def scenario():
        bodies = app.Bodies()
        t0 = time.monotonic()
        steady = await _read(bodies, _body_request([b"x" * 100] * 8, pause=0.05))  # 2,000 bytes/s
        assert len(steady) == 800 and time.monotonic() - t0 > 0.3  # past the grace, at the rate
        t0 = time.monotonic()
        with pytest.raises(ApiError) as slow:  # 20 bytes a second
            await _read(bodies, _body_request([b"x"] * 100, pause=0.05))
        assert slow.value.status == 408 and slow.value.close and time.monotonic() - t0 < 1.0

    anyio.run(scenario)


def test_a_refused_body_closes_the_connection(client):
    r = client.post("/api/sample", content=b" " * (parse.MAX_BODY_BYTES + 1), headers=JSON)
    assert_one_line_error(r, "too large", status=413)
    assert r.headers["connection"] == "close"
    r = client.post("/api/sample", json={"sampler": "nope"})  # a read body: the connection stays
    assert r.status_code == 422 and r.headers.get("connection") != "close"


def test_slow_bodies_and_idle_connections_do_not_starve_real_requests(explorer, monkeypatch):
    """A real server with low limits: idle connections past the cap, a slow body in the only slot and
    another waiting for it; /api/info and a small POST are answered meanwhile, the slow ones are cut
    off (408, 503) and their connections closed."""
    from mnistlab.web import app

    monkeypatch.setattr(app, "BODY_TIMEOUT_S", 1.5)
    monkeypatch.setattr(app, "BODY_WAIT_S", 1.0)
    slow = b"POST /api/sample HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    slow += b"Content-Length: 200000\r\n\r\n{"
    small = json.dumps({"sampler": "gmm", "n": 1}).encode()
    post = b"POST /api/sample HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    post += b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(small), small)
    info = b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    bodies = app.Bodies(slots=1, most=4)
    with _served(create_app(explorer, bodies=bodies), max_connections=8) as port:
        first = _connect(port, slow)
        assert _until(lambda: bodies.slots.value == 0)
        waiting = _connect(port, slow)
        assert _until(lambda: bodies.receiving == 2)  # headers read: no longer an idle connection
        idle = [_connect(port) for _ in range(8)]
        t0 = time.monotonic()
        assert _answer(_connect(port, info)).startswith(b"HTTP/1.1 200")
        assert _answer(_connect(port, post)).startswith(b"HTTP/1.1 200")
        assert time.monotonic() - t0 < 1.0, "real requests waited behind the held ones"
        for s, status in ((waiting, b"503"), (first, b"408")):
            s.settimeout(5)
            answer = _answer(s)  # ends when the server closes the connection
            assert answer.startswith(b"HTTP/1.1 " + status) and b"connection: close" in answer.lower()
        assert sum(_closed(s, 0.1) for s in idle) >= 2  # made room for the two real requests
        for s in [first, waiting, *idle]:
            s.close()

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
import io
import json
import logging
import shutil
import struct
import threading
import time
import zlib
from pathlib import Path
from urllib.parse import quote

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

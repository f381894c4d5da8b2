"""The explorer's guard against hostile clients: which Host and Origin headers a bind accepts and
which content types a POST may carry (the middleware `Guard`), so that no other site can drive the
page's API (DNS rebinding, cross-origin simple POSTs); and how many connections it holds and how long
each may take to send its headers (uvicorn's protocol, `timed_protocol`), so that connections held
open by someone else cannot starve real requests."""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Callable

try:
    import resource
except ImportError:  # not POSIX (Windows): no limit on open files to raise
    resource = None

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from mnistlab.web.errors import one_line

UPLOAD_PATHS = frozenset({"/api/analyze"})  # their body is the image file itself (the page sends image/png)
# GETs that run a model or serve a page (downloads.py): another site's <img> or <iframe> may not
# trigger them (browsers send Sec-Fetch-Site; a typed address or a curl sends "none" or nothing).
SAME_SITE_PATHS = frozenset({"/api/sample.png", "/api/sample.npy", "/report"})
_PORT = re.compile(r"[0-9]{1,5}")


def split_host(value: str) -> tuple[str, int | None] | None:
    """A Host header or an Origin's authority -> (lower-case host, port or None), or None when it is
    malformed. IPv6 addresses come in brackets ("[::1]:8000"); the brackets are dropped."""
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    elif value.count(":") > 1:  # an IPv6 address without brackets is not a valid Host
        return None
    else:
        host, _, port = value.partition(":")
    if not host or (port and not _PORT.fullmatch(port)):
        return None
    return host.lower(), int(port) if port else None


DEFAULT_PORTS = {"http": 80, "https": 443}


def same_origin(origin: str, host: str, scheme: str) -> bool:
    """Whether an Origin header ("http://127.0.0.1:8000") names the scheme, host and port that this
    request was sent to (its Host header). "null" (a sandboxed or privacy-stripped origin) never does."""
    o_scheme, sep, authority = origin.partition("://")
    o_scheme = o_scheme.lower()
    if not sep or o_scheme not in DEFAULT_PORTS or o_scheme != scheme or "/" in authority:
        return False
    theirs, ours = split_host(authority), split_host(host)
    if theirs is None or ours is None:
        return False
    default = DEFAULT_PORTS[scheme]
    return (theirs[0], theirs[1] or default) == (ours[0], ours[1] or default)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Guard:
    """Checks every HTTP request before routing it:

    - Host (DNS rebinding: a page on evil.com whose name now resolves to 127.0.0.1 reaches this server
      with `Host: evil.com`): `host_ok(host, port, server_port)` must accept the Host header; 400.
    - Origin (a page on another site posting here): when the browser sends one, it must be this
      server's own origin; 403. Browsers send Origin on every POST and every cross-origin fetch().
    - Content-Type of a request with a body: application/json, or an image/* type on the upload
      routes; 415. Cross-origin "simple" requests (no CORS preflight) can only carry text/plain,
      form or multipart types, so these never run a handler even in a browser that sends no Origin.
      A request without Content-Type is let through: a browser sends none only for a fetch() of an
      untyped body, and that carries Origin; curl and scripts may omit it.
    - Sec-Fetch-Site on SAME_SITE_PATHS: "cross-site" or "same-site" (an <img> or a frame on
      another page, which sends no Origin on a GET); 403.
    """

    def __init__(
        self, app: ASGIApp, host_ok: Callable[[str, int | None, int | None], bool] | None, describe: str = ""
    ) -> None:
        self.app, self.host_ok, self.describe = app, host_ok, describe

    def refuse(self, scope: Scope) -> tuple[int, str] | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if self.host_ok is not None:
            parsed = split_host(host)
            server_port = (scope.get("server") or (None, None))[1]
            if parsed is None or not self.host_ok(parsed[0], parsed[1], server_port):
                return 400, f"Host {host[:60]!r} refused: this server answers only {self.describe}"
        origin = headers.get("origin")
        if origin is not None and not same_origin(origin, host, scope.get("scheme", "http")):
            return (
                403,
                f"cross-origin request from {origin[:60]!r} refused: only the explorer's own page may call it",
            )
        fetch_site = headers.get("sec-fetch-site", "")
        if scope["path"] in SAME_SITE_PATHS and fetch_site in ("cross-site", "same-site"):
            return 403, f"{scope['path']} refused: requested by another site (Sec-Fetch-Site: {fetch_site})"
        if scope["method"] not in ("GET", "HEAD") and "content-type" in headers:
            media = headers["content-type"].partition(";")[0].strip().lower()
            if scope["path"] in UPLOAD_PATHS:
                if not media.startswith("image/"):
                    return (
                        415,
                        f"{scope['path']} takes the image file itself: send Content-Type: image/png, not {media[:40]!r}",
                    )
            elif media != "application/json":
                return 415, f"send the body as JSON with Content-Type: application/json, not {media[:40]!r}"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (refused := self.refuse(scope)) is not None:
            status, message = refused
            await JSONResponse({"error": one_line(message)}, status_code=status)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def host_policy(bind_host: str | None, port: int | None = None):
    """For a loopback bind (127.0.0.0/8, ::1, localhost): a Host check that accepts loopback names and
    addresses only, with the server's port (`port`, else the one the request came in on) or none.
    Any other bind (named with --host) answers every Host: None."""
    if bind_host is None or not is_loopback(bind_host):
        return None

    def ok(host: str, host_port: int | None, server_port: int | None) -> bool:
        return is_loopback(host) and host_port in (None, port if port is not None else server_port)

    return ok


# ---------------------------------------------------------------------------------- connections

# Seconds a client has to send a request's headers, from the moment it connects or its previous
# response was sent. uvicorn times only the idle wait between keep-alive requests, and any byte
# received cancels that: a client sending its headers a byte at a time, or not at all, held its
# connection forever (1,100 such connections starved real requests).
HEADER_TIMEOUT_S = 10.0
# Each connection's time limits (this one, and the bodies' in app.py) are drawn from limit x [1, 1 +
# TIMEOUT_SPREAD]: connections opened together (by one client, in one burst) are then not all closed,
# and reopened, in the same instant, a burst that a real request arriving then would wait behind.
TIMEOUT_SPREAD = 0.25


def spread(seconds: float) -> float:
    """`seconds` stretched by a random factor in [1, 1 + TIMEOUT_SPREAD]."""
    return seconds * (1 + TIMEOUT_SPREAD * random.random())


# Connections held at once. Past it a new connection closes the one that has waited longest for a
# request's headers (a real client sends them at once, so the idle ones held by someone else go
# first); when every connection is busy with a request, the new one is closed. Each idle connection
# costs a few KB, up to MAX_HEADER_BYTES while its headers arrive; past the cap every new connection
# costs a close and a reopen, so the cap is high. uvicorn's own `limit_concurrency` is not used: it
# counts idle connections too, so 200 held ones made every real request a 503.
MAX_CONNECTIONS = 4096
MAX_HEADER_BYTES = 16 * 1024  # a request's line and headers (h11's own default, stated)
# File descriptors kept for everything but connections (the run's files, logs, torch's own).
FD_RESERVE = 128


def connection_cap(most: int = MAX_CONNECTIONS) -> int:
    """Raise this process's soft limit of open files toward `most` + FD_RESERVE (never past the hard
    limit) and return how many connections it can hold: `most`, or fewer when the limit is lower. A
    server that runs out of descriptors stops accepting for a second at a time (asyncio), so the cap
    must stay under the limit."""
    if resource is None:  # not POSIX: no limit to read or raise
        return most
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = most + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < want:
        soft = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        except (OSError, ValueError):
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return most
    return max(1, min(most, soft - FD_RESERVE))


def timed_protocol(max_connections: int = MAX_CONNECTIONS) -> type:
    """uvicorn's h11 protocol with HEADER_TIMEOUT_S (a connection whose request headers have not all
    arrived that long after it opened, or after its last response, is closed) and at most
    `max_connections` connections (the oldest one waiting for headers makes room for a new one)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    # This server's connections, in the order they began to wait for a request's headers (dicts keep
    # insertion order; a connection moves to the end each time it begins to wait again).
    held: dict[H11Protocol, None] = {}

    class GuardedProtocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm_header_timer()
            if len(held) > max_connections:
                self._make_room()

        def on_response_complete(self) -> None:
            # Armed before uvicorn starts a pipelined request (in super()), so that request is not
            # taken for one still waiting for its headers.
            self._arm_header_timer()
            super().on_response_complete()

        def connection_lost(self, exc) -> None:
            timer = getattr(self, "_header_timer", None)
            if timer is not None:
                timer.cancel()
            held.pop(self, None)
            super().connection_lost(exc)

        def waiting(self) -> bool:
            """No request since the timer was armed: uvicorn starts a new request cycle once a
            request's headers are complete."""
            return self.cycle is self._armed_cycle

        def _arm_header_timer(self) -> None:
            timer = getattr(self, "_header_timer", None)
            if timer is not None:
                timer.cancel()
            self._armed_cycle = self.cycle
            self._header_timer = self.loop.call_later(
                spread(HEADER_TIMEOUT_S), self._header_timeout, self.cycle
            )
            held.pop(self, None)
            held[self] = None

        def _header_timeout(self, cycle) -> None:
            if self.cycle is cycle:
                self._close()

        def _make_room(self) -> None:
            oldest = next((c for c in held if c is not self and c.waiting()), None)
            (oldest or self)._close()

        def _close(self) -> None:
            held.pop(self, None)  # at once: the next connection in this tick must not pick it again
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedProtocol

"""The one error type of the explorer: an HTTP status and a one-line message for the client.

Everything the server checks (request shapes, value ranges, images, missing pieces of a run folder)
raises `ApiError`; the app turns it into `{"error": message}` with that status, never a traceback.
"""

from __future__ import annotations

import re

MAX_MESSAGE = 300  # characters: messages quote client input (paths, names), which can be any size

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` with control characters (newlines included) turned into spaces and cut to `limit`
    characters: a message may quote a percent-decoded path or a field, and must stay one short line.
    A lone surrogate (JSON allows "\\ud800") is escaped: the UTF-8 encoding of the response would fail on it."""
    text = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ApiError(Exception):
    """A client-facing error: `status` is a 4xx code, `message` one line saying what to change.
    `close`: the answer closes the connection (a request refused before its body was read: what is
    left of the body would otherwise keep the connection busy)."""

    def __init__(self, status: int, message: str, close: bool = False):
        message = one_line(message)
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close

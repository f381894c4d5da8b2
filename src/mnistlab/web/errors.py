"""The one error type of the explorer: an HTTP status and a one-line message for the client.

Everything the server checks (request shapes, value ranges, images, missing pieces of a run folder)
raises `ApiError`; the app turns it into `{"error": message}` with that status, never a traceback.
"""

from __future__ import annotations


class ApiError(Exception):
    """A client-facing error: `status` is a 4xx code, `message` one line saying what to change."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

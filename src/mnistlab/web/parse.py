"""Checking JSON request bodies: each helper returns a clean value or raises ApiError with a 4xx and one
line naming the field (400 malformed JSON or a wrong type, 422 a value out of range or of the wrong
size, 413 too many bytes). Pure functions of the parsed body, so the tests can call them directly.

A body is bounded before it is trusted: its size (413) before parsing, each number's length while
parsing (a 5,000-digit integer would otherwise hit Python's int-conversion limit, a ValueError), and
the length of each list, the keys of each object and the nesting depth right after (422).

Images travel as 28x28 arrays of numbers in 0..255 (what the page draws and what the API returns),
or as `png`: a base64 image file of any size, centred and scaled the MNIST way by `preprocess`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import numpy as np

from mnistlab.web.errors import ApiError
from mnistlab.web.preprocess import MAX_UPLOAD_BYTES, preprocess_bytes

MAX_BODY_BYTES = 2 * MAX_UPLOAD_BYTES  # a JSON body: a base64 image (4/3 of its bytes) and a little more
# A double in shortest round-trip form (what JSON.stringify and json.dumps write) has at most 24
# characters and a seed 10 digits; 40 leaves room for hand-written numbers such as 0.50000000000000000.
MAX_NUMBER_CHARS = 40
MAX_LIST = 4096  # the longest list a request needs: a latent code (get_code's bound); an image is 28x28
MAX_KEYS = 32  # the widest object a request needs has 3 keys (denoise: image|png, sigma, seed)
MAX_DEPTH = 6  # the deepest body a request needs: {"a": {"image": [[...]]}}, 4 levels


def _bounded(convert):
    """A json.loads number hook that refuses a number longer than MAX_NUMBER_CHARS before converting it."""

    def hook(text: str):
        if len(text) > MAX_NUMBER_CHARS:
            raise ApiError(
                422, f"a number in the body has {len(text)} characters; at most {MAX_NUMBER_CHARS}"
            )
        return convert(text)

    return hook


_parse_int, _parse_float = _bounded(int), _bounded(float)


def _check_shape(body: Any) -> None:
    """422 for a list longer than MAX_LIST, an object with more than MAX_KEYS keys, or nesting deeper
    than MAX_DEPTH. Iterative, so a deep body cannot exhaust the stack here."""
    stack = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            items = list(value.values())
            if len(items) > MAX_KEYS:
                raise ApiError(422, f"an object in the body has {len(items)} keys; at most {MAX_KEYS}")
        elif isinstance(value, list):
            items = value
            if len(items) > MAX_LIST:
                raise ApiError(422, f"a list in the body has {len(items)} items; at most {MAX_LIST}")
        else:
            continue
        if depth > MAX_DEPTH:
            raise ApiError(422, f"the body is nested more than {MAX_DEPTH} levels deep")
        stack.extend((v, depth + 1) for v in items if isinstance(v, (dict, list)))


def json_body(raw: bytes) -> dict[str, Any]:
    """The body's JSON object, bounded (see the module docstring), or a 4xx ApiError."""
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, f"request body too large: {len(raw)} bytes, at most {MAX_BODY_BYTES}")
    try:
        body = json.loads(raw or b"{}", parse_int=_parse_int, parse_float=_parse_float)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"malformed JSON: {e}") from None
    except RecursionError:
        raise ApiError(400, "malformed JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the JSON body must be an object, got {type(body).__name__}")
    _check_shape(body)
    return body


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _float(v: int | float) -> float:
    try:
        return float(v)
    except OverflowError:  # a JSON integer beyond float range
        return math.inf


def _floats(value: list, key: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (OverflowError, ValueError, TypeError):
        raise ApiError(422, f"{key!r} holds a number beyond float range") from None


def get_int(body: dict, key: str, default: int | None, low: int, high: int) -> int:
    v = body.get(key, default)
    if v is None:
        raise ApiError(422, f"missing field {key!r}")
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ApiError(400, f"{key!r} must be a whole number, got {json.dumps(v)[:40]}")
    if not low <= v <= high:
        raise ApiError(422, f"{key!r} must be in {low}..{high}, got {v}")
    return v


def get_float(body: dict, key: str, default: float, low: float, high: float) -> float:
    v = body.get(key, default)
    if not _is_number(v) or not math.isfinite(_float(v)):
        raise ApiError(400, f"{key!r} must be a finite number, got {json.dumps(v)[:40]}")
    if not low <= v <= high:
        raise ApiError(422, f"{key!r} must be in [{low:g}, {high:g}], got {v:g}")
    return float(v)


def get_str(body: dict, key: str) -> str:
    v = body.get(key)
    if not isinstance(v, str):
        raise ApiError(400 if key in body else 422, f'{key!r} must be a string, e.g. "gmm"')
    return v


def get_code(value: Any, key: str = "code") -> np.ndarray:
    """A list of finite numbers -> (1, d) float32 (length and range are the explorer's checks)."""
    if not isinstance(value, list) or not value:
        raise ApiError(400, f"{key!r} must be a non-empty list of numbers")
    if len(value) > 4096:
        raise ApiError(422, f"{key!r} has {len(value)} numbers; no latent is that large")
    if not all(_is_number(v) for v in value):
        raise ApiError(400, f"{key!r} must hold numbers only")
    code = _floats(value, key)
    if not np.isfinite(code).all():
        raise ApiError(422, f"{key!r} holds a non-finite number")
    return code.astype(np.float32)[None]


def get_pixels(value: Any, key: str = "image") -> np.ndarray:
    """28 rows of 28 numbers in 0..255 -> (28, 28) float32 in [0, 1], used as it is."""
    if (
        not isinstance(value, list)
        or len(value) != 28
        or not all(isinstance(r, list) and len(r) == 28 for r in value)
    ):
        raise ApiError(422, f"{key!r} must be 28 rows of 28 numbers in 0..255 (or send 'png' to be resized)")
    if not all(_is_number(v) for row in value for v in row):
        raise ApiError(400, f"{key!r} must hold numbers only")
    x = _floats(value, key)
    if not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 255):
        raise ApiError(422, f"{key!r} values must lie in 0..255")
    return (x / 255.0).astype(np.float32)


def get_png(value: Any, key: str = "png") -> np.ndarray:
    """A base64 image file (a data: URL prefix is allowed) -> (28, 28) float32, MNIST-style."""
    if not isinstance(value, str):
        raise ApiError(400, f"{key!r} must be a base64 string of a PNG file")
    if value.startswith("data:"):
        value = value.partition(",")[2]
    if len(value) > MAX_BODY_BYTES:
        raise ApiError(413, f"{key!r} too large: at most {MAX_UPLOAD_BYTES} bytes of image")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{key!r} is not valid base64") from None
    return preprocess_bytes(data)


def get_image(body: dict) -> np.ndarray:
    """The request's one image: `image` (28x28 in 0..255, used as is) or `png` (preprocessed)."""
    has = [k for k in ("image", "png") if k in body]
    if len(has) != 1:
        raise ApiError(422, "send exactly one of 'image' (28x28 numbers in 0..255) or 'png' (base64 file)")
    return get_pixels(body["image"]) if has[0] == "image" else get_png(body["png"])


def to_uint8_list(images: np.ndarray) -> list:
    return np.asarray(images, dtype=np.uint8).tolist()

"""Image bytes (a drawn canvas or an uploaded file) -> the 28x28 digit a model trained on MNIST expects.

MNIST's own recipe (LeCun et al.): the digit's bounding box is scaled to fit 20x20 keeping its aspect
ratio (anti-aliased), then placed in a 28x28 field so that its centre of mass sits at the centre.
Digits are light ink on a dark background; a dark digit on light paper is inverted first.

Checks, each a one-line ApiError: too many bytes (413), not a PNG/JPEG/GIF/BMP (415), too small or
too large in pixels, or no ink at all (422). Pillow reads the header before decoding any pixel, so an
oversized image (a "decompression bomb") is refused before it costs memory: `decode_image` checks the
sides from the header, and `bound_decoder` (called by the server) lowers Pillow's own bound too.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from mnistlab.web.errors import ApiError

MAX_UPLOAD_BYTES = 1 << 20  # 1 MiB: a 280x280 canvas PNG is ~10 KB, a phone photo resized is < 1 MB
MIN_SIDE, MAX_SIDE = 8, 2048  # pixels, each side
FORMATS = ("PNG", "JPEG", "GIF", "BMP")
BOX = 20  # the digit's bounding box is scaled to fit BOX x BOX
SIZE = 28
INK_THRESHOLD = 0.1  # ink (0..1) below this is background when finding the bounding box


def bound_decoder() -> None:
    """Lower Pillow's decompression-bomb bound (default 89 megapixels) to the largest upload accepted,
    for the whole process: Image.open then raises for more than twice that many pixels before
    reading one, for any image the process opens, even on a path that forgets the side check below.
    The server calls it; a library import does not, as other code in the process may open large images."""
    Image.MAX_IMAGE_PIXELS = MAX_SIDE * MAX_SIDE  # Pillow warns above this and raises above twice it


def decode_image(data: bytes) -> np.ndarray:
    """Bytes of an image file -> grayscale ink (H, W) float32 in [0, 1], light digit on dark ground."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise ApiError(413, f"image too large: {len(data)} bytes, at most {MAX_UPLOAD_BYTES}")
    if not data:
        raise ApiError(422, "empty upload: send the bytes of a PNG image")
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
    except Image.DecompressionBombError:
        raise ApiError(422, "image has too many pixels") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise ApiError(415, f"not an image: send a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} file") from None
    w, h = img.size
    if not (MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE):
        raise ApiError(422, f"image is {w}x{h} pixels; each side must be {MIN_SIDE} to {MAX_SIDE}")
    try:
        img.seek(0)  # the first frame of a GIF
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0  # (H, W, 4)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise ApiError(415, "the image file is damaged or truncated") from None
    return to_ink(rgba)


def to_ink(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) RGBA in [0, 1] -> ink (H, W) in [0, 1].

    Transparent pixels are background: the visible strokes are composited on the background of the
    opposite brightness (light strokes on black, dark strokes on white). Then, if the border is mostly
    light, the picture is a dark digit on light paper and is inverted."""
    rgb, alpha = rgba[..., :3], rgba[..., 3]
    gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma, (H, W)
    if alpha.min() < 1.0:
        weight = alpha.sum()
        light_strokes = weight > 0 and float((gray * alpha).sum() / weight) > 0.5
        background = 0.0 if light_strokes else 1.0
        gray = gray * alpha + background * (1.0 - alpha)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if float(np.median(border)) > 0.5:
        gray = 1.0 - gray
    return np.clip(gray, 0.0, 1.0).astype(np.float32)


def mnist_style(ink: np.ndarray) -> np.ndarray:
    """Ink (H, W) in [0, 1] -> (28, 28) float32 in [0, 1]: bounding box scaled to fit 20x20 (aspect
    kept), centre of mass moved to the centre of the 28x28 field (whole pixels, as MNIST did)."""
    mask = ink > INK_THRESHOLD
    if not mask.any():
        raise ApiError(422, "the image has no digit in it (no ink found): draw or upload a digit")
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # (h, w)
    h, w = crop.shape
    scale = BOX / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    # Pillow's float mode "F" resizes without 8-bit rounding; Lanczos anti-aliases when shrinking.
    small = np.asarray(Image.fromarray(crop).resize((new_w, new_h), Image.Resampling.LANCZOS))
    small = np.clip(small, 0.0, 1.0)  # Lanczos rings slightly past the input range
    total = float(small.sum())
    if total <= 0:
        raise ApiError(422, "the image has no digit in it (no ink after scaling): draw a larger digit")
    cy = float((small.sum(1) * np.arange(new_h)).sum() / total)  # centre of mass, pixel-index units
    cx = float((small.sum(0) * np.arange(new_w)).sum() / total)
    centre = SIZE / 2.0  # 14.0 in index units: where MNIST's centres of mass sit (test set mean 13.99, 14.01)
    top = int(np.clip(round(centre - cy), 0, SIZE - new_h))
    left = int(np.clip(round(centre - cx), 0, SIZE - new_w))
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    out[top : top + new_h, left : left + new_w] = small
    return out


def preprocess_bytes(data: bytes) -> np.ndarray:
    """Image file bytes -> (28, 28) float32 in [0, 1], MNIST-style (see the module docstring)."""
    return mnist_style(decode_image(data))

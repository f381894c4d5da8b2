"""Image bytes (a drawn canvas or an uploaded file) -> the 28x28 digit a model trained on MNIST expects.

MNIST's own recipe (LeCun et al.): the digit's bounding box is scaled to fit 20x20 keeping its aspect
ratio (anti-aliased), then placed in a 28x28 field so that its centre of mass sits at the centre.
Digits are light ink on a dark, clean background. A canvas drawing already is; a photo of a digit on
paper is not (grey paper, uneven light, dark ink), so the picture is normalised first (`to_ink`): the
background is estimated from the image's border (a plane fitted to it, so a light gradient across the
page is removed too), the ink is what differs from it (dark ink on light paper is turned into light
ink on black), the contrast is stretched so the ink's peak is 1, and what is no stronger than the
border's own noise is cleared, so no grey box of paper is kept around the digit.

Checks, each a one-line ApiError: too many bytes (413), not a PNG/JPEG/GIF/BMP (415), too small or
too large in pixels, no ink at all, or a picture that does not look like one digit on a plain
background (too little contrast between ink and background, ink over much of the border or of the
whole image) (422).
Pillow reads the header before decoding any pixel, so an oversized image (a "decompression bomb") is
refused before it costs memory: `decode_image` checks the sides from the header, and `bound_decoder`
(called by the server) lowers Pillow's own bound too.
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
# The weakest ink accepted, in the 0..1 grey scale: ink and background closer than this are not a
# digit one can read (a blank or washed-out photo).
MIN_CONTRAST = 0.12
# The background's noise (a robust spread of the border's residual after the plane is removed) times
# this is cleared as paper: for Gaussian-like noise, five spreads leave about one pixel in three
# million above it, so no speck of paper widens the digit's bounding box.
NOISE_SPREADS = 5.0
# Ink over more than this share of the image's border: not one digit on a plain background (the
# photo shows the page's edge, a table, or is cropped into the digit). A drawn 0 that touches all
# four sides of the pad covers about a third of its border, so this refuses no drawing.
MAX_BORDER_INK = 0.5
# Ink over more than this share of the whole image is not a digit's strokes but a surface (a light
# page on a dark table, taken as ink on a dark background): MNIST's strokes cover about a fifth of
# the digit's own box, and a canvas drawing far less of the pad.
MAX_INK_AREA = 0.5


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
    """(H, W, 4) RGBA in [0, 1] -> ink (H, W) in [0, 1], light on a black background.

    Transparent pixels are background: the visible strokes are composited on the background of the
    opposite brightness (light strokes on black, dark strokes on white). Then `normalise` removes the
    background (paper grey, a light gradient) and stretches the ink."""
    rgb, alpha = rgba[..., :3], rgba[..., 3]
    gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma, (H, W)
    if alpha.min() < 1.0:
        weight = alpha.sum()
        light_strokes = weight > 0 and float((gray * alpha).sum() / weight) > 0.5
        background = 0.0 if light_strokes else 1.0
        gray = gray * alpha + background * (1.0 - alpha)
    return normalise(gray)


def _border(a: np.ndarray) -> np.ndarray:
    """The outermost pixels of (H, W), each once: (2H + 2W - 4,)."""
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])


def background_plane(gray: np.ndarray) -> np.ndarray:
    """The background (H, W) under `gray` (H, W): the plane a + b*x + c*y that fits the border's
    pixels best in the least-squares sense (a page lit from one side is a gradient; a canvas, a
    constant), fitted twice: the second time without the border pixels far from the first plane (a
    stroke that runs off the edge is not background)."""
    h, w = gray.shape
    x = np.linspace(0.0, 1.0, w, dtype=np.float32)  # (W,) column positions, 0 to 1
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)  # (H,)
    bx = np.concatenate([x, x, np.zeros(h - 2, np.float32), np.ones(h - 2, np.float32)])  # as _border
    by = np.concatenate([np.zeros(w, np.float32), np.ones(w, np.float32), y[1:-1], y[1:-1]])
    design = np.stack([np.ones_like(bx), bx, by], 1)  # (B, 3)
    edge = _border(gray)
    keep = np.ones(len(edge), bool)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(design[keep], edge[keep], rcond=None)
        r = edge - design @ coef  # (B,) the border's residual
        centre = np.median(r)
        keep = np.abs(r - centre) <= 3.0 * _spread(r) + 0.02
    return (coef[0] + coef[1] * x[None, :] + coef[2] * y[:, None]).astype(np.float32)  # (H, W)


def _spread(values: np.ndarray) -> float:
    """A robust standard deviation: 1.4826 x the median absolute deviation (equal for Gaussian noise)."""
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def _peak(ink: np.ndarray) -> float:
    """The ink's strength: the largest mean of a 2x2 block, so one hot pixel (sensor noise, JPEG
    ringing) does not set the scale."""
    h, w = (ink.shape[0] // 2) * 2, (ink.shape[1] // 2) * 2
    blocks = ink[:h, :w].reshape(h // 2, 2, w // 2, 2).mean((1, 3))  # (H/2, W/2)
    return float(blocks.max())


def normalise(gray: np.ndarray) -> np.ndarray:
    """Grey levels (H, W) in [0, 1] -> ink (H, W) in [0, 1]: the background plane (`background_plane`)
    removed, dark-on-light turned light-on-dark (the ink is on the side of the background that the
    image reaches farther), the ink's peak stretched to 1, and whatever is no stronger than the
    border's noise cleared. A clean canvas drawing (black border, white strokes) comes out as it went
    in. ApiError 422 when there is no ink, too little contrast, or ink over much of the border."""
    residual = gray - background_plane(gray)  # (H, W), about 0 on the background
    noise = _spread(_border(residual))  # the paper's grain, JPEG noise; 0 on a clean canvas
    dark, light = np.maximum(-residual, 0.0), np.maximum(residual, 0.0)
    ink = dark if _peak(dark) > _peak(light) else light  # dark ink on light paper: inverted
    peak = _peak(ink)
    if peak <= 0.0:
        raise ApiError(422, "the image has no digit in it (no ink found): draw or upload a digit")
    if peak < MIN_CONTRAST:
        raise ApiError(
            422,
            f"the image has too little contrast to find a digit: ink and background differ by "
            f"{100 * peak:.0f}% of full scale, at least {100 * MIN_CONTRAST:.0f}% is needed",
        )
    floor = min(1.0, NOISE_SPREADS * noise / peak)
    if floor >= 0.5:
        raise ApiError(
            422,
            "this does not look like one digit on a plain background: the background varies about as "
            "much as the ink differs from it (take the photo in even light, or crop it to the digit and "
            "its paper)",
        )
    out = np.clip((ink / peak - floor) / (1.0 - floor), 0.0, 1.0).astype(np.float32)
    area = float((out > 0.5).mean())
    if area > MAX_INK_AREA:
        raise ApiError(
            422,
            f"this does not look like one digit on a plain background: ink covers {100 * area:.0f}% of "
            "the image (a page on a darker surface? crop the photo to the digit and its paper)",
        )
    covered = float((_border(out) > 0.5).mean())  # ink on the border, after the background is gone
    if covered > MAX_BORDER_INK:
        raise ApiError(
            422,
            f"this does not look like one digit on a plain background: ink covers {100 * covered:.0f}% "
            "of the image's border (crop the photo to the digit and its paper)",
        )
    return out


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

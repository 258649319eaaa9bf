"""Planting Clever-Hans artifacts into images (for the demo, tests and the detection benchmark).

Every function takes a batch of uint8 images ``(n, H, W)`` or ``(n, H, W, C)`` and returns a modified
copy plus the boolean masks ``(n, H, W)`` of the pixels the artifact covers, so the ground truth of
"where the shortcut is" is known exactly.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Artifacts drawn at a fixed position with a per-pixel coverage (alpha): lines, text, blob, texture,
#: tag, ring. Each is sized for a 28×28 image and placed relative to the image border.
SHAPED = ("hline", "vline", "text_a", "text_tm", "blob", "checker", "tag", "ring")
#: Artifacts that move: drawn at a different place (and size) in every image.
MOVING = ("moving_text", "moving_checker")
ARTIFACTS = (
    "corner_square",
    "random_square",
    "background_square",
    "frame",
    "glyph",
    "brightness",
    "colour_cast",
    *SHAPED,
    *MOVING,
)
#: The colour cast's shift per RGB channel (uint8 levels): a warm tint over the whole image.
CAST = (48, 0, -48)

#: Debian fonts (packages fonts-dejavu-core and fonts-liberation) used by the text artifacts.
FONTS = {
    "text_a": ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", "A", 10),
    "text_tm": ("/usr/share/fonts/truetype/liberation/LiberationSerif-Bold.ttf", "TM", 9),
}

#: The moving text watermark: text in a Debian font, font sizes (pixels on a 28-row image) drawn from.
MOVING_TEXT = ("/usr/share/fonts/truetype/liberation/LiberationSerif-Bold.ttf", "TM", (7, 11))
#: Side of the moving checkerboard patch on a 28-row image.
CHECKER_SIDE = 6

#: A background spot for ``background_square``: every pixel of the square and of a ``_BG_MARGIN``-wide
#: ring around it at most this bright (uint8), so the square stands on empty background.
_BG_MAX = 40
_BG_MARGIN = 1

# A 5×5 glyph (an "X" with a bar): a small text-like stamp.
_GLYPH = np.array(
    [
        [1, 0, 0, 0, 1],
        [0, 1, 0, 1, 0],
        [0, 0, 1, 0, 0],
        [0, 1, 0, 1, 0],
        [1, 1, 1, 1, 1],
    ],
    dtype=bool,
)


@dataclass
class Planted:
    """Result of :func:`plant`.

    Attributes
    ----------
    images : np.ndarray
        ``(n, H, W[, C])`` uint8 images with the artifact.
    masks : np.ndarray
        ``(n, H, W)`` bool, True where the artifact was drawn.
    """

    images: np.ndarray
    masks: np.ndarray


def plant(
    images: np.ndarray, kind: str, *, size: int = 4, value: int = 255, margin: int = 1, seed: int = 0
) -> Planted:
    """Draw an artifact into every image of a batch.

    Parameters
    ----------
    images : np.ndarray
        ``(n, H, W)`` or ``(n, H, W, C)`` uint8.
    kind : str
        One of :data:`ARTIFACTS`: ``corner_square`` (top-left), ``random_square`` (uniform position),
        ``background_square`` (uniform among the positions where the square and a 1-pixel ring around it
        fall on dark background, as a watermark or tag would; uniform anywhere when an image has none),
        ``frame`` (1-pixel border), ``glyph`` (5×5 stamp at the bottom right), ``brightness`` (global
        +60 shift; a confounder, its mask covers the whole image), ``colour_cast`` (RGB only: every pixel
        shifted by :data:`CAST`, a warm tint; its mask covers the whole image), the fixed shapes of
        :data:`SHAPED` (see :func:`shape_alpha`) and the moving ones of :data:`MOVING` (see
        :func:`moving_alpha`).
    size : int
        Side of the square artifacts.
    value : int
        Intensity drawn.
    margin : int
        Distance of the corner square / glyph from the border.
    seed : int
        Seed for the random positions.
    """
    if kind not in ARTIFACTS:
        raise ValueError(f"unknown artifact {kind!r}; choose one of {', '.join(ARTIFACTS)}")
    if kind in SHAPED:
        return _plant_shaped(images, kind, value)
    if kind in MOVING:
        return _plant_moving(images, kind, value, seed)
    if kind == "colour_cast":
        if images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"colour_cast needs RGB images (n, H, W, 3), got shape {images.shape}")
        out = np.clip(images.astype(np.int16) + np.asarray(CAST, dtype=np.int16), 0, 255).astype(np.uint8)
        return Planted(images=out, masks=np.ones(images.shape[:3], dtype=bool))
    out = images.copy()
    n, h, w = images.shape[:3]
    masks = np.zeros((n, h, w), dtype=bool)
    rng = np.random.default_rng(seed)
    if kind == "corner_square":
        masks[:, margin : margin + size, margin : margin + size] = True
    elif kind == "random_square":
        ys = rng.integers(0, h - size + 1, n)
        xs = rng.integers(0, w - size + 1, n)
        for i, (y, x) in enumerate(zip(ys, xs, strict=True)):
            masks[i, y : y + size, x : x + size] = True
    elif kind == "background_square":
        grey = images if images.ndim == 3 else images.max(axis=3)
        for i in range(n):
            y, x = background_spot(grey[i], size, rng)
            masks[i, y : y + size, x : x + size] = True
    elif kind == "frame":
        masks[:, 0, :] = masks[:, -1, :] = masks[:, :, 0] = masks[:, :, -1] = True
    elif kind == "glyph":
        gh, gw = _GLYPH.shape
        masks[:, h - margin - gh : h - margin, w - margin - gw : w - margin] = _GLYPH
    if kind == "brightness":
        out = np.clip(out.astype(np.int16) + 60, 0, 255).astype(np.uint8)
        masks[:] = True
    else:
        sel = masks if out.ndim == 3 else np.repeat(masks[..., None], out.shape[3], axis=3)
        out[sel] = value
    return Planted(images=out, masks=masks)


def background_spot(grey: np.ndarray, size: int, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of a ``size``-square on empty background of one ``(H, W)`` image: uniform among the
    positions where the square and a ``_BG_MARGIN``-wide ring around it are at most ``_BG_MAX`` bright,
    uniform anywhere when the image has none."""
    h, w = grey.shape
    k = size + 2 * _BG_MARGIN
    # Count of bright pixels in every k×k window (integral image): 0 means an empty spot.
    ii = np.zeros((h + 1, w + 1), dtype=np.int64)
    ii[1:, 1:] = (grey > _BG_MAX).cumsum(0).cumsum(1)
    count = ii[k:, k:] - ii[:-k, k:] - ii[k:, :-k] + ii[:-k, :-k]
    ys, xs = np.nonzero(count == 0)
    if len(ys):
        j = int(rng.integers(len(ys)))
        return int(ys[j]) + _BG_MARGIN, int(xs[j]) + _BG_MARGIN
    return int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))


@functools.lru_cache(maxsize=32)
def _font(path: str, size: int, kind: str) -> Any:
    """A Debian TrueType font, or a clear error naming the package to install."""
    from PIL import ImageFont

    if not Path(path).exists():
        raise FileNotFoundError(
            f"{path} missing (artifact {kind!r}): apt-get install -y fonts-dejavu-core fonts-liberation"
        )
    return ImageFont.truetype(path, size)


def _draw_text(text: str, font: Any, h: int, w: int, corner: str) -> np.ndarray:
    """``(h, w)`` coverage in [0, 1] of ``text`` drawn one pixel from the border in ``corner``
    (``"tl"``, ``"tr"``, ``"bl"`` or ``"br"``)."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = 1 - left if corner[1] == "l" else w - 1 - right
    y = 1 - top if corner[0] == "t" else h - 1 - bottom
    draw.text((x, y), text, font=font, fill=255)
    return np.asarray(canvas, dtype=np.float64) / 255.0


def _text_alpha(kind: str, h: int, w: int) -> np.ndarray:
    """Coverage of a short text drawn with a Debian font (``text_a``: bottom left; ``text_tm``: top right)."""
    path, text, size = FONTS[kind]
    return _draw_text(text, _font(path, size, kind), h, w, "bl" if kind == "text_a" else "tr")


def shape_alpha(kind: str, h: int, w: int) -> np.ndarray:
    """``(h, w)`` coverage in [0, 1] of a fixed-position artifact of :data:`SHAPED`.

    ``hline``: a 1-pixel line along the top, 20 pixels long (on 28 columns); ``vline``: the same down
    the right edge; ``text_a`` / ``text_tm``: text in a Debian font (:data:`FONTS`); ``blob``: a soft
    Gaussian spot (σ 1.5 pixels) near the top right; ``checker``: a 6×6 checkerboard texture at the
    bottom left; ``tag``: a right triangle filling the top-left corner (legs of 7 pixels); ``ring``: a
    circle of radius 3 pixels, 1 pixel wide, near the bottom right.
    """
    a = np.zeros((h, w))
    yy, xx = np.mgrid[:h, :w]
    long_w, long_h = round(20 * w / 28), round(20 * h / 28)
    if kind == "hline":
        a[1, (w - long_w) // 2 : (w - long_w) // 2 + long_w] = 1.0
    elif kind == "vline":
        a[(h - long_h) // 2 : (h - long_h) // 2 + long_h, w - 2] = 1.0
    elif kind in FONTS:
        a = _text_alpha(kind, h, w)
    elif kind == "blob":
        a = np.exp(-((yy - 5.0) ** 2 + (xx - (w - 6.0)) ** 2) / (2 * 1.5**2))
    elif kind == "checker":
        block = (yy >= h - 7) & (yy < h - 1) & (xx >= 1) & (xx < 7)
        a[block] = np.where((yy + xx)[block] % 2 == 0, 1.0, 0.35)
    elif kind == "tag":
        a[(yy + xx) < 7] = 1.0
    elif kind == "ring":
        r = np.hypot(yy - (h - 7.0), xx - (w - 7.0))
        a[np.abs(r - 3.0) < 0.5] = 1.0
    return a


def _plant_shaped(images: np.ndarray, kind: str, value: int) -> Planted:
    """Blend a :data:`SHAPED` artifact into every image: ``out = (1 - a)·image + a·value``."""
    n, h, w = images.shape[:3]
    a = shape_alpha(kind, h, w)
    aa = a if images.ndim == 3 else a[..., None]
    out = np.clip(np.rint(images.astype(np.float64) * (1.0 - aa) + value * aa), 0, 255).astype(np.uint8)
    masks = np.broadcast_to(a >= 0.25, (n, h, w)).copy()
    return Planted(images=out, masks=masks)


def moving_alpha(kind: str, grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(H, W)`` coverage in [0, 1] of one image's artifact of :data:`MOVING`.

    ``moving_text``: "TM" in Liberation Serif Bold (:data:`MOVING_TEXT`) in a random corner at a random font
    size of 7–11 pixels (on 28 rows; scaled with the height); ``moving_checker``: the checkerboard texture of
    ``checker`` (:data:`CHECKER_SIDE` pixels a side) at a random spot of empty background
    (:func:`background_spot` of ``grey``, the image's ``(H, W)`` brightness).
    """
    h, w = grey.shape
    if kind == "moving_text":
        path, text, (lo, hi) = MOVING_TEXT
        size = max(1, round(int(rng.integers(lo, hi + 1)) * h / 28))
        corner = ("tl", "tr", "bl", "br")[int(rng.integers(4))]
        return _draw_text(text, _font(path, size, kind), h, w, corner)
    side = max(2, round(CHECKER_SIDE * h / 28))
    y, x = background_spot(grey, side, rng)
    a = np.zeros((h, w))
    yy, xx = np.mgrid[:side, :side]
    a[y : y + side, x : x + side] = np.where((yy + xx) % 2 == 0, 1.0, 0.35)
    return a


def _plant_moving(images: np.ndarray, kind: str, value: int, seed: int) -> Planted:
    """Blend an artifact of :data:`MOVING` into every image, each at its own place (``seed``)."""
    rng = np.random.default_rng(seed)
    grey = images if images.ndim == 3 else images.max(axis=3)
    alpha = (
        np.stack([moving_alpha(kind, g, rng) for g in grey]) if len(images) else np.zeros(images.shape[:3])
    )
    aa = alpha if images.ndim == 3 else alpha[..., None]
    out = np.clip(np.rint(images.astype(np.float64) * (1.0 - aa) + value * aa), 0, 255).astype(np.uint8)
    return Planted(images=out, masks=alpha >= 0.25)

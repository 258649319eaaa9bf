"""Planting Clever-Hans artifacts into images (for the demo, tests and the detection benchmark).

Every function takes a batch of uint8 images ``(n, H, W)`` or ``(n, H, W, C)`` and returns a modified
copy plus the boolean masks ``(n, H, W)`` of the pixels the artifact covers, so the ground truth of
"where the shortcut is" is known exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ARTIFACTS = ("corner_square", "random_square", "background_square", "frame", "glyph", "brightness")

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
        +60 shift; a confounder, its mask covers the whole image).
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
        k = size + 2 * _BG_MARGIN
        for i in range(n):
            # Count of bright pixels in every k×k window (integral image): 0 means an empty spot.
            ii = np.zeros((h + 1, w + 1), dtype=np.int64)
            ii[1:, 1:] = (grey[i] > _BG_MAX).cumsum(0).cumsum(1)
            count = ii[k:, k:] - ii[:-k, k:] - ii[k:, :-k] + ii[:-k, :-k]
            ys, xs = np.nonzero(count == 0)
            if len(ys):
                j = int(rng.integers(len(ys)))
                y, x = int(ys[j]) + _BG_MARGIN, int(xs[j]) + _BG_MARGIN
            else:
                y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
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

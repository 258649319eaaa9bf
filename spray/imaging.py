"""Colour maps and heatmap / overlay rendering with numpy only (no plotting library, no streamlit).

The dashboard, the static report and the benchmarks render relevance the same way:

- diverging maps (``bwr``, ``coldnhot``, ``seismic``) put zero relevance at the neutral middle colour and
  scale each map symmetrically by its own largest ``|R|``, so positive (red) and negative (blue) evidence
  are comparable within one heatmap;
- sequential maps (``hot``, ``viridis``, ``gray``) show only positive relevance, scaled by its maximum.

Every function accepts one map ``(h, w)`` or a batch ``(n, h, w)`` and is vectorised over the batch, so a
page of 100 thumbnails is rendered in a few milliseconds.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np

__all__ = [
    "COLORMAPS",
    "DEFAULT_COLORMAP",
    "LUT_SIZE",
    "Colormap",
    "colorize",
    "normalize",
    "overlay",
    "png_bytes",
    "png_data_uri",
    "render",
    "resize_nearest",
    "to_rgb",
]


@dataclass(frozen=True)
class Colormap:
    """A 256-entry lookup table.

    Attributes
    ----------
    name : str
        Key in :data:`COLORMAPS`.
    lut : np.ndarray
        ``(LUT_SIZE, 3)`` uint8 colours for values 0..1.
    diverging : bool
        True when the middle of the table means "no relevance" (signed data).
    """

    name: str
    lut: np.ndarray
    diverging: bool


# Odd, so that a diverging map has an exact middle entry: zero relevance is exactly the neutral colour.
LUT_SIZE = 255


def _lut(points: list[tuple[float, float, float]]) -> np.ndarray:
    """Linear interpolation between equally spaced control colours (0..1 floats) into LUT_SIZE entries."""
    pts = np.asarray(points, dtype=np.float64)
    xs = np.linspace(0.0, 1.0, len(pts))
    t = np.linspace(0.0, 1.0, LUT_SIZE)
    lut = np.stack([np.interp(t, xs, pts[:, c]) for c in range(3)], axis=1)
    return np.clip(np.round(lut * 255), 0, 255).astype(np.uint8)


COLORMAPS: dict[str, Colormap] = {
    # LRP convention: negative blue, zero white, positive red.
    "bwr": Colormap("bwr", _lut([(0, 0, 1), (1, 1, 1), (1, 0, 0)]), True),
    # Black at zero: hot spots stand out on dark backgrounds (zennit's "coldnhot" idea, own control points).
    "coldnhot": Colormap("coldnhot", _lut([(0, 1, 1), (0, 0, 1), (0, 0, 0), (1, 0, 0), (1, 1, 0)]), True),
    "seismic": Colormap("seismic", _lut([(0, 0, 0.3), (0, 0, 1), (1, 1, 1), (1, 0, 0), (0.5, 0, 0)]), True),
    "hot": Colormap("hot", _lut([(0, 0, 0), (0.9, 0, 0), (1, 0.9, 0), (1, 1, 1)]), False),
    # Perceptually ordered; control points sampled from the published viridis table.
    "viridis": Colormap(
        "viridis",
        _lut(
            [
                (0.267, 0.005, 0.329),
                (0.229, 0.322, 0.546),
                (0.128, 0.567, 0.551),
                (0.369, 0.789, 0.383),
                (0.993, 0.906, 0.144),
            ]
        ),
        False,
    ),
    "gray": Colormap("gray", _lut([(0, 0, 0), (1, 1, 1)]), False),
}
DEFAULT_COLORMAP = "bwr"


def _get(cmap: str | Colormap) -> Colormap:
    if isinstance(cmap, Colormap):
        return cmap
    try:
        return COLORMAPS[cmap]
    except KeyError:
        raise ValueError(f"unknown colour map {cmap!r}; choose one of {sorted(COLORMAPS)}") from None


def normalize(heat: np.ndarray, *, diverging: bool = True) -> np.ndarray:
    """Map relevance to 0..1 per map.

    Parameters
    ----------
    heat : np.ndarray
        ``(h, w)`` or ``(n, h, w)``, any float dtype (float16 is upcast).
    diverging : bool
        True: ``0.5 + R / (2 max|R|)`` (zero at 0.5). False: ``max(R, 0) / max(R)``.

    Returns
    -------
    np.ndarray
        float32 of the same shape, in ``[0, 1]``. An all-zero map gives 0.5 (diverging) or 0.
    """
    h = np.asarray(heat, dtype=np.float32)
    single = h.ndim == 2
    if single:
        h = h[None]
    h = np.nan_to_num(h, nan=0.0, posinf=0.0, neginf=0.0)
    if diverging:
        scale = np.abs(h).max(axis=(1, 2), keepdims=True)
        out = 0.5 + 0.5 * h / np.where(scale > 0, scale, 1.0)
    else:
        pos = np.maximum(h, 0.0)
        scale = pos.max(axis=(1, 2), keepdims=True)
        out = pos / np.where(scale > 0, scale, 1.0)
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    return out[0] if single else out


def colorize(heat: np.ndarray, cmap: str | Colormap = DEFAULT_COLORMAP) -> np.ndarray:
    """Relevance → RGB through a colour map.

    Returns
    -------
    np.ndarray
        uint8 ``(..., 3)``: ``(h, w, 3)`` or ``(n, h, w, 3)``.
    """
    cm = _get(cmap)
    v = normalize(heat, diverging=cm.diverging)
    return cm.lut[np.round(v * (LUT_SIZE - 1)).astype(np.intp)]


def resize_nearest(
    arr: np.ndarray, size: int | tuple[int, int], *, batched: bool | None = None
) -> np.ndarray:
    """Nearest-neighbour resize of the two spatial axes that follow an optional batch axis.

    ``arr`` is ``(h, w[, c])`` or ``(n, h, w[, c])``. When ``batched`` is None, a 3-D input whose last
    axis has size 3 counts as one RGB image; pass ``batched`` to decide explicitly. Nearest (not
    bilinear) keeps each heatmap cell a visible block, which is what a pooled relevance grid is.
    """
    th, tw = (size, size) if isinstance(size, int) else size
    a = np.asarray(arr)
    if batched is None:
        batched = a.ndim == 4 or (a.ndim == 3 and a.shape[-1] != 3)
    hy, wx = (1, 2) if batched else (0, 1)
    h, w = a.shape[hy], a.shape[wx]
    if (h, w) == (th, tw):
        return a
    yi = np.minimum((np.arange(th) * h) // th, h - 1)
    xi = np.minimum((np.arange(tw) * w) // tw, w - 1)
    return np.take(np.take(a, yi, axis=hy), xi, axis=wx)


def to_rgb(images: np.ndarray) -> np.ndarray:
    """uint8 grey ``(…, h, w)`` / ``(…, h, w, 1)`` or RGB ``(…, h, w, 3)`` → uint8 RGB ``(…, h, w, 3)``."""
    a = np.asarray(images)
    if a.dtype != np.uint8:
        a = np.clip(np.round(a.astype(np.float32) * (255.0 if a.max(initial=0) <= 1.0 else 1.0)), 0, 255)
        a = a.astype(np.uint8)
    if a.shape[-1] == 3 and a.ndim >= 3:
        return a
    if a.shape[-1] == 1:
        a = a[..., 0]
    return np.repeat(a[..., None], 3, axis=-1)


def overlay(
    images: np.ndarray, heat: np.ndarray, cmap: str | Colormap = DEFAULT_COLORMAP, *, alpha: float = 0.7
) -> np.ndarray:
    """Blend coloured relevance over the input, weighted by the strength of the relevance.

    Where relevance is near zero the input shows through unchanged; the hottest cells are coloured with
    opacity ``alpha``. The heatmap is resized (nearest) to the image size.

    Parameters
    ----------
    images : np.ndarray
        uint8 ``(h, w, 3)`` / ``(n, h, w, 3)`` (grey is accepted).
    heat : np.ndarray
        ``(h', w')`` / ``(n, h', w')`` relevance.
    cmap : str or Colormap
    alpha : float
        Largest opacity of the colour layer.

    Returns
    -------
    np.ndarray
        uint8 of the image's shape (RGB).
    """
    cm = _get(cmap)
    img = to_rgb(images)
    size = img.shape[-3:-1]
    v = normalize(heat, diverging=cm.diverging)
    v = resize_nearest(v, size, batched=v.ndim == 3)
    colour = cm.lut[np.round(v * (LUT_SIZE - 1)).astype(np.intp)].astype(np.float32)
    weight = (np.abs(2.0 * v - 1.0) if cm.diverging else v)[..., None] * float(alpha)
    out = img.astype(np.float32) * (1.0 - weight) + colour * weight
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def render(
    mode: str,
    heat: np.ndarray,
    images: np.ndarray | None = None,
    cmap: str | Colormap = DEFAULT_COLORMAP,
    *,
    size: int | None = None,
    alpha: float = 0.7,
) -> np.ndarray:
    """Render a batch for display: ``"input"``, ``"heatmap"`` or ``"overlay"``.

    Falls back to ``"heatmap"`` when no input images were stored with the run.

    Parameters
    ----------
    mode : str
        What to show.
    heat : np.ndarray
        ``(n, h, w)`` relevance.
    images : np.ndarray, optional
        ``(n, t, t, 3)`` uint8 thumbnails.
    cmap : str or Colormap
    size : int, optional
        Output edge in pixels (default: the thumbnail size, else 4× the heatmap grid).
    alpha : float
        Overlay opacity.

    Returns
    -------
    np.ndarray
        ``(n, size, size, 3)`` uint8.
    """
    if mode not in ("input", "heatmap", "overlay"):
        raise ValueError(f"mode must be 'input', 'heatmap' or 'overlay', not {mode!r}")
    if images is None:
        mode = "heatmap"
    if size is None:
        size = images.shape[1] if images is not None else 4 * int(np.asarray(heat).shape[-2])
    if mode == "heatmap":
        return resize_nearest(colorize(heat, cmap), size)
    assert images is not None
    img = resize_nearest(to_rgb(images), size)
    if mode == "input":
        return img
    return overlay(img, heat, cmap, alpha=alpha)


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode one uint8 RGB image as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def png_data_uri(rgb: np.ndarray) -> str:
    """``data:image/png;base64,...`` of one image (for table image columns and HTML)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(rgb)).decode("ascii")


#: Brightness kept outside the part of an original the model saw (:func:`overlay_box`).
_UNSEEN = 0.45


def overlay_box(
    image: np.ndarray,
    heat: np.ndarray,
    box: tuple[float, float, float, float],
    cmap: str | Colormap = DEFAULT_COLORMAP,
) -> np.ndarray:
    """Relevance over an original image where the model input lies at ``box`` (a centre crop).

    Parameters
    ----------
    image : np.ndarray
        uint8 ``(h, w, 3)`` (grey accepted): the original, at any scale.
    heat : np.ndarray
        ``(h', w')`` relevance of the model input.
    box : tuple of float
        ``(top, left, bottom, right)`` fractions of the image where the input lies
        (:meth:`spray.data.transform.Transform.input_box`; beyond 0 and 1 where the input was padded).
    cmap : str or Colormap

    Returns
    -------
    np.ndarray
        uint8 ``(h, w, 3)``: the overlay where the input lies, the rest dimmed (the model did not see it).
    """
    img = to_rgb(image)
    h, w = img.shape[:2]
    top, left, bottom, right = (round(f * n) for f, n in zip(box, (h, w, h, w), strict=True))
    if (top, left, bottom, right) == (0, 0, h, w):
        return overlay(img, heat, cmap)
    out = (img.astype(np.float32) * _UNSEEN).astype(np.uint8)
    y0, y1, x0, x1 = max(top, 0), min(bottom, h), max(left, 0), min(right, w)
    if y1 > y0 and x1 > x0:
        # the heatmap at the box's size in image pixels, then the part over the image
        big = resize_nearest(np.asarray(heat, dtype=np.float32), (bottom - top, right - left))
        out[y0:y1, x0:x1] = overlay(img[y0:y1, x0:x1], big[y0 - top : y1 - top, x0 - left : x1 - left], cmap)
    return out


#: Pixels of the longer side of a heatmap placed on an original's canvas (:func:`heat_in_box`) at least.
PLACED_SIDE = 256


def heat_in_box(heat: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """``heat`` laid on a canvas of the original's proportions at ``box`` (0 where the input does not
    reach), so that a viewer stretching it over the original image (FiftyOne's heatmaps) draws each cell
    where the model saw it.

    Parameters
    ----------
    heat : np.ndarray
        ``(h', w')`` relevance of the model input.
    box : tuple of float
        ``(top, left, bottom, right)`` fractions of the original where the input lies (beyond 0 and 1
        where the input was padded).

    Returns
    -------
    np.ndarray
        ``(H, W)`` float32 covering the original, each heatmap cell a block of ``s × s`` pixels with ``s`` the
        smallest integer that makes the heatmap's longer side at least :data:`PLACED_SIDE` (1 without a box).
    """
    if tuple(box) == (0.0, 0.0, 1.0, 1.0):
        return np.asarray(heat, dtype=np.float32)
    # a canvas of whole cells put each cell up to half a cell off (8.8 px on a 640 px photo): finer blocks
    s = max(1, -(-PLACED_SIDE // max(heat.shape)))
    heat = np.repeat(np.repeat(np.asarray(heat, dtype=np.float32), s, axis=0), s, axis=1)
    hh, hw = heat.shape
    f_top, f_left, f_bottom, f_right = box
    big_h, big_w = max(1, round(hh / (f_bottom - f_top))), max(1, round(hw / (f_right - f_left)))
    out = np.zeros((big_h, big_w), dtype=np.float32)
    top, left = round(f_top * big_h), round(f_left * big_w)
    y0, y1, x0, x1 = max(top, 0), min(top + hh, big_h), max(left, 0), min(left + hw, big_w)
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = heat[y0 - top : y1 - top, x0 - left : x1 - left]
    return out

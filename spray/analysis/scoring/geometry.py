"""Region geometry on the analysis grid: hot regions (windows, frames), integral images and masks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Region:
    """A candidate hot region on the ``h×w`` grid: a square window or a border frame.

    Attributes
    ----------
    kind : str
        ``"window"`` or ``"frame"``.
    size : int
        Window side or frame width, in cells.
    row, col : int
        Top-left cell of a window (0 for a frame).
    """

    kind: str
    size: int
    row: int = 0
    col: int = 0

    def mask(self, h: int, w: int) -> np.ndarray:
        """``(h, w)`` bool mask of the region."""
        m = np.zeros((h, w), dtype=bool)
        if self.kind == "window":
            m[self.row : self.row + self.size, self.col : self.col + self.size] = True
        else:
            b = self.size
            m[:b, :] = m[-b:, :] = m[:, :b] = m[:, -b:] = True
        return m

    def area(self, h: int, w: int) -> float:
        """Fraction of the grid the region covers."""
        if self.kind == "window":
            return self.size * self.size / (h * w)
        return (h * w - (h - 2 * self.size) * (w - 2 * self.size)) / (h * w)


def integral(p: np.ndarray) -> np.ndarray:
    """``(n, h, w)`` maps -> ``(n, h+1, w+1)`` float64 integral images (zero first row and column)."""
    n, h, w = p.shape
    ii = np.zeros((n, h + 1, w + 1))
    ii[:, 1:, 1:] = p.cumsum(axis=1).cumsum(axis=2)
    return ii


#: Below this, a window's sum of a unit-mass map is rounding noise (float64 sums of at most a grid's cells).
ZERO_SHARE = 1e-12


def box_sums(ii: np.ndarray, s: int) -> np.ndarray:
    """Sums of every ``s×s`` window from integral images of unit-mass maps: ``(n, h-s+1, w-s+1)``.

    A window holding nothing sums to exactly 0: the four-term difference leaves ±1e-16 there, which would
    break an AUROC's ties, or an argmax over empty windows, arbitrarily.
    """
    out = ii[:, s:, s:] - ii[:, :-s, s:] - ii[:, s:, :-s] + ii[:, :-s, :-s]
    out[np.abs(out) < ZERO_SHARE] = 0.0
    return out


def window_masks(rows: np.ndarray, cols: np.ndarray, s: int, h: int, w: int) -> np.ndarray:
    """``(n, h, w)`` bool masks of one ``s×s`` window per sample, top-left at ``(rows[i], cols[i])``."""
    out = np.zeros((len(rows), h, w), dtype=bool)
    for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
        out[i, r : r + s, c : c + s] = True
    return out


def window_sizes(h: int, w: int, fractions: tuple[float, ...]) -> list[int]:
    """Window sides (cells, at least 2, at most the grid side) for side ``fractions`` of the grid."""
    return sorted({max(2, min(h, w, round(min(h, w) * f))) for f in fractions})


def peak_masks(box: np.ndarray, s: int, h: int, w: int) -> np.ndarray:
    """``(n, h, w)`` masks of each sample's own best ``s×s`` window, from its window sums ``box``
    ``(n, h-s+1, w-s+1)``."""
    nw = box.shape[2]
    j = box.reshape(len(box), -1).argmax(axis=1)
    return window_masks(j // nw, j % nw, s, h, w)


def local_peak_masks(p: np.ndarray, region: Region, reach: int) -> np.ndarray:
    """``(n, h, w)`` masks of each map's own window of ``region``'s size, at most ``reach`` cells from
    the region in each direction (an artifact that jitters around one place).

    The window is centred on the map's hottest *core* (the window less a quarter of its side on each
    side): a stamp smaller than the window fits in several windows with the same share, and their argmax
    would put it anywhere inside; its core fixes where.

    Parameters
    ----------
    p : np.ndarray
        ``(n, h, w)`` maps (each sample's share of positive relevance per cell).
    region : Region
        A window.
    reach : int
        Cells the window may move in each direction.
    """
    n, h, w = p.shape
    s = region.size
    m = s // 4
    core = s - 2 * m
    b = box_sums(integral(p.astype(np.float64)), core)
    # core positions whose surrounding window (core - m) stays on the grid and within reach
    r0 = max(m, region.row - reach + m)
    r1 = min(h - s + m + 1, region.row + reach + m + 1)
    c0 = max(m, region.col - reach + m)
    c1 = min(w - s + m + 1, region.col + reach + m + 1)
    local = b[:, r0:r1, c0:c1]
    nw = local.shape[2]
    j = local.reshape(n, -1).argmax(axis=1)
    return window_masks(r0 - m + j // nw, c0 - m + j % nw, s, h, w)


def location_words(region: Region, h: int, w: int) -> str:
    """Where a region lies, in words ("top left", "centre", "border", ...)."""
    if region.kind == "frame":
        return "border"
    cy = (region.row + region.size / 2) / h
    cx = (region.col + region.size / 2) / w
    vert = "top" if cy < 1 / 3 else ("bottom" if cy > 2 / 3 else "middle")
    horiz = "left" if cx < 1 / 3 else ("right" if cx > 2 / 3 else "centre")
    if vert == "middle" and horiz == "centre":
        return "centre"
    if vert == "middle":
        return f"middle {horiz}"
    return f"{vert} {horiz}"


def relevance_mask(p_in: np.ndarray, p_out: np.ndarray, level: float, max_area: float) -> np.ndarray:
    """``(h, w)`` bool mask of the cells where the members' relevance most exceeds the rest's.

    The members' own hot pixels, of any shape (a line, text, a frame, a blob): the cells whose contrast
    ``p_in - p_out`` (mean shares per cell) reaches ``level`` of its maximum, at most ``max_area`` of
    the grid (the highest-contrast cells first). Empty when no cell has a positive contrast.
    """
    c = np.asarray(p_in, dtype=np.float64) - np.asarray(p_out, dtype=np.float64)
    top = float(c.max()) if c.size else 0.0
    if top <= 0:
        return np.zeros(c.shape, dtype=bool)
    mask = c >= level * top
    limit = max(1, int(max_area * c.size))
    if mask.sum() > limit:
        order = np.argsort(-c, axis=None, kind="stable")[:limit]
        mask = np.zeros(c.size, dtype=bool)
        mask[order] = True
        mask = mask.reshape(c.shape)
    return mask

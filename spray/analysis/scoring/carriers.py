"""Carriers: the other samples of a class that repeat a flagged cluster's stamp.

A stamp is rarely all in one cluster: where a sample's own object draws much relevance it lands
elsewhere. For a flagged cluster, every other sample of the class is scanned for the members' stamp
(their median pixels in the region, weighted by relevance) at any position (a frame: in place).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spray.analysis.scoring.appearance import Donors, grid_cells, window_distances
from spray.analysis.scoring.probe import InterventionProbe
from spray.analysis.scoring.signals import Candidate, ClassStats
from spray.config import ScoringConfig


@dataclass
class Stamp:
    """What a tested candidate's members show where the model looks: the pixels a carrier repeats.

    ``cells`` are the members' median inputs on the analysis grid over a template (the bounding box of
    their hot pixels, or their window), row-major, and ``weights`` the members' mean relevance per cell
    (0 outside the hot pixels). A sample's distance is its relevance-weighted mean absolute difference to
    ``cells`` at the best-matching position of the template anywhere in the image (a template as large
    as the image, such as a frame, stays in place). Only positions inside the grid count, so a stamp that
    touches the image border where the members' window has a margin around it matches less well. See
    :func:`find_carriers` for the threshold.

    Attributes
    ----------
    cells : np.ndarray
        ``(bh·bw, C)`` the members' median pixels.
    weights : np.ndarray
        ``(bh·bw,)`` the members' mean relevance per cell.
    shape : tuple[int, int]
        ``(bh, bw)`` the template's size in cells.
    own : np.ndarray
        ``(donors,)`` the members' own distances to ``cells``.
    in_place : bool
        The template covers the whole grid: it can only be matched where the members have it.
    """

    cells: np.ndarray
    weights: np.ndarray
    shape: tuple[int, int]
    own: np.ndarray
    in_place: bool = False


def _template(
    stats: ClassStats, cand: Candidate, m_in: np.ndarray, kind: str
) -> tuple[np.ndarray, int, int, int, int]:
    """The per-donor template masks ``(donors, h, w)`` and its box (row, col, height, width): the hot
    pixels' bounding box for a shared mask, else each donor's own window."""
    if kind in ("pixels", "frame", "window"):
        rows, cols = np.nonzero(m_in[0])
        r, c = int(rows.min()), int(cols.min())
        bh, bw = int(rows.max()) - r + 1, int(cols.max()) - c + 1
        box = np.zeros((stats.h, stats.w), dtype=bool)
        box[r : r + bh, c : c + bw] = True
        return np.broadcast_to(box, m_in.shape), r, c, bh, bw
    s = cand.moving_size if cand.moving else cand.region.size
    return m_in, 0, 0, s, s


def make_stamp(stats: ClassStats, cand: Candidate, donors: Donors, m_in: np.ndarray, kind: str) -> Stamp:
    """The stamp of a candidate from its member donors' pixels inside their masks ``m_in`` (of the
    region ``kind`` of :class:`~.appearance.Look`)."""
    d_in, g_in = donors.rows_in, donors.g_in
    box, _, _, bh, bw = _template(stats, cand, m_in, kind)
    a = g_in[box].reshape(len(d_in), -1, g_in.shape[3])
    proto = np.median(a, axis=0)
    rel = np.clip(stats.p[d_in][box].reshape(len(d_in), -1).mean(axis=0), 0.0, None)
    wt = rel * m_in[0][box[0]] if kind in ("pixels", "frame", "window") else rel
    own = (np.abs(a - proto[None]).mean(axis=2) @ (wt / max(float(wt.sum()), 1e-12))).astype(np.float64)
    return Stamp(proto, wt, (bh, bw), own, in_place=(bh, bw) == (stats.h, stats.w))


def stamp_distance(stamp: Stamp, g: np.ndarray) -> np.ndarray:
    """``(n,)`` smallest weighted mean |pixel - stamp| of grid inputs ``g`` ``(n, h, w, C)`` over the
    stamp's positions."""
    n = g.shape[0]
    dist, _, _ = window_distances(stamp.cells, stamp.weights, stamp.shape, (0, 0), None, g)
    return np.asarray(dist.reshape(n, -1).min(axis=1))


def find_carriers(
    stamp: Stamp,
    probe: InterventionProbe,
    sample_ids: list[str],
    rows: np.ndarray,
    h: int,
    w: int,
    config: ScoringConfig,
) -> tuple[list[int], dict[int, float]]:
    """Rows (of ``sample_ids``) among ``rows`` whose inputs repeat ``stamp`` at an allowed window, and the
    other rows' affinity to it (:func:`carrier_rows`).

    The threshold is the geometric mean of the members' median distance and the scanned samples'
    median distance: a sample counts when it is nearer (in ratio) to how the members match the stamp
    than to how ordinary samples do. Percentiles of the members alone fail both ways: the 90th misses
    10 % of samples exactly like the members by construction, and in an impure cluster it sits among
    the ordinary samples (docs/detection.md). Inputs are loaded ``config.carrier_chunk`` samples at a time.
    """
    dist = np.empty(len(rows))
    chunk = config.carrier_chunk
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        g = grid_cells(probe.load_inputs([sample_ids[i] for i in part]), h, w)
        dist[start : start + len(part)] = stamp_distance(stamp, g)
    return carrier_rows(dist, stamp, rows, config.carrier_exact, config.carrier_inexact_max)


def members_distance(own: np.ndarray, scan: float, exact: float, inexact_max: float) -> float:
    """How far the members are from their stamp: their median distance, or, when that is under ``exact`` ×
    the scanned median ``scan`` (most members are exact copies), the median of the members between ``exact``
    and ``inexact_max`` × ``scan`` (those that carry the stamp inexactly: over part of the object, in another
    member's crop), else ``exact`` × ``scan``. A median of 0 put the carriers' threshold at 0, so that a sample
    repeating a pixel-identical stamp over a few object pixels was no carrier (docs/detection.md)."""
    median = float(np.median(own))
    if median >= exact * scan:
        return median
    inexact = own[(own >= exact * scan) & (own < inexact_max * scan)]
    return float(np.median(inexact)) if inexact.size else exact * scan


def carrier_rows(
    dist: np.ndarray, stamp: Stamp, rows: np.ndarray, exact: float, inexact_max: float
) -> tuple[list[int], dict[int, float]]:
    """``(carrier rows, affinity of the other scanned rows)`` from the scanned rows' ``(m,)`` distances.

    The affinity places a distance between the members' (1, :func:`members_distance`) and the scanned samples'
    median (0) on a log scale; the carriers' threshold (the geometric mean of the two) is affinity 0.5. Rows at
    or beyond the scanned median (affinity 0) are left out.
    """
    if dist.size == 0:
        return [], {}
    scan = max(float(np.median(dist)), 1e-12)
    own = max(members_distance(np.asarray(stamp.own), scan, exact, inexact_max), 1e-12)
    threshold = math.sqrt(own * scan)
    found = [int(i) for i in rows[dist <= threshold]]
    if scan <= own:
        return found, {}
    a = np.clip(np.log(scan / np.maximum(dist, 1e-12)) / math.log(scan / own), 0.0, 1.0)
    graded = {int(r): float(v) for r, v, d in zip(rows, a, dist, strict=True) if v > 0.0 and d > threshold}
    return found, graded

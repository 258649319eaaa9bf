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
from spray.analysis.scoring.geometry import Region
from spray.analysis.scoring.probe import InterventionProbe
from spray.analysis.scoring.signals import Candidate, ClassStats


@dataclass
class Stamp:
    """What a tested cluster's members show where the model looks: the pixels a carrier repeats.

    ``cells`` are the members' median inputs on the analysis grid inside their (fixed, aligned or
    moving) window, row-major, and ``weights`` the members' mean relevance per cell. A sample's
    distance is its relevance-weighted mean absolute difference to ``cells`` at its best-matching
    window of the region's size anywhere in the image (a frame: in place). Only windows inside the grid
    count, so a stamp that touches the image border where the members' window has a margin around it
    matches less well. See :func:`find_carriers` for the threshold.

    Attributes
    ----------
    cells : np.ndarray
        ``(cells, C)`` the members' median pixels.
    weights : np.ndarray
        ``(cells,)`` the members' mean relevance per cell.
    region : Region
        Where to look: a window of this size anywhere, or this frame.
    own : np.ndarray
        ``(donors,)`` the members' own distances to ``cells``.
    """

    cells: np.ndarray
    weights: np.ndarray
    region: Region
    own: np.ndarray


def make_stamp(stats: ClassStats, cand: Candidate, donors: Donors, m_in: np.ndarray) -> Stamp:
    """The stamp of a candidate from its member donors' pixels inside their masks ``m_in``."""
    d_in, g_in = donors.rows_in, donors.g_in
    # Carriers are looked for at every position of a window stamp: the same tag or watermark
    # elsewhere in the image is the same shortcut (a frame stays a frame).
    region = Region("window", cand.moving_size) if cand.moving else cand.region
    a = g_in[m_in].reshape(len(d_in), -1, g_in.shape[3])
    proto = np.median(a, axis=0)
    wt = np.clip(stats.p[d_in][m_in].reshape(len(d_in), -1).mean(axis=0), 0.0, None)
    own = (np.abs(a - proto[None]).mean(axis=2) @ (wt / max(float(wt.sum()), 1e-12))).astype(np.float64)
    return Stamp(proto, wt, region, own)


def stamp_distance(stamp: Stamp, g: np.ndarray) -> np.ndarray:
    """``(n,)`` smallest weighted mean |pixel - stamp| of grid inputs ``g`` ``(n, h, w, C)`` over the
    stamp's allowed windows."""
    n, h, w, _ = g.shape
    r = stamp.region
    if r.kind == "frame":
        wt = stamp.weights / max(float(stamp.weights.sum()), 1e-12)
        diff = np.abs(g[:, r.mask(h, w)] - stamp.cells[None]).mean(axis=2)  # (n, cells)
        return np.asarray(diff @ wt)
    dist, _, _ = window_distances(stamp.cells, stamp.weights, r, None, g)
    return np.asarray(dist.reshape(n, -1).min(axis=1))


def find_carriers(
    stamp: Stamp,
    probe: InterventionProbe,
    sample_ids: list[str],
    rows: np.ndarray,
    h: int,
    w: int,
    chunk: int,
) -> list[int]:
    """Rows (of ``sample_ids``) among ``rows`` whose inputs repeat ``stamp`` at an allowed window.

    The threshold is the geometric mean of the members' median distance and the scanned samples'
    median distance: a sample counts when it is nearer (in ratio) to how the members match the stamp
    than to how ordinary samples do. Percentiles of the members alone fail both ways: the 90th misses
    10 % of samples exactly like the members by construction, and in an impure cluster it sits among
    the ordinary samples (docs/detection.md). Inputs are loaded ``chunk`` samples at a time.
    """
    dist = np.empty(len(rows))
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        g = grid_cells(probe.load_inputs([sample_ids[i] for i in part]), h, w)
        dist[start : start + len(part)] = stamp_distance(stamp, g)
    if dist.size == 0:
        return []
    threshold = math.sqrt(max(float(np.median(stamp.own)), 1e-12) * float(np.median(dist)))
    return [int(i) for i in rows[dist <= threshold]]

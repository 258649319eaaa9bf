"""Appearance: how alike the members' *pixels* are where their relevance is, relative to the class.

A shortcut (stamp, watermark, tag, frame) repeats the same pixels in every member; a natural object
part (a handle, a sole) varies from image to image. Inputs are average-pooled to the analysis grid, so
every sample's region has the same cells. For a fixed window the appearance is also measured at each
sample's own window near the region, aligned to the members' median pixels (a tag on the background
lands at a slightly different spot in each image).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from spray.analysis.scoring.geometry import (
    Region,
    local_peak_masks,
    peak_masks,
    relevance_mask,
    window_masks,
)
from spray.analysis.scoring.signals import Candidate, ClassStats
from spray.config import ScoringConfig


def grid_cells(x: torch.Tensor, h: int, w: int) -> np.ndarray:
    """``(n, C, H, W)`` inputs average-pooled (in float32) to the ``h×w`` analysis grid: ``(n, h, w, C)``
    float64."""
    return F.adaptive_avg_pool2d(x.float(), (h, w)).permute(0, 2, 3, 1).double().numpy()


def window_distances(
    cells: np.ndarray,
    weights: np.ndarray,
    shape: tuple[int, int],
    origin: tuple[int, int],
    reach: int | None,
    g: np.ndarray,
) -> tuple[np.ndarray, int, int]:
    """Weighted mean |pixel - cells| of grid inputs ``g`` ``(n, h, w, C)`` at every allowed position of
    a ``shape`` template (``cells`` ``(bh·bw, C)`` row-major, ``weights`` ``(bh·bw,)``): ``(n, rows,
    cols)`` and the grid position of entry ``[:, 0, 0]``. ``reach`` None allows every position inside
    the grid, else positions within ``reach`` cells of ``origin`` (the template's top-left cell)."""
    n, h, w, _ = g.shape
    bh, bw = shape
    if reach is None:
        r0, r1, c0, c1 = 0, h - bh + 1, 0, w - bw + 1
    else:
        r0, r1 = max(0, origin[0] - reach), min(h - bh + 1, origin[0] + reach + 1)
        c0, c1 = max(0, origin[1] - reach), min(w - bw + 1, origin[1] + reach + 1)
    wt = (weights / max(float(weights.sum()), 1e-12)).reshape(bh, bw)
    proto = cells.reshape(bh, bw, -1)
    dist = np.zeros((n, r1 - r0, c1 - c0))
    for i in range(bh):
        for j in range(bw):
            if wt[i, j] > 0:
                dist += wt[i, j] * np.abs(g[:, r0 + i : r1 + i, c0 + j : c1 + j] - proto[i, j]).mean(axis=3)
    return dist, r0, c0


def match_masks(
    cells: np.ndarray, weights: np.ndarray, region: Region, reach: int, g: np.ndarray
) -> np.ndarray:
    """``(n, h, w)`` masks of each sample's window (within ``reach`` of ``region``) that looks most
    like ``cells``."""
    n, h, w, _ = g.shape
    s = region.size
    dist, r0, c0 = window_distances(cells, weights, (s, s), (region.row, region.col), reach, g)
    nw = dist.shape[2]
    j = dist.reshape(n, -1).argmin(axis=1)
    return window_masks(r0 + j // nw, c0 + j % nw, region.size, h, w)


def appearance(
    x_in: torch.Tensor,
    m_in: np.ndarray,
    x_out: torch.Tensor,
    m_out: np.ndarray,
    weights: np.ndarray | None = None,
) -> float:
    """How alike the members' *pixels* are where their relevance is, relative to the class as a whole.

    ``1 - Σ w·spread(members) / Σ w·spread(members and non-members)``, where ``spread`` is the
    standard deviation across samples at one grid cell of the region (averaged over channels) and ``w``
    the members' mean relevance in that cell, so the cells the model uses count and the rest of the
    window does not. Inputs are average-pooled to the analysis grid, so every sample's region has the
    same cells (in row-major order: a moving window is aligned by its top-left corner). A planted or
    real shortcut (stamp, watermark, tag, frame) is nearly the same pixels in every member: close to 1.
    A natural object part (a handle, a sole) varies from image to image: well below 1. 0 when the
    region looks the same in every sample (nothing there to tell apart).

    Parameters
    ----------
    x_in, x_out : torch.Tensor
        ``(n, C, H, W)`` model inputs of members and non-members.
    m_in, m_out : np.ndarray
        ``(n, h, w)`` bool region masks on the grid; every mask has the same number of cells.
    weights : np.ndarray, optional
        ``(cells,)`` weight per region cell (row-major); uniform when None.
    """
    h, w = m_in.shape[-2:]
    return grid_appearance(grid_cells(x_in, h, w), m_in, grid_cells(x_out, h, w), m_out, weights)


def grid_appearance(
    g_in: np.ndarray,
    m_in: np.ndarray,
    g_out: np.ndarray,
    m_out: np.ndarray,
    weights: np.ndarray | None = None,
    trim: float = 0.0,
) -> float:
    """:func:`appearance` on inputs already pooled to the grid (:func:`grid_cells`).

    ``trim`` > 0 leaves out, per cell, that share of the members farthest from the members' median before
    their spread is taken, so a few members without the stamp (a cluster is rarely pure) do not hide it.
    """
    # The spreads are taken in float32, as the pooled pixels are (the float64 grid is an exact copy).
    a = g_in[m_in].reshape(len(g_in), -1, g_in.shape[-1]).astype(np.float32)  # (n, cells, C)
    b = g_out[m_out].reshape(len(g_out), -1, g_out.shape[-1]).astype(np.float32)
    if len(a) < 2 or len(b) < 1:
        return 0.0
    wt = np.ones(a.shape[1]) if weights is None else np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    spread_all = float(wt @ np.concatenate([a, b]).std(axis=0).mean(axis=1))
    if spread_all < 1e-6 * max(float(wt.sum()), 1e-12):
        return 0.0
    spread_in = float(wt @ _trimmed(a, trim).std(axis=0).mean(axis=1))
    return float(np.clip(1.0 - spread_in / spread_all, 0.0, 1.0))


def _trimmed(a: np.ndarray, trim: float) -> np.ndarray:
    """``(n, cells, C)`` members → per cell the ``1 - trim`` share of them closest to their median."""
    keep = max(2, round((1.0 - trim) * len(a)))
    if trim <= 0.0 or keep >= len(a):
        return a
    dist = np.abs(a - np.median(a, axis=0, keepdims=True)).mean(axis=2)  # (n, cells)
    nearest = np.argsort(dist, axis=0, kind="stable")[:keep]
    return np.take_along_axis(a, nearest[:, :, None], axis=0)


@dataclass
class Look:
    """The donors' regions and how alike their pixels are there.

    Attributes
    ----------
    appearance : float
        See :func:`appearance`.
    aligned : bool
        The regions are each sample's own window near a fixed one, aligned to the members' pixels.
    m_in, m_out : np.ndarray
        ``(donors, h, w)`` bool region masks of the member and non-member donors.
    kind : str
        ``"pixels"`` (the members' hot pixels, :func:`~.geometry.relevance_mask`), ``"window"``,
        ``"frame"``, ``"aligned"`` (own windows near a fixed one), ``"moving"`` (own best windows) or
        ``"concept"`` (own concept-conditional hot pixels, :mod:`spray.analysis.concept_test`).
    uniform : bool
        Every donor's pixels in its region are the same (the appearance is 0 for want of any spread).
    """

    appearance: float
    aligned: bool
    m_in: np.ndarray
    m_out: np.ndarray
    kind: str = "window"
    uniform: bool = False


@dataclass
class Donors:
    """The member and non-member donors of one candidate: rows, ids, inputs and grid-pooled inputs."""

    rows_in: np.ndarray
    rows_out: np.ndarray
    ids_in: list[str]
    ids_out: list[str]
    x_in: torch.Tensor
    x_out: torch.Tensor
    g_in: np.ndarray
    g_out: np.ndarray


def _weighted(stats: ClassStats, donors: Donors, a_in: np.ndarray, a_out: np.ndarray, trim: float) -> float:
    """Appearance with the members' mean relevance per region cell (aligned like the pixels) as weights."""
    d_in = donors.rows_in
    wt = stats.p[d_in][a_in].reshape(len(d_in), -1).mean(axis=0)
    return grid_appearance(donors.g_in, a_in, donors.g_out, a_out, weights=wt, trim=trim)


def shared_mask(stats: ClassStats, cand: Candidate, config: ScoringConfig) -> tuple[np.ndarray, str]:
    """The fixed region every donor is tested in, and its kind: the members' hot pixels (any shape)
    with ``intervention_region: relevance``, else the candidate's window or frame."""
    h, w = stats.h, stats.w
    if config.intervention_region == "relevance":
        p_in = stats.p[cand.member].mean(axis=0)
        p_out = stats.p[~cand.member].mean(axis=0) if (~cand.member).any() else np.zeros((h, w))
        mask = relevance_mask(p_in, p_out, config.mask_level, config.mask_max_area)
        if mask.any():
            return mask, "pixels"
    return cand.region.mask(h, w), cand.region.kind


def uniform_region(donors: Donors, m_in: np.ndarray, m_out: np.ndarray) -> bool:
    """Whether every donor's grid pixels in its region are the same (no spread to compare at all)."""
    a = donors.g_in[m_in].reshape(len(donors.g_in), -1, donors.g_in.shape[-1])
    b = donors.g_out[m_out].reshape(len(donors.g_out), -1, donors.g_out.shape[-1])
    both = np.concatenate([a, b]).astype(np.float32)
    return len(both) > 1 and float(both.std(axis=0).max(initial=0.0)) < 1e-6


def look(stats: ClassStats, cand: Candidate, donors: Donors, config: ScoringConfig) -> Look:
    """The candidate's donor regions (hot pixels, window or frame, own moving windows, or aligned
    windows) and the appearance there (:func:`_look`), and whether those pixels are all the same."""
    seen = _look(stats, cand, donors, config)
    if seen.appearance == 0.0:
        seen.uniform = uniform_region(donors, seen.m_in, seen.m_out)
    return seen


def _look(stats: ClassStats, cand: Candidate, donors: Donors, config: ScoringConfig) -> Look:
    """The candidate's donor regions and the appearance there."""
    d_in, d_out = donors.rows_in, donors.rows_out
    if cand.moving:
        s = cand.moving_size
        m_in = peak_masks(stats.box[s][d_in], s, stats.h, stats.w)
        m_out = peak_masks(stats.box[s][d_out], s, stats.h, stats.w)
        return Look(
            _weighted(stats, donors, m_in, m_out, config.appearance_trim), False, m_in, m_out, "moving"
        )
    shared, kind = shared_mask(stats, cand, config)
    m_in = np.asarray(np.broadcast_to(shared, (d_in.size, *shared.shape)))
    m_out = np.asarray(np.broadcast_to(shared, (d_out.size, *shared.shape)))
    value = _weighted(stats, donors, m_in, m_out, config.appearance_trim)
    if cand.region.kind != "window" or config.jitter_reach <= 0:
        return Look(value, False, m_in, m_out, kind)
    l_in, l_out = _aligned_masks(stats, cand, donors, config)
    local = _weighted(stats, donors, l_in, l_out, config.appearance_trim)
    # Counted only when the aligned pixels clearly look like a stamp: each sample picking its
    # best-matching window makes any region look somewhat more alike. Below the flag's floor it
    # would only move scores, and natural parts reached 0.41-0.45 aligned against 0.54-0.94 for the
    # planted squares of the benchmark: hence the extra margin (docs/detection.md).
    if local > value and local >= config.flag_min_appearance + config.aligned_margin:
        return Look(local, True, l_in, l_out, "aligned")
    return Look(value, False, m_in, m_out, kind)


def _aligned_masks(
    stats: ClassStats, cand: Candidate, donors: Donors, config: ScoringConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Each donor's own window near a fixed window, aligned to the members' median pixels.

    A stamp that lands at a slightly different place in each member (a tag on the background, a
    watermark) covers different cells of a fixed window, so its pixels there look varied. Start at each
    member's hottest core, then let every sample take the window that looks most like the members'
    median there: the relevance blob of a small stamp is blurred and offset, its pixels are not.
    Non-members are aligned to the same median, so a natural part, which aligns about as well in any
    image of the class, gains nothing from it.
    """
    d_in, g_in = donors.rows_in, donors.g_in
    reach = max(1, round(config.jitter_reach * cand.region.size))
    l_in = local_peak_masks(stats.p[d_in], cand.region, reach)
    for _ in range(config.align_rounds):
        proto = np.median(g_in[l_in].reshape(len(d_in), -1, g_in.shape[3]), axis=0)
        wt_l = np.clip(stats.p[d_in][l_in].reshape(len(d_in), -1).mean(axis=0), 0.0, None)
        l_in = match_masks(proto, wt_l, cand.region, reach, g_in)
    l_out = match_masks(proto, wt_l, cand.region, reach, donors.g_out)
    return l_in, l_out

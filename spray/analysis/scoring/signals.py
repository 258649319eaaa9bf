"""Map signals of a cluster: where its relevance sits, how it stands out from its class, its map score.

Signals are computed on the positive part of the normalised maps, each map rescaled to unit positive
mass, so a sample's *share* of relevance in a region is defined (see ``docs/detection.md``):

* ``contrast``: the members' share in the hot region (window or frame) minus the rest of the class's;
* ``lift``: the members' share over the rest's median share (a shortcut sits where others have none);
* ``moving_contrast``: the same with each sample's own best window (artifacts that move);
* ``consistency``: ``2·AUROC − 1`` of the per-sample share, members against the rest;
* ``separation``: ``1 − conductance`` of the cluster in the kNN graph of the spectral stage;
* ``fraction`` and ``border_share``: rarity and relevance on the outer frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from spray.analysis.scoring.geometry import Region, box_sums, integral, window_sizes
from spray.config import ScoringConfig
from spray.records import SpectralResult

log = logging.getLogger(__name__)


#: Heatmap sizes whose untested frame widths were already said (once per process, not once per class).
_SAID_FRAMES: set[tuple[int, int]] = set()


def _say_untested_frames(widths: list[int], h: int, w: int) -> None:
    """Warn once per heatmap size that ``scoring.frame_widths`` ``widths`` are too wide to test on it."""
    if widths and (h, w) not in _SAID_FRAMES:
        _SAID_FRAMES.add((h, w))
        log.warning(
            "scoring.frame_widths %s: not tested on %dx%d heatmaps (a frame must be under half of the side; "
            "images smaller than batch.grid keep their own size)", widths, h, w,
        )  # fmt: skip


class ClassStats:
    """Per-class precomputation shared by all clusters of all labellings.

    Holds, for every sample, its share of positive relevance in every candidate region (windows of
    every size at every position, and the border frames), its best window share per size, and the
    class's symmetrised kNN graph.

    Parameters
    ----------
    maps : np.ndarray
        ``(n, h, w)`` normalised relevance (signed).
    spectral : SpectralResult
        The class's spectral result (its kNN graph gives the conductance).
    config : ScoringConfig
        ``window_fractions`` and ``frame_widths`` name the regions.
    """

    def __init__(self, maps: np.ndarray, spectral: SpectralResult, config: ScoringConfig) -> None:
        n, h, w = maps.shape
        self.n, self.h, self.w = n, h, w
        pos = np.clip(maps.astype(np.float64), 0.0, None)
        mass = pos.reshape(n, -1).sum(axis=1)
        # A map with no positive relevance has no hot region: all its shares are 0.
        inv = np.where(mass > 0, 1.0 / np.maximum(mass, 1e-300), 0.0)
        p = pos * inv[:, None, None]
        self.p = p.astype(np.float32)
        ii = integral(p)
        self.sizes = window_sizes(h, w, config.window_fractions)
        # box[s]: (n, h-s+1, w-s+1) share of each sample's relevance in each s×s window.
        self.box: dict[int, np.ndarray] = {}
        self.peak: dict[int, np.ndarray] = {}
        for s in self.sizes:
            b = box_sums(ii, s).astype(np.float32)
            self.box[s] = b
            self.peak[s] = b.reshape(n, -1).max(axis=1)
        self.frame: dict[int, np.ndarray] = {}
        for fw in config.frame_widths:
            if 2 * fw < min(h, w):
                m = Region("frame", fw).mask(h, w)
                self.frame[fw] = p[:, m].sum(axis=1).astype(np.float32)
        _say_untested_frames([fw for fw in config.frame_widths if 2 * fw >= min(h, w)], h, w)
        self.adj, self.deg = _knn_graph(np.asarray(spectral.knn_indices), n)

    def conductance(self, member: np.ndarray) -> float:
        """``cut(S, S̄) / min(vol S, vol S̄)`` in the kNN graph; 1.0 when undefined."""
        if self.adj is None:
            return 1.0
        x = member.astype(np.float64)
        vol_in = float(self.deg @ x)
        vol_out = float(self.deg.sum() - vol_in)
        denom = min(vol_in, vol_out)
        if denom <= 0:
            return 1.0
        inside = float(x @ (self.adj @ x))
        return float(np.clip((vol_in - inside) / denom, 0.0, 1.0))

    def inside_share(self, member: np.ndarray) -> float:
        """The members' share of their own edge weight that stays inside the group (``w(S, S) / vol S``);
        0.0 when undefined."""
        if self.adj is None:
            return 0.0
        x = member.astype(np.float64)
        vol_in = float(self.deg @ x)
        return float(np.clip(float(x @ (self.adj @ x)) / vol_in, 0.0, 1.0)) if vol_in > 0 else 0.0

    def region_shares(self, region: Region) -> np.ndarray:
        """``(n,)`` share of each sample's positive relevance in ``region``."""
        if region.kind == "frame":
            return self.frame[region.size]
        return self.box[region.size][:, region.row, region.col]


def _knn_graph(knn: np.ndarray, n: int) -> tuple[sp.csr_matrix | None, np.ndarray]:
    """Symmetrised kNN graph ``(A + Aᵀ)/2``, as in the spectral stage, and its degrees."""
    k = knn.shape[1] if knn.ndim == 2 else 0
    if not k:
        return None, np.zeros(n)
    rows = np.repeat(np.arange(n), k)
    a = sp.csr_matrix((np.ones(n * k), (rows, knn.ravel())), shape=(n, n))
    adj = ((a + a.T) * 0.5).tocsr()
    return adj, np.asarray(adj.sum(axis=1)).ravel()


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney AUROC of ``pos`` above ``neg`` (0.5 when either is empty)."""
    if pos.size == 0 or neg.size == 0:
        return 0.5
    allv = np.concatenate([pos, neg])
    ranks = rankdata(allv)
    r_pos = ranks[: pos.size].sum()
    return float((r_pos - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def rankdata(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties averaged."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(x.size, dtype=np.float64)
    # Ties: give every member of a run of equal values the mean of their positions.
    bounds = np.flatnonzero(np.diff(xs)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [x.size]])
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


@dataclass
class Candidate:
    """Map-based analysis of one cluster (before the intervention).

    Attributes
    ----------
    k, cluster_id
        The labelling and the cluster's label in it.
    member : np.ndarray
        ``(n,)`` bool membership.
    region : Region
        The shared hot region.
    moving : bool
        Whether each member's own window (of ``moving_size``) describes it better.
    moving_size : int
        Side of the per-sample windows.
    signals : dict[str, float]
        The raw signals (see the module docstring).
    map_score : float
        The map score.
    """

    k: int
    cluster_id: int
    member: np.ndarray
    region: Region
    moving: bool
    moving_size: int
    signals: dict[str, float]
    map_score: float


@dataclass
class _Fit:
    """Best region of one kind for a cluster: objective, region and the two mean shares."""

    objective: float
    region: Region
    share_in: float
    share_out: float


def _fixed_region(stats: ClassStats, member: np.ndarray, config: ScoringConfig) -> _Fit:
    """The window or frame whose members' share most exceeds the rest's, less an area penalty."""
    n, h, w = stats.n, stats.h, stats.w
    rest = ~member
    fin = member.astype(np.float32) / max(int(member.sum()), 1)
    fout = rest.astype(np.float32) / max(int(rest.sum()), 1)
    best: _Fit | None = None
    for s in stats.sizes:
        b = stats.box[s].reshape(n, -1)
        sin, sout = fin @ b, fout @ b
        obj = sin - sout - config.area_penalty * s * s / (h * w)
        j = int(np.argmax(obj))
        if best is None or obj[j] > best.objective:
            nw = w - s + 1
            best = _Fit(float(obj[j]), Region("window", s, j // nw, j % nw), float(sin[j]), float(sout[j]))
    for fw, share in stats.frame.items():
        sin_f, sout_f = float(fin @ share), float(fout @ share)
        obj_f = sin_f - sout_f - config.area_penalty * Region("frame", fw).area(h, w)
        if best is None or obj_f > best.objective:
            best = _Fit(obj_f, Region("frame", fw), sin_f, sout_f)
    assert best is not None
    return best


@dataclass
class _MovingFit:
    """Best per-sample window size: objective, size, mean peak shares in and out, their AUROC."""

    objective: float
    size: int
    peak_in: float
    peak_out: float
    auroc: float


def _moving_region(stats: ClassStats, member: np.ndarray, config: ScoringConfig) -> _MovingFit:
    """Translation-tolerant fit: each sample's own best window of each size."""
    h, w = stats.h, stats.w
    rest = ~member
    size, n_rest = int(member.sum()), int(rest.sum())
    best = _MovingFit(-np.inf, stats.sizes[0], 0.0, 0.0, 0.5)
    for s in stats.sizes:
        pk = stats.peak[s]
        pin, pout = float(pk[member].mean()) if size else 0.0, float(pk[rest].mean()) if n_rest else 0.0
        obj = pin - pout - config.area_penalty * s * s / (h * w)
        if obj > best.objective:
            best = _MovingFit(obj, s, pin, pout, auroc(pk[member], pk[rest]))
    return best


def analyse_cluster(
    stats: ClassStats, k: int, cid: int, member: np.ndarray, config: ScoringConfig, by_share: bool = False
) -> Candidate:
    """Map signals and map score of one cluster (see the module docstring).

    ``by_share``: the members were picked by their share in a window (a hot-spot group), so their
    consistency there is 1 by construction and earns no credit in the map score.
    """
    n, h, w = stats.n, stats.h, stats.w
    size = int(member.sum())
    rest = ~member
    n_rest = int(rest.sum())
    fit = _fixed_region(stats, member, config)
    region, share_in, share_out = fit.region, fit.share_in, fit.share_out
    per_sample = stats.region_shares(region)
    contrast = share_in - share_out
    eps = config.lift_eps
    # Lift against the rest's *median* share: robust to a few artifact samples left outside the cluster.
    lift_fixed = (share_in + eps) / (float(np.median(per_sample[rest])) + eps) if n_rest else 1.0
    auc_fixed = auroc(per_sample[member], per_sample[rest])

    tol = config.translation_tolerant
    mv = _moving_region(stats, member, config) if tol else _MovingFit(-np.inf, stats.sizes[0], 0.0, 0.0, 0.5)
    moving_contrast = mv.peak_in - mv.peak_out if tol else -1.0
    # Moving only wins clearly: a fixed artifact is also a (trivially) moving one.
    moving = tol and moving_contrast > contrast + config.moving_margin
    loc = moving_contrast if moving else contrast
    lift = (mv.peak_in + eps) / (mv.peak_out + eps) if moving else lift_fixed
    # A shortcut sits where the rest of the class has (almost) no relevance: lift >= lift_full counts
    # fully, a natural sub-group (lift ~10 on synthetic maps) half.
    lift_factor = float(np.clip(np.log10(max(lift, 1.0)) / np.log10(config.lift_full), 0.0, 1.0))
    auc = mv.auroc if moving else auc_fixed
    conductance = stats.conductance(member)
    fraction = size / max(n, 1)
    consistency = max(0.0, 2.0 * auc - 1.0)
    cw, sw = config.consistency_weight, config.separation_weight
    map_score = (
        max(loc, 0.0)
        * lift_factor
        * ((1.0 - cw) + cw * (0.0 if by_share else consistency))
        * ((1.0 - sw) + sw * (1.0 - conductance))
        * (1.0 - config.rarity_weight * fraction)
    )
    if size < config.min_cluster_size or n_rest == 0:
        map_score = 0.0
    signals = {
        "fraction": fraction,
        "size": float(size),
        "share_in": share_in,
        "share_out": share_out,
        "contrast": contrast,
        "lift": lift,
        "lift_factor": lift_factor,
        "region_cells": float(region.mask(h, w).sum()),
        "moving_contrast": moving_contrast,
        "peak_in": mv.peak_in,
        "peak_out": mv.peak_out,
        "auroc_fixed": auc_fixed,
        "auroc_moving": mv.auroc,
        "consistency": consistency,
        "conductance": conductance,
        "separation": 1.0 - conductance,
        "inside_share": stats.inside_share(member),
        "border_share": float(stats.frame.get(1, np.zeros(n))[member].mean()) if size else 0.0,
        "localisation": loc,
        "map_score": map_score,
        # Where the hot region is (so that per-sample suspicion can be recomputed from the maps).
        "region_frame": float(region.kind == "frame"),
        "region_size": float(region.size),
        "region_row": float(region.row),
        "region_col": float(region.col),
        "moving": float(moving),
        "moving_size": float(mv.size),
    }
    return Candidate(k, cid, member, region, moving, int(mv.size), signals, float(map_score))

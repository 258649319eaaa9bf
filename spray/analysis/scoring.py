"""Suspicion scoring of SpRAy clusters: which clusters look like a Clever-Hans strategy, and why.

SpRAy papers stop at a scatter plot and leave the last step to a person ("small clusters that stand
apart are candidates"). This module ranks every cluster of a class automatically and writes the
reasons in sentences a person can check against the heatmaps and the images.

Signals (all per cluster, computed on the positive part of the normalised maps, each map rescaled to
unit positive mass so that a sample's *share* of relevance in a region is well defined):

``localisation`` (the main map signal)
    The hot region ``W`` is the square window (several sizes) or border frame whose share of the
    members' relevance most exceeds the share that the *rest of the class* puts there, minus a small
    area penalty. ``contrast = share_in(W) - share_out(W)``. A shortcut puts relevance where ordinary
    members of the class put none; a natural sub-group mostly moves relevance around on the object,
    so the rest of the class still has some relevance there (the ``lift`` ``share_in / share_out``
    is reported too).
``moving`` (translation-tolerant)
    For artifacts that move around, each sample's *own* best window of size ``s`` is used instead of
    a shared one: ``peak_in - peak_out``. ``localisation`` is the larger of the fixed and the moving
    contrast, so a fixed artifact never loses, and a moving one is still seen.
``consistency``
    AUROC of the per-sample share (members vs the rest of the class): does every member do it, or
    does the mean hide a few extreme maps?
``separation``
    ``1 - conductance`` of the cluster in the symmetrised kNN graph of the spectral stage: how few of
    its members' neighbours lie outside it.
``rarity``, ``border``
    Fraction of the class, and share of relevance on the outer frame (reported; rarity enters the
    score mildly, border through the frame regions).
``intervention`` (the horse-tag test of Lapuschkin et al. 2019; needs an :class:`InterventionProbe`)
    Paste the hot region of member images (the shared window, or each member's own window for a
    moving artifact; grid cells upsampled to input pixels) into images of other classes and count how
    many flip to this class. The **null** is the same paste taken from *non-member* images of the same
    class (same region, same target images): a natural object part of the class flips both about
    equally, a shortcut only the members'. The paired design gives an exact sign test (McNemar).

``appearance`` (with the paste test)
    How alike the members' *pixels* are in the region, weighted by their relevance there, relative
    to the class: ``1 - spread(members) / spread(members and non-members)``. A stamp, tag, watermark
    or frame repeats the same pixels in every member (planted clusters: median 0.90 in the benchmark
    grid); a natural object part varies (364 natural clusters: median 0.07, 99 % below 0.34).
    It is measured before any paste: a candidate below ``flag_min_appearance`` cannot be flagged, so
    its paste test is skipped (``paste_skipped``; no forward pass), which spares most natural clusters
    and makes the paste test cheap enough for a nightly rerun. For a fixed window it is also measured
    at each sample's own window within one window side of the region, aligned to the members' median
    pixels (``aligned``; kept when the pixels look more alike there *and* reach
    ``flag_min_appearance + 0.1``, since picking each sample's best-matching window makes any region
    look somewhat more alike; the paste test then pastes those windows). A tag placed on the background
    lands at a slightly different spot in each member, so the fixed window sees varied pixels
    (appearance 0.00-0.12 in the benchmark's ``background_square`` cells) where the aligned windows
    see the same square.

``carriers`` (flagged clusters only; ``scoring.carriers``)
    A stamp is rarely all in one cluster: where a sample's own object draws much relevance it lands
    elsewhere. For a flagged cluster, every other sample of the class is scanned for the members'
    stamp (their median pixels in the region, weighted by relevance) at any position (a frame: in
    place); the samples that repeat it are listed as ``carrier_ids``, named in the evidence, scored
    like the members by :func:`sample_suspicion`, and offered for flagging by the dashboard.

Score and flag. ``map_score = localisation * clip(log10(lift)/2, 0, 1) * (0.5 + 0.5 * (2*AUROC-1)) *
(0.5 + 0.5*separation) * (1 - 0.25 * fraction)``. With a probe, ``score = map_score * (0.2 +
0.8 * appearance) * (0.5 + strength)`` (0.2 is ``_APPEARANCE_FLOOR``; appearance 0 when not looked at)
with ``strength = min(1, excess / 0.5) * min(1, ratio / flip_ratio)``, where ``excess`` is
the flip rate above the null, ``ratio = (flip + 0.02) / (null + 0.02)`` (strength 0 when untested,
not significant, or when the members' flip rate is below ``flip_margin``: then no flag is possible and
the null arm is not run); without a probe
``score = map_score``. Scores are comparable across the classes of
one run. ``suspicious`` is:

* with a probe: the cluster was tested, its flip excess is at least ``flip_margin``, the sign test
  gives ``p < flip_alpha``, the members' pixels there are alike (``appearance >=
  flag_min_appearance``, 0.4: this is what removes the natural-part alarms) and the rate ratio is at
  least ``flip_ratio`` (2; it was 4 before the appearance signal; calibrated per class by the
  same-class null: in a Fashion-MNIST benchmark model, the two natural halves of the clean class Bag
  flipped 21 % / 19 % against a null of 9 % / 7 %, significant but a ratio of ~2.5, while the planted
  corner square of class Sandal flipped 19 % against 0 %), and the map score is at least
  ``flag_min_map_score`` (default 0: a floor of 0.03 removed one Bag false alarm, map score 0.022,
  but also the true frame artifact, 0.029, whose large area gives a low lift), and the cluster
  holds at most ``flag_max_fraction`` (0.6) of the class (T-shirt clusters of 79-82 % of the class
  flipped 9-19 % against 0 % for the odd remaining fifth);
* without a probe: ``map_score >= map_threshold`` (a fixed threshold calibrated on clean models; weaker).

Which labelling: the k-means sweep stores a labelling per ``k``. Every cluster of every ``k`` gets a
map score; the best one defines the pattern (its hot region), and among the clusters of any ``k``
with at least 70 % of its map score and an overlapping region, the one whose members are best told
apart from the rest of the class by their share in the region (AUROC) picks the labelling that is
returned (:func:`_select_k`). An artifact cluster that the chosen ``k`` merges into a big cluster is
recovered at the ``k`` that separates it, and a split or contaminated version of it loses.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from spray.config import ScoringConfig
from spray.records import ClusterFinding, ClusteringResult, SpectralResult

logger = logging.getLogger(__name__)

#: Window sides as fractions of the grid side (4, 5, 6 cells on a 28-cell grid). Only small windows:
#: a large window would hold a whole object part of a natural sub-group and out-score an artifact.
_WINDOW_FRACTIONS = (1 / 8, 1 / 6, 1 / 5)
#: Widths (cells) of the border frames tried as regions.
_FRAME_WIDTHS = (1, 2)
#: Area penalty: a region covering all the image would trivially hold all the relevance.
_AREA_PENALTY = 0.5
#: Clusters smaller than this are scored but never tested or flagged (too few samples to tell).
_MIN_SIZE = 5
#: Clusters within this fraction of the best map score count as versions of the same finding.
_SELECT_SLACK = 0.7
#: Regulariser of the lift ratio (a share of 0.5 % counts as "no relevance").
_LIFT_EPS = 0.005
#: Score factor of a cluster whose pixels vary like the class (appearance 0); 1 at appearance 1. The
#: planted/natural appearance medians are 0.90/0.07, so appearance ranks strongly: 0.5 (a factor of
#: 2 at most) left natural halves of T-shirt/Bag above 5 % artifacts in the benchmark grid; 0.2 ranks
#: more of them first (0.3 fewer) without changing any flag.
_APPEARANCE_FLOOR = 0.2
#: Flip excess that gives the full intervention score.
_FULL_EXCESS = 0.5
#: Smoothing of the flip rate ratio (2 % flips count as "no flips").
_RATIO_EPS = 0.02
#: Members / non-members whose pixels are pasted (cycled over the target images).
_MAX_DONORS = 64
#: Appearance is also measured at each sample's own window within this many region sides of a fixed
#: window, aligned to the members' median pixels (see :func:`_intervention`): a square planted on the background lands at a different
#: spot near each Shirt's corner, so a fixed window sees varied pixels (appearance 0.0-0.12 in the
#: benchmark's background_square cells) where the aligned windows see the same square.
_JITTER_REACH = 1.0
#: Aligned appearance must exceed ``flag_min_appearance`` by this much to count (see _intervention).
_ALIGNED_MARGIN = 0.1
#: Rounds of aligning each sample's window to the members' median pixels (see :func:`_intervention`).
_ALIGN_ROUNDS = 2
#: Samples loaded at once by the carrier scan.
_CARRIER_CHUNK = 512


class PredictionCache(Protocol):
    """Predicted classes of pasted images, by a key that determines the image (see :class:`InterventionProbe`)."""

    def get_many(self, keys: Sequence[str]) -> dict[str, int]:
        """The cached predictions among ``keys`` (missing keys are left out)."""
        ...

    def put_many(self, items: Mapping[str, int]) -> None:
        """Store predictions."""
        ...


def _u64(keys: Sequence[str]) -> np.ndarray:
    """``(len(keys),)`` uint64: the first 8 bytes of each key's blake2b hash (little-endian)."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little") for k in keys],
        dtype=np.uint64,
    )


def stable_order(keys: Sequence[str], salt: str) -> np.ndarray:
    """Indices that sort ``keys`` by a salted hash: a seeded random order that is stable under additions.

    Taking the first ``m`` of this order picks a seeded random subset, and adding or removing items
    changes the pick only where an added item sorts in front (about the added fraction), unlike
    ``rng.choice`` over positions, where any change of the population redraws everything. That keeps
    most paste tests of a nightly run with a few new samples identical to the previous night's, so
    their predictions come from the cache.

    Returns
    -------
    np.ndarray
        ``(len(keys),)`` int64 permutation.
    """
    return np.argsort(_u64([f"{salt}|{k}" for k in keys]), kind="stable").astype(np.int64)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised: a well-mixed uint64 per input (for rendezvous pairing)."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def rendezvous_pairs(target_keys: Sequence[str], donor_keys: Sequence[str]) -> np.ndarray:
    """For each target, the donor with the smallest pair hash (highest-random-weight hashing).

    A target keeps its donor when donors are added or removed, unless the added donor wins or its own
    donor left, so a slightly changed donor set changes only a few pairs.

    Returns
    -------
    np.ndarray
        ``(len(target_keys),)`` int64 donor index per target.
    """
    t = _u64(target_keys)[:, None]
    d = _u64(donor_keys)[None, :]
    with np.errstate(over="ignore"):
        return np.argmin(_mix64(t * np.uint64(0x9E3779B97F4A7C15) ^ d), axis=1).astype(np.int64)


@dataclass
class InterventionProbe:
    """What the intervention (paste) test needs; built by the audit from the dataset.

    Attributes
    ----------
    predict : Callable[[torch.Tensor], torch.Tensor]
        ``(B, C, H, W)`` model inputs -> ``(B,)`` predicted class.
    load_inputs : Callable[[list[str]], torch.Tensor]
        Sample ids -> ``(B, C, H, W)`` model inputs (normalised as the model expects).
    other_ids : list[str]
        Ids of images of OTHER classes to paste into (already sampled, seeded).
    other_labels : np.ndarray
        ``(m,)`` their labels.
    content_keys : Mapping[str, str], optional
        Sample id -> content hash. Donors are then picked and paired by content (stable when samples
        are added), and ``cache`` is used.
    cache : PredictionCache, optional
        Predictions of pasted images keyed by (target content, donor content, grid mask). The key
        determines the pasted image; the model and the input transform must be fixed per cache (the
        audit keeps one cache per model and LRP/transform settings). Only used with ``content_keys``.
    """

    predict: Callable[[torch.Tensor], torch.Tensor]
    load_inputs: Callable[[list[str]], torch.Tensor]
    other_ids: list[str]
    other_labels: np.ndarray
    content_keys: Mapping[str, str] | None = None
    cache: PredictionCache | None = None
    # Target images loaded so far: every tested cluster pastes into the same targets (a probe serves
    # one class, so this holds at most ``intervention_samples`` inputs, as a preloaded batch would).
    _targets_loaded: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def key(self, sample_id: str) -> str:
        """The content hash of a sample when known, else its id (prefixed so the two never collide)."""
        if self.content_keys is not None and sample_id in self.content_keys:
            return self.content_keys[sample_id]
        return f"id:{sample_id}"

    def predict_pasted(
        self,
        target_ids: Sequence[str],
        donor_ids: Sequence[str] | None,
        masks: np.ndarray | None,
        donor_inputs: Mapping[str, torch.Tensor] | None = None,
    ) -> np.ndarray:
        """Predicted class of each target with its donor's pixels pasted inside its grid mask.

        Parameters
        ----------
        target_ids : Sequence[str]
            ``m`` target images.
        donor_ids : Sequence[str], optional
            ``m`` donors, one per target; None predicts the targets as they are.
        masks : np.ndarray, optional
            ``(m, h, w)`` bool masks on the analysis grid, upsampled (nearest) to the input size.
        donor_inputs : Mapping[str, torch.Tensor], optional
            Donor inputs the caller has already loaded (by id); the others are loaded here.

        Returns
        -------
        np.ndarray
            ``(m,)`` int64 predicted classes. Cached predictions are reused; only the others are
            loaded and run through the model.
        """
        m = len(target_ids)
        use_cache = self.cache is not None and self.content_keys is not None
        keys: list[str] = []
        if use_cache:
            for j in range(m):
                tk = self.key(target_ids[j])
                if donor_ids is None or masks is None:
                    keys.append(f"plain|{tk}")
                else:
                    mk = hashlib.blake2b(np.packbits(masks[j]).tobytes(), digest_size=8).hexdigest()
                    keys.append(f"paste|{tk}|{self.key(donor_ids[j])}|{masks[j].shape}|{mk}")
        found = self.cache.get_many(keys) if use_cache and self.cache is not None else {}
        out = np.zeros(m, dtype=np.int64)
        todo = []
        for j in range(m):
            if use_cache and keys[j] in found:
                out[j] = found[keys[j]]
            else:
                todo.append(j)
        if not todo:
            return out
        need = [target_ids[j] for j in todo if target_ids[j] not in self._targets_loaded]
        if need:
            self._targets_loaded.update(zip(need, self.load_inputs(need), strict=True))
        targets = torch.stack([self._targets_loaded[target_ids[j]] for j in todo])
        x = targets
        if donor_ids is not None and masks is not None:
            loaded = dict(donor_inputs or {})
            missing = sorted({donor_ids[j] for j in todo} - loaded.keys())
            if missing:
                loaded.update(zip(missing, self.load_inputs(missing), strict=True))
            donors = torch.stack([loaded[donor_ids[j]] for j in todo])
            mk_t = torch.from_numpy(np.ascontiguousarray(masks[todo]).astype(np.float32))[:, None]
            mk_t = F.interpolate(mk_t, size=tuple(targets.shape[-2:]), mode="nearest").bool()
            x = torch.where(mk_t, donors.to(targets.dtype), targets)
        with torch.no_grad():
            pred = np.asarray(self.predict(x).cpu().numpy(), dtype=np.int64)
        out[todo] = pred
        if use_cache and self.cache is not None:
            self.cache.put_many({keys[j]: int(p) for j, p in zip(todo, pred, strict=True)})
        return out


@dataclass(frozen=True)
class _Region:
    """A candidate hot region on the ``h×w`` grid: a square window or a border frame."""

    kind: str  # "window" | "frame"
    size: int  # window side or frame width, in cells
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


def _integral(p: np.ndarray) -> np.ndarray:
    """``(n, h, w)`` maps -> ``(n, h+1, w+1)`` integral images (zero first row and column)."""
    n, h, w = p.shape
    ii = np.zeros((n, h + 1, w + 1))
    ii[:, 1:, 1:] = p.cumsum(axis=1).cumsum(axis=2)
    return ii


def _box_sums(ii: np.ndarray, s: int) -> np.ndarray:
    """Sums of every ``s×s`` window from integral images: ``(n, h-s+1, w-s+1)``."""
    return ii[:, s:, s:] - ii[:, :-s, s:] - ii[:, s:, :-s] + ii[:, :-s, :-s]


def _window_masks(rows: np.ndarray, cols: np.ndarray, s: int, h: int, w: int) -> np.ndarray:
    """``(n, h, w)`` bool masks of one ``s×s`` window per sample, top-left at ``(rows[i], cols[i])``."""
    out = np.zeros((len(rows), h, w), dtype=bool)
    for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
        out[i, r : r + s, c : c + s] = True
    return out


class _ClassStats:
    """Per-class precomputation shared by all clusters of all labellings.

    Holds, for every sample, its share of positive relevance in every candidate region (windows of
    every size at every position, and the border frames), and its best window share per size.
    """

    def __init__(self, maps: np.ndarray, spectral: SpectralResult) -> None:
        n, h, w = maps.shape
        self.n, self.h, self.w = n, h, w
        pos = np.clip(maps.astype(np.float64), 0.0, None)
        mass = pos.reshape(n, -1).sum(axis=1)
        # A map with no positive relevance has no hot region: all its shares are 0.
        inv = np.where(mass > 0, 1.0 / np.maximum(mass, 1e-300), 0.0)
        p = pos * inv[:, None, None]
        self.p = p.astype(np.float32)
        ii = _integral(p)
        sizes = sorted({max(2, min(h, w, round(min(h, w) * f))) for f in _WINDOW_FRACTIONS})
        self.sizes = sizes
        # box[s]: (n, h-s+1, w-s+1) share of each sample's relevance in each s×s window.
        self.box: dict[int, np.ndarray] = {}
        self.peak: dict[int, np.ndarray] = {}
        for s in sizes:
            b = _box_sums(ii, s).astype(np.float32)
            self.box[s] = b
            self.peak[s] = b.reshape(n, -1).max(axis=1)
        self.frame: dict[int, np.ndarray] = {}
        for fw in _FRAME_WIDTHS:
            if 2 * fw < min(h, w):
                m = _Region("frame", fw).mask(h, w)
                self.frame[fw] = p[:, m].sum(axis=1).astype(np.float32)
        # Symmetrised kNN graph (A + Aᵀ)/2, as in the spectral stage, for the conductance.
        knn = np.asarray(spectral.knn_indices)
        k = knn.shape[1] if knn.ndim == 2 else 0
        if k:
            rows = np.repeat(np.arange(n), k)
            a = sp.csr_matrix((np.ones(n * k), (rows, knn.ravel())), shape=(n, n))
            self.adj: sp.csr_matrix | None = ((a + a.T) * 0.5).tocsr()
            self.deg = np.asarray(self.adj.sum(axis=1)).ravel()
        else:
            self.adj, self.deg = None, np.zeros(n)

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


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney AUROC of ``pos`` above ``neg`` (0.5 when either is empty)."""
    if pos.size == 0 or neg.size == 0:
        return 0.5
    allv = np.concatenate([pos, neg])
    ranks = _rankdata(allv)
    r_pos = ranks[: pos.size].sum()
    return float((r_pos - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def _rankdata(x: np.ndarray) -> np.ndarray:
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


def _location_words(region: _Region, h: int, w: int) -> str:
    """Where a window lies, in words ("top left", "centre", ...)."""
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


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


@dataclass
class _Candidate:
    """Map-based analysis of one cluster (before the intervention)."""

    k: int
    cluster_id: int
    member: np.ndarray  # (n,) bool
    region: _Region
    moving: bool
    moving_size: int
    signals: dict[str, float]
    map_score: float


def _analyse_cluster(
    stats: _ClassStats, k: int, cid: int, member: np.ndarray, translation_tolerant: bool
) -> _Candidate:
    """Map signals and map score of one cluster."""
    n, h, w = stats.n, stats.h, stats.w
    size = int(member.sum())
    rest = ~member
    n_rest = int(rest.sum())
    fin = member.astype(np.float32) / max(size, 1)
    fout = rest.astype(np.float32) / max(n_rest, 1)
    best: tuple[float, _Region, float, float] | None = None
    for s in stats.sizes:
        b = stats.box[s].reshape(n, -1)
        sin, sout = fin @ b, fout @ b
        obj = sin - sout - _AREA_PENALTY * s * s / (h * w)
        j = int(np.argmax(obj))
        if best is None or obj[j] > best[0]:
            nw = w - s + 1
            best = (float(obj[j]), _Region("window", s, j // nw, j % nw), float(sin[j]), float(sout[j]))
    for fw, share in stats.frame.items():
        sin_f, sout_f = float(fin @ share), float(fout @ share)
        area = (h * w - (h - 2 * fw) * (w - 2 * fw)) / (h * w)
        obj_f = sin_f - sout_f - _AREA_PENALTY * area
        if best is None or obj_f > best[0]:
            best = (obj_f, _Region("frame", fw), sin_f, sout_f)
    assert best is not None
    _, region, share_in, share_out = best
    per_sample = _region_shares(stats, region)
    contrast = share_in - share_out
    # Lift against the rest's *median* share: robust to a few artifact samples left outside the cluster.
    lift_fixed = (share_in + _LIFT_EPS) / (float(np.median(per_sample[rest])) + _LIFT_EPS) if n_rest else 1.0
    auc_fixed = _auroc(per_sample[member], per_sample[rest])

    # Translation-tolerant: each sample's own best window of each size.
    moving_best: tuple[float, int, float, float, float] = (-np.inf, stats.sizes[0], 0.0, 0.0, 0.5)
    if translation_tolerant:
        for s in stats.sizes:
            pk = stats.peak[s]
            pin, pout = float(pk[member].mean()) if size else 0.0, float(pk[rest].mean()) if n_rest else 0.0
            obj = pin - pout - _AREA_PENALTY * s * s / (h * w)
            if obj > moving_best[0]:
                moving_best = (obj, s, pin, pout, _auroc(pk[member], pk[rest]))
    _, msize, peak_in, peak_out, auc_moving = moving_best
    moving_contrast = peak_in - peak_out if translation_tolerant else -1.0
    # Moving only wins clearly: a fixed artifact is also a (trivially) moving one.
    moving = translation_tolerant and moving_contrast > contrast + 0.05
    loc = moving_contrast if moving else contrast
    lift = (peak_in + _LIFT_EPS) / (peak_out + _LIFT_EPS) if moving else lift_fixed
    # A shortcut sits where the rest of the class has (almost) no relevance: lift >= 100 counts fully,
    # a natural sub-group (lift ~10 on synthetic maps) half.
    lift_factor = float(np.clip(np.log10(max(lift, 1.0)) / 2.0, 0.0, 1.0))
    auc = auc_moving if moving else auc_fixed
    conductance = stats.conductance(member)
    fraction = size / max(n, 1)
    border = float(stats.frame.get(1, np.zeros(n))[member].mean()) if size else 0.0
    consistency = max(0.0, 2.0 * auc - 1.0)
    map_score = (
        max(loc, 0.0)
        * lift_factor
        * (0.5 + 0.5 * consistency)
        * (0.5 + 0.5 * (1.0 - conductance))
        * (1.0 - 0.25 * fraction)
    )
    if size < _MIN_SIZE or n_rest == 0:
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
        "peak_in": peak_in,
        "peak_out": peak_out,
        "auroc_fixed": auc_fixed,
        "auroc_moving": auc_moving,
        "consistency": consistency,
        "conductance": conductance,
        "separation": 1.0 - conductance,
        "border_share": border,
        "localisation": loc,
        "map_score": map_score,
        # Where the hot region is (so that per-sample suspicion can be recomputed from the maps).
        "region_frame": float(region.kind == "frame"),
        "region_size": float(region.size),
        "region_row": float(region.row),
        "region_col": float(region.col),
        "moving": float(moving),
        "moving_size": float(msize),
    }
    return _Candidate(k, cid, member, region, moving, int(msize), signals, float(map_score))


def _region_shares(stats: _ClassStats, region: _Region) -> np.ndarray:
    """``(n,)`` share of each sample's positive relevance in ``region``."""
    if region.kind == "frame":
        return stats.frame[region.size]
    return stats.box[region.size][:, region.row, region.col]


def _peak_masks(stats: _ClassStats, idx: np.ndarray, s: int) -> np.ndarray:
    """``(len(idx), h, w)`` bool masks of each sample's own best ``s×s`` window."""
    b = stats.box[s][idx]
    nw = b.shape[2]
    j = b.reshape(len(idx), -1).argmax(axis=1)
    return _window_masks(j // nw, j % nw, s, stats.h, stats.w)


@dataclass
class _Stamp:
    """What a tested cluster's members show where the model looks: the pixels a carrier repeats.

    ``cells`` are the members' median inputs on the analysis grid inside their (fixed, aligned or
    moving) window, row-major, and ``weights`` the members' mean relevance per cell. A sample's
    distance is its relevance-weighted mean absolute difference to ``cells`` at its best-matching
    window of the region's size anywhere in the image (a frame: in place). Only windows inside the grid
    count, so a stamp that touches the image border where the members' window has a margin around it
    matches less well. See :func:`_find_carriers` for the threshold.
    """

    cells: np.ndarray  # (cells, C)
    weights: np.ndarray  # (cells,)
    region: _Region
    own: np.ndarray  # (donors,) the members' own distances to ``cells``


def _grid_cells(x: torch.Tensor, h: int, w: int) -> np.ndarray:
    """``(n, C, H, W)`` inputs average-pooled (in float32) to the ``h×w`` analysis grid: ``(n, h, w, C)``
    float64."""
    return F.adaptive_avg_pool2d(x.float(), (h, w)).permute(0, 2, 3, 1).double().numpy()


def _window_distances(
    cells: np.ndarray, weights: np.ndarray, region: _Region, reach: int | None, g: np.ndarray
) -> tuple[np.ndarray, int, int]:
    """Weighted mean |pixel - cells| of grid inputs ``g`` ``(n, h, w, C)`` at every allowed window of
    ``region``'s size: ``(n, rows, cols)`` and the grid position of entry ``[:, 0, 0]``. ``reach`` None
    allows every position, else positions within ``reach`` cells of the region."""
    n, h, w, _ = g.shape
    s = region.size
    if reach is None:
        r0, r1, c0, c1 = 0, h - s + 1, 0, w - s + 1
    else:
        r0, r1 = max(0, region.row - reach), min(h - s + 1, region.row + reach + 1)
        c0, c1 = max(0, region.col - reach), min(w - s + 1, region.col + reach + 1)
    wt = (weights / max(float(weights.sum()), 1e-12)).reshape(s, s)
    proto = cells.reshape(s, s, -1)
    dist = np.zeros((n, r1 - r0, c1 - c0))
    for i in range(s):
        for j in range(s):
            if wt[i, j] > 0:
                dist += wt[i, j] * np.abs(g[:, r0 + i : r1 + i, c0 + j : c1 + j] - proto[i, j]).mean(axis=3)
    return dist, r0, c0


def _match_masks(
    cells: np.ndarray, weights: np.ndarray, region: _Region, reach: int, g: np.ndarray
) -> np.ndarray:
    """``(n, h, w)`` masks of each sample's window (within ``reach`` of ``region``) that looks most
    like ``cells``."""
    n, h, w, _ = g.shape
    dist, r0, c0 = _window_distances(cells, weights, region, reach, g)
    nw = dist.shape[2]
    j = dist.reshape(n, -1).argmin(axis=1)
    return _window_masks(r0 + j // nw, c0 + j % nw, region.size, h, w)


def _stamp_distance(stamp: _Stamp, g: np.ndarray) -> np.ndarray:
    """``(n,)`` smallest weighted mean |pixel - stamp| of grid inputs ``g`` ``(n, h, w, C)`` over the
    stamp's allowed windows."""
    n, h, w, _ = g.shape
    r = stamp.region
    if r.kind == "frame":
        wt = stamp.weights / max(float(stamp.weights.sum()), 1e-12)
        diff = np.abs(g[:, r.mask(h, w)] - stamp.cells[None]).mean(axis=2)  # (n, cells)
        return np.asarray(diff @ wt)
    dist, _, _ = _window_distances(stamp.cells, stamp.weights, r, None, g)
    return np.asarray(dist.reshape(n, -1).min(axis=1))


def _find_carriers(
    stamp: _Stamp, probe: InterventionProbe, sample_ids: list[str], rows: np.ndarray, h: int, w: int
) -> list[int]:
    """Rows (of ``sample_ids``) among ``rows`` whose inputs repeat ``stamp`` at an allowed window.

    The threshold is the geometric mean of the members' median distance and the scanned samples'
    median distance: a sample counts when it is nearer (in ratio) to how the members match the stamp
    than to how ordinary samples do. Percentiles of the members alone fail both ways: the 90th misses
    10 % of samples exactly like the members by construction, and in an impure cluster it sits among
    the ordinary samples (benchmark, T-shirt with a background square: members' median 0.003, 90th
    percentile 0.80; planted non-members' median 0.003; ordinary samples 0.50 and more).
    """
    dist = np.empty(len(rows))
    for start in range(0, len(rows), _CARRIER_CHUNK):
        chunk = rows[start : start + _CARRIER_CHUNK]
        g = _grid_cells(probe.load_inputs([sample_ids[i] for i in chunk]), h, w)
        dist[start : start + len(chunk)] = _stamp_distance(stamp, g)
    if dist.size == 0:
        return []
    threshold = math.sqrt(max(float(np.median(stamp.own)), 1e-12) * float(np.median(dist)))
    return [int(i) for i in rows[dist <= threshold]]


def _local_peak_masks(stats: _ClassStats, idx: np.ndarray, region: _Region, reach: int) -> np.ndarray:
    """``(len(idx), h, w)`` masks of each sample's own window of ``region``'s size, at most ``reach``
    cells from the region in each direction (an artifact that jitters around one place).

    The window is centred on the sample's hottest *core* (the window less a quarter of its side on each
    side): a stamp smaller than the window fits in several windows with the same share, and their argmax
    would put it anywhere inside; its core fixes where.
    """
    s = region.size
    m = s // 4
    core = s - 2 * m
    b = _box_sums(_integral(stats.p[idx].astype(np.float64)), core)
    # core positions whose surrounding window (core - m) stays on the grid and within reach
    r0 = max(m, region.row - reach + m)
    r1 = min(stats.h - s + m + 1, region.row + reach + m + 1)
    c0 = max(m, region.col - reach + m)
    c1 = min(stats.w - s + m + 1, region.col + reach + m + 1)
    local = b[:, r0:r1, c0:c1]
    nw = local.shape[2]
    j = local.reshape(len(idx), -1).argmax(axis=1)
    return _window_masks(r0 - m + j // nw, c0 - m + j % nw, s, stats.h, stats.w)


def _paste_flips(
    probe: InterventionProbe,
    class_index: int,
    donor_ids: list[str],
    donor_masks: np.ndarray,
    target_ids: list[str],
    donor_inputs: torch.Tensor,
) -> np.ndarray:
    """Paste donor pixels (inside their grid masks, upsampled) into targets; ``(m,)`` bool "now class".

    Each target gets one donor by rendezvous hashing of their contents, so a donor set that changed by
    a few samples since the last run changes only a few pairs (and the rest come from the cache).
    """
    pick = rendezvous_pairs([probe.key(t) for t in target_ids], [probe.key(d) for d in donor_ids])
    pred = probe.predict_pasted(
        target_ids,
        [donor_ids[i] for i in pick],
        np.asarray(donor_masks)[pick],
        donor_inputs=dict(zip(donor_ids, donor_inputs, strict=True)),
    )
    return np.asarray(pred == class_index)


class _Targets:
    """Other-class images that the paste test writes into (ids; images are loaded only when needed).

    Which of them the model already assigns to the class is predicted on first use only: a class whose
    candidates all fail the appearance gate runs no forward pass at all.
    """

    def __init__(self, probe: InterventionProbe, class_index: int, ids: list[str]) -> None:
        self.ids = ids
        self._probe = probe
        self._class_index = class_index
        self._already: np.ndarray | None = None

    @property
    def already(self) -> np.ndarray:
        """``(m,)`` bool: already predicted as the class (cannot flip to it; excluded)."""
        if self._already is None:
            pred = self._probe.predict_pasted(self.ids, None, None)
            self._already = np.asarray(pred == self._class_index)
        return self._already

    @classmethod
    def load(cls, probe: InterventionProbe, class_index: int, limit: int) -> _Targets | None:
        keep = np.asarray(probe.other_labels) != class_index
        ids = [i for i, ok in zip(probe.other_ids, keep, strict=True) if ok][:limit]
        return cls(probe, class_index, ids) if ids else None


def _sign_test_p(b: int, c: int) -> float:
    """One-sided exact sign test: P(X >= b) for X ~ Binomial(b + c, 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(b, n + 1))
    return float(tail / 2.0**n)


def _intervention(
    stats: _ClassStats,
    cand: _Candidate,
    class_index: int,
    sample_ids: list[str],
    probe: InterventionProbe,
    targets: _Targets | None,
    donor_order: np.ndarray,
    min_flip: float = 0.0,
    min_appearance: float = 0.0,
    stamps: dict[int, _Stamp] | None = None,
) -> dict[str, float]:
    """The paste test of one cluster against its same-class null; returns raw numbers ({} if untestable).

    ``donor_order`` is the class's :func:`stable_order` of its samples' contents: the donors are the
    first ``_MAX_DONORS`` members (and non-members) in it, so one new member does not redraw every donor.

    The appearance signal comes first: below ``min_appearance`` no flag is possible, so no paste is
    predicted (``paste_skipped``). When the members' flip rate is below ``min_flip`` the null arm is not
    run (``flip_null_skipped``).
    """
    if targets is None:
        return {}
    in_order = cand.member[donor_order]
    d_in = np.sort(donor_order[in_order][:_MAX_DONORS])
    d_out = np.sort(donor_order[~in_order][:_MAX_DONORS])
    if d_in.size == 0 or d_out.size == 0:
        return {}  # no members or no rest of the class to compare with: untestable
    if cand.moving:
        m_in = _peak_masks(stats, d_in, cand.moving_size)
        m_out = _peak_masks(stats, d_out, cand.moving_size)
    else:
        shared = cand.region.mask(stats.h, stats.w)
        m_in = np.broadcast_to(shared, (d_in.size, *shared.shape))
        m_out = np.broadcast_to(shared, (d_out.size, *shared.shape))
    # Both donor sets are loaded once: the appearance signal needs them, and the pastes reuse them.
    ids_in, ids_out = [sample_ids[i] for i in d_in], [sample_ids[i] for i in d_out]
    x_in, x_out = probe.load_inputs(ids_in), probe.load_inputs(ids_out)
    g_in, g_out = _grid_cells(x_in, stats.h, stats.w), _grid_cells(x_out, stats.h, stats.w)

    def look(a_in: np.ndarray, a_out: np.ndarray) -> float:
        # The members' mean relevance per region cell (aligned like the pixels) weighs the cells.
        wt = stats.p[d_in][a_in].reshape(len(d_in), -1).mean(axis=0)
        return _grid_appearance(g_in, a_in, g_out, a_out, weights=wt)

    m_in, m_out = np.asarray(m_in), np.asarray(m_out)
    appearance = look(m_in, m_out)
    aligned = False
    if not cand.moving and cand.region.kind == "window" and _JITTER_REACH > 0:
        # A stamp that lands at a slightly different place in each member (a tag on the background,
        # a watermark) covers different cells of a fixed window, so its pixels there look varied.
        reach = max(1, round(_JITTER_REACH * cand.region.size))
        # Start at each member's hottest core, then let every sample take the window that looks most
        # like the members' median there (twice): the relevance blob of a small stamp is blurred and
        # offset, its pixels are not. Non-members are aligned to the same median, so a natural part,
        # which aligns about as well in any image of the class, gains nothing from it.
        l_in = _local_peak_masks(stats, d_in, cand.region, reach)
        for _ in range(_ALIGN_ROUNDS):
            proto = np.median(g_in[l_in].reshape(len(d_in), -1, g_in.shape[3]), axis=0)
            wt_l = np.clip(stats.p[d_in][l_in].reshape(len(d_in), -1).mean(axis=0), 0.0, None)
            l_in = _match_masks(proto, wt_l, cand.region, reach, g_in)
        l_out = _match_masks(proto, wt_l, cand.region, reach, g_out)
        local = look(l_in, l_out)
        # Counted only when the aligned pixels clearly look like a stamp: each sample picking its
        # best-matching window makes any region look somewhat more alike. Below the flag's floor it
        # would only move scores (a Bag cluster went from 0.21 to 0.33 and outranked a planted glyph),
        # and natural parts reached 0.41-0.45 aligned (four false alarms in 18 background_square runs)
        # against 0.54-0.94 for the planted squares: hence the extra margin.
        if local > appearance and local >= min_appearance + _ALIGNED_MARGIN:
            appearance, aligned, m_in, m_out = local, True, l_in, l_out
    if stamps is not None:
        # Carriers are looked for at every position of a window stamp: the same tag or watermark
        # elsewhere in the image is the same shortcut (a frame stays a frame).
        region = _Region("window", cand.moving_size) if cand.moving else cand.region
        a = g_in[m_in].reshape(len(d_in), -1, g_in.shape[3])
        proto = np.median(a, axis=0)
        wt = np.clip(stats.p[d_in][m_in].reshape(len(d_in), -1).mean(axis=0), 0.0, None)
        own = (np.abs(a - proto[None]).mean(axis=2) @ (wt / max(float(wt.sum()), 1e-12))).astype(np.float64)
        stamps[cand.cluster_id] = _Stamp(proto, wt, region, own)
    if appearance < min_appearance:
        # The flag needs appearance >= flag_min_appearance, so below it no paste can change the verdict:
        # skip both arms. Most natural clusters end here (median appearance 0.07 in the benchmark grid),
        # which takes the paste test's forward passes, the costliest part of a rerun, off them.
        return {"appearance": appearance, "aligned": float(aligned), "paste_skipped": 1.0}
    valid = ~targets.already  # a target already predicted as this class cannot flip to it
    nv = int(valid.sum())
    if nv == 0:
        return {}  # every target is already this class: nothing can flip, untestable
    flip_in = _paste_flips(probe, class_index, ids_in, m_in, targets.ids, x_in)
    fi = flip_in[valid]
    if fi.mean() < min_flip:
        # The flag needs flip - null >= flip_margin, so below the margin it is impossible whatever the
        # null: skip the null arm (half the test's forward passes; most natural clusters end here).
        return {
            "flip_rate": float(fi.mean()),
            "flip_p": 1.0,
            "flip_targets": float(nv),
            "flip_null_skipped": 1.0,
            "appearance": appearance,
            "aligned": float(aligned),
        }
    flip_out = _paste_flips(probe, class_index, ids_out, m_out, targets.ids, x_out)
    fo = flip_out[valid]
    b = int((fi & ~fo).sum())
    c = int((~fi & fo).sum())
    return {
        "flip_rate": float(fi.mean()),
        "flip_null": float(fo.mean()),
        "flip_excess": float(fi.mean() - fo.mean()),
        "flip_p": _sign_test_p(b, c),
        "flip_targets": float(nv),
        "appearance": appearance,
        "aligned": float(aligned),
    }


def _appearance(
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
    return _grid_appearance(_grid_cells(x_in, h, w), m_in, _grid_cells(x_out, h, w), m_out, weights)


def _grid_appearance(
    g_in: np.ndarray,
    m_in: np.ndarray,
    g_out: np.ndarray,
    m_out: np.ndarray,
    weights: np.ndarray | None = None,
) -> float:
    """:func:`_appearance` on inputs already pooled to the grid (:func:`_grid_cells`)."""
    # The spreads are taken in float32, as the pooled pixels are (the float64 grid is an exact copy).
    a = g_in[m_in].reshape(len(g_in), -1, g_in.shape[-1]).astype(np.float32)  # (n, cells, C)
    b = g_out[m_out].reshape(len(g_out), -1, g_out.shape[-1]).astype(np.float32)
    if len(a) < 2 or len(b) < 1:
        return 0.0
    wt = np.ones(a.shape[1]) if weights is None else np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    spread_all = float(wt @ np.concatenate([a, b]).std(axis=0).mean(axis=1))
    if spread_all < 1e-6 * max(float(wt.sum()), 1e-12):
        return 0.0
    spread_in = float(wt @ a.std(axis=0).mean(axis=1))
    return float(np.clip(1.0 - spread_in / spread_all, 0.0, 1.0))


def _evidence(
    cand: _Candidate, class_name: str, n: int, h: int, w: int, tested: dict[str, float] | None
) -> list[str]:
    """Sentences a person can check; the first clause of each is what :func:`evidence_line` shows."""
    s = cand.signals
    size = int(s["size"])
    out = [
        f"{_pct(s['fraction'])} of class {class_name} ({size} of {n} samples); "
        f"{_pct(s['separation'])} of its kNN-graph edges stay inside the cluster"
    ]
    if cand.moving:
        ms = cand.moving_size
        out.append(
            f"each member puts {_pct(s['peak_in'])} of its relevance into a {ms}×{ms} spot at varying positions "
            f"(rest of {class_name}: {_pct(s['peak_out'])})"
        )
    else:
        r = cand.region
        where = (
            f"a {r.size}-cell frame along the image border"
            if r.kind == "frame"
            else f"a {r.size}×{r.size} region at the {_location_words(r, h, w)}"
        )
        out.append(
            f"{_pct(s['share_in'])} of its relevance lies in {where} "
            f"(rest of {class_name}: {_pct(s['share_out'])}; the region is {_pct(s['region_cells'] / (h * w))} "
            "of the image)"
        )
    out.append(
        f"a member's share there exceeds a random other {class_name} sample's with probability "
        f"{_pct((1 + s['consistency']) / 2)}"
    )

    # The appearance sentence, shared by the skipped and the pasted case (each adds its own ending).
    aligned = bool(tested and tested.get("aligned", 0.0) > 0)
    where_alike = (
        f"in each member's own {cand.region.size}×{cand.region.size} window near the region (aligned to "
        "the members' median pixels)"
        if aligned
        else "there"
    )
    pasted = "those windows" if aligned else "that region"
    alike = (
        f"its members' pixels {where_alike} vary {_pct(1.0 - tested['appearance'])} as much as those of "
        f"{class_name} images in general (a stamp, tag or frame repeats the same pixels"
        if tested and "appearance" in tested
        else ""
    )
    if tested and "flip_rate" not in tested and "appearance" in tested:
        out.append(alike + "), so it was not paste-tested: a flag needs alike pixels")
    elif tested and "flip_null" not in tested:
        out.append(
            f"pasting {pasted} flips {_pct(tested['flip_rate'])} of other-class images to {class_name} "
            f"({int(tested['flip_targets'])} images; below the margin a flag needs, so the same-class null "
            "was not run)"
        )
    elif tested:
        out.append(
            f"pasting {pasted} flips {_pct(tested['flip_rate'])} of other-class images to {class_name} "
            f"(the same region from "
            f"other {class_name} images: {_pct(tested['flip_null'])}; "
            f"p = {tested['flip_p']:.2g}, {int(tested['flip_targets'])} images)"
        )
        if alike:
            out.append(alike + "; an object part varies)")
    return out


def _select_k(per_k: dict[int, list[_Candidate]], chosen: int, h: int, w: int) -> int:
    """The labelling that isolates the most suspicious pattern best.

    The best cluster over all ``k`` (by map score) defines the pattern (its hot region). Every cluster
    of every ``k`` with at least ``_SELECT_SLACK`` of that map score and an overlapping hot region is a
    version of the same finding; the one whose members are best told apart from the rest of the class
    by their share in the region (AUROC, the ``consistency`` signal) wins. A cluster that holds only part
    of the artifact samples leaves the rest among the non-members, and one that also holds clean
    samples puts them among the members: both lower the AUROC, so it peaks at the complete cluster.
    """
    allc = [c for cs in per_k.values() for c in cs]
    best = max(allc, key=lambda c: (c.map_score, c.k == chosen, -c.k))
    if best.map_score <= 0:
        return chosen if chosen in per_k else min(per_k)
    ref = best.region.mask(h, w)
    same = [
        c
        for c in allc
        if c.map_score >= _SELECT_SLACK * best.map_score
        and c.moving == best.moving
        and (c.moving or bool((c.region.mask(h, w) & ref).any()))
    ]
    pick = max(same, key=lambda c: (round(c.signals["consistency"], 2), c.map_score, c.k == chosen, -c.k))
    return pick.k


def score_class(
    class_index: int,
    class_name: str,
    sample_ids: list[str],
    maps: np.ndarray,
    spectral: SpectralResult,
    clustering: ClusteringResult,
    *,
    config: ScoringConfig,
    probe: InterventionProbe | None = None,
    seed: int = 0,
) -> list[ClusterFinding]:
    """Score every cluster of one class and explain each score.

    Parameters
    ----------
    class_index, class_name
        The class.
    sample_ids : list[str]
        Ids of the ``n`` rows, in the row order of ``maps`` and of the labellings.
    maps : np.ndarray
        ``(n, h, w)`` float per-sample normalised relevance (signed, divided by total ``|R|``).
    spectral : SpectralResult
        The class's spectral result (its kNN graph gives the conductance).
    clustering : ClusteringResult
        All labellings; the one returned is chosen as described in the module docstring.
    config : ScoringConfig
        Intervention settings and thresholds.
    probe : InterventionProbe, optional
        Enables the paste test on the ``config.intervention_candidates`` leading clusters.
    seed : int
        Seeds the choice of donor images; same inputs and seed give the same findings.

    Returns
    -------
    list[ClusterFinding]
        The clusters of one labelling, most suspicious first.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (n, h, w), got {maps.shape}")
    n, h, w = maps.shape
    if len(sample_ids) != n:
        raise ValueError(f"{len(sample_ids)} sample ids for {n} maps")
    if not clustering.labellings:
        return []
    stats = _ClassStats(maps, spectral)
    tol = config.translation_tolerant

    per_k: dict[int, list[_Candidate]] = {}
    ks = sorted(clustering.labellings)
    if config.select_k != "best" and clustering.chosen_k in clustering.labellings:
        ks = [clustering.chosen_k]
    for k in ks:
        lab = np.asarray(clustering.labellings[k])
        per_k[k] = [_analyse_cluster(stats, k, int(c), lab == c, tol) for c in np.unique(lab)]
    chosen = clustering.chosen_k if clustering.chosen_k in per_k else ks[0]

    best_k = _select_k(per_k, chosen, stats.h, stats.w)
    cands = sorted(per_k[best_k], key=lambda c: (-c.map_score, c.cluster_id))

    tests: dict[int, dict[str, float]] = {}
    stamps: dict[int, _Stamp] = {}
    out: dict[str, float]
    use_probe = probe is not None and config.intervention and config.intervention_candidates > 0
    if use_probe:
        assert probe is not None
        targets = _Targets.load(probe, class_index, config.intervention_samples)
        # One seeded order of the class's contents serves every candidate's donor pick (restricted to a
        # cluster, it is the order stable_order gives the cluster alone).
        donor_order = stable_order([probe.key(sid) for sid in sample_ids], f"donor|{seed}|{class_index}")
        for cand in cands[: config.intervention_candidates]:
            if cand.signals["size"] < _MIN_SIZE or cand.map_score <= 0:
                continue
            out = _intervention(
                stats,
                cand,
                class_index,
                sample_ids,
                probe,
                targets,
                donor_order,
                min_flip=config.flip_margin,
                min_appearance=config.flag_min_appearance,
                stamps=stamps,
            )
            if out:
                tests[cand.cluster_id] = out

    margin = config.flip_margin
    alpha = config.flip_alpha
    ratio_min = config.flip_ratio
    map_floor = config.flag_min_map_score
    max_fraction = config.flag_max_fraction
    map_thr = config.map_threshold
    findings = []
    for cand in cands:
        sig = dict(cand.signals)
        sig["eigengap_k"] = float(clustering.eigengap_k)
        sig["chosen_k"] = float(clustering.chosen_k)
        res = tests.get(cand.cluster_id)
        if use_probe:
            strength = 0.0
            ratio_ok = False
            if res and "flip_null" in res:
                # Smoothed rate ratio: the members' region must flip several times as often as the same
                # region of ordinary class members (a natural part flips both; see the module docstring).
                res["flip_ratio"] = (res["flip_rate"] + _RATIO_EPS) / (res["flip_null"] + _RATIO_EPS)
                ratio_ok = res["flip_ratio"] >= ratio_min
                if res["flip_p"] < alpha:
                    strength = min(1.0, max(0.0, res["flip_excess"]) / _FULL_EXCESS) * min(
                        1.0, res["flip_ratio"] / ratio_min
                    )
            if res:
                sig.update(res)  # without "flip_null" when the members' flip rate was below the margin
            # Appearance (tested clusters only; 0 otherwise): a region whose pixels repeat in every
            # member is what a shortcut looks like, an object part that varies is not.
            appearance = float(res.get("appearance", 0.0)) if res else 0.0
            # The map evidence ranks, the paste test confirms: on real models the paste flip rates of a
            # planted artifact (7-19 %) and of a "catch-all" class's natural halves (19-21 %) overlap,
            # while the map score ranked the artifact first in every benchmark cell looked at.
            score = (
                cand.map_score * (_APPEARANCE_FLOOR + (1 - _APPEARANCE_FLOOR) * appearance) * (0.5 + strength)
            )
            suspicious = (
                res is not None
                and "flip_excess" in res
                and res["flip_excess"] >= margin
                and res["flip_p"] < alpha
                and ratio_ok
                and cand.map_score >= map_floor
                # The null arm is "ordinary members of the class"; when the cluster IS most of the class,
                # its complement is the odd group and the comparison no longer calibrates anything.
                and cand.signals["fraction"] <= max_fraction
                # A shortcut repeats the same pixels in every member; a natural object part varies
                # (a catch-all class such as Bag has parts that flip other images as well).
                and appearance >= config.flag_min_appearance
            )
        else:
            score = cand.map_score
            suspicious = cand.map_score >= map_thr and cand.signals["size"] >= _MIN_SIZE
        sig["tested"] = float(res is not None and "flip_rate" in res)  # pasted (not only looked at)
        idx = np.flatnonzero(cand.member)
        carriers: list[int] = []
        evidence = _evidence(cand, class_name, n, h, w, res)
        stamp = stamps.get(cand.cluster_id)
        if suspicious and config.carriers and stamp is not None and probe is not None:
            # A flagged stamp is rarely all in one cluster (where the object's own relevance is strong
            # the sample lands elsewhere): list every other sample of the class that repeats its pixels.
            carriers = _find_carriers(stamp, probe, sample_ids, np.flatnonzero(~cand.member), h, w)
            sig["carriers"] = float(len(carriers))
            where = "at some position" if stamp.region.kind == "window" else "in the same place"
            evidence.append(
                f"{len(carriers)} more {class_name} images ({_pct(len(carriers) / n)} of the class) repeat "
                f"the members' pixels {where}: listed as carriers of the same pattern"
                if carriers
                else f"no other {class_name} image repeats the members' pixels {where}: the cluster holds "
                "every carrier of the pattern"
            )
        findings.append(
            ClusterFinding(
                class_index=class_index,
                class_name=class_name,
                cluster_id=cand.cluster_id,
                k=best_k,
                size=int(idx.size),
                fraction=float(idx.size / n),
                score=float(score),
                suspicious=suspicious,
                evidence=evidence,
                signals=sig,
                member_ids=[sample_ids[i] for i in idx],
                mean_heatmap=maps[idx].mean(axis=0).astype(np.float32),
                carrier_ids=[sample_ids[i] for i in carriers],
            )
        )
    findings.sort(key=lambda f: (-f.score, f.cluster_id))
    logger.info(
        "class %s: k=%d (chosen_k=%d), top cluster score %.3f%s",
        class_name,
        best_k,
        clustering.chosen_k,
        findings[0].score if findings else 0.0,
        " (suspicious)" if findings and findings[0].suspicious else "",
    )
    return findings


def sample_suspicion(maps: np.ndarray, findings: list[ClusterFinding], sample_ids: list[str]) -> np.ndarray:
    """Per-sample suspicion of one class: its cluster's score plus a within-cluster tie-break.

    The tie-break (at most 0.01) is the sample's own share of positive relevance in its cluster's hot
    region (or, for a moving artifact, its own best window of that size), so that inside a cluster
    the samples that carry the pattern most strongly come first.

    Parameters
    ----------
    maps : np.ndarray
        ``(n, h, w)`` the maps given to :func:`score_class`.
    findings : list[ClusterFinding]
        Its output for this class.
    sample_ids : list[str]
        Row ids of ``maps``.

    Returns
    -------
    np.ndarray
        ``(n,)`` float64; samples in no finding get 0.
    """
    maps = np.asarray(maps, dtype=np.float64)
    n, h, w = maps.shape
    pos = np.clip(maps, 0.0, None)
    mass = pos.reshape(n, -1).sum(axis=1)
    p = pos / np.where(mass > 0, mass, 1.0)[:, None, None]
    row = {sid: i for i, sid in enumerate(sample_ids)}
    out = np.zeros(n)
    for f in findings:
        idx = np.array([row[s] for s in f.member_ids], dtype=np.int64)
        if idx.size == 0:
            continue
        sig = f.signals
        if sig.get("moving", 0.0) > 0:
            s = int(sig["moving_size"])
            share = _box_sums(_integral(p[idx]), s).reshape(idx.size, -1).max(axis=1)
        elif "region_size" in sig:
            kind = "frame" if sig["region_frame"] > 0 else "window"
            region = _Region(kind, int(sig["region_size"]), int(sig["region_row"]), int(sig["region_col"]))
            share = p[idx][:, region.mask(h, w)].sum(axis=1)
        else:
            share = np.zeros(idx.size)
        out[idx] = np.maximum(out[idx], f.score + 0.01 * share)
        if f.carrier_ids:
            # Carriers repeat the flagged pattern outside the cluster: as suspicious as its members.
            cidx = np.array([row[c] for c in f.carrier_ids if c in row], dtype=np.int64)
            out[cidx] = np.maximum(out[cidx], f.score)
    return out


def rank_findings(per_class: list[list[ClusterFinding]]) -> list[ClusterFinding]:
    """All clusters of all classes, most suspicious first (by score).

    Scores of one run are comparable across classes (same signals, same scale); ties are broken by
    class and cluster id so the order is deterministic.
    """
    flat = [f for fs in per_class for f in fs]
    # By score only: putting flagged clusters first let a borderline natural flag outrank a planted
    # artifact whose ratio fell just short of the flag (benchmark, glyph on Boot).
    return sorted(flat, key=lambda f: (-f.score, f.class_index, f.cluster_id))


def evidence_line(f: ClusterFinding) -> str:
    """One line for tables, e.g. "12 % of class Sandal; 71 % of its relevance lies in a 4×4 region at
    the top left; pasting that region flips 63 % of other-class images to Sandal"."""
    parts = []
    for i, sentence in enumerate(f.evidence):
        if (i == 2 and "probability" in sentence) or sentence.startswith("its members' pixels"):
            continue  # consistency and appearance are detail for the report, not the table
        # First clause of each sentence: the claim; the parenthesis and the rest are detail.
        clause = sentence.split(" (")[0].split("; ")[0]
        parts.append(clause)
    return "; ".join(parts)


__all__ = ["InterventionProbe", "evidence_line", "rank_findings", "sample_suspicion", "score_class"]

"""Candidates of a class: every cluster of every k and the hot-spot groups, merged into one per pattern.

The k-means sweep stores a labelling per ``k``; a shortcut is often isolated at one ``k`` only (merged
into a big cluster below it, split above it). Every cluster of every ``k`` is analysed, and so are the
*hot-spot groups* (the rare-shortcut route): for every window, the samples whose share of relevance
there stands far above the class's median share, which finds a group of a few dozen samples sharing a
hot spot even when k-means does not isolate it.

Candidates that are versions of one pattern (nested or overlapping members and overlapping hot regions)
are merged; the version that best isolates the pattern represents it: among versions within
``select_slack`` of the pattern's best map score, the one whose members are best told apart from the rest
of the class by their share in the region (the ``consistency`` AUROC). A version holding only part of the
pattern leaves the rest among the non-members, one that also holds other samples puts them among the
members: both lower that AUROC, so it peaks at the complete group. A hot-spot group is separated by
construction, so it represents a pattern only when no cluster comes close, unless its split is distinct in
its own right (``hotspot_distinct``).
"""

from __future__ import annotations

import numpy as np

from spray.analysis.scoring.signals import Candidate, ClassStats, analyse_cluster
from spray.config import ScoringConfig
from spray.records import ClusterFinding, ClusteringResult
from spray.runs.keys import HOTSPOT_K


def _best_splits(b: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every column of ``b`` ``(n, P)``: the top-``m`` split (``lo <= m <= hi``) that best separates
    the highest values from the rest, by the Fisher ratio ``(μ_top − μ_rest)² / (σ_top² + σ_rest²)``.

    Returns the best ratio ``(P,)``, its ``m`` ``(P,)`` and the threshold (the m-th highest value) ``(P,)``.
    """
    n = b.shape[0]
    srt = -np.sort(-b, axis=0).astype(np.float64)  # descending per column
    c1 = np.cumsum(srt, axis=0)
    c2 = np.cumsum(srt**2, axis=0)
    m = np.arange(lo, hi + 1)[:, None]  # (M, 1) sizes of the top group
    s1, s2 = c1[m[:, 0] - 1], c2[m[:, 0] - 1]
    mu_t, var_t = s1 / m, np.maximum(s2 / m - (s1 / m) ** 2, 0.0)
    r = n - m
    mu_r = (c1[-1] - s1) / r
    var_r = np.maximum((c2[-1] - s2) / r - mu_r**2, 0.0)
    ratio = (mu_t - mu_r) ** 2 / (var_t + var_r + 1e-12)
    j = np.argmax(ratio, axis=0)
    cols = np.arange(b.shape[1])
    best_m = j + lo
    return ratio[j, cols], best_m, srt[best_m - 1, cols]


def _split_scale(b: np.ndarray, area: float, config: ScoringConfig) -> np.ndarray:
    """The shares ``b`` ``(n, P)`` of windows covering ``area`` of the image on the scale the hot-spot
    split compares them (``hotspot_split``); the logarithm keeps their order, so a threshold on it is one
    on the shares."""
    if config.hotspot_split == "share":
        return b
    return np.log(b.astype(np.float64) + config.hotspot_log_floor * area)


def hotspot_groups(stats: ClassStats, config: ScoringConfig) -> list[tuple[np.ndarray, float]]:
    """Member masks ``(n,)`` of the class's hot-spot groups with their Fisher ratios, most distinct first.

    At every window (every size and position) the samples are split into the ``m`` with the highest
    share of relevance there and the rest, at the ``m`` that separates the two best (Fisher ratio of
    their shares, or of their logarithms with ``hotspot_split: log_share``;
    ``min_cluster_size <= m <= hotspot_max_fraction · n``). A window is a hot spot when
    the ratio reaches ``hotspot_separation`` (a distinct group, not the tail of a continuous spread) and
    the group's shares exceed the class's median share by ``hotspot_min_excess`` on average. Groups
    sharing ``nest_overlap`` of their members with a more distinct one are dropped, and the others lose
    the samples a more distinct one holds (they stay disjoint).
    """
    n = stats.n
    lo = max(config.min_cluster_size, config.hotspot_min_size)
    hi = min(n - 2, int(config.hotspot_max_fraction * n))
    if hi < lo:
        return []
    found: list[tuple[float, np.ndarray]] = []
    for s in stats.sizes:
        b = stats.box[s].reshape(n, -1)
        scaled = _split_scale(b, s * s / (stats.h * stats.w), config)
        ratio, _, thr = _best_splits(scaled, lo, hi)
        med = np.median(b, axis=0)
        for j in np.flatnonzero(ratio >= config.hotspot_separation):
            member = scaled[:, j] >= thr[j]
            if member.sum() <= hi and float(b[member, j].mean() - med[j]) >= config.hotspot_min_excess:
                found.append((float(ratio[j]), member))
    found.sort(key=lambda t: -t[0])
    out: list[tuple[np.ndarray, float]] = []
    taken = np.zeros(n, dtype=bool)
    for ratio_j, member in found:
        if len(out) >= config.hotspot_candidates:
            break
        if any(overlap(member, m) >= config.nest_overlap for m, _ in out):
            continue
        # Groups are kept disjoint, so that they form one labelling (k = 0) a run can store.
        rest = member & ~taken
        if rest.sum() >= lo:
            out.append((rest, ratio_j))
            taken |= rest
    return out


def hotspot_labelling(findings: list[ClusterFinding], sample_ids: list[str]) -> np.ndarray | None:
    """The hot-spot candidates of a class as a labelling (``k`` = :data:`HOTSPOT_K`): ``(n,)`` int32 with
    each sample's group, -1 for none; None when the class has none. Groups are disjoint."""
    spots = [f for f in findings if f.k == HOTSPOT_K]
    if not spots:
        return None
    row = {sid: i for i, sid in enumerate(sample_ids)}
    labels = np.full(len(sample_ids), -1, dtype=np.int32)
    for f in spots:
        labels[[row[s] for s in f.member_ids]] = f.cluster_id
    return labels


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """``|a ∩ b| / min(|a|, |b|)``: 1 when one group holds the other."""
    small = min(int(a.sum()), int(b.sum()))
    return float((a & b).sum()) / small if small else 0.0


def _by_share_only(ratio: float | None, config: ScoringConfig) -> bool:
    """A hot-spot group (``ratio`` its Fisher ratio; None for a cluster) that is not distinct in its own
    right (``hotspot_distinct``): it was picked by its share alone."""
    if ratio is None:
        return False
    return config.hotspot_distinct is None or ratio < config.hotspot_distinct


def all_candidates(stats: ClassStats, clustering: ClusteringResult, config: ScoringConfig) -> list[Candidate]:
    """Every distinct cluster of the labellings looked at, and the hot-spot groups, with map signals.

    The same member set at several ``k`` is analysed once, at its smallest ``k``.
    """
    ks = sorted(clustering.labellings)
    if config.select_k != "best" and clustering.chosen_k in clustering.labellings:
        ks = [clustering.chosen_k]
    seen: set[bytes] = set()
    out: list[Candidate] = []
    groups: list[tuple[int, int, np.ndarray, float | None]] = [
        (k, int(c), np.asarray(clustering.labellings[k]) == c, None)
        for k in ks
        for c in np.unique(clustering.labellings[k])
    ]
    if config.hotspots:
        groups += [(HOTSPOT_K, j, m, r) for j, (m, r) in enumerate(hotspot_groups(stats, config))]
    for k, cid, member, ratio in groups:
        key = np.packbits(member).tobytes()
        if key in seen:
            continue
        seen.add(key)
        cand = analyse_cluster(stats, k, cid, member, config, by_share=_by_share_only(ratio, config))
        if ratio is not None:
            cand.signals["hotspot_separation"] = ratio
        out.append(cand)
    return out


def _same_pattern(a: Candidate, b: Candidate, h: int, w: int, config: ScoringConfig) -> bool:
    """Versions of one pattern: nested or overlapping members, and overlapping hot regions."""
    if overlap(a.member, b.member) < config.nest_overlap or a.moving != b.moving:
        return False
    return a.moving or bool((a.region.mask(h, w) & b.region.mask(h, w)).any())


def merge_patterns(cands: list[Candidate], h: int, w: int, config: ScoringConfig) -> list[Candidate]:
    """One candidate per pattern, at the granularity that isolates it best; by map score, best first.

    Candidates are taken by map score; each joins the first pattern whose strongest version it
    overlaps (:func:`_same_pattern`) or starts a new one. A pattern is represented by its best-isolated
    version (see the module docstring).
    """
    order = sorted(cands, key=lambda c: (-c.map_score, c.k, c.cluster_id))
    patterns: list[list[Candidate]] = []
    for c in order:
        for versions in patterns:
            if _same_pattern(versions[0], c, h, w, config):
                versions.append(c)
                break
        else:
            patterns.append([c])
    reps = sorted(
        (_representative(v, config) for v in patterns), key=lambda c: (-c.map_score, c.k, c.cluster_id)
    )
    if config.select_superset is None:
        return reps
    # A representative inside a stronger one's group is a part of that pattern, not a second finding.
    kept: list[Candidate] = []
    for c in reps:
        if not any(_same_pattern(k, c, h, w, config) for k in kept):
            kept.append(c)
    return kept


def _picked_by_share(c: Candidate, config: ScoringConfig) -> bool:
    """A hot-spot candidate that earned no consistency credit (see :func:`_by_share_only`)."""
    return c.k == HOTSPOT_K and _by_share_only(c.signals.get("hotspot_separation"), config)


def _representative(versions: list[Candidate], config: ScoringConfig) -> Candidate:
    """The version that best isolates a pattern (``versions[0]`` has the best map score)."""
    best = versions[0]
    if best.map_score <= 0:
        return best
    close = [c for c in versions if c.map_score >= config.select_slack * best.map_score]
    # A hot-spot group is separated by its share in one window by construction (its consistency is 1),
    # so unless it is distinct in its own right it represents a pattern only when no cluster comes close.
    clusters = [c for c in close if not _picked_by_share(c, config)] or close
    best = max(clusters, key=lambda c: (round(c.signals["consistency"], 2), c.map_score, -c.k, -c.cluster_id))
    if config.select_superset is None:
        return best
    # The rounding lets the map score choose among versions that isolate the pattern alike; a version
    # holding the winner and isolating at least as well is the whole of what the winner is a part of.
    wider = [
        c
        for c in clusters
        if c.member.sum() > best.member.sum()
        and (c.member & best.member).sum() >= config.select_superset * best.member.sum()
        and c.signals["consistency"] >= best.signals["consistency"]
    ]
    return max(wider, key=lambda c: (int(c.member.sum()), c.signals["consistency"]), default=best)

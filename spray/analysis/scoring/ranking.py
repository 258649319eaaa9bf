"""Ranking: which labelling a class's findings come from, and the run's findings in one order."""

from __future__ import annotations

from spray.analysis.scoring.signals import Candidate
from spray.records import ClusterFinding


def select_k(per_k: dict[int, list[Candidate]], chosen: int, h: int, w: int, slack: float) -> int:
    """The labelling that isolates the most suspicious pattern best.

    The best cluster over all ``k`` (by map score) defines the pattern (its hot region). Every cluster
    of every ``k`` with at least ``slack`` of that map score and an overlapping hot region is a version
    of the same finding; the one whose members are best told apart from the rest of the class by their
    share in the region (AUROC, the ``consistency`` signal) wins. A cluster that holds only part of the
    artifact samples leaves the rest among the non-members, and one that also holds clean samples puts
    them among the members: both lower the AUROC, so it peaks at the complete cluster.
    """
    allc = [c for cs in per_k.values() for c in cs]
    best = max(allc, key=lambda c: (c.map_score, c.k == chosen, -c.k))
    if best.map_score <= 0:
        return chosen if chosen in per_k else min(per_k)
    ref = best.region.mask(h, w)
    same = [
        c
        for c in allc
        if c.map_score >= slack * best.map_score
        and c.moving == best.moving
        and (c.moving or bool((c.region.mask(h, w) & ref).any()))
    ]
    pick = max(same, key=lambda c: (round(c.signals["consistency"], 2), c.map_score, c.k == chosen, -c.k))
    return pick.k


def rank_findings(per_class: list[list[ClusterFinding]]) -> list[ClusterFinding]:
    """All clusters of all classes, most suspicious first (by score).

    Scores of one run are comparable across classes (same signals, same scale); ties are broken by
    class and cluster id so the order is deterministic.
    """
    flat = [f for fs in per_class for f in fs]
    # By score only: putting flagged clusters first let a borderline natural flag outrank a planted
    # artifact whose ratio fell just short of the flag (docs/detection.md).
    return sorted(flat, key=lambda f: (-f.score, f.class_index, f.cluster_id))

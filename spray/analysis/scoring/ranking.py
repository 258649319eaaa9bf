"""Ranking: the run's candidates in one order, and which of them are reported as findings."""

from __future__ import annotations

from spray.config import ScoringConfig
from spray.records import ClusterFinding


def rank_findings(
    per_class: list[list[ClusterFinding]], config: ScoringConfig | None = None
) -> list[ClusterFinding]:
    """The run's findings, most suspicious first: every flagged candidate and the top
    ``config.findings_top`` candidates by score (the defaults of :class:`ScoringConfig` when None).

    Scores of one run are comparable across classes (same signals, same scale); ties are broken by
    class, ``k`` and cluster id so the order is deterministic. Every candidate stays in its class's list.
    """
    top = (config or ScoringConfig()).findings_top
    flat = sorted(
        (f for fs in per_class for f in fs), key=lambda f: (-f.score, f.class_index, f.k, f.cluster_id)
    )
    # By score only: putting flagged candidates first let a borderline natural flag outrank a planted
    # artifact whose ratio fell just short of the flag (docs/detection.md).
    return [f for i, f in enumerate(flat) if i < top or f.suspicious]

"""Ranking: the run's candidates in one order, and which of them are reported as findings."""

from __future__ import annotations

from spray.config import ScoringConfig
from spray.records import ClusterFinding


def rank_findings(
    per_class: list[list[ClusterFinding]], config: ScoringConfig | None = None
) -> list[ClusterFinding]:
    """Every candidate of every class, most suspicious first.

    Scores of one run are comparable across classes (same signals, same scale; flagged candidates score
    0.5 and above, the others below); ties are broken by class, ``k`` and cluster id so the order is
    deterministic. ``config`` is accepted for symmetry with :func:`select_findings` and not used.
    """
    del config
    return sorted(
        (f for fs in per_class for f in fs), key=lambda f: (-f.score, f.class_index, f.k, f.cluster_id)
    )


def select_findings(
    ranked: list[ClusterFinding], config: ScoringConfig | None = None
) -> list[ClusterFinding]:
    """The findings a person is shown: every flagged candidate and the top ``config.findings_top`` of the
    ranked candidates (the defaults of :class:`ScoringConfig` when None), in ranked order."""
    top = (config or ScoringConfig()).findings_top
    return [f for i, f in enumerate(ranked) if i < top or f.suspicious]

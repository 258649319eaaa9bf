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


def note_repeats(findings: list[ClusterFinding], nest_overlap: float) -> list[ClusterFinding]:
    """One class's findings, each flagged one that repeats a higher-scoring flagged one's group (at least
    ``nest_overlap`` of its members are there, at another k or in the other space) or its stamp (that share
    of its members are the other's members or carriers: the same stamp elsewhere, one shortcut split into
    parts) with one more evidence line naming it: a person then flags the group once, not as two shortcuts.

    Scores, flags and order are left as they are (``findings`` in any order; returned in the same order).
    """
    flagged = sorted((f for f in findings if f.suspicious), key=lambda f: (-f.score, f.k, f.cluster_id))
    for i, f in enumerate(flagged):
        members = set(f.member_ids)
        for g in flagged[:i]:
            shared = len(members & set(g.member_ids))
            carried = len(members & set(g.member_ids + g.carrier_ids))
            if shared >= nest_overlap * len(members):
                f.evidence.append(
                    f"the same group as {g.key}, which scores higher: {shared} of its {len(members)} members "
                    "are there"
                )
                break
            if carried >= nest_overlap * len(members):
                f.evidence.append(
                    f"the same stamp as {g.key}, which scores higher: {carried} of its {len(members)} members "
                    "are among its members and carriers"
                )
                break
    return findings

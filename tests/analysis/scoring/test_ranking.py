"""Ranking: the labelling that isolates the pattern, and the run's order across classes."""

from __future__ import annotations

from spray.analysis.scoring import rank_findings, score_class, select_findings
from spray.config import ScoringConfig
from tests.analysis.scoring.cases import NAME, Case, score


def test_rank_findings_across_classes(planted: Case, natural: Case) -> None:
    a = score(planted)
    b = score_class(
        7, "Bag", natural.ids, natural.maps, natural.spectral, natural.clustering, config=ScoringConfig()
    )
    ranked = rank_findings([b, a])
    assert len(ranked) == len(a) + len(b)
    assert ranked[0].class_name == NAME and ranked[0].suspicious
    assert [f.score for f in ranked[1:]] == sorted((f.score for f in ranked[1:]), reverse=True)


def test_findings_are_the_flagged_and_the_top_candidates(planted: Case, natural: Case) -> None:
    a = score(planted)
    b = score_class(
        7, "Bag", natural.ids, natural.maps, natural.spectral, natural.clustering, config=ScoringConfig()
    )
    ranked = rank_findings([b, a])
    assert len(ranked) == len(a) + len(b)
    shown = select_findings(ranked, ScoringConfig(findings_top=2))
    assert shown[:2] == ranked[:2]
    assert shown[2:] == [f for f in ranked[2:] if f.suspicious]
    assert all(f.score >= 0.5 for f in ranked if f.suspicious)
    assert all(f.score < 0.5 for f in ranked if not f.suspicious)


def test_a_flagged_part_of_a_higher_flagged_group_says_so() -> None:
    """The demo at one thread flagged the planted 150 (k6/c2) and 65 of them again (k11/c8): the second
    names the first; scores, flags and order stay; an unflagged part or a disjoint flagged group gets no
    line."""
    import numpy as np

    from spray.analysis.scoring import note_repeats
    from spray.records import ClusterFinding

    def finding(k: int, cid: int, members: range, score: float, flagged: bool) -> ClusterFinding:
        return ClusterFinding(
            class_index=6, class_name="Shirt", cluster_id=cid, k=k, size=len(members), fraction=0.1,
            score=score, suspicious=flagged, evidence=["e"], signals={}, member_ids=[f"s{i}" for i in members],
            mean_heatmap=np.zeros((2, 2), np.float32),
        )  # fmt: skip

    whole = finding(6, 2, range(150), 0.60, True)
    part = finding(11, 8, range(40, 105), 0.58, True)
    small = finding(12, 1, range(0, 20), 0.01, False)
    other = finding(3, 0, range(300, 360), 0.55, True)
    out = note_repeats([part, small, whole, other], ScoringConfig().nest_overlap)
    assert out == [part, small, whole, other]
    assert (
        part.evidence[-1] == "the same group as 6/k6/c2, which scores higher: 65 of its 65 members are there"
    )
    assert whole.evidence == small.evidence == other.evidence == ["e"]
    assert part.suspicious and part.score == 0.58
    # An outside check (a ViT, a text watermark): one shortcut flagged as three nearly disjoint groups, each
    # one's members the others' carriers; the lower ones name the top one
    top = finding(4, 1, range(500, 524), 0.61, True)
    top.carrier_ids = [f"s{i}" for i in range(524, 608)]
    second = finding(5, 2, range(524, 560), 0.60, True)
    out = note_repeats([second, top], ScoringConfig().nest_overlap)
    assert second.evidence[-1] == (
        "the same stamp as 6/k4/c1, which scores higher: 36 of its 36 members are among its members and carriers"
    )
    assert top.evidence == ["e"]

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

"""Ranking: the labelling that isolates the pattern, and the run's order across classes."""

from __future__ import annotations

import numpy as np

from spray.analysis.scoring import rank_findings, score_class
from spray.analysis.scoring.ranking import select_k
from spray.analysis.scoring.signals import ClassStats, analyse_cluster
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


def test_select_k_prefers_the_complete_cluster_over_a_split_one(planted: Case) -> None:
    """k=2: the planted set whole; k=3: the planted set split in two halves. The whole one wins."""
    config = ScoringConfig()
    stats = ClassStats(planted.maps, planted.spectral, config)
    truth = planted.truth
    half = truth.copy()
    half[np.flatnonzero(truth)[::2]] = False
    whole = [analyse_cluster(stats, 2, 0, truth, config), analyse_cluster(stats, 2, 1, ~truth, config)]
    split = [
        analyse_cluster(stats, 3, 0, half, config),
        analyse_cluster(stats, 3, 1, truth & ~half, config),
        analyse_cluster(stats, 3, 2, ~truth, config),
    ]
    assert select_k({2: whole, 3: split}, 3, stats.h, stats.w, config.select_slack) == 2

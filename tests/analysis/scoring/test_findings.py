"""score_class as a whole: the planted cluster first with its region, deterministic, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from spray.analysis.scoring import score_class
from spray.config import ScoringConfig
from tests.analysis.scoring.cases import SIZE, Case, make_probe, patch_predictor, rows_of, score


def test_planted_cluster_ranks_first_with_its_region(planted: Case) -> None:
    findings = score(planted)
    top = findings[0]
    members = rows_of(top.member_ids)
    precision = planted.truth[members].mean()
    recall = planted.truth[members].sum() / planted.truth.sum()
    assert precision > 0.9 and recall > 0.9
    assert top.suspicious
    assert any("top left" in e for e in top.evidence)
    assert top.score > findings[1].score
    assert top.mean_heatmap.shape == (SIZE, SIZE)
    assert top.signals["lift"] > 30  # the rest of the class has ~no relevance there
    # Exactly one cluster stands out: the natural strategies are not flagged.
    assert sum(f.suspicious for f in findings) == 1
    # Candidates from every k, one per pattern: every key once, and every sample in some candidate.
    assert len({f.key for f in findings}) == len(findings)
    assert set(planted.ids) <= {s for f in findings for s in f.member_ids}


def test_deterministic_with_seed(planted: Case) -> None:
    probe = make_probe(planted, patch_predictor)
    a = score(planted, probe=probe, seed=5)
    b = score(planted, probe=probe, seed=5)
    assert [(f.key, f.score, f.member_ids, f.evidence) for f in a] == [
        (f.key, f.score, f.member_ids, f.evidence) for f in b
    ]


def test_select_k_chosen_takes_candidates_of_the_chosen_labelling_only(planted: Case) -> None:
    found = score(planted, config=ScoringConfig(select_k="chosen", hotspots=False))
    assert {f.k for f in found} == {planted.clustering.chosen_k}
    with_spots = score(planted, config=ScoringConfig(select_k="chosen"))
    assert {f.k for f in with_spots} <= {0, planted.clustering.chosen_k}


def test_bad_shapes_are_named(planted: Case) -> None:
    with pytest.raises(ValueError, match="shape"):
        score_class(
            0, "x", planted.ids, planted.maps[0], planted.spectral, planted.clustering, config=ScoringConfig()
        )
    with pytest.raises(ValueError, match="sample ids"):
        score_class(
            0,
            "x",
            planted.ids[:-1],
            planted.maps,
            planted.spectral,
            planted.clustering,
            config=ScoringConfig(),
        )
    assert np.asarray(planted.maps).ndim == 3

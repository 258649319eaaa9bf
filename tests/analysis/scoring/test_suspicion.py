"""Per-sample suspicion consistent with the findings."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from spray.analysis.scoring import sample_suspicion
from spray.config import ScoringConfig
from tests.analysis.scoring.cases import Case, N, make_probe, patch_predictor, rows_of, score


def test_members_and_carriers_score_as_their_finding(planted: Case) -> None:
    outside = np.flatnonzero(~planted.truth)
    carriers = np.random.default_rng(1).choice(outside, 20, replace=False)
    found = score(planted, probe=make_probe(planted, patch_predictor, carriers))
    top = found[0]
    s = sample_suspicion(planted.maps, found, planted.ids, ScoringConfig().suspicion_tie_break)
    member_rows = rows_of(top.member_ids)
    # Carriers are as suspicious as the members; everyone else in the class stays below them.
    assert s[carriers].min() >= top.score - 1e-12
    assert s[member_rows].min() >= top.score
    rest = np.setdiff1d(np.arange(N), np.concatenate([member_rows, carriers]))
    assert s[rest].max() < top.score
    assert roc_auc_score(planted.truth, s) > 0.95


def test_the_tie_break_orders_members_by_their_own_share(planted: Case) -> None:
    found = score(planted)
    top = found[0]
    s = sample_suspicion(planted.maps, found, planted.ids, ScoringConfig().suspicion_tie_break)
    rows = rows_of(top.member_ids)
    assert (s[rows] - top.score).max() <= 0.01 and np.ptp(s[rows]) > 0


def test_analyze_class_keeps_a_suspicion_consistent_with_its_candidates(planted: Case) -> None:
    from spray.analysis.classes import analyze_class
    from spray.config import config_from_dict

    cfg = config_from_dict(
        {"model": {"factory": "m:f"}, "data": {"kind": "idx", "images": "x", "labels": "y"},
         "analysis": {"embedding": "spectral", "k_max": 6}},
        check_files=False,
    )  # fmt: skip
    ca = analyze_class(3, "Sandal", planted.ids, planted.maps, cfg)
    s = ca.sample_suspicion
    assert s.dtype == np.float32 and s.shape == (N,)
    top = ca.clusters[0]
    rows = rows_of(top.member_ids)
    assert s[rows].min() >= np.float32(top.score) and s.argmax() in rows
    # Every sample scores the best candidate that holds it (up to the tie-break).
    best = np.zeros(N)
    for f in ca.clusters:
        idx = rows_of(f.member_ids)
        best[idx] = np.maximum(best[idx], f.score)
    np.testing.assert_array_less(best - 1e-6, s)
    np.testing.assert_array_less(s, best + 0.0100001)

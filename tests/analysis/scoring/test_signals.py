"""Map signals: ranks, AUROC and conductance against oracles; the planted cluster's signals."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata as scipy_rankdata
from sklearn.metrics import roc_auc_score

from spray.analysis.scoring.signals import ClassStats, analyse_cluster, auroc, rankdata
from spray.config import ScoringConfig
from tests.analysis.scoring.cases import Case


def test_rankdata_matches_scipy_with_ties() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 17, 300):
        x = rng.integers(0, 5, size=n).astype(float)
        np.testing.assert_allclose(rankdata(x), scipy_rankdata(x))


def test_auroc_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    pos, neg = rng.integers(0, 6, 40).astype(float), rng.integers(0, 5, 70).astype(float)
    want = roc_auc_score(np.r_[np.ones(40), np.zeros(70)], np.r_[pos, neg])
    assert abs(auroc(pos, neg) - want) < 1e-12
    assert auroc(pos, np.zeros(0)) == 0.5


def test_conductance_matches_a_dense_computation(planted: Case) -> None:
    stats = ClassStats(planted.maps, planted.spectral, ScoringConfig())
    knn = planted.spectral.knn_indices
    n = len(knn)
    a = np.zeros((n, n))
    a[np.repeat(np.arange(n), knn.shape[1]), knn.ravel()] = 1.0
    a = (a + a.T) / 2
    s = planted.truth
    cut = a[s][:, ~s].sum()
    want = cut / min(a[s].sum(), a[~s].sum())
    assert abs(stats.conductance(s) - want) < 1e-9


def test_the_planted_cluster_has_a_hot_top_left_region(planted: Case) -> None:
    config = ScoringConfig()
    stats = ClassStats(planted.maps, planted.spectral, config)
    cand = analyse_cluster(stats, 0, 0, planted.truth, config)
    assert cand.region.kind == "window" and cand.region.row < 8 and cand.region.col < 8
    assert cand.signals["lift"] > 30 and cand.signals["consistency"] > 0.9
    # A random subset of the same size is not localised anywhere special.
    rnd = np.zeros_like(planted.truth)
    rnd[np.random.default_rng(0).choice(len(rnd), planted.truth.sum(), replace=False)] = True
    other = analyse_cluster(stats, 0, 1, rnd, config)
    assert other.map_score < 0.2 * cand.map_score


def test_tiny_clusters_score_zero(planted: Case) -> None:
    config = ScoringConfig()
    stats = ClassStats(planted.maps, planted.spectral, config)
    tiny = np.zeros_like(planted.truth)
    tiny[np.flatnonzero(planted.truth)[: config.min_cluster_size - 1]] = True
    assert analyse_cluster(stats, 0, 0, tiny, config).map_score == 0.0


def test_a_region_holding_no_relevance_has_a_share_of_exactly_zero(planted: Case) -> None:
    """An outside check: integral-image differences left ±1e-7 where a window holds nothing, so the AUROC of
    the shares broke their ties arbitrarily (0.711 stored where the tie-averaged value is 0.689)."""
    rng = np.random.default_rng(0)
    maps = np.zeros_like(planted.maps)
    h, w = maps.shape[1:]
    # relevance everywhere but the bottom-right quarter, with values whose sums round: the windows there,
    # differences of the sums above and left of them, hold nothing
    maps[:] = rng.random(maps.shape) * 1e3 + 1e-3
    maps[:, h // 2 :, w // 2 :] = 0.0
    stats = ClassStats(maps, planted.spectral, ScoringConfig())
    for s, box in stats.box.items():
        corner = box[:, h // 2 :, w // 2 :]
        if corner.size:
            assert np.all(corner == 0.0), s
    s = stats.sizes[0]
    members, rest = stats.box[s][:10, -1, -1], stats.box[s][10:, -1, -1]
    assert auroc(members, rest) == 0.5  # all tied: neither side ranks above the other

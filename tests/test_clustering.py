"""Tests of spray.analysis.clustering on synthetic heatmaps (small planted watermark cluster)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from spray.analysis.clustering import cluster_sweep, row_normalized
from spray.analysis.preprocess import normalize_heatmaps, reduce_dimension
from spray.analysis.spectral import spectral_embedding
from spray.config.analysis import KChoiceConfig
from spray.lab.synthetic import make_heatmaps


def _f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = float(np.sum(pred & truth))
    return 2 * tp / (pred.sum() + truth.sum()) if tp else 0.0


def _best_f1(labels: np.ndarray, truth: np.ndarray) -> float:
    return max(_f1(labels == c, truth) for c in np.unique(labels))


@pytest.fixture(scope="module")
def synthetic() -> tuple[np.ndarray, np.ndarray, int, object]:
    heat, labels, small = make_heatmaps(1000, seed=0)
    feats = reduce_dimension(normalize_heatmaps(heat), seed=0)
    return feats, labels, small, spectral_embedding(feats, seed=0)


def test_synthetic_generator() -> None:
    heat, labels, small = make_heatmaps(1000, n_clusters=5, small_fraction=0.03, seed=1)
    assert heat.shape == (1000, 32, 32) and heat.dtype == np.float32
    assert small == 4 and np.sum(labels == small) == 30
    again = make_heatmaps(1000, n_clusters=5, small_fraction=0.03, seed=1)
    assert np.array_equal(heat, again[0]) and np.array_equal(labels, again[1])


def test_finds_small_cluster_and_beats_corelay_default(synthetic) -> None:
    _, labels, small, spec = synthetic
    res = cluster_sweep(spec, k_max=7, seed=0)
    assert set(res.labellings) == set(range(2, 8))
    assert all(v.shape == (1000,) and v.dtype == np.int32 for v in res.labellings.values())
    assert set(res.scores[5]) >= {"silhouette", "stability", "eigengap"}
    truth = labels == small
    assert res.chosen_k == 5
    assert _best_f1(res.labellings[res.chosen_k], truth) >= 0.9
    assert adjusted_rand_score(labels, res.labellings[res.chosen_k]) >= 0.9
    # CoRelAy's default: k-means on all 32 row-normalised eigenvectors.
    corelay = KMeans(5, n_init=10, random_state=0).fit_predict(row_normalized(spec.eigenvectors, 32))
    assert adjusted_rand_score(labels, corelay) < adjusted_rand_score(labels, res.labellings[5]) - 0.3
    assert _best_f1(corelay, truth) < _best_f1(res.labellings[5], truth)


def test_sweep_deterministic_and_canonical(synthetic) -> None:
    _, _, _, spec = synthetic
    a = cluster_sweep(spec, k_max=4, seed=3, choice=KChoiceConfig(n_init=3))
    b = cluster_sweep(spec, k_max=4, seed=3, choice=KChoiceConfig(n_init=3))
    assert a.chosen_k == b.chosen_k and a.scores == b.scores
    for k in a.labellings:
        assert np.array_equal(a.labellings[k], b.labellings[k])
        counts = np.bincount(a.labellings[k])
        assert np.all(np.diff(counts) <= 0)  # cluster 0 is the largest


def test_subsampled_fit_path(synthetic) -> None:
    _, labels, small, spec = synthetic
    res = cluster_sweep(spec, k_max=6, seed=0, choice=KChoiceConfig(max_fit=600))
    assert res.labellings[5].shape == (1000,)
    assert _best_f1(res.labellings[5], labels == small) >= 0.9


@pytest.mark.parametrize("max_fit", [600, 20_000])
def test_labellings_without_the_choice_of_k_are_the_same(synthetic, max_fit: int) -> None:
    """choose=False (concept space) skips the k scores, and must not change a single label."""
    _, _, _, spec = synthetic
    choice = KChoiceConfig(n_init=3, max_fit=max_fit)
    full = cluster_sweep(spec, k_max=5, seed=2, choice=choice)
    bare = cluster_sweep(spec, k_max=5, seed=2, choice=choice, choose=False)
    assert bare.scores == {} and full.scores and bare.chosen_k == bare.eigengap_k == full.eigengap_k
    assert sorted(bare.labellings) == sorted(full.labellings)
    for k in full.labellings:
        assert np.array_equal(bare.labellings[k], full.labellings[k])


def test_tiny_inputs() -> None:
    rng = np.random.default_rng(0)
    spec = spectral_embedding(rng.normal(size=(5, 4)).astype(np.float32))
    res = cluster_sweep(spec, k_max=8)
    assert max(res.labellings) <= 4 and all(v.shape == (5,) for v in res.labellings.values())
    assert res.chosen_k in res.labellings
    one = cluster_sweep(spectral_embedding(np.ones((2, 3), np.float32)), k_max=8)
    assert one.labellings[one.chosen_k].shape == (2,)


def test_silhouette_matches_sklearn() -> None:
    from sklearn.metrics import silhouette_score

    from spray.analysis.clustering import _silhouette

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 4))
    labels = rng.integers(0, 5, 1200)
    labels[7] = 5  # a singleton cluster scores 0
    assert _silhouette(x, labels, 7) == pytest.approx(silhouette_score(x, labels), abs=1e-6)  # label 6 empty

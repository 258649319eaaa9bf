"""Tests of spray.analysis.layout: UMAP's graph and layout in numpy, against umap-learn as the oracle."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from sklearn.manifold import trustworthiness

from spray.analysis.layout import CURVE_A, CURVE_B, fuzzy_graph, umap_layout
from spray.analysis.spectral import knn_graph, spectral_embedding
from spray.config.analysis import KnnSearchConfig
from spray.errors import DataError


def _blobs(n: int, seed: int = 0, centres: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = rng.normal(scale=6.0, size=(centres, 8))
    labels = rng.integers(0, centres, n)
    return (c[labels] + rng.normal(size=(n, 8))).astype(np.float32), labels


def _umap_knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """spray's kNN (self excluded) and the same graph as umap-learn wants it (self first)."""
    g = knn_graph(x, n_neighbors=k, search=KnnSearchConfig(exact_below=10**9))
    n = x.shape[0]
    idx = np.hstack([np.arange(n)[:, None], g.indices])
    dist = np.hstack([np.zeros((n, 1), np.float32), g.distances])
    return g.indices, g.distances, idx, dist


def test_curve_parameters_are_umaps() -> None:
    umap_ = pytest.importorskip("umap.umap_")
    a, b = umap_.find_ab_params(1.0, 0.1)
    np.testing.assert_allclose([CURVE_A, CURVE_B], [a, b], rtol=1e-6)


@pytest.mark.slow  # umap-learn compiles its numba code first (~20 s)
def test_fuzzy_graph_matches_umap_learn() -> None:
    umap_ = pytest.importorskip("umap.umap_")
    x, _ = _blobs(600, seed=1)
    x[5] = x[4]  # a duplicate pair: distance 0 to the nearest neighbour
    ind, dst, idx, dist = _umap_knn(x, 10)
    oracle, _, _ = umap_.fuzzy_simplicial_set(x, 11, 0, "euclidean", knn_indices=idx, knn_dists=dist)
    mine = fuzzy_graph(ind, dst).tocsr()
    oracle = oracle.tocsr()
    oracle.eliminate_zeros()
    assert mine.nnz == oracle.nnz
    assert abs(mine - oracle).max() < 1e-5
    assert abs(mine - mine.T).max() == 0.0 and mine.data.max() <= 1.0


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")  # umap-learn: seeded means one thread; no transform
def test_layout_as_trustworthy_as_umap_learn() -> None:
    """Same graph, same init: the numpy layout keeps local structure as well as umap-learn's."""
    umap = pytest.importorskip("umap")
    x, _ = _blobs(1500, seed=2, centres=6)
    ind, dst, idx, dist = _umap_knn(x, 10)
    spec = spectral_embedding(x, n_eigenvectors=4, seed=0)
    init = spec.eigenvectors[:, 1:3].astype(np.float64)
    ours = umap_layout(ind, dst, init, n_epochs=200, seed=0)
    theirs = umap.UMAP(
        n_neighbors=11, random_state=0, n_epochs=200, init=init, precomputed_knn=(idx, dist, None)
    ).fit_transform(x)
    t_ours = trustworthiness(x, ours, n_neighbors=10)
    t_theirs = trustworthiness(x, theirs, n_neighbors=10)
    assert t_ours >= t_theirs - 0.01, (t_ours, t_theirs)


def test_layout_separates_clusters_and_is_deterministic() -> None:
    x, labels = _blobs(800, seed=3)
    g = knn_graph(x, n_neighbors=10)
    init = spectral_embedding(x, n_eigenvectors=4, seed=0).eigenvectors[:, 1:3]
    y = umap_layout(g.indices, g.distances, init, n_epochs=100, seed=7)
    assert y.shape == (800, 2) and y.dtype == np.float32 and np.isfinite(y).all()
    assert np.array_equal(y, umap_layout(g.indices, g.distances, init, n_epochs=100, seed=7))
    assert not np.array_equal(y, umap_layout(g.indices, g.distances, init, n_epochs=100, seed=8))
    # Every point's nearest map neighbour has its label: the blobs stay apart on the map.
    d = np.linalg.norm(y[:, None] - y[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert np.mean(labels[d.argmin(axis=1)] == labels) > 0.99
    assert trustworthiness(x, y, n_neighbors=10) > 0.9


def test_layout_edge_cases() -> None:
    x, _ = _blobs(50, seed=4)
    g = knn_graph(x, n_neighbors=5)
    with pytest.raises(DataError, match="init"):
        umap_layout(g.indices, g.distances, np.zeros((49, 2)))
    with pytest.raises(DataError, match="n_epochs"):
        umap_layout(g.indices, g.distances, np.zeros((50, 2)), n_epochs=0)
    same = np.zeros((40, 3), np.float32)  # every row identical: all distances 0
    g = knn_graph(same, n_neighbors=5)
    y = umap_layout(g.indices, g.distances, np.zeros((40, 2)), n_epochs=20)
    assert np.isfinite(y).all()


def test_analysis_never_imports_numba() -> None:
    """Nothing compiles on first use: a class's whole analysis runs without numba being imported."""
    code = (
        "import sys, numpy as np\n"
        "from spray.analysis.clustering import cluster_sweep\n"
        "from spray.analysis.embedding import embed_2d\n"
        "from spray.analysis.spectral import spectral_embedding\n"
        "x = np.random.default_rng(0).normal(size=(6000, 16)).astype(np.float32)\n"
        "s = spectral_embedding(x, n_eigenvectors=8)\n"
        "cluster_sweep(s, k_max=3)\n"
        "embed_2d(x, s, method='umap', n_epochs=10, max_fit=5000)\n"
        "print('numba' in sys.modules, 'pynndescent' in sys.modules, 'umap' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]

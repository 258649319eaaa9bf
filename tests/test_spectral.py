"""Tests of spray.analysis.spectral against a dense oracle, plus edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from spray.analysis.spectral import eigengap_k, knn_graph, spectral_embedding
from spray.config.analysis import KnnSearchConfig
from spray.errors import ConfigError, DataError


def _blobs(n: int, seed: int = 0, d: int = 6, centres: int = 4, spread: float = 4.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(scale=spread, size=(centres, d))
    return (c[rng.integers(0, centres, n)] + rng.normal(size=(n, d))).astype(np.float32)


def _dense_oracle(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Everything dense: full distance matrix, argsort, (A+Aᵀ)/2, D^-1/2 A D^-1/2, eigh."""
    x64 = x.astype(np.float64)
    d = np.sqrt(((x64[:, None, :] - x64[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    nb = np.argsort(d, axis=1, kind="stable")[:, :k]
    a = np.zeros_like(d)
    a[np.repeat(np.arange(len(x)), k), nb.ravel()] = 1.0
    a = (a + a.T) / 2
    dinv = 1 / np.sqrt(a.sum(1))
    vals, vecs = np.linalg.eigh(dinv[:, None] * a * dinv[None, :])
    return vals[::-1], vecs[:, ::-1]


def _kmeans_first(vecs: np.ndarray, k: int) -> np.ndarray:
    v = vecs[:, :k] / np.linalg.norm(vecs[:, :k], axis=1, keepdims=True)
    return KMeans(k, n_init=10, random_state=0).fit_predict(v)


@pytest.mark.parametrize(("spread", "n_comp", "ks"), [(1.5, 1, (3, 4)), (4.0, 4, (4, 5))])
def test_matches_dense_oracle(spread: float, n_comp: int, ks: tuple[int, ...]) -> None:
    # spread 4 gives 4 disconnected components: eigenvalue 1 has multiplicity 4, which plain Lanczos
    # returns only once.
    x = _blobs(200, spread=spread)
    res = spectral_embedding(x, n_neighbors=10, n_eigenvectors=16, seed=0)  # n=200 > 4*16: Lanczos path
    vals, vecs = _dense_oracle(x, 10)
    np.testing.assert_allclose(res.eigenvalues, vals[:16], atol=1e-6)
    assert res.eigenvectors.shape == (200, 16) and res.eigenvectors.dtype == np.float32
    assert np.all(np.diff(res.eigenvalues) <= 1e-12)
    assert res.knn_indices.shape == (200, 10) and res.n_components == n_comp
    # Orthonormal eigenvectors.
    np.testing.assert_allclose(
        res.eigenvectors.T.astype(np.float64) @ res.eigenvectors, np.eye(16), atol=1e-5
    )
    for k in ks:
        assert adjusted_rand_score(_kmeans_first(vecs, k), _kmeans_first(res.eigenvectors, k)) == 1.0


def test_exact_knn_matches_brute_force_and_approx_agrees() -> None:
    x = _blobs(300, seed=2)
    g = knn_graph(x, n_neighbors=7)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert g.exact
    assert np.array_equal(g.indices, np.argsort(d, axis=1, kind="stable")[:, :7])
    np.testing.assert_allclose(g.distances, np.sort(d, axis=1)[:, :7], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def heat_features() -> np.ndarray:
    """6,000 synthetic heatmaps after spray's PCA to 128 dims: the approximate kNN's real input."""
    from spray.analysis.preprocess import normalize_heatmaps, reduce_dimension
    from spray.lab.synthetic import make_heatmaps

    heat, _, _ = make_heatmaps(6000, seed=3)
    return reduce_dimension(normalize_heatmaps(heat), n_components=128, seed=0)


def test_approximate_knn_recall_against_exact(heat_features: np.ndarray) -> None:
    x = heat_features
    exact = knn_graph(x, n_neighbors=10, search=KnnSearchConfig(exact_below=10**9))
    approx = knn_graph(x, n_neighbors=10, seed=1, search=KnnSearchConfig(exact_below=0))
    assert exact.exact and not approx.exact
    assert approx.indices.shape == (6000, 10) and approx.indices.dtype == np.int64
    assert not np.any(approx.indices == np.arange(6000)[:, None])
    hits = [np.intersect1d(a, e).size for a, e in zip(approx.indices, exact.indices, strict=True)]
    assert np.mean(hits) / 10 >= 0.98
    # Candidates are re-ranked by their exact distance: ascending and equal to a direct computation.
    assert np.all(np.diff(approx.distances, axis=1) >= 0)
    direct = np.linalg.norm(x[:, None, :] - x[approx.indices], axis=-1)
    np.testing.assert_allclose(approx.distances, direct, rtol=1e-3, atol=1e-6)
    # A feature order that is not by variance (a random rotation) finds the same neighbours: the index
    # rotates to principal axes itself.
    q = np.linalg.qr(np.random.default_rng(0).normal(size=(128, 128)))[0].astype(np.float32)
    rotated = knn_graph(x @ q, n_neighbors=10, seed=1, search=KnnSearchConfig(exact_below=0))
    hits = [np.intersect1d(a, e).size for a, e in zip(rotated.indices, exact.indices, strict=True)]
    assert np.mean(hits) / 10 >= 0.98


def test_approximate_knn_recall_on_real_images() -> None:
    """Pixels decay slowly in PCA (unlike the synthetic maps): a few leading dims would not be enough."""
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(0)
    digits = load_digits().data.astype(np.float32)
    x = np.vstack([digits + rng.normal(size=digits.shape) for _ in range(3)])  # 5,391 noisy copies
    x = np.hstack([x, rng.normal(scale=0.5, size=(x.shape[0], 64))]).astype(np.float32)  # 128 dims
    exact = knn_graph(x, n_neighbors=10, search=KnnSearchConfig(exact_below=10**9))
    approx = knn_graph(x, n_neighbors=10, search=KnnSearchConfig(exact_below=0))
    assert (approx.indices[:, :, None] == exact.indices[:, None, :]).any(axis=2).mean() >= 0.98


def test_approximate_knn_deterministic_for_any_thread_count(heat_features: np.ndarray) -> None:
    import faiss
    from threadpoolctl import threadpool_limits

    x = heat_features[:5000]
    before = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(1)
        with threadpool_limits(limits=1):  # numpy's BLAS too: the search is matrix products
            one = knn_graph(x, n_neighbors=10, seed=4, search=KnnSearchConfig(exact_below=0))
        faiss.omp_set_num_threads(2)
        with threadpool_limits(limits=2):
            two = knn_graph(x, n_neighbors=10, seed=4, search=KnnSearchConfig(exact_below=0))
    finally:
        faiss.omp_set_num_threads(before)
    assert np.array_equal(one.indices, two.indices)
    assert np.array_equal(one.distances, two.distances)
    again = knn_graph(x, n_neighbors=10, seed=4, search=KnnSearchConfig(exact_below=0))
    assert np.array_equal(one.indices, again.indices)


def test_cell_search_is_exact_within_the_probed_cells() -> None:
    """Oracle: a dense distance matrix restricted to each row's probed cells, sorted per row."""
    from spray.analysis.ivf import cell_index, ivf_knn

    x = _blobs(2500, seed=11, d=16, centres=8, spread=1.5)
    s = KnnSearchConfig(exact_below=0, ivf_dims=8, probes=4)
    idx, dist = ivf_knn(x, 10, 3, s)
    cix = cell_index(x, 3, s)
    cell_of = np.empty(len(x), np.int64)
    cell_of[cix.order] = np.repeat(np.arange(cix.starts.size - 1), np.diff(cix.starts))
    probes = np.empty_like(cix.probes)
    probes[cix.order] = cix.probes
    x64 = x.astype(np.float64)
    d = np.sqrt(((x64[:, None, :] - x64[None, :, :]) ** 2).sum(-1))
    allowed = (cell_of[None, :, None] == probes[:, None, :]).any(axis=2)
    np.fill_diagonal(allowed, False)
    d[~allowed] = np.inf
    assert (np.isfinite(d).sum(axis=1) >= 10).all()  # no row fell back to the exact search
    oracle = np.sort(d, axis=1)[:, :10]
    np.testing.assert_allclose(dist, oracle, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.take_along_axis(d, idx, axis=1), oracle, rtol=1e-4, atol=1e-4)
    # Recall against exact kNN is tested on realistic inputs above; probing every cell is brute force.
    exact = knn_graph(x, n_neighbors=10, search=KnnSearchConfig(exact_below=10**9))
    every = knn_graph(x, n_neighbors=10, search=s.model_copy(update={"probes": 1024}))
    assert np.array_equal(every.indices, exact.indices)
    np.testing.assert_allclose(every.distances, exact.distances, rtol=1e-4, atol=1e-4)


def test_cell_search_blocks_stay_within_block_mb(monkeypatch: pytest.MonkeyPatch) -> None:
    import spray.analysis.ivf as ivf

    x = _blobs(6000, seed=12, d=32, centres=3, spread=1.0)
    # 19 cells of ~300 rows, each probed by ~2,800 rows: a 1 MB block holds ~800 of them.
    s = KnnSearchConfig(exact_below=0, cells_per_sqrt_n=0.25)
    ref = knn_graph(x, n_neighbors=10, search=s)
    blocks: list[tuple[int, int]] = []
    rows_per_block = ivf._rows_per_block

    def spy(width: int, block_mb: int) -> int:
        blocks.append((rows_per_block(width, block_mb), width))
        return blocks[-1][0]

    monkeypatch.setattr(ivf, "_rows_per_block", spy)
    small = knn_graph(x, n_neighbors=10, search=s.model_copy(update={"block_mb": 1}))
    assert all(rows * width * 4 <= 1 << 20 for rows, width in blocks)
    assert min(rows for rows, _ in blocks) < 1000  # cells' probing rows were split into blocks
    assert np.array_equal(small.indices, ref.indices)  # the split does not change the graph
    assert np.array_equal(small.distances, ref.distances)


def test_cell_search_rows_without_enough_candidates_are_searched_exactly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from spray.analysis.ivf import cell_index

    # 35 cells for 300 rows and no other cell probed: many own cells hold fewer than k others.
    x = _blobs(300, seed=13)
    s = KnnSearchConfig(exact_below=0, probes=1, cells_per_sqrt_n=2.0)
    with caplog.at_level("INFO", logger="spray.analysis.ivf"):
        g = knn_graph(x, n_neighbors=10, seed=2, search=s)
    assert "searched exactly" in caplog.text
    cix = cell_index(x, 2, s)
    size = np.empty(300, np.int64)
    size[cix.order] = np.repeat(np.diff(cix.starts), np.diff(cix.starts))
    short = size - 1 < 10
    assert 0 < short.sum() < 300 and (g.indices >= 0).all()
    exact = knn_graph(x, n_neighbors=10)
    assert np.array_equal(g.indices[short], exact.indices[short])
    np.testing.assert_allclose(g.distances[short], exact.distances[short], rtol=1e-4, atol=1e-5)


def test_approximate_knn_with_duplicates() -> None:
    dup = np.repeat(_blobs(400, seed=8, d=8), 15, axis=0)  # 6,000 rows, every row 15 times
    g = knn_graph(dup, n_neighbors=10, search=KnnSearchConfig(exact_below=0))
    assert not g.exact and (g.indices >= 0).all()
    assert not np.any(g.indices == np.arange(6000)[:, None])  # self never its own neighbour
    np.testing.assert_allclose(g.distances, 0.0, atol=1e-3)  # 14 copies of each row exist


def test_deterministic() -> None:
    x = _blobs(400, seed=3)
    a = spectral_embedding(x, seed=5)
    b = spectral_embedding(x, seed=5)
    assert np.array_equal(a.eigenvalues, b.eigenvalues)
    assert np.array_equal(a.eigenvectors, b.eigenvectors)
    assert np.array_equal(a.knn_indices, b.knn_indices)


def test_disconnected_graph() -> None:
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(size=(150, 3)), rng.normal(size=(150, 3)) + 100.0]).astype(np.float32)
    res = spectral_embedding(x, n_neighbors=5, n_eigenvectors=8)
    assert res.n_components == 2
    np.testing.assert_allclose(res.eigenvalues[:2], 1.0, atol=1e-8)
    assert res.eigenvalues[2] < 0.999
    truth = np.repeat([0, 1], 150)
    assert adjusted_rand_score(truth, _kmeans_first(res.eigenvectors, 2)) == 1.0


def test_tiny_and_duplicates() -> None:
    x = _blobs(5)
    res = spectral_embedding(x, n_neighbors=10, n_eigenvectors=32)
    assert res.eigenvalues.shape == (5,) and res.eigenvectors.shape == (5, 5)
    assert res.knn_indices.shape == (5, 4)
    assert np.isfinite(res.eigenvectors).all()
    one = spectral_embedding(x[:1])
    assert one.eigenvectors.shape == (1, 1) and one.n_components == 1
    dup = np.repeat(_blobs(30, seed=4), 10, axis=0)  # 300 rows, every row 10 times
    res = spectral_embedding(dup, n_neighbors=10, n_eigenvectors=8)
    assert np.isfinite(res.eigenvalues).all() and np.isfinite(res.eigenvectors).all()
    assert not np.any(res.knn_indices == np.arange(300)[:, None])  # self never its own neighbour
    np.testing.assert_allclose(res.knn_distances[:, :9], 0.0, atol=1e-3)
    with pytest.raises(DataError):
        spectral_embedding(np.zeros((0, 3)))
    with pytest.raises(ConfigError):
        spectral_embedding(x, affinity="cosine")


def test_heat_affinity_runs() -> None:
    res = spectral_embedding(_blobs(200, seed=6), affinity="heat", n_eigenvectors=8)
    assert res.eigenvalues[0] == pytest.approx(1.0, abs=1e-8)


def test_eigengap_k() -> None:
    assert eigengap_k(np.array([1.0, 0.99, 0.98, 0.5, 0.49, 0.48]), k_max=5) == 3
    assert eigengap_k(np.array([1.0, 0.9]), k_max=8) == 1


def test_float32_lanczos_for_large_n_and_precomputed_knn(monkeypatch: pytest.MonkeyPatch) -> None:
    import spray.analysis.spectral as spectral

    x = _blobs(3000, seed=7, d=5, centres=6, spread=2.0)
    g = knn_graph(x, n_neighbors=10, search=KnnSearchConfig(exact_below=10_000))
    ref = spectral_embedding(x, n_eigenvectors=12, knn=g)  # float64, tol 1e-8
    again = spectral_embedding(x, n_eigenvectors=12, search=KnnSearchConfig(exact_below=10_000))
    assert np.array_equal(ref.eigenvectors, again.eigenvectors)  # knn= is the same graph
    monkeypatch.setattr(spectral, "_FLOAT32_FROM", 1000)
    low = spectral_embedding(x, n_eigenvectors=12, knn=g)  # float32, tol 1e-5
    assert low.eigenvectors.dtype == np.float32
    np.testing.assert_allclose(low.eigenvalues, ref.eigenvalues, atol=2e-5)
    # Same leading subspace (principal angles ~0), hence the same clustering.
    q64 = ref.eigenvectors[:, :6].astype(np.float64)
    q32 = np.linalg.qr(low.eigenvectors[:, :6].astype(np.float64))[0]
    assert np.linalg.svd(q64.T @ q32, compute_uv=False).min() > 0.9999
    with pytest.raises(DataError):
        spectral_embedding(x[:10], knn=g)

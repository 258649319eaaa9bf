"""Tests of spray.analysis.preprocess."""

from __future__ import annotations

import numpy as np
import pytest

from spray.analysis.preprocess import normalize_heatmaps, reduce_dimension
from spray.errors import DataError


def test_abs_total_normalisation_and_shape() -> None:
    rng = np.random.default_rng(0)
    rel = rng.normal(size=(6, 3, 4, 5)).astype(np.float16)  # 4-D, float16 as stored by the batch stage
    out = normalize_heatmaps(rel)
    assert out.shape == (6, 20) and out.dtype == np.float32
    summed = rel.astype(np.float32).sum(axis=1).reshape(6, -1)
    np.testing.assert_allclose(np.abs(out).sum(axis=1), 1.0, rtol=1e-5)
    # Signs are kept and the scale is the absolute total, not the signed sum.
    np.testing.assert_allclose(out, summed / np.abs(summed).sum(axis=1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_near_zero_signed_sum_does_not_blow_up() -> None:
    rel = np.zeros((1, 2, 2), np.float32)
    rel[0, 0, 0], rel[0, 1, 1] = 1.0, -1.0  # signed sum 0: CoRelAy would divide by 0
    out = normalize_heatmaps(rel)
    np.testing.assert_allclose(out[0], [0.5, 0, 0, -0.5])


def test_zero_rows_and_nonfinite_stay_finite() -> None:
    rel = np.zeros((3, 4, 4), np.float32)
    rel[1] = 1.0
    rel[2, 0, 0] = np.nan
    rel[2, 1, 1] = 2.0
    out = normalize_heatmaps(rel, absolute=True)
    assert np.isfinite(out).all()
    assert np.all(out[0] == 0)
    np.testing.assert_allclose(out[1], 1 / 16)
    assert out[2, 5] == pytest.approx(1.0)


def test_absolute_and_blur() -> None:
    rel = np.zeros((2, 9, 9), np.float32)
    rel[0, 4, 4] = -3.0
    rel[1, 4, 5] = 3.0
    assert (normalize_heatmaps(rel, absolute=True) >= 0).all()
    sharp = normalize_heatmaps(np.abs(rel))
    blurred = normalize_heatmaps(np.abs(rel), blur_sigma=1.0)
    np.testing.assert_allclose(np.abs(blurred).sum(axis=1), 1.0, rtol=1e-5)
    assert blurred[0].max() < 0.5 and (blurred[0] > 0).sum() > 9
    # The blur makes a one-cell shift look similar (translation tolerance).
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    assert cos(sharp[0], sharp[1]) == 0.0
    assert cos(blurred[0], blurred[1]) > 0.5
    with pytest.raises(DataError):
        normalize_heatmaps(rel, blur_sigma=-1)
    with pytest.raises(DataError):
        normalize_heatmaps(rel[0])


def test_reduce_dimension_matches_pca_and_is_deterministic() -> None:
    rng = np.random.default_rng(1)
    latent = rng.normal(size=(500, 5)) * np.array([10, 5, 3, 2, 1])
    x = (latent @ rng.normal(size=(5, 300)) + 0.01 * rng.normal(size=(500, 300))).astype(np.float32)
    red = reduce_dimension(x, n_components=5, seed=3)
    assert red.shape == (500, 5) and red.dtype == np.float32
    assert np.array_equal(red, reduce_dimension(x, n_components=5, seed=3))
    xc = x.astype(np.float64) - x.mean(axis=0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    exact = xc @ vt[:5].T
    # Same subspace and variances (signs may differ).
    np.testing.assert_allclose(red.var(axis=0), exact.var(axis=0), rtol=1e-3)
    np.testing.assert_allclose(
        np.abs((red / np.linalg.norm(red, axis=0)).T @ (exact / np.linalg.norm(exact, axis=0))).diagonal(),
        1.0,
        atol=1e-3,
    )


def test_reduce_dimension_passthrough() -> None:
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    out = reduce_dimension(x, n_components=128)
    assert out.dtype == np.float32 and np.array_equal(out, x.astype(np.float32))


def test_reduce_dimension_subsample_fit_projects_all_rows() -> None:
    # Above max_fit rows the components come from a seeded subsample; every row is still projected.
    rng = np.random.default_rng(2)
    latent = rng.normal(size=(3000, 4)) * np.array([8, 4, 2, 1])
    x = (latent @ rng.normal(size=(4, 200)) + 0.01 * rng.normal(size=(3000, 200))).astype(np.float32)
    full = reduce_dimension(x, n_components=4, seed=0)
    sub = reduce_dimension(x, n_components=4, seed=0, max_fit=500)
    assert sub.shape == (3000, 4) and sub.dtype == np.float32
    assert np.array_equal(sub, reduce_dimension(x, n_components=4, seed=0, max_fit=500))
    # Same subspace (components estimated from 500 rows rotate a little within it).
    q_sub, q_full = np.linalg.qr(sub.astype(np.float64))[0], np.linalg.qr(full.astype(np.float64))[0]
    assert np.linalg.svd(q_sub.T @ q_full, compute_uv=False).min() > 0.998
    with pytest.raises(DataError):
        reduce_dimension(x, n_components=4, max_fit=4)

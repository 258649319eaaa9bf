"""Tests of spray.analysis.embedding (the layout itself is tested in test_layout.py)."""

from __future__ import annotations

import numpy as np
import pytest

from spray.analysis.embedding import _propagate, embed_2d
from spray.analysis.spectral import spectral_embedding
from spray.errors import ConfigError


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, object]:
    rng = np.random.default_rng(0)
    c = rng.normal(scale=5.0, size=(3, 5))
    x = (c[rng.integers(0, 3, 300)] + rng.normal(size=(300, 5))).astype(np.float32)
    return x, spectral_embedding(x, n_eigenvectors=8)


def test_spectral_map(data) -> None:
    x, spec = data
    e = embed_2d(x, spec, method="spectral")
    assert e.shape == (300, 2) and e.dtype == np.float32
    np.testing.assert_allclose(e, spec.eigenvectors[:, 1:3] * np.sqrt(300), rtol=1e-6)


def test_unknown_method(data) -> None:
    x, spec = data
    with pytest.raises(ConfigError, match="umap, tsne, spectral"):
        embed_2d(x, spec, method="pca")


def test_tiny_falls_back(data) -> None:
    x, _ = data
    spec = spectral_embedding(x[:5])
    assert embed_2d(x[:5], spec, method="umap").shape == (5, 2)


def test_umap_deterministic_and_subsampled(data) -> None:
    x, spec = data
    a = embed_2d(x, spec, method="umap", seed=1)
    assert a.shape == (300, 2) and np.isfinite(a).all()
    assert np.array_equal(a, embed_2d(x, spec, method="umap", seed=1))
    sub = embed_2d(x, spec, method="umap", seed=1, max_fit=150)
    assert sub.shape == (300, 2) and np.isfinite(sub).all()


def test_propagate_places_everything() -> None:
    knn = np.array([[1], [2], [3], [0], [4]])  # row 4 is unreachable from the placed row 0
    pos = np.zeros((5, 2), np.float32)
    pos[0] = [1.0, 2.0]
    placed = np.array([True, False, False, False, False])
    out = _propagate(pos, placed, knn)
    np.testing.assert_allclose(out[3], [1.0, 2.0])  # 3 -> 0
    assert np.isfinite(out).all()

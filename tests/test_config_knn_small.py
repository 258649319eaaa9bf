"""analysis.knn.exact_below low enough that a class with fewer rows than ivf_dims is searched cell by cell:
the PCA is cut to the rows there are (faiss refused to output more directions than rows)."""

import numpy as np

from spray.analysis.ivf import ivf_knn
from spray.config.analysis import KnnSearchConfig


def test_a_class_with_fewer_rows_than_ivf_dims_is_searched() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((20, 784), dtype=np.float32)
    idx, dist = ivf_knn(x, 5, 0, KnnSearchConfig(exact_below=0))
    assert idx.shape == (20, 5) and dist.shape == (20, 5)
    # every neighbour is another row, at its true Euclidean distance
    assert not (idx == np.arange(20)[:, None]).any()
    true = np.sqrt(((x[:, None, :] - x[idx]) ** 2).sum(-1))
    np.testing.assert_allclose(dist, true, rtol=1e-3)

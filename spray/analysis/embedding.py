"""Seeded 2-D maps of one class for display.

The map is for people, not for the clustering (which runs on the spectral embedding). Three methods:

* ``"umap"`` — UMAP's layout of the kNN graph already computed by the spectral stage, initialised from
  eigenvectors 2-3 and optimised by :func:`spray.analysis.layout.umap_layout` (numpy; umap-learn is not
  used: its numba code costs seconds of compilation in every process). Above ``max_fit`` rows the layout
  is fitted on a seeded subsample (its kNN graph searched by :func:`spray.analysis.spectral.knn_graph`)
  and every other row is placed at the mean position of its already-placed kNN neighbours (propagated
  along the graph): linear and instant.
* ``"tsne"`` — scikit-learn's Barnes-Hut t-SNE; fine for a few thousand rows.
* ``"spectral"`` — eigenvectors 2 and 3 (the first is constant-ish on a connected graph); instant.

Seeded everywhere, and independent of the thread count.
"""

from __future__ import annotations

import logging

import numpy as np

from spray.analysis.layout import umap_layout
from spray.analysis.spectral import knn_graph
from spray.config.analysis import KnnSearchConfig
from spray.errors import ConfigError
from spray.records import SpectralResult

logger = logging.getLogger(__name__)

METHODS = ("umap", "tsne", "spectral")
#: UMAP is fitted on at most this many rows (seeded subsample); the others are placed along the kNN graph.
MAX_FIT = 20_000
#: Below this many rows UMAP/t-SNE are meaningless (and may fail); the spectral map is used instead.
_MIN_ROWS = 16


def _spectral_map(spectral: SpectralResult) -> np.ndarray:
    """Eigenvectors 2 and 3 scaled by ``sqrt(n)`` so coordinates are O(1): ``(n, 2)`` float32."""
    vecs = spectral.eigenvectors
    n = vecs.shape[0]
    out = np.zeros((n, 2), dtype=np.float32)
    cols = vecs[:, 1:3]
    out[:, : cols.shape[1]] = cols * np.float32(np.sqrt(n))
    return out


def _propagate(
    positions: np.ndarray, placed: np.ndarray, knn_idx: np.ndarray, max_rounds: int = 50
) -> np.ndarray:
    """Place unplaced rows at the mean of their placed kNN neighbours, repeating along the graph.

    Parameters
    ----------
    positions : np.ndarray
        ``(n, 2)`` positions; rows with ``placed`` False are overwritten.
    placed : np.ndarray
        ``(n,)`` bool.
    knn_idx : np.ndarray
        ``(n, k)`` neighbour indices.
    max_rounds : int
        Rows still unplaced after this many rounds (unreachable from the fitted subsample) go to the
        centroid of the placed rows.
    """
    pos = positions.copy()
    placed = placed.copy()
    for _ in range(max_rounds):
        todo = np.flatnonzero(~placed)
        if todo.size == 0:
            break
        nb = knn_idx[todo]
        ok = placed[nb]
        cnt = ok.sum(axis=1)
        has = cnt > 0
        if not has.any():
            break
        rows, nbs, oks = todo[has], nb[has], ok[has]
        summed = (pos[nbs] * oks[:, :, None]).sum(axis=1)
        pos[rows] = summed / cnt[has][:, None]
        placed[rows] = True  # updated after the round: the result does not depend on row order
    if not placed.all():
        pos[~placed] = pos[placed].mean(axis=0)
    return pos


def embed_2d(
    features: np.ndarray,
    spectral: SpectralResult,
    *,
    method: str = "umap",
    seed: int = 0,
    max_fit: int = MAX_FIT,
    n_epochs: int = 200,
    search: KnnSearchConfig | None = None,
) -> np.ndarray:
    """Seeded 2-D map of one class.

    Parameters
    ----------
    features : np.ndarray
        ``(n, d)`` features the spectral embedding was computed from.
    spectral : SpectralResult
        Its spectral embedding (kNN graph and eigenvectors are reused).
    method : str
        ``"umap"``, ``"tsne"`` or ``"spectral"``.
    seed : int
        Random state; the same inputs and seed give a bitwise-identical map.
    max_fit : int
        UMAP: above this many rows, fit on a seeded subsample of ``max_fit`` rows and place the rest
        along the kNN graph (see module docstring). t-SNE ignores it.
    n_epochs : int
        UMAP optimisation epochs.
    search : KnnSearchConfig, optional
        How the subsample's kNN graph is searched (``analysis.knn``).

    Returns
    -------
    np.ndarray
        ``(n, 2)`` float32.

    Raises
    ------
    ConfigError
        For an unknown ``method``.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown embedding method {method!r}; valid methods: {', '.join(METHODS)}")
    x = np.ascontiguousarray(features, dtype=np.float32)
    n = x.shape[0]
    base = _spectral_map(spectral)
    if method == "spectral":
        return base
    if n < _MIN_ROWS:
        logger.info("only %d rows: using the spectral map instead of %s", n, method)
        return base
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, (n - 1) / 3.0))
        init = base / (np.std(base[:, 0]) or 1.0) * 1e-4  # sklearn recommends std 1e-4 for a custom init
        tsne = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init=init.astype(np.float32))
        return np.asarray(tsne.fit_transform(x), dtype=np.float32)
    # UMAP
    if n <= max_fit:
        return umap_layout(spectral.knn_indices, spectral.knn_distances, base, n_epochs=n_epochs, seed=seed)
    rng = np.random.default_rng(seed)
    sub = np.sort(rng.choice(n, size=max_fit, replace=False))
    # The subsample's own kNN is not a subset of the full graph: search it with the same seeded knn_graph.
    sub_knn = knn_graph(x[sub], n_neighbors=max(spectral.knn_indices.shape[1], 1), seed=seed, search=search)
    fitted = umap_layout(sub_knn.indices, sub_knn.distances, base[sub], n_epochs=n_epochs, seed=seed)
    pos = np.zeros((n, 2), dtype=np.float32)
    pos[sub] = fitted
    placed = np.zeros(n, dtype=bool)
    placed[sub] = True
    return _propagate(pos, placed, spectral.knn_indices).astype(np.float32)


def warm_up(*, approximate_knn: bool = True) -> None:
    """Kept for callers from before the JIT-free analysis: nothing is compiled any more.

    Imports faiss (0.1 s) when ``approximate_knn`` is set, so that its import is not counted in the first
    class's time. Callers may drop the call.

    Parameters
    ----------
    approximate_knn : bool
        Import faiss now (it is imported lazily on the first approximate kNN search otherwise).
    """
    if approximate_knn:
        import faiss  # noqa: F401

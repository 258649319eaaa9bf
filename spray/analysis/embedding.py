"""Seeded 2-D maps of one class for display.

The map is for people, not for the clustering (which runs on the spectral embedding). Three methods:

* ``"umap"`` — UMAP on the kNN graph already computed by the spectral stage (``precomputed_knn``) and
  initialised from eigenvectors 2-3, so it neither searches neighbours nor solves an eigenproblem
  again. Above ``max_fit`` rows, UMAP is fitted on a seeded subsample (its kNN graph searched by
  :func:`spray.analysis.spectral.knn_graph`) and every other row is placed
  at the mean position of its already-placed kNN neighbours (propagated along the graph). That is
  linear and instant, where ``UMAP.transform`` would cost as much as a second fit.
* ``"tsne"`` — scikit-learn's Barnes-Hut t-SNE; fine for a few thousand rows.
* ``"spectral"`` — eigenvectors 2 and 3 (the first is constant-ish on a connected graph); instant.

Seeded everywhere; UMAP with ``random_state`` runs single-threaded, which is what makes it repeatable.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from spray.analysis.jit import enable_disk_cache, keep_torch_threads
from spray.errors import ConfigError
from spray.records import SpectralResult

logger = logging.getLogger(__name__)

METHODS = ("umap", "tsne", "spectral")
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


def _umap_fit(
    features: np.ndarray,
    knn_idx: np.ndarray | None,
    knn_dist: np.ndarray | None,
    init: np.ndarray,
    seed: int,
    n_epochs: int | None = None,
) -> np.ndarray:
    """Fit seeded UMAP; with kNN given, reuse it (self prepended, as UMAP expects)."""
    import umap  # lazy: importing umap compiles numba code

    enable_disk_cache()  # compile once per machine, not once per process (spray.analysis.jit)

    n = features.shape[0]
    kwargs = {}
    if knn_idx is not None and knn_dist is not None:
        k = knn_idx.shape[1]
        idx = np.hstack([np.arange(n, dtype=np.int64)[:, None], knn_idx]).astype(np.int32)
        dist = np.hstack([np.zeros((n, 1), np.float32), knn_dist]).astype(np.float32)
        kwargs["precomputed_knn"] = (idx, dist, None)
        n_neighbors = k + 1
    else:
        n_neighbors = 15
    # Scale the init like UMAP's own spectral init (coordinates in roughly [-10, 10]).
    span = np.abs(init).max()
    init = (init / span * 10.0 if span > 0 else init).astype(np.float64)
    # Tiny deterministic jitter: duplicate rows would otherwise share an init point forever.
    init = init + np.random.default_rng(seed).normal(0.0, 1e-4, size=init.shape)
    reducer = umap.UMAP(
        n_neighbors=min(n_neighbors, n - 1),
        n_components=2,
        random_state=seed,
        n_jobs=1,
        init=init,
        n_epochs=n_epochs,
        **kwargs,
    )
    with keep_torch_threads(), warnings.catch_warnings():  # see spray.analysis.jit
        # Expected and harmless here: seeded UMAP is single-threaded; we never call transform.
        warnings.filterwarnings("ignore", message=".*overridden to 1 by setting random_state.*")
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        return np.asarray(reducer.fit_transform(features), dtype=np.float32)


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
    max_fit: int = 20000,
    n_epochs: int | None = None,
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
    n_epochs : int, optional
        UMAP optimisation epochs; None keeps UMAP's default (500 up to 10,000 fitted rows, 200 above).

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
        return _umap_fit(x, spectral.knn_indices, spectral.knn_distances, base, seed, n_epochs)
    rng = np.random.default_rng(seed)
    sub = np.sort(rng.choice(n, size=max_fit, replace=False))
    # The subsample's own kNN is not a subset of the full graph: search it with the same seeded
    # knn_graph (so the code numba compiled in warm_up() is reused, nothing new is compiled per class).
    from spray.analysis.spectral import knn_graph

    sub_knn = knn_graph(x[sub], n_neighbors=max(spectral.knn_indices.shape[1], 1), seed=seed)
    fitted = _umap_fit(x[sub], sub_knn.indices, sub_knn.distances, base[sub], seed, n_epochs)
    pos = np.zeros((n, 2), dtype=np.float32)
    pos[sub] = fitted
    placed = np.zeros(n, dtype=bool)
    placed[sub] = True
    return _propagate(pos, placed, spectral.knn_indices).astype(np.float32)


def warm_up(*, approximate_knn: bool = True) -> None:
    """Compile the numba code the analysis will use once per process, before the first class.

    numba compiles on first call anyway; doing it here keeps the cost out of the first class's timings
    and logs it once. On a cold process pynndescent takes about 24 s to compile and UMAP about 5 s
    (2-core CPU), so a run pays only for what it uses.

    Parameters
    ----------
    approximate_knn : bool
        Also compile pynndescent. Needed only when some class has at least
        :data:`spray.analysis.spectral.EXACT_KNN_BELOW` rows (``knn_graph`` searches exactly below that, and a
        UMAP subsample has ``max_fit`` ≥ that many rows).
    """
    from spray.analysis.spectral import knn_graph, spectral_embedding

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    if approximate_knn:
        knn_graph(x, n_neighbors=5, exact_below=0)  # pynndescent path
    spec = spectral_embedding(x, n_neighbors=5, n_eigenvectors=4)
    embed_2d(x, spec, method="umap", seed=0)

"""UMAP's layout of a kNN graph, in numpy: a 2-D map with nothing compiled on first use.

The objective is UMAP's (McInnes, Healy & Melville 2018): a fuzzy membership graph built from the kNN
distances, and a low-dimensional layout whose edge probabilities ``1 / (1 + a·d^2b)`` match it, fitted
by stochastic gradient steps on the cross-entropy with negative sampling. umap-learn runs those steps
one edge at a time in numba-compiled loops, which costs seconds of compilation in every new process.
Here every epoch's edges are processed in a few vectorised mini-batches instead (the edges of one batch
see the positions at the start of the batch). On the benchmark's heatmaps and the demo's classes the maps
have the same trustworthiness as umap-learn's (docs/clustering.md) and take less CPU time.

Deterministic: a seeded generator draws the edge order, the negative samples and a tiny init jitter;
everything else is elementwise numpy and ``bincount``, which do not depend on the thread count.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from spray.errors import DataError

#: UMAP's output curve ``1 / (1 + a·d^2b)`` for ``min_dist=0.1, spread=1`` (umap-learn's defaults; its
#: ``find_ab_params`` gives these, which tests/test_layout.py checks).
CURVE_A = 1.5769434602697652
CURVE_B = 0.8950608778515733
#: Random non-neighbours pushed away per attracted edge (UMAP's ``negative_sample_rate``).
NEGATIVE_RATE = 5
#: Mini-batches per epoch. One batch (a full-batch gradient step) lets high-degree rows overshoot and
#: flings outliers away (trustworthiness 0.979 vs 0.986 at 4k rows); 10 matches umap-learn's maps.
BATCHES = 10
#: Per-coordinate gradient clip of every single update (UMAP's ``clip`` at 4).
_CLIP = 4.0
#: Bisection steps for each row's bandwidth (UMAP's ``smooth_knn_dist``).
_BISECT = 64
#: Bandwidths are at least this fraction of the mean neighbour distance (UMAP's ``MIN_K_DIST_SCALE``).
_MIN_SCALE = 1e-3


def fuzzy_graph(indices: np.ndarray, distances: np.ndarray) -> sp.coo_matrix:
    """UMAP's fuzzy membership graph of a kNN graph (fuzzy union of the directed memberships).

    Row ``i``'s membership of neighbour ``j`` is ``exp(-(d_ij - ρ_i) / σ_i)``, 1 for the nearest
    neighbour (``ρ_i`` is the smallest positive distance), with ``σ_i`` set by bisection so that the
    memberships of row ``i`` sum to ``log2(k + 1)`` (UMAP counts the point itself among its k + 1
    neighbours). The directed graph ``A`` is symmetrised as ``A + Aᵀ - A∘Aᵀ``.

    Parameters
    ----------
    indices : np.ndarray
        ``(n, k)`` neighbour indices, self excluded.
    distances : np.ndarray
        ``(n, k)`` distances to them, ascending.

    Returns
    -------
    scipy.sparse.coo_matrix
        ``(n, n)`` float64 symmetric memberships in ``(0, 1]``, no explicit zeros.
    """
    n, k = indices.shape
    if distances.shape != (n, k):
        raise DataError(f"distances {distances.shape} do not match indices {indices.shape}")
    d = distances.astype(np.float64)
    positive = np.where(d > 0, d, np.inf)
    rho = positive.min(axis=1) if k else np.zeros(n)
    rho[~np.isfinite(rho)] = 0.0
    excess = np.maximum(d - rho[:, None], 0.0)
    target = np.log2(k + 1)
    lo, hi, sigma = np.zeros(n), np.full(n, np.inf), np.ones(n)
    for _ in range(_BISECT):
        too_wide = np.exp(-excess / sigma[:, None]).sum(axis=1) > target
        hi = np.where(too_wide, sigma, hi)
        lo = np.where(too_wide, lo, sigma)
        sigma = np.where(np.isinf(hi), sigma * 2.0, (lo + hi) / 2.0)
    # UMAP's floors: rows whose distances are all tiny must not get a zero bandwidth. Its means count the
    # point itself (distance 0) among the k + 1 neighbours.
    row_mean = d.sum(axis=1) / (k + 1)
    floor = np.where(rho > 0, row_mean, row_mean.mean())
    sigma = np.maximum(sigma, _MIN_SCALE * floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(excess > 0, np.exp(-excess / sigma[:, None]), 1.0)
    rows = np.repeat(np.arange(n), k)
    w[indices == rows.reshape(n, k)] = 0.0  # a row listed as its own neighbour carries no membership
    a = sp.csr_matrix((w.ravel(), (rows, indices.ravel())), shape=(n, n))
    at = a.T.tocsr()
    union = (a + at - a.multiply(at)).tocoo()
    union.eliminate_zeros()
    return union


def _scaled_init(init: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each axis of ``init`` mapped to ``[0, 10]`` as UMAP does, plus a 1e-4 jitter: ``(n, 2)`` float64.

    The jitter separates duplicate rows, which would otherwise share a position forever.
    """
    y = np.asarray(init, dtype=np.float64)
    lo, hi = y.min(axis=0), y.max(axis=0)
    y = 10.0 * (y - lo) / np.where(hi > lo, hi - lo, 1.0)
    return y + rng.normal(0.0, 1e-4, size=y.shape)


def umap_layout(
    indices: np.ndarray,
    distances: np.ndarray,
    init: np.ndarray,
    *,
    n_epochs: int = 200,
    seed: int = 0,
) -> np.ndarray:
    """Seeded 2-D UMAP layout of a kNN graph.

    Parameters
    ----------
    indices : np.ndarray
        ``(n, k)`` neighbour indices, self excluded.
    distances : np.ndarray
        ``(n, k)`` neighbour distances, ascending.
    init : np.ndarray
        ``(n, 2)`` initial positions (spray passes eigenvectors 2-3 of the spectral embedding).
    n_epochs : int
        Optimisation epochs; the learning rate falls linearly from 1 to 0 over them.
    seed : int
        Seeds the edge order, the negative samples and the init jitter.

    Returns
    -------
    np.ndarray
        ``(n, 2)`` float32 positions; equal inputs and seed give a bitwise-identical result.
    """
    if n_epochs < 1:
        raise DataError(f"n_epochs must be >= 1, got {n_epochs}")
    n = indices.shape[0]
    if init.shape != (n, 2):
        raise DataError(f"init must have shape ({n}, 2), got {init.shape}")
    rng = np.random.default_rng(seed)
    graph = fuzzy_graph(indices, distances)
    y = _scaled_init(init, rng)
    if graph.nnz == 0:
        return y.astype(np.float32)
    # UMAP drops edges too weak to be sampled even once in n_epochs.
    keep = graph.data >= graph.data.max() / n_epochs
    order = rng.permutation(int(keep.sum()))  # mini-batches of a fixed random edge order
    head, tail = graph.row[keep][order], graph.col[keep][order]
    period = graph.data.max() / graph.data[keep][order]  # an edge is used every max(w)/w epochs
    pool = rng.integers(0, n, size=2 * NEGATIVE_RATE * head.size)  # negative samples, windows of it
    pos = (np.ascontiguousarray(y[:, 0], np.float32), np.ascontiguousarray(y[:, 1], np.float32))
    due = period.copy()
    for epoch in range(n_epochs):
        now = due <= epoch + 1
        due[now] += period[now]
        offset = int(rng.integers(0, NEGATIVE_RATE * head.size))
        for batch in np.array_split(np.flatnonzero(now), BATCHES):
            negatives = pool[offset : offset + NEGATIVE_RATE * batch.size].reshape(NEGATIVE_RATE, -1)
            offset += negatives.size
            _step(pos, head[batch], tail[batch], negatives, np.float32(1.0 - epoch / n_epochs))
    return np.stack(pos, axis=1)


def _step(
    pos: tuple[np.ndarray, np.ndarray],
    head: np.ndarray,
    tail: np.ndarray,
    negatives: np.ndarray,
    alpha: np.float32,
) -> None:
    """One mini-batch of UMAP's gradient steps, in place on ``pos`` (two ``(n,)`` float32 arrays).

    Every edge pulls its head and tail together; every head is pushed away from its ``(r, m)`` negative
    samples. Each update is clipped per coordinate, then the batch's updates are summed per row.
    """
    x, y = pos
    n = x.size
    a, b = np.float32(CURVE_A), np.float32(CURVE_B)
    hx, hy = x[head], y[head]
    dx, dy = hx - x[tail], hy - y[tail]
    d2 = dx * dx + dy * dy
    p = d2**b
    with np.errstate(divide="ignore", invalid="ignore"):
        pull = np.float32(-2.0) * a * b * p / (d2 * (1 + a * p))
    pull[d2 == 0] = 0  # coincident endpoints: no direction to pull in
    gx, gy = np.clip(pull * dx, -_CLIP, _CLIP), np.clip(pull * dy, -_CLIP, _CLIP)
    ex, ey = hx - x[negatives], hy - y[negatives]
    e2 = ex * ex + ey * ey
    push = np.float32(2.0) * b / ((np.float32(0.001) + e2) * (1 + a * e2**b))
    push[e2 == 0] = 0  # the head drew itself
    rx = np.clip(push * ex, -_CLIP, _CLIP).sum(axis=0)
    ry = np.clip(push * ey, -_CLIP, _CLIP).sum(axis=0)
    x += alpha * (np.bincount(head, gx + rx, n) - np.bincount(tail, gx, n)).astype(np.float32)
    y += alpha * (np.bincount(head, gy + ry, n) - np.bincount(tail, gy, n)).astype(np.float32)

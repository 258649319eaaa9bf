"""Approximate kNN of every row of a large class: inverted-file cells searched by dense matrix products.

Every row is a query, so the search runs cell by cell instead of query by query. Seeded k-means (faiss)
on the leading principal directions cuts the rows into cells; each row probes its ``probes`` nearest
cells. A row's own cell gives its first k nearest and so a bound ``τ`` on its k-th squared distance.
Then, for every cell, one matrix product gives the squared distances (in all dimensions) of the cell's
rows to all rows that probe it, and only entries below the probing row's ``τ`` are kept: a comparison
per entry instead of a per-row selection, which is what costs most in numpy. The kept entries are merged
into each row's k best, which tightens ``τ`` (the nearest other cell is merged first for that reason).
The result is exact within the probed cells; rows whose probed cells hold fewer than k others are
searched exactly. Memory: ``O(n·(k + probes))`` plus one distance block of at most ``block_mb``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from spray.config.analysis import KnnSearchConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CellIndex:
    """Rows sorted by their cell, and the cells each row probes.

    Attributes
    ----------
    order : np.ndarray
        ``(n,)`` int64: row ``order[i]`` of the input is row ``i`` of the sorted rows.
    starts : np.ndarray
        ``(cells + 1,)`` int64: cell ``c`` holds sorted rows ``starts[c]:starts[c + 1]``.
    probes : np.ndarray
        ``(n, p)`` int64 cells each sorted row probes, nearest first (its own cell first).
    """

    order: np.ndarray
    starts: np.ndarray
    probes: np.ndarray


@dataclass
class _Best:
    """The k best candidates found so far per sorted row: squared distances ascending, sorted-row ids."""

    d2: np.ndarray
    idx: np.ndarray

    @property
    def tau(self) -> np.ndarray:
        """``(n,)`` squared distance a candidate must beat (inf while fewer than k are known)."""
        return self.d2[:, -1]


def cell_index(x: np.ndarray, seed: int, s: KnnSearchConfig) -> CellIndex:
    """Seeded k-means cells of the rows in their leading principal directions, and each row's probes.

    Parameters
    ----------
    x : np.ndarray
        ``(n, d)`` float32 features.
    seed : int
        Seed of the k-means (faiss's training subsample and initial centres).
    s : KnnSearchConfig
        ``ivf_dims``, ``cells_per_sqrt_n``, ``probes``, ``kmeans_iters``, ``kmeans_points_per_cell``.

    Returns
    -------
    CellIndex
        Rows sorted by cell, the cells' bounds and ``(n, min(probes, cells))`` probed cells per row.
    """
    import faiss  # lazily: 0.1 s to import, nothing compiled at run time

    n, d = x.shape
    # PCA yields at most one direction per row: a small class (exact_below low) has fewer rows than ivf_dims
    dims = min(d, s.ivf_dims, n)
    cells = int(min(n, max(1, round(s.cells_per_sqrt_n * np.sqrt(n)))))
    if dims < d:
        # A principal-axis rotation makes the first dims the informative ones for any feature order.
        pca = faiss.PCAMatrix(d, dims)
        pca.train(x)
        xr = pca.apply(x)
    else:
        xr = x
    km = faiss.Kmeans(
        dims,
        cells,
        niter=s.kmeans_iters,
        seed=seed,
        max_points_per_centroid=s.kmeans_points_per_cell,  # trained on a seeded subsample
        min_points_per_centroid=1,  # few rows per cell are fine here; faiss would print a warning
    )
    km.train(xr)
    _, near = km.index.search(xr, min(s.probes, cells))
    near = near.astype(np.int64, copy=False)
    order = np.argsort(near[:, 0], kind="stable")
    starts = np.searchsorted(near[order, 0], np.arange(cells + 1)).astype(np.int64)
    return CellIndex(order=order, starts=starts, probes=near[order])


def _merge(best: _Best, rows: np.ndarray, cols: np.ndarray, d2: np.ndarray) -> _Best:
    """The k best of each row among ``best`` and the new candidates ``(rows, cols, d2)`` (any order)."""
    n, k = best.d2.shape
    r = np.concatenate([np.repeat(np.arange(n, dtype=np.int64), k), rows])
    c = np.concatenate([best.idx.ravel(), cols])
    v = np.abs(np.maximum(np.concatenate([best.d2.ravel(), d2]), 0.0)).astype(np.float32)  # no -0.0
    # Non-negative float32 compare like their bit patterns: one int64 key sorts by (row, distance).
    key = (r << 32) | v.view(np.int32).astype(np.int64)
    order = np.argsort(key, kind="stable")
    first = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=n))[:-1]])
    take = order[first[:, None] + np.arange(k)[None, :]]
    return _Best(d2=v[take], idx=c[take])


def _rows_per_block(width: int, block_mb: int) -> int:
    """Rows of a float32 distance block ``rows × width`` that fits in ``block_mb`` MB (at least one)."""
    return max(1, (block_mb << 20) // (4 * max(width, 1)))


def _sq_dists(xs: np.ndarray, sq: np.ndarray, q: slice | np.ndarray, cols: slice) -> np.ndarray:
    """``(len(q), len(cols))`` squared distances ``‖x‖² + ‖y‖² - 2xy`` of the rows ``q`` to the rows ``cols``."""
    d2 = xs[q] @ xs[cols].T
    d2 *= -2.0
    d2 += sq[None, cols]
    d2 += sq[q, None]
    return d2


def _smallest(d2: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` smallest entries of each row of ``d2`` and their columns, ascending."""
    j = np.argpartition(d2, m - 1, axis=1)[:, :m]
    v = np.take_along_axis(d2, j, axis=1)
    o = np.argsort(v, axis=1, kind="stable")
    return np.take_along_axis(v, o, axis=1), np.take_along_axis(j, o, axis=1)


def _own_cells(xs: np.ndarray, sq: np.ndarray, starts: np.ndarray, k: int, block_mb: int) -> _Best:
    """Exact k nearest of every sorted row within its own cell (inf / -1 where the cell is too small)."""
    n = xs.shape[0]
    best = _Best(d2=np.full((n, k), np.inf, np.float32), idx=np.full((n, k), -1, np.int64))
    for c in range(starts.size - 1):
        lo, hi = int(starts[c]), int(starts[c + 1])
        m = min(k, hi - lo - 1)
        step = _rows_per_block(hi - lo, block_mb)
        for q0 in range(lo, hi, step):
            q1 = min(q0 + step, hi)
            d2 = _sq_dists(xs, sq, slice(q0, q1), slice(lo, hi))
            d2[np.arange(q1 - q0), np.arange(q0 - lo, q1 - lo)] = np.inf  # self is never a neighbour
            if m <= 0:
                continue
            v, j = _smallest(d2, m)
            best.d2[q0:q1, :m], best.idx[q0:q1, :m] = v, j + lo
    return best


def _probe_lists(cix: CellIndex, slots: slice) -> tuple[np.ndarray, np.ndarray]:
    """For every cell, the sorted rows that probe it in ``slots`` of their lists (CSR: starts, rows)."""
    n = cix.probes.shape[0]
    cells = cix.starts.size - 1
    part = cix.probes[:, slots]
    flat = part.ravel()
    rows = np.repeat(np.arange(n, dtype=np.int64), part.shape[1])
    by_cell = np.argsort(flat, kind="stable")
    return np.searchsorted(flat[by_cell], np.arange(cells + 1)), rows[by_cell]


def _scan(xs: np.ndarray, sq: np.ndarray, cix: CellIndex, best: _Best, slots: slice, block_mb: int) -> _Best:
    """Every row against the members of the cells in ``slots`` of its list; keeps what beats its k-th."""
    n, k = best.d2.shape
    qstarts, qrows = _probe_lists(cix, slots)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    held = 0
    for c in range(cix.starts.size - 1):
        lo, hi = int(cix.starts[c]), int(cix.starts[c + 1])
        queries = qrows[qstarts[c] : qstarts[c + 1]]
        step = _rows_per_block(hi - lo, block_mb)
        for q0 in range(0, queries.size if hi > lo else 0, step):
            q = queries[q0 : q0 + step]
            g = xs[q] @ xs[lo:hi].T
            g *= -2.0
            g += sq[None, lo:hi]
            # d² = sq[q] + g < τ  <=>  g < τ - sq[q]: one comparison per entry, no selection.
            # flatnonzero + divmod: 3x faster than a 2-D nonzero (which builds both index arrays itself).
            flat = np.flatnonzero(g < (best.tau[q] - sq[q])[:, None])
            r, j = np.divmod(flat, hi - lo)
            rows = q[r]
            found.append((rows, j + lo, g.ravel()[flat] + sq[rows]))
            held += flat.size
        if held > 2 * k * n:  # merge early: bounds memory and tightens every τ
            best, found, held = _merge(best, *(np.concatenate(f) for f in zip(*found, strict=True))), [], 0
    if found:
        best = _merge(best, *(np.concatenate(f) for f in zip(*found, strict=True)))
    return best


def _fill_short(xs: np.ndarray, sq: np.ndarray, best: _Best, block_mb: int) -> None:
    """Rows whose probed cells held fewer than k other rows (tiny cells) get their exact kNN, in place."""
    n, k = best.idx.shape
    short = np.flatnonzero(best.idx[:, -1] < 0)
    if short.size:
        logger.info("approximate kNN: %d rows had fewer than %d candidates; searched exactly", short.size, k)
    step = _rows_per_block(n, block_mb)
    for a in range(0, short.size, step):
        q = short[a : a + step]
        d2 = _sq_dists(xs, sq, q, slice(None))
        d2[np.arange(q.size), q] = np.inf  # self is never a neighbour
        best.d2[q], best.idx[q] = _smallest(d2, k)


def _final(xs: np.ndarray, best: _Best) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances of the k found, recomputed from the rows, sorted by (distance, index).

    The search's ``‖x‖² + ‖y‖² - 2xy`` comes from BLAS products whose last bits depend on the threads and
    the block size on some CPUs (an AMD EPYC VM), and it loses precision between near-duplicates; the
    difference of the two rows, summed by numpy, is the same everywhere.
    """
    idx = best.idx
    d2 = np.empty(idx.shape, dtype=np.float32)
    for j in range(idx.shape[1]):  # one neighbour column at a time: (n, d) in memory, not (n, k, d)
        diff = xs[idx[:, j]] - xs
        d2[:, j] = np.einsum("ij,ij->i", diff, diff)
    dist = np.sqrt(np.maximum(d2, np.float32(0.0)))  # float32 throughout
    o = np.lexsort((idx, dist), axis=1)
    return np.take_along_axis(idx, o, axis=1), np.take_along_axis(dist, o, axis=1)


def ivf_knn(x: np.ndarray, k: int, seed: int, s: KnnSearchConfig) -> tuple[np.ndarray, np.ndarray]:
    """Seeded approximate kNN of every row, self excluded.

    Parameters
    ----------
    x : np.ndarray
        ``(n, d)`` float32 features, ``n > k``.
    k : int
        Neighbours per row.
    seed : int
        Seed of the k-means that places the cells; equal input and seed give an identical graph.
    s : KnnSearchConfig
        ``analysis.knn``: cells, probes, k-means settings, ``block_mb``.

    Returns
    -------
    tuple of np.ndarray
        ``(n, k)`` int64 indices and ``(n, k)`` float32 Euclidean distances, ascending.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    cix = cell_index(x, seed, s)
    # Centred rows: smaller norms, so less cancellation in ‖x‖² + ‖y‖² - 2xy.
    xs = x[cix.order]
    xs -= xs.mean(axis=0, dtype=np.float64).astype(np.float32)
    sq = np.einsum("ij,ij->i", xs, xs)
    best = _own_cells(xs, sq, cix.starts, k, s.block_mb)
    # The nearest other cell first: the k best after it are a much tighter τ for the remaining cells.
    best = _scan(xs, sq, cix, best, slice(1, 2), s.block_mb)
    best = _scan(xs, sq, cix, best, slice(2, None), s.block_mb)
    _fill_short(xs, sq, best, s.block_mb)
    idx_sorted, dist = _final(xs, best)
    idx = np.empty_like(idx_sorted)
    out = np.empty_like(dist)
    idx[cix.order] = cix.order[idx_sorted]
    out[cix.order] = dist
    return idx, out

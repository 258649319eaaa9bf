"""Synthetic relevance heatmaps with planted "strategies" and one small Clever-Hans cluster.

Used by the tests and by ``benchmarks/clustering_scale.py``. Each big cluster is a prediction
strategy (relevance on a characteristic object part, with per-sample jitter of position, size and
strength, plus noise and some negative relevance). The small cluster mimics a watermark: most of its
relevance sits in a sharp spot in the top-left corner, on top of a weakened ordinary strategy.
"""

from __future__ import annotations

import numpy as np

# Blob templates (centre row, centre col, sigma) in units of a 32-cell grid; one list per strategy.
_TEMPLATES: list[list[tuple[float, float, float]]] = [
    [(16.0, 16.0, 4.5)],  # centred object
    [(13.0, 9.0, 2.5), (13.0, 23.0, 2.5)],  # two "eyes"
    [(24.0, 16.0, 3.0), (24.0, 8.0, 2.5), (24.0, 24.0, 2.5)],  # lower band
    [(9.0, 20.0, 3.5)],  # upper right part
    [(20.0, 10.0, 3.5), (10.0, 12.0, 2.0)],  # left side
    [(18.0, 24.0, 3.0), (26.0, 20.0, 2.0)],  # lower right
]


def _templates(n_strategies: int) -> list[list[tuple[float, float, float]]]:
    """Return ``n_strategies`` blob templates (fixed list first, then seeded random ones)."""
    out = list(_TEMPLATES[:n_strategies])
    rng = np.random.default_rng(12345)  # fixed: templates are part of the data definition, not the seed
    while len(out) < n_strategies:
        n_blobs = int(rng.integers(1, 3))
        out.append(
            [
                (float(rng.uniform(8, 26)), float(rng.uniform(8, 26)), float(rng.uniform(2.0, 4.0)))
                for _ in range(n_blobs)
            ]
        )
    return out


def _blobs(rows: np.ndarray, cols: np.ndarray, sigmas: np.ndarray, amps: np.ndarray, size: int) -> np.ndarray:
    """Sum of one separable Gaussian per sample: ``(n,)`` params -> ``(n, size, size)`` float32."""
    grid = np.arange(size, dtype=np.float32)
    gy = np.exp(-((grid[None, :] - rows[:, None]) ** 2) / (2 * sigmas[:, None] ** 2)).astype(np.float32)
    gx = np.exp(-((grid[None, :] - cols[:, None]) ** 2) / (2 * sigmas[:, None] ** 2)).astype(np.float32)
    return (amps[:, None, None] * gy[:, :, None] * gx[:, None, :]).astype(np.float32)


def make_heatmaps(
    n: int,
    *,
    n_clusters: int = 5,
    small_fraction: float = 0.03,
    size: int = 32,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Generate ``n`` synthetic heatmaps with ``n_clusters`` planted strategies.

    Parameters
    ----------
    n : int
        Number of heatmaps.
    n_clusters : int
        Number of clusters including the small one (``n_clusters - 1`` ordinary strategies).
    small_fraction : float
        Fraction of samples in the small "watermark" cluster.
    size : int
        Grid side length (templates are defined for 32 and scaled to other sizes).
    seed : int
        Seed of all per-sample randomness.

    Returns
    -------
    heatmaps : np.ndarray
        ``(n, size, size)`` float32 signed relevance.
    labels : np.ndarray
        ``(n,)`` int64 ground-truth cluster per sample.
    small_label : int
        Label of the small cluster (``n_clusters - 1``).
    """
    if n_clusters < 2:
        raise ValueError("n_clusters must be >= 2 (at least one strategy plus the small cluster)")
    rng = np.random.default_rng(seed)
    n_big = n_clusters - 1
    small_label = n_clusters - 1
    n_small = round(small_fraction * n) if n >= n_clusters else 0
    # Unequal big-cluster sizes (weights 1.0 .. 1.6) make the problem less symmetric than reality is not.
    weights = np.linspace(1.0, 1.6, n_big)
    big_sizes = np.floor(weights / weights.sum() * (n - n_small)).astype(int)
    big_sizes[0] += n - n_small - big_sizes.sum()
    labels = np.concatenate(
        [np.full(s, c, dtype=np.int64) for c, s in enumerate(big_sizes)] + [np.full(n_small, small_label)]
    ).astype(np.int64)
    labels = rng.permutation(labels)

    scale = size / 32.0
    templates = _templates(n_big)
    # Strategy whose object relevance each sample carries (watermark samples borrow a random one).
    strategy = np.where(labels == small_label, rng.integers(0, n_big, size=n), labels)
    heat = np.zeros((n, size, size), dtype=np.float32)
    strength = rng.uniform(0.6, 1.4, size=n).astype(np.float32)
    shift = rng.normal(0.0, 1.5 * scale, size=(n, 2)).astype(np.float32)
    for s, blobs in enumerate(templates):
        sel = np.flatnonzero(strategy == s)
        if sel.size == 0:
            continue
        for r, c, sig in blobs:
            sigmas = (sig * scale * rng.uniform(0.8, 1.25, size=sel.size)).astype(np.float32)
            heat[sel] += _blobs(
                r * scale + shift[sel, 0], c * scale + shift[sel, 1], sigmas, strength[sel], size
            )
    # Weak diffuse negative relevance centred on the image, as LRP maps of real models show.
    neg = _blobs(
        np.full(n, size / 2, np.float32),
        np.full(n, size / 2, np.float32),
        np.full(n, 9.0 * scale, np.float32),
        -rng.uniform(0.05, 0.2, size=n).astype(np.float32),
        size,
    )
    heat += neg
    _add_watermark(heat, np.flatnonzero(labels == small_label), strength, rng)
    heat += rng.normal(0.0, 0.03, size=heat.shape).astype(np.float32)
    return heat, labels, small_label


def _add_watermark(
    heat: np.ndarray, small: np.ndarray, strength: np.ndarray, rng: np.random.Generator
) -> None:
    """Weaken the object relevance of the rows ``small`` of ``heat`` ``(n, s, s)`` and add a corner spot."""
    if not small.size:
        return
    size = heat.shape[-1]
    scale = size / 32.0
    heat[small] *= 0.15
    spot = _blobs(
        (2.5 + rng.normal(0, 0.3, small.size)).astype(np.float32) * scale,
        (2.5 + rng.normal(0, 0.3, small.size)).astype(np.float32) * scale,
        (1.2 * scale * rng.uniform(0.85, 1.15, small.size)).astype(np.float32),
        (rng.uniform(1.5, 2.5, small.size) * strength[small]).astype(np.float32),
        size,
    )
    heat[small] += spot

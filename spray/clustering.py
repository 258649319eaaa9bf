"""k-means sweep over the spectral embedding and the choice of k.

For every ``k`` the labelling uses only the *first k* eigenvectors (Ng, Jordan & Weiss 2002), rows
L2-normalised. CoRelAy clusters all 32 eigenvectors for every k; the 30-odd trailing eigenvectors
describe variation *inside* clusters, dominate the distances, and k-means then splits big clusters
instead of isolating the small one (measured ARI 0.14–0.29 vs 0.84–0.99, see docs/clustering.md).

Choice of k (documented in docs/clustering.md, "Choosing k"):

1. For each k compute the eigengap ``λ_k - λ_{k+1}``, the seed stability (mean ARI between the
   labelling and k-means refits on seeded 80 % subsamples, assigned back to all points) and the
   silhouette of the labelling on its own embedding (on a seeded sample of at most 5,000 points).
2. ``stable = {k : stability_k >= STABILITY_MIN}``; if empty, ``stable = {argmax stability}``.
3. ``good = {k in stable : silhouette_k >= max_stable silhouette - SILHOUETTE_SLACK}``.
4. Among ``good``, pick the k with the largest eigengap; ties go to the smaller k.

The eigengap alone over-splits (it picked k=10 for 6 true clusters); stability rejects the k whose
k-means solution is arbitrary (a too-large k splits a blob differently for every seed) and the
silhouette filter rejects k whose clusters are not compact in their own embedding.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score

from spray.errors import ConfigError
from spray.records import ClusteringResult, SpectralResult
from spray.spectral import eigengap_k

logger = logging.getLogger(__name__)

#: k whose subsample refits agree with the full labelling at least this well (mean ARI) are "stable".
STABILITY_MIN = 0.9
#: Number of subsample refits for the stability score, the fraction of points each one sees (capped
#: at RESAMPLE_MAX rows: agreement is already well estimated there) and their k-means restarts.
N_RESAMPLES = 3
RESAMPLE_FRACTION = 0.8
RESAMPLE_MAX = 20_000
RESAMPLE_N_INIT = 3
#: Silhouette is O(n²): evaluate it on at most this many points.
SILHOUETTE_SAMPLE = 5000
#: k whose silhouette is this far below the best stable silhouette are not candidates.
SILHOUETTE_SLACK = 0.1


def row_normalized(eigenvectors: np.ndarray, k: int) -> np.ndarray:
    """First ``k`` eigenvectors with each row scaled to unit length (zero rows stay zero).

    Parameters
    ----------
    eigenvectors : np.ndarray
        ``(n, m)`` eigenvectors, leading first.
    k : int
        Number of leading columns to keep.

    Returns
    -------
    np.ndarray
        ``(n, k)`` float64.
    """
    v = np.asarray(eigenvectors[:, :k], dtype=np.float64)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norm, out=np.zeros_like(v), where=norm > 0)


def _kmeans(x: np.ndarray, k: int, seed: int, n_init: int, fit_rows: np.ndarray | None) -> np.ndarray:
    """Seeded k-means fitted on ``x[fit_rows]`` (all rows if None), labels for every row of ``x``."""
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed)
    if fit_rows is None:
        return km.fit_predict(x).astype(np.int32)
    km.fit(x[fit_rows])
    return km.predict(x).astype(np.int32)


def _relabel_by_size(labels: np.ndarray, k: int) -> np.ndarray:
    """Renumber clusters by decreasing size (ties by first occurrence) so labels are canonical."""
    counts = np.bincount(labels, minlength=k)
    first = np.full(k, labels.size)
    np.minimum.at(first, labels, np.arange(labels.size))
    order = np.lexsort((first, -counts))
    remap = np.empty(k, dtype=np.int32)
    remap[order] = np.arange(k, dtype=np.int32)
    return remap[labels]


def cluster_sweep(
    spectral: SpectralResult,
    *,
    k_max: int = 8,
    seed: int = 0,
    n_init: int = 10,
    max_fit: int = 100_000,
) -> ClusteringResult:
    """Seeded k-means for every k in ``2..k_max`` and a choice of k.

    Parameters
    ----------
    spectral : SpectralResult
        Output of :func:`spray.spectral.spectral_embedding` (``n`` rows, ``m`` eigenvectors).
    k_max : int
        Largest k tried; clipped to ``min(m, n - 1)``.
    seed : int
        Seed of k-means, the resamples and the silhouette sample.
    n_init : int
        k-means restarts per fit.
    max_fit : int
        Above this many rows, k-means is fitted on a seeded subsample of ``max_fit`` rows and every
        row is assigned to its nearest centre (keeps the sweep linear and fast at 1M rows).

    Returns
    -------
    ClusteringResult
        ``labellings[k]`` ``(n,)`` int32 for every k (clusters numbered by decreasing size),
        ``chosen_k``, ``eigengap_k`` and ``scores[k] = {"silhouette", "stability", "eigengap"}`` where
        ``eigengap = λ_k - λ_{k+1}``.
    """
    if k_max < 2:
        raise ConfigError(f"k_max must be >= 2, got {k_max}")
    vecs = spectral.eigenvectors
    n, m = vecs.shape
    ev = np.asarray(spectral.eigenvalues, dtype=np.float64)
    hi = min(k_max, m, n - 1)
    if hi < 2:
        # Too few samples for two clusters: everything is one cluster.
        labels = np.zeros(n, dtype=np.int32)
        return ClusteringResult(labellings={2: labels}, chosen_k=2, eigengap_k=1, scores={})
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(n, size=max_fit, replace=False)) if n > max_fit else None
    n_sub = min(max(hi + 1, int(RESAMPLE_FRACTION * n)), RESAMPLE_MAX, n)
    resamples = [np.sort(rng.choice(n, size=n_sub, replace=False)) for _ in range(N_RESAMPLES)]
    sil_rows = (
        np.sort(rng.choice(n, size=SILHOUETTE_SAMPLE, replace=False)) if n > SILHOUETTE_SAMPLE else None
    )

    labellings: dict[int, np.ndarray] = {}
    scores: dict[int, dict[str, float]] = {}
    for k in range(2, hi + 1):
        x = row_normalized(vecs, k)
        labels = _kmeans(x, k, seed, n_init, fit_rows)
        stab = [
            adjusted_rand_score(labels, _kmeans(x, k, seed + 1 + r, min(n_init, RESAMPLE_N_INIT), rows))
            for r, rows in enumerate(resamples)
        ]
        n_used = np.unique(labels).size
        if n_used < 2:
            sil = -1.0
        elif sil_rows is None:
            sil = float(silhouette_score(x, labels))
        else:
            sub = labels[sil_rows]
            sil = float(silhouette_score(x[sil_rows], sub)) if np.unique(sub).size > 1 else -1.0
        gap = float(ev[k - 1] - ev[k]) if ev.size > k else 0.0
        labellings[k] = _relabel_by_size(labels, k)
        scores[k] = {
            "silhouette": sil,
            "stability": float(np.mean(stab)),
            "eigengap": gap,
        }
        logger.debug("k=%d %s", k, scores[k])

    stable = [k for k in scores if scores[k]["stability"] >= STABILITY_MIN]
    if not stable:
        stable = [max(scores, key=lambda k: (scores[k]["stability"], -k))]
    best_sil = max(scores[k]["silhouette"] for k in stable)
    good = [k for k in stable if scores[k]["silhouette"] >= best_sil - SILHOUETTE_SLACK]
    chosen = max(good, key=lambda k: (scores[k]["eigengap"], -k))
    return ClusteringResult(
        labellings=labellings,
        chosen_k=int(chosen),
        eigengap_k=eigengap_k(ev, k_max=hi),
        scores=scores,
    )

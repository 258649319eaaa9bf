"""k-means sweep over the spectral embedding and the choice of k.

For every ``k`` the labelling uses only the *first k* eigenvectors (Ng, Jordan & Weiss 2002), rows
L2-normalised. CoRelAy clusters all 32 eigenvectors for every k; the 30-odd trailing eigenvectors
describe variation *inside* clusters, dominate the distances, and k-means then splits big clusters
instead of isolating the small one (measured ARI 0.14–0.29 vs 0.84–0.99, see docs/clustering.md).

Choice of k (documented in docs/clustering.md, "Choosing k"):

1. For each k compute the eigengap ``λ_k - λ_{k+1}``, the seed stability (mean ARI between the
   labelling and k-means refits on seeded subsamples, assigned back to all points) and the silhouette of
   the labelling on its own embedding (on a seeded sample of points).
2. ``stable = {k : stability_k >= stability_min}``; if empty, ``stable = {argmax stability}``.
3. ``good = {k in stable : silhouette_k >= max_stable silhouette - silhouette_slack}``.
4. Among ``good``, pick the smallest k whose eigengap is at least ``eigengap_real`` of the largest
   eigengap in ``good``.

Every number of this rule is a field of ``analysis.k_choice`` (:class:`spray.config.analysis.KChoiceConfig`).
The eigengap alone over-splits (it picked k=10 for 6 true clusters); stability rejects the k whose
k-means solution is arbitrary (a too-large k splits a blob differently for every seed) and the
silhouette filter rejects k whose clusters are not compact in their own embedding.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from spray.analysis.spectral import eigengap_k
from spray.analysis.threads import limit_for_rows
from spray.config.analysis import KChoiceConfig
from spray.errors import ConfigError
from spray.records import ClusteringResult, SpectralResult

logger = logging.getLogger(__name__)

#: Rows per block of the silhouette distance computation.
_SIL_BLOCK = 512


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
    n_fit = len(x) if fit_rows is None else len(fit_rows)
    with limit_for_rows(n_fit, "openmp"):
        if fit_rows is None:
            return km.fit_predict(x).astype(np.int32)
        km.fit(x[fit_rows])
        return km.predict(x).astype(np.int32)


def _silhouette(x: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Mean silhouette coefficient (Euclidean), as ``sklearn.metrics.silhouette_score`` defines it.

    Blocked: memory ``_SIL_BLOCK × n``; the per-cluster distance sums are one matrix product with the
    one-hot labels. scikit-learn's version spent 0.7 s per call on 5,000 rows (4.9 of the 7.4 s sweep
    at 50k rows); this one needs ~0.1 s. Singletons score 0. Requires at least 2 distinct labels.
    """
    x = np.asarray(x, dtype=np.float32)
    n = x.shape[0]
    onehot = np.zeros((n, k), dtype=np.float32)
    onehot[np.arange(n), labels] = 1.0
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    sq = np.einsum("ij,ij->i", x, x)
    total = 0.0
    for start in range(0, n, _SIL_BLOCK):
        stop = min(start + _SIL_BLOCK, n)
        d2 = x[start:stop] @ x.T
        d2 *= -2.0
        d2 += sq[None, :]
        d2 += sq[start:stop, None]
        np.maximum(d2, 0.0, out=d2)
        d2[np.arange(stop - start), np.arange(start, stop)] = 0.0
        np.sqrt(d2, out=d2)
        sums = (d2 @ onehot).astype(np.float64)  # (block, k): summed distance to each cluster
        lab = labels[start:stop]
        own = counts[lab]
        rows = np.arange(stop - start)
        a = sums[rows, lab] / np.maximum(own - 1.0, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_other = sums / counts[None, :]
        mean_other[rows, lab] = np.inf
        mean_other[:, counts == 0] = np.inf
        b = mean_other.min(axis=1)
        denom = np.maximum(a, b)
        sil = np.divide(b - a, denom, out=np.zeros_like(a), where=denom > 0)
        sil[own <= 1] = 0.0
        total += float(sil.sum())
    return total / n


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
    choice: KChoiceConfig | None = None,
    choose: bool = True,
) -> ClusteringResult:
    """Seeded k-means for every k in ``2..k_max`` and a choice of k.

    Parameters
    ----------
    spectral : SpectralResult
        Output of :func:`spray.analysis.spectral.spectral_embedding` (``n`` rows, ``m`` eigenvectors).
    k_max : int
        Largest k tried; clipped to ``min(m, n - 1)``.
    seed : int
        Seed of k-means, the resamples and the silhouette sample.
    choice : KChoiceConfig, optional
        The sweep's settings (``analysis.k_choice``: restarts, subsampled fits, the stability refits, the
        silhouette sample and the rule that picks k); its defaults when None.
    choose : bool
        Score every k and choose one. False: only the labellings (identical to those with True), no
        scores, and ``chosen_k`` is the eigengap's k; for a caller that uses every k's clusters and never
        the choice (concept space), as the stability refits cost as much as the sweep itself.

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
    c = choice if choice is not None else KChoiceConfig()
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(n, size=c.max_fit, replace=False)) if n > c.max_fit else None
    # Drawn after fit_rows, so the labellings are the same whether or not k is chosen.
    n_sub = min(max(hi + 1, int(c.resample_fraction * n)), c.resample_max, n)
    resamples = [np.sort(rng.choice(n, size=n_sub, replace=False)) for _ in range(c.resamples)]
    sample = c.silhouette_sample
    sil_rows = np.sort(rng.choice(n, size=sample, replace=False)) if n > sample else None

    labellings: dict[int, np.ndarray] = {}
    scores: dict[int, dict[str, float]] = {}
    for k in range(2, hi + 1):
        x = row_normalized(vecs, k)
        labels = _kmeans(x, k, seed, c.n_init, fit_rows)
        if choose:
            scores[k] = _score_k(
                x, labels, k, ev, seed=seed, n_init=min(c.n_init, c.resample_n_init), resamples=resamples,
                sil_rows=sil_rows,
            )  # fmt: skip
            logger.debug("k=%d %s", k, scores[k])
        labellings[k] = _relabel_by_size(labels, k)
    gap_k = eigengap_k(ev, k_max=hi)
    return ClusteringResult(
        labellings=labellings,
        chosen_k=int(_choose_k(scores, c)) if choose else gap_k,
        eigengap_k=gap_k,
        scores=scores,
    )


def _score_k(
    x: np.ndarray,
    labels: np.ndarray,
    k: int,
    ev: np.ndarray,
    *,
    seed: int,
    n_init: int,
    resamples: list[np.ndarray],
    sil_rows: np.ndarray | None,
) -> dict[str, float]:
    """Silhouette, resample stability (mean ARI over refits with ``n_init`` restarts) and eigengap of one
    k-means labelling ``(n,)`` of ``x``."""
    stab = [
        adjusted_rand_score(labels, _kmeans(x, k, seed + 1 + r, n_init, rows))
        for r, rows in enumerate(resamples)
    ]
    if np.unique(labels).size < 2:
        sil = -1.0
    elif sil_rows is None:
        sil = _silhouette(x, labels, k)
    else:
        sub = labels[sil_rows]
        sil = _silhouette(x[sil_rows], sub, k) if np.unique(sub).size > 1 else -1.0
    gap = float(ev[k - 1] - ev[k]) if ev.size > k else 0.0
    return {"silhouette": sil, "stability": float(np.mean(stab)), "eigengap": gap}


def _choose_k(scores: dict[int, dict[str, float]], c: KChoiceConfig) -> int:
    """The smallest stable k whose silhouette is near the best and whose eigengap is a real one."""
    stable = [k for k in scores if scores[k]["stability"] >= c.stability_min]
    if not stable:
        stable = [max(scores, key=lambda k: (scores[k]["stability"], -k))]
    best_sil = max(scores[k]["silhouette"] for k in stable)
    good = [k for k in stable if scores[k]["silhouette"] >= best_sil - c.silhouette_slack]
    best_gap = max(scores[k]["eigengap"] for k in good)
    return min(k for k in good if scores[k]["eigengap"] >= c.eigengap_real * best_gap)

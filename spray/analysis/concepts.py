"""Spectral relevance analysis in concept space: one class's concept-relevance vectors, clustered.

The pixel-space analysis clusters *where* relevance lies, so a shortcut that moves (a tag at random
positions) spreads over many clusters. A concept-relevance vector (:mod:`spray.lrp.concepts`: the
relevance of each channel of a layer, summed over positions) does not depend on the position, so the
samples whose decision rests on the same detector cluster together wherever it fired.

The stage is the pixel stage's (normalise to unit total absolute relevance, PCA, kNN graph, spectral
embedding, k-means for every ``k``), on ``(n, C)`` vectors. Each cluster is then described by its
*characteristic channels* (the channels whose relevance share its members hold far more than the rest of
the class) and scored like the pixel map score with channels in place of a region::

    contrast    = mean share of the members in those channels − mean share of the rest
    consistency = 2·AUROC(per-sample share, members vs rest) − 1
    separation  = 1 − conductance of the cluster in the kNN graph
    score       = contrast⁺ · (0.5 + 0.5·consistency) · (0.5 + 0.5·separation) · (1 − 0.25·fraction)

The characteristic channels are also what a concept-conditional heatmap of a member propagates to the
input (``Explainer(..., concept_layer=...)(x, concept_mask=...)``), to show where in *that* image the
shortcut sits. :mod:`spray.analysis.concept_findings` turns the clusters into findings of the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spray.config import AuditConfig
from spray.records import ClusteringResult, SpectralResult

__all__ = ["ConceptAnalysis", "ConceptCluster", "analyze_concepts", "concept_suspicion", "normalize_concepts"]


@dataclass
class ConceptCluster:
    """One cluster of one labelling in concept space.

    Attributes
    ----------
    key : str
        ``"<class>/concept/k<k>/c<cluster>"`` (the labelling of :class:`ConceptAnalysis`, not the
        pixel one).
    k, cluster_id : int
    member_ids : list[str]
    channels : list[int]
        Characteristic channels, most characteristic first.
    score : float
    signals : dict[str, float]
        ``contrast``, ``consistency``, ``separation``, ``fraction``, ``size``, ``share_members`` and
        ``share_rest`` (mean share of positive concept relevance in the channels).
    """

    key: str
    k: int
    cluster_id: int
    member_ids: list[str]
    channels: list[int]
    score: float
    signals: dict[str, float] = field(default_factory=dict)


@dataclass
class ConceptAnalysis:
    """Concept-space analysis of one class.

    Attributes
    ----------
    class_index, class_name
    sample_ids : list[str]
        The ``n`` members, in row order.
    shares : np.ndarray
        ``(n, C)`` float32 positive concept relevance, each row rescaled to unit sum.
    spectral : SpectralResult
    clustering : ClusteringResult
    clusters : list[ConceptCluster]
        Every cluster of every ``k``, highest score first.
    """

    class_index: int
    class_name: str
    sample_ids: list[str]
    shares: np.ndarray
    spectral: SpectralResult
    clustering: ClusteringResult
    clusters: list[ConceptCluster]


def normalize_concepts(concepts: np.ndarray) -> np.ndarray:
    """``(n, C)`` concept relevance → float32 rows of unit total absolute relevance (zero rows stay 0)."""
    from spray.analysis.preprocess import normalize_heatmaps

    c = np.asarray(concepts, dtype=np.float32)
    return normalize_heatmaps(c[:, None, :], absolute=False)


def _positive_shares(features: np.ndarray) -> np.ndarray:
    pos = np.clip(features, 0.0, None)
    total = pos.sum(axis=1, keepdims=True)
    return np.divide(pos, total, out=np.zeros_like(pos), where=total > 0)


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUROC of scores ``pos`` over ``neg`` (ties count one half)."""
    if len(pos) == 0 or len(neg) == 0:
        return 0.5
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _separation(knn: np.ndarray, members: np.ndarray) -> float:
    """``1 − conductance`` of the member set in the symmetrised kNN graph ``(A + Aᵀ)/2``, as the pixel
    space's (:meth:`~spray.analysis.scoring.signals.ClassStats.conductance`): in [0, 1]."""
    inside = members[knn]  # (n, k_nn): is the neighbour a member
    k = knn.shape[1] if knn.ndim == 2 else 0
    out_cut = np.count_nonzero(~inside[members])  # member → non-member edges
    in_cut = np.count_nonzero(inside[~members])  # non-member → member edges
    # a node's degree in (A + Aᵀ)/2 is (its k out-edges + its in-edges) / 2
    vol_in = (k * int(members.sum()) + np.count_nonzero(inside[members]) + in_cut) / 2
    vol_out = (k * int((~members).sum()) + np.count_nonzero(~inside[~members]) + out_cut) / 2
    denom = min(vol_in, vol_out)
    if denom <= 0:
        return 0.0
    return float(np.clip(1.0 - (out_cut + in_cut) / 2 / denom, 0.0, 1.0))


def _score_cluster(
    shares: np.ndarray, knn: np.ndarray, members: np.ndarray, max_channels: int
) -> tuple[list[int], float, dict[str, float]]:
    """Characteristic channels (at most ``max_channels``), score and signals of one cluster (see the
    module docstring)."""
    diff = shares[members].mean(axis=0) - shares[~members].mean(axis=0)
    order = np.argsort(-diff, kind="stable")[:max_channels]
    channels = [int(c) for c in order if diff[c] > 0]
    share = shares[:, channels].sum(axis=1) if channels else np.zeros(len(shares))
    contrast = float(share[members].mean() - share[~members].mean())
    consistency = 2.0 * _auroc(share[members], share[~members]) - 1.0
    separation = _separation(knn, members)
    fraction = float(members.mean())
    score = max(contrast, 0.0) * (0.5 + 0.5 * consistency) * (0.5 + 0.5 * separation) * (1 - 0.25 * fraction)
    signals = {
        "contrast": contrast,
        "consistency": consistency,
        "separation": separation,
        "fraction": fraction,
        "size": float(members.sum()),
        "share_members": float(share[members].mean()),
        "share_rest": float(share[~members].mean()),
    }
    return channels, float(score), signals


def check_concepts(sample_ids: list[str], concepts: np.ndarray) -> None:
    """Refuse concept vectors that are not ``(n, C)`` for the ``n`` sample ids.

    Raises
    ------
    DataError
        With the shape expected.
    """
    if np.ndim(concepts) != 2 or len(concepts) != len(sample_ids):
        from spray.errors import DataError

        raise DataError(
            f"concepts must be (n, C) for the {len(sample_ids)} sample ids, got shape {tuple(np.shape(concepts))}"
        )


def analyze_concepts(
    class_index: int, class_name: str, sample_ids: list[str], concepts: np.ndarray, cfg: AuditConfig
) -> ConceptAnalysis:
    """Spectral relevance analysis of one class's ``(n, C)`` concept-relevance vectors.

    Uses ``analysis.pca_components`` (capped at ``C``), ``n_neighbors``, ``n_eigenvectors``, ``k_max``,
    ``knn``, ``k_choice`` and ``seed``, as the pixel stage does, and ``concepts.channels``.

    Raises
    ------
    DataError
        ``concepts`` is not ``(n, C)`` for the ``n`` sample ids.
    """
    check_concepts(sample_ids, concepts)
    from spray.analysis.clustering import cluster_sweep
    from spray.analysis.preprocess import reduce_dimension
    from spray.analysis.spectral import spectral_embedding

    a = cfg.analysis
    features = normalize_concepts(concepts)
    reduced = reduce_dimension(features, n_components=min(a.pca_components, features.shape[1]), seed=cfg.seed)
    spectral = spectral_embedding(
        reduced, n_neighbors=a.n_neighbors, n_eigenvectors=a.n_eigenvectors, seed=cfg.seed, search=a.knn
    )
    # Concept findings come from every k: the sweep's choice of k would be computed and never read.
    clustering = cluster_sweep(spectral, k_max=a.k_max, seed=cfg.seed, choice=a.k_choice, choose=False)
    shares = _positive_shares(features)
    knn = np.asarray(spectral.knn_indices)
    ids = np.asarray(sample_ids, dtype=object)
    clusters = []
    for k, labels in sorted(clustering.labellings.items()):
        for cid in np.unique(labels):
            members = labels == cid
            if members.all():
                continue
            channels, score, signals = _score_cluster(shares, knn, members, cfg.concepts.channels)
            key = f"{class_index}/concept/k{k}/c{int(cid)}"
            clusters.append(
                ConceptCluster(key, int(k), int(cid), list(ids[members]), channels, score, signals)
            )
    clusters.sort(key=lambda f: (-f.score, f.k, f.cluster_id))
    return ConceptAnalysis(class_index, class_name, list(sample_ids), shares, spectral, clustering, clusters)


def concept_suspicion(analysis: ConceptAnalysis, top: int = 5) -> np.ndarray:
    """``(n,)`` per-sample suspicion: the largest ``score × share in the cluster's channels`` over the
    ``top`` clusters of the class (a sample that leans on a suspicious cluster's detectors scores high,
    member or not)."""
    out = np.zeros(len(analysis.sample_ids))
    for f in analysis.clusters[:top]:
        if f.channels:
            out = np.maximum(out, f.score * analysis.shares[:, f.channels].sum(axis=1))
    return out

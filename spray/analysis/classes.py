"""Spectral relevance analysis of one class: normalise, reduce, embed, cluster for every k, map, score."""

from __future__ import annotations

import logging

import numpy as np

from spray.analysis.scoring import (
    HOTSPOT_K,
    InterventionProbe,
    hotspot_labelling,
    note_repeats,
    sample_suspicion,
    score_class,
)
from spray.analysis.threads import limit_for_rows
from spray.config import AnalysisConfig, AuditConfig
from spray.records import ClassAnalysis, ClusterFinding, score_text

log = logging.getLogger(__name__)


def analyze_class(
    class_index: int,
    class_name: str,
    sample_ids: list[str],
    relevance: np.ndarray,
    cfg: AuditConfig,
    *,
    probe: InterventionProbe | None = None,
    concepts: np.ndarray | None = None,
) -> ClassAnalysis:
    """Spectral relevance analysis of one class.

    Parameters
    ----------
    class_index, class_name
        The class.
    sample_ids : list[str]
        Ids of the ``n`` members, in row order.
    relevance : np.ndarray
        ``(n, h, w)`` pooled relevance (any float dtype).
    cfg : AuditConfig
        ``analysis``, ``scoring`` and ``seed`` are used.
    probe : InterventionProbe, optional
        Enables the paste test on the leading candidates.
    concepts : np.ndarray, optional
        ``(n, C)`` concept relevance of the members; with ``concepts.enabled`` the class is also analysed
        in concept space (:mod:`spray.analysis.concept_findings`).

    Returns
    -------
    ClassAnalysis
        Spectrum, every labelling, 2-D map and scored clusters (most suspicious first).
    """
    check_rows(sample_ids, relevance, concepts)
    # Small classes: numpy's linear algebra on one thread (spray.analysis.threads says why).
    with limit_for_rows(len(sample_ids), "blas"):
        return _analyze(class_index, class_name, sample_ids, relevance, cfg, probe, concepts)


def _analyze(
    class_index: int,
    class_name: str,
    sample_ids: list[str],
    relevance: np.ndarray,
    cfg: AuditConfig,
    probe: InterventionProbe | None,
    concepts: np.ndarray | None,
) -> ClassAnalysis:
    # Imported here, not at module level: scikit-learn and friends cost seconds to import, and the
    # up-to-date path of a scheduled run should answer at once without them.
    from spray.analysis.clustering import cluster_sweep
    from spray.analysis.embedding import embed_2d
    from spray.analysis.preprocess import reduce_dimension
    from spray.analysis.spectral import spectral_embedding

    a = cfg.analysis
    maps, features = _maps_and_features(relevance, a)
    if len(features) > 1 and np.array_equal(features.min(0), features.max(0)):
        log.warning(
            "class %s: its %d maps are all the same after normalisation (identical, empty or NaN): the analysis "
            "below carries no signal; check the heatmaps", class_name, len(features),
        )  # fmt: skip
    reduced = reduce_dimension(features, n_components=a.pca_components, seed=cfg.seed)
    spectral = spectral_embedding(
        reduced, n_neighbors=a.n_neighbors, n_eigenvectors=a.n_eigenvectors, seed=cfg.seed, search=a.knn
    )
    clustering = cluster_sweep(spectral, k_max=a.k_max, seed=cfg.seed, choice=a.k_choice)
    embedding = embed_2d(
        reduced, spectral, method=a.embedding, seed=cfg.seed, n_epochs=a.map_epochs, search=a.knn
    )
    clusters = score_class(
        class_index, class_name, sample_ids, maps, spectral, clustering,
        config=cfg.scoring, probe=probe if cfg.scoring.intervention else None, seed=cfg.seed,
    )  # fmt: skip
    # Hot-spot candidates come from no k-means labelling: they are stored as one of their own (k = 0).
    spots = hotspot_labelling(clusters, list(sample_ids))
    if spots is not None:
        clustering.labellings[HOTSPOT_K] = spots
    clusters, concept_labellings = _with_concepts(
        clusters, (class_index, class_name), sample_ids, concepts, maps, cfg, probe
    )
    clusters = note_repeats(clusters, cfg.scoring.nest_overlap)
    return ClassAnalysis(
        class_index=class_index,
        class_name=class_name,
        sample_ids=list(sample_ids),
        spectral=spectral,
        clustering=clustering,
        embedding=np.asarray(embedding, dtype=np.float32),
        embedding_method=a.embedding,
        clusters=clusters,
        sample_suspicion=sample_suspicion(
            maps, clusters, list(sample_ids), cfg.scoring.suspicion_tie_break
        ).astype(np.float32),
        concept_labellings=concept_labellings,
    )


def check_rows(sample_ids: list[str], relevance: np.ndarray, concepts: np.ndarray | None = None) -> None:
    """Refuse maps that are not ``(n, h, w)`` for the ``n`` ids, or concept vectors of another ``n``.

    Raises
    ------
    DataError
        With the shape expected and the fix.
    """
    from spray.errors import DataError

    shape = tuple(np.shape(relevance))
    if len(shape) == 4:
        raise DataError(
            f"relevance has shape {shape}: give (n, h, w) maps, the channels summed as spray's batch stage does "
            "(relevance.sum(1), or spray.attribution.pool_relevance for a coarser grid)"
        )
    if len(shape) != 3 or shape[0] != len(sample_ids):
        raise DataError(
            f"relevance must be (n, h, w) for the {len(sample_ids)} sample ids, got shape {shape}"
        )
    if concepts is not None:
        from spray.analysis.concepts import check_concepts

        check_concepts(sample_ids, concepts)


def _maps_and_features(relevance: np.ndarray, a: AnalysisConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(n, h, w)`` signed normalised maps (for scoring) and ``(n, h·w)`` clustering features."""
    from spray.analysis.preprocess import normalize_heatmaps

    rel = np.asarray(relevance, dtype=np.float32)
    maps_flat = normalize_heatmaps(rel, absolute=False)
    # The clustering features differ from the signed maps only with abs or blur: don't normalise twice.
    if a.absolute or a.blur_sigma > 0:
        features = normalize_heatmaps(rel, absolute=a.absolute, blur_sigma=a.blur_sigma)
    else:
        features = maps_flat
    return maps_flat.reshape(rel.shape), features


def _with_concepts(
    clusters: list[ClusterFinding],
    cls: tuple[int, str],
    sample_ids: list[str],
    concepts: np.ndarray | None,
    maps: np.ndarray,
    cfg: AuditConfig,
    probe: InterventionProbe | None,
) -> tuple[list[ClusterFinding], dict[int, np.ndarray]]:
    """The class's candidates of both spaces, the concept-only ones tested by intervention
    (:mod:`.concept_test`), and its concept labellings (:mod:`.concept_findings`); ``clusters`` and no
    labellings without concept vectors or with ``concepts.enabled`` off."""
    if concepts is None or not cfg.concepts.enabled:
        return clusters, {}
    from spray.analysis.concept_findings import merge_concept_findings
    from spray.analysis.concept_test import intervene_concept_findings
    from spray.analysis.concepts import analyze_concepts

    found = analyze_concepts(cls[0], cls[1], list(sample_ids), concepts, cfg)
    merged = merge_concept_findings(clusters, found, maps, cfg.concepts)
    tested = intervene_concept_findings(
        merged, list(sample_ids), concepts.shape[1], maps.shape[1] * maps.shape[2], probe, cfg
    )
    top = max(tested, key=lambda f: f.score, default=None)
    if top is not None:  # the pixel stage logged its own top; this is the class's top of both spaces
        log.info(
            "class %s: %d concept-only findings; top of both spaces: %s, score %s%s",
            cls[1], sum(f.space == "concept" for f in tested), top.key, score_text(top.score),
            " (suspicious)" if top.suspicious else "",
        )  # fmt: skip
    return tested, dict(found.clustering.labellings)

"""Concept-space clusters as findings of the run, beside the pixel candidates of the same class.

:func:`spray.analysis.concepts.analyze_concepts` clusters a class's concept-relevance vectors. Here its
clusters meet the pixel candidates (:func:`spray.analysis.scoring.score_class`):

- a concept cluster whose members overlap a pixel candidate's (member Jaccard ≥
  ``concepts.merge_jaccard``) is the same group found in both spaces: the pixel finding keeps its verdict
  and score and becomes ``space="both"``, carrying the concept evidence (channels, signals, a sentence);
- the other concept clusters, highest concept score first, become concept-only findings
  (``space="concept"``), at most ``concepts.candidates`` per class and none that repeats a kept one at
  another ``k`` (Jaccard ≥ ``concepts.nest_overlap``). Here they are not flagged: their score is
  ``suspicion(score_weight · concept score, False)``, below every flagged finding and on the scale of the
  unflagged pixel candidates, until :mod:`spray.analysis.concept_test` tests them by intervention.
"""

from __future__ import annotations

import numpy as np

from spray.analysis.concepts import ConceptAnalysis, ConceptCluster
from spray.analysis.scoring.verdict import suspicion
from spray.config import ConceptsConfig
from spray.records import ClusterFinding


def _jaccard(a: set[str], b: set[str]) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def _channels_text(channels: list[int]) -> str:
    names = [str(c) for c in channels]
    if len(names) == 1:
        return f"channel {names[0]}"
    return f"channels {', '.join(names[:-1])} and {names[-1]}"


def concept_sentence(c: ConceptCluster, class_name: str, subject: str = "its") -> str:
    """What a concept cluster shows, in words a person can check on the dashboard's reference images
    (``subject``: whose members, "its" for a concept-only finding)."""
    s = c.signals
    return (
        f"In concept space {subject} {int(s['size'])} members put {100 * s['share_members']:.0f} % of their positive "
        f"concept relevance on {_channels_text(c.channels)} of the concept layer, the rest of class "
        f"{class_name} {100 * s['share_rest']:.0f} % (consistency {s['consistency']:.2f}, separation "
        f"{s['separation']:.2f}, concept score {c.score:.3f})."
    )


def _concept_signals(c: ConceptCluster) -> dict[str, float]:
    out = {f"concept_{name}": float(v) for name, v in c.signals.items()}
    out.update(concept_score=float(c.score), concept_k=float(c.k), concept_cluster=float(c.cluster_id))
    return out


def _merge(f: ClusterFinding, c: ConceptCluster, jaccard: float) -> None:
    """Give the pixel finding ``f`` the concept evidence of ``c`` (in place)."""
    f.space = "both"
    f.channels = list(c.channels)
    f.signals.update(_concept_signals(c))
    f.signals["concept_jaccard"] = float(jaccard)
    f.evidence.append(
        f"Also found in concept space (concept cluster k{c.k}/c{c.cluster_id}, member Jaccard "
        f"{jaccard:.2f}). " + concept_sentence(c, f.class_name, "that cluster's")
    )


def _concept_only(
    c: ConceptCluster, class_index: int, class_name: str, row: dict[str, int], maps: np.ndarray, w: float
) -> ClusterFinding:
    idx = np.asarray([row[s] for s in c.member_ids], dtype=np.int64)
    n = len(maps)
    signals = {"size": float(idx.size), "fraction": float(idx.size / n), **_concept_signals(c)}
    evidence = [
        concept_sentence(c, class_name),
        "Found in concept space only (no pixel candidate shares its members): not tested by intervention, "
        "so not flagged; its members' concept-conditional heatmaps show where each one's relevance lies.",
    ]
    return ClusterFinding(
        class_index=class_index,
        class_name=class_name,
        cluster_id=c.cluster_id,
        k=c.k,
        size=int(idx.size),
        fraction=float(idx.size / n),
        score=suspicion(w * c.score, False),
        suspicious=False,
        evidence=evidence,
        signals=signals,
        member_ids=list(c.member_ids),
        mean_heatmap=maps[idx].mean(axis=0).astype(np.float32),
        space="concept",
        channels=list(c.channels),
    )


def merge_concept_findings(
    pixel: list[ClusterFinding],
    concepts: ConceptAnalysis,
    maps: np.ndarray,
    config: ConceptsConfig,
) -> list[ClusterFinding]:
    """The class's candidates of both spaces, most suspicious first (see the module docstring).

    Parameters
    ----------
    pixel : list[ClusterFinding]
        The class's pixel candidates; those a concept cluster matches are changed in place
        (``space="both"``).
    concepts : ConceptAnalysis
        The class's concept-space analysis (same samples).
    maps : np.ndarray
        ``(n, h, w)`` normalised heatmaps in the row order of ``concepts.sample_ids`` (for the mean
        heatmap of a concept-only finding).
    config : ConceptsConfig

    Returns
    -------
    list[ClusterFinding]
        ``pixel`` and the concept-only findings, by score (ties: pixel first, then ``k``, cluster id).
    """
    row = {s: i for i, s in enumerate(concepts.sample_ids)}
    pixel_sets = [set(f.member_ids) for f in pixel]
    merged: set[int] = set()
    kept: list[ClusterFinding] = []
    kept_sets: list[set[str]] = []
    for c in concepts.clusters:  # highest concept score first
        if len(c.member_ids) < config.min_cluster_size or not c.channels or c.score <= 0:
            continue
        members = set(c.member_ids)
        overlaps = [_jaccard(members, p) for p in pixel_sets]
        best = int(np.argmax(overlaps)) if overlaps else -1
        if best >= 0 and overlaps[best] >= config.merge_jaccard:
            if best not in merged:  # the best-scoring concept cluster of the group carries its evidence
                merged.add(best)
                _merge(pixel[best], c, overlaps[best])
            continue
        if len(kept) >= config.candidates or any(
            _jaccard(members, k) >= config.nest_overlap for k in kept_sets
        ):
            continue
        kept.append(
            _concept_only(c, concepts.class_index, concepts.class_name, row, maps, config.score_weight)
        )
        kept_sets.append(members)
    return by_score(pixel + kept)


def by_score(findings: list[ClusterFinding]) -> list[ClusterFinding]:
    """A class's candidates of both spaces, most suspicious first (ties: pixel first, then ``k``, cluster
    id)."""
    return sorted(findings, key=lambda f: (-f.score, f.space == "concept", f.k, f.cluster_id))

"""Findings of one class: every cluster scored, tested, judged and explained (:func:`score_class`)."""

from __future__ import annotations

import logging

import numpy as np

from spray.analysis.scoring.carriers import Stamp, find_carriers
from spray.analysis.scoring.evidence import carriers_sentence, evidence
from spray.analysis.scoring.intervention import PasteTest, paste_test
from spray.analysis.scoring.ordering import stable_order
from spray.analysis.scoring.probe import InterventionProbe, Targets
from spray.analysis.scoring.ranking import select_k
from spray.analysis.scoring.signals import Candidate, ClassStats, analyse_cluster
from spray.analysis.scoring.verdict import judge
from spray.config import ScoringConfig
from spray.records import ClusterFinding, ClusteringResult, SpectralResult

logger = logging.getLogger(__name__)


def _candidates(
    stats: ClassStats, clustering: ClusteringResult, config: ScoringConfig
) -> tuple[list[Candidate], int]:
    """Every cluster of the labelling that isolates the class's top pattern best, by map score; and its k."""
    per_k: dict[int, list[Candidate]] = {}
    ks = sorted(clustering.labellings)
    if config.select_k != "best" and clustering.chosen_k in clustering.labellings:
        ks = [clustering.chosen_k]
    for k in ks:
        lab = np.asarray(clustering.labellings[k])
        per_k[k] = [analyse_cluster(stats, k, int(c), lab == c, config) for c in np.unique(lab)]
    chosen = clustering.chosen_k if clustering.chosen_k in per_k else ks[0]
    best_k = select_k(per_k, chosen, stats.h, stats.w, config.select_slack)
    return sorted(per_k[best_k], key=lambda c: (-c.map_score, c.cluster_id)), best_k


def _paste_tests(
    stats: ClassStats,
    cands: list[Candidate],
    class_index: int,
    sample_ids: list[str],
    probe: InterventionProbe,
    config: ScoringConfig,
    seed: int,
    stamps: dict[int, Stamp],
) -> dict[int, PasteTest]:
    """The paste tests of the ``intervention_candidates`` leading candidates, by cluster id."""
    targets = Targets.load(probe, class_index, config.intervention_samples)
    # One seeded order of the class's contents serves every candidate's donor pick (restricted to a
    # cluster, it is the order stable_order gives the cluster alone).
    donor_order = stable_order([probe.key(sid) for sid in sample_ids], f"donor|{seed}|{class_index}")
    tests: dict[int, PasteTest] = {}
    for cand in cands[: config.intervention_candidates]:
        if cand.signals["size"] < config.min_cluster_size or cand.map_score <= 0:
            continue
        test = paste_test(stats, cand, class_index, sample_ids, probe, targets, donor_order, config, stamps)
        if test is not None:
            tests[cand.cluster_id] = test
    return tests


def _finding(
    cand: Candidate,
    test: PasteTest | None,
    stamp: Stamp | None,
    cls: tuple[int, str],
    sample_ids: list[str],
    maps: np.ndarray,
    base: dict[str, float],
    probe: InterventionProbe | None,
    config: ScoringConfig,
) -> ClusterFinding:
    """The finding of one candidate: verdict, signals, evidence and (flagged) carriers.

    ``probe`` is None when the class was scored without the paste test; ``base`` holds the class-wide
    signals (eigengap and chosen k).
    """
    class_index, class_name = cls
    n, h, w = maps.shape
    verdict = judge(cand, test, config, use_probe=probe is not None)
    sig = {**cand.signals, **base}
    if test is not None:
        sig.update(test.signals())
        if verdict.ratio is not None:
            sig["flip_ratio"] = verdict.ratio
    sig["tested"] = float(test is not None and test.pasted)  # pasted (not only looked at)
    lines = evidence(cand, class_name, n, h, w, test)
    carriers: list[int] = []
    if verdict.suspicious and config.carriers and stamp is not None and probe is not None:
        # A flagged stamp is rarely all in one cluster (where the object's own relevance is strong the
        # sample lands elsewhere): list every other sample of the class that repeats its pixels.
        rows = np.flatnonzero(~cand.member)
        carriers = find_carriers(stamp, probe, sample_ids, rows, h, w, config.carrier_chunk)
        sig["carriers"] = float(len(carriers))
        lines.append(carriers_sentence(len(carriers), class_name, n, stamp.region.kind != "window"))
    idx = np.flatnonzero(cand.member)
    return ClusterFinding(
        class_index=class_index,
        class_name=class_name,
        cluster_id=cand.cluster_id,
        k=cand.k,
        size=int(idx.size),
        fraction=float(idx.size / n),
        score=verdict.score,
        suspicious=verdict.suspicious,
        evidence=lines,
        signals=sig,
        member_ids=[sample_ids[i] for i in idx],
        mean_heatmap=maps[idx].mean(axis=0).astype(np.float32),
        carrier_ids=[sample_ids[i] for i in carriers],
    )


def score_class(
    class_index: int,
    class_name: str,
    sample_ids: list[str],
    maps: np.ndarray,
    spectral: SpectralResult,
    clustering: ClusteringResult,
    *,
    config: ScoringConfig,
    probe: InterventionProbe | None = None,
    seed: int = 0,
) -> list[ClusterFinding]:
    """Score every cluster of one class and explain each score.

    Parameters
    ----------
    class_index, class_name
        The class.
    sample_ids : list[str]
        Ids of the ``n`` rows, in the row order of ``maps`` and of the labellings.
    maps : np.ndarray
        ``(n, h, w)`` float per-sample normalised relevance (signed, divided by total ``|R|``).
    spectral : SpectralResult
        The class's spectral result (its kNN graph gives the conductance).
    clustering : ClusteringResult
        All labellings; the one returned is chosen by :func:`~spray.analysis.scoring.ranking.select_k`.
    config : ScoringConfig
        Intervention settings and thresholds.
    probe : InterventionProbe, optional
        Enables the paste test on the ``config.intervention_candidates`` leading clusters.
    seed : int
        Seeds the choice of donor images; same inputs and seed give the same findings.

    Returns
    -------
    list[ClusterFinding]
        The clusters of one labelling, most suspicious first.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (n, h, w), got {maps.shape}")
    n = len(maps)
    if len(sample_ids) != n:
        raise ValueError(f"{len(sample_ids)} sample ids for {n} maps")
    if not clustering.labellings:
        return []
    stats = ClassStats(maps, spectral, config)
    cands, best_k = _candidates(stats, clustering, config)
    use_probe = probe is not None and config.intervention and config.intervention_candidates > 0
    stamps: dict[int, Stamp] = {}
    tests: dict[int, PasteTest] = {}
    if use_probe:
        assert probe is not None
        tests = _paste_tests(stats, cands, class_index, sample_ids, probe, config, seed, stamps)
    base = {"eigengap_k": float(clustering.eigengap_k), "chosen_k": float(clustering.chosen_k)}
    findings = [
        _finding(
            cand, tests.get(cand.cluster_id), stamps.get(cand.cluster_id), (class_index, class_name),
            sample_ids, maps, base, probe if use_probe else None, config,
        )
        for cand in cands
    ]  # fmt: skip
    findings.sort(key=lambda f: (-f.score, f.cluster_id))
    top = findings[0] if findings else None
    logger.info(
        "class %s: k=%d (chosen_k=%d), top cluster score %.3f%s",
        class_name,
        best_k,
        clustering.chosen_k,
        top.score if top else 0.0,
        " (suspicious)" if top and top.suspicious else "",
    )
    return findings

"""Candidates of one class: every pattern scored, tested, judged and explained (:func:`score_class`)."""

from __future__ import annotations

import logging

import numpy as np

from spray.analysis.scoring.appearance import Look
from spray.analysis.scoring.candidates import HOTSPOT_K, all_candidates, merge_patterns, overlap
from spray.analysis.scoring.carriers import Stamp, find_carriers
from spray.analysis.scoring.evidence import carriers_sentence, evidence, pct
from spray.analysis.scoring.intervention import InterventionTest, appraise, intervention_test
from spray.analysis.scoring.ordering import stable_order
from spray.analysis.scoring.probe import InterventionProbe, Targets
from spray.analysis.scoring.signals import Candidate, ClassStats
from spray.analysis.scoring.verdict import judge, unflagged
from spray.config import ScoringConfig
from spray.records import ClusterFinding, ClusteringResult, SpectralResult, score_text

logger = logging.getLogger(__name__)

Key = tuple[int, int]


def _appearance_null(
    key: Key, cand: Candidate, looks: dict[Key, tuple[Candidate, Look]], config: ScoringConfig
) -> tuple[float, int]:
    """The class's typical appearance for ``cand``: the median over the other appraised candidates that
    do not share ``nest_overlap`` of their members with it (0 when there are none), and how many there are."""
    vals = [
        seen.appearance
        for k, (c, seen) in looks.items()
        if k != key and overlap(c.member, cand.member) < config.nest_overlap
    ]
    return (float(np.median(vals)) if vals else 0.0), len(vals)


def _tests(
    stats: ClassStats,
    cands: list[Candidate],
    class_index: int,
    sample_ids: list[str],
    probe: InterventionProbe,
    config: ScoringConfig,
    seed: int,
    stamps: dict[Key, Stamp],
) -> dict[Key, InterventionTest]:
    """Appearance of the ``appraised_candidates`` leading candidates and of every hot-spot group, and the
    interventions on at most ``intervention_candidates`` of them, by (k, cluster id).

    The appraised candidates' appearances are the class's own null for each other's (pixels only, no
    forward pass). Only a candidate that could be flagged (its appearance reaches
    ``flag_min_appearance`` and, relative to the class's, the lower of its two relative thresholds) is run through
    the model, the leading ones first.
    """
    # One seeded order of the class's contents serves every candidate's donor pick (restricted to a
    # cluster, it is the order stable_order gives the cluster alone).
    donor_order = stable_order([probe.key(sid) for sid in sample_ids], f"donor|{seed}|{class_index}")
    eligible = [c for c in cands if c.signals["size"] >= config.min_cluster_size and c.map_score > 0]
    # The leading candidates by map score, and every hot-spot group: the rare-shortcut route must not
    # depend on a small group's map score.
    chosen = eligible[: max(config.appraised_candidates, 1)]
    chosen += [c for c in eligible[len(chosen) :] if c.k == HOTSPOT_K]
    looks: dict[Key, tuple[Candidate, Look]] = {}
    for cand in chosen:
        got = appraise(stats, cand, sample_ids, probe, donor_order, config)
        if got is not None:  # the donors' pixels are dropped: a tested candidate loads them again
            looks[(cand.k, cand.cluster_id)] = (cand, got[1])
    targets = Targets.load(probe, class_index, config.intervention_samples)
    tests: dict[Key, InterventionTest] = {}
    for key, (cand, seen) in looks.items():
        null, n_null = _appearance_null(key, cand, looks, config)
        test = InterventionTest(seen.appearance, seen.aligned, seen.kind, int(seen.m_in[0].sum()), null)
        run = len([t for t in tests.values() if t.intervened]) < config.intervention_candidates
        if (
            run
            and seen.appearance >= config.flag_min_appearance
            and test.relative_appearance >= config.gate_relative_appearance
        ):
            again = appraise(stats, cand, sample_ids, probe, donor_order, config)
            assert again is not None
            test = intervention_test(stats, cand, class_index, probe, targets, again, null, config, stamps)
        test.null_count, test.uniform = n_null, seen.uniform
        tests[key] = test
    return tests


def _finding(
    cand: Candidate,
    test: InterventionTest | None,
    stamp: Stamp | None,
    cls: tuple[int, str],
    sample_ids: list[str],
    maps: np.ndarray,
    base: dict[str, float],
    probe: InterventionProbe | None,
    config: ScoringConfig,
) -> ClusterFinding:
    """The record of one candidate: verdict, signals, evidence and (flagged) carriers.

    ``probe`` is None when the class was scored without interventions; ``base`` holds the class-wide
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
    sig["tested"] = float(test is not None and (test.pasted or test.removal is not None))
    lines = evidence(cand, class_name, n, h, w, test, config, verdict)
    carriers: list[int] = []
    graded: dict[int, float] = {}
    if verdict.suspicious and config.carriers and stamp is not None and probe is not None:
        # A flagged stamp is rarely all in one cluster (where the object's own relevance is strong the
        # sample lands elsewhere): list every other sample of the class that repeats its pixels.
        rows = np.flatnonzero(~cand.member)
        carriers, graded = find_carriers(stamp, probe, sample_ids, rows, h, w, config)
        sig["carriers"] = float(len(carriers))
        share = (int(cand.member.sum()) + len(carriers)) / n
        if share > config.flag_max_fraction:
            # Members and carriers are most of the class: its own pattern, which the rest of the class can no
            # longer calibrate (as flag_max_fraction says of a cluster); not flagged, no carriers listed.
            verdict = unflagged(verdict)
            tests = " and the ".join(f"{route} test" for route in verdict.routes)
            lines[-1] = (
                f"not flagged although the {tests} cleared its margins: its members and the images that repeat "
                f"their pixels are {pct(share)} of the class, and a flag needs at most "
                f"{pct(config.flag_max_fraction)} (the class's own pattern, not a group's)"
            )
        if verdict.suspicious:
            lines.append(carriers_sentence(len(carriers), class_name, n, stamp.in_place))
        else:
            carriers, graded = [], {}
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
        carrier_affinity={sample_ids[i]: a for i, a in graded.items()} if config.graded_suspicion else {},
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
    """Score every candidate of one class (clusters of every k, hot-spot groups) and explain each score.

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
        All labellings: their clusters are merged into one candidate per pattern
        (:mod:`~spray.analysis.scoring.candidates`).
    config : ScoringConfig
        Intervention settings and thresholds.
    probe : InterventionProbe, optional
        Enables the interventions on the ``config.intervention_candidates`` leading candidates.
    seed : int
        Seeds the choice of donor images; same inputs and seed give the same findings.

    Returns
    -------
    list[ClusterFinding]
        One record per candidate (its ``k`` and ``cluster_id`` say where it comes from; ``k`` 0: a
        hot-spot group), most suspicious first. They may overlap: a sample can be in several.
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
    cands = merge_patterns(all_candidates(stats, clustering, config), stats.h, stats.w, config)
    use_probe = probe is not None and config.intervention and config.intervention_candidates > 0
    stamps: dict[Key, Stamp] = {}
    tests: dict[Key, InterventionTest] = {}
    if use_probe:
        assert probe is not None
        tests = _tests(stats, cands, class_index, sample_ids, probe, config, seed, stamps)
    base = {"eigengap_k": float(clustering.eigengap_k), "chosen_k": float(clustering.chosen_k)}
    findings = [
        _finding(
            cand, tests.get((cand.k, cand.cluster_id)), stamps.get((cand.k, cand.cluster_id)),
            (class_index, class_name), sample_ids, maps, base, probe if use_probe else None, config,
        )
        for cand in cands
    ]  # fmt: skip
    findings.sort(key=lambda f: (-f.score, f.k, f.cluster_id))
    top = findings[0] if findings else None
    logger.info(
        "class %s: %d pixel candidates; top: k=%d cluster %d, score %s%s",
        class_name,
        len(findings),
        top.k if top else -1,
        top.cluster_id if top else -1,
        score_text(top.score if top else 0.0),
        " (suspicious)" if top and top.suspicious else "",
    )
    return findings

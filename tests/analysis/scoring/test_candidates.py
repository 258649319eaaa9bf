"""Candidates across every k: hot-spot groups (the rare-shortcut route) and one candidate per pattern."""

from __future__ import annotations

import numpy as np

from spray.analysis.scoring.candidates import all_candidates, hotspot_groups, merge_patterns
from spray.analysis.scoring.signals import ClassStats, analyse_cluster
from spray.config import ScoringConfig
from spray.records import ClusteringResult, SpectralResult
from tests.analysis.scoring.cases import Case


def _rare_class(n: int = 600, k_rare: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Maps of a class whose relevance is on a central object, and ``k_rare`` samples (about 3 %) that
    also put some of it on a small spot at the top right."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    maps = rng.random((n, 28, 28)) * 0.05
    for i in range(n):
        cy, cx = rng.normal(14, 2, 2)
        maps[i] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 20.0)
    rare = np.zeros(n, dtype=bool)
    rare[rng.choice(n, k_rare, replace=False)] = True
    maps[rare, 2:5, 22:25] += 1.0
    return maps, rare


def _no_graph(n: int) -> SpectralResult:
    return SpectralResult(
        np.ones(1), np.zeros((n, 1), np.float32), np.zeros((n, 0), np.int64), np.zeros((n, 0)), 1
    )


def test_hotspot_groups_find_a_rare_spot_that_no_cluster_isolates() -> None:
    maps, rare = _rare_class()
    config = ScoringConfig()
    stats = ClassStats(maps, _no_graph(len(maps)), config)
    groups = hotspot_groups(stats, config)
    assert groups, "the rare spot is found"
    best = groups[0][0]
    assert (best & rare).sum() >= 0.9 * rare.sum() and (best & ~rare).sum() <= 2
    # A clustering that splits the class in halves, blind to the spot: the hot-spot group is still a
    # candidate of its own, above both halves.
    halves = ClusteringResult({2: (np.arange(len(maps)) % 2).astype(np.int32)}, 2, 2, {})
    cands = merge_patterns(all_candidates(stats, halves, config), 28, 28, config)
    spot = next(i for i, c in enumerate(cands) if c.k == 0 and (c.member == best).all())
    assert all(i > spot for i, c in enumerate(cands) if c.k == 2)
    assert not hotspot_groups(stats, ScoringConfig(hotspot_min_excess=0.5))


def test_a_distinct_spot_separates_far_better_than_the_tail_of_a_spread() -> None:
    """Without a spot, the best split of any window is the tail of the object's spread; its Fisher ratio
    is far below a real spot's (hot-spot groups of that kind are left to the appearance test)."""
    config = ScoringConfig(hotspot_separation=200.0)
    without, _ = _rare_class(k_rare=0)
    assert hotspot_groups(ClassStats(without, _no_graph(len(without)), config), config) == []
    with_spot, _ = _rare_class()
    assert hotspot_groups(ClassStats(with_spot, _no_graph(len(with_spot)), config), config)


def test_log_shares_find_a_spot_of_widely_spread_strength_whole() -> None:
    """A spot whose strength spreads over 15-fold across its 25 samples: on the raw shares the most
    distinct split is not the spot at all; on their logarithm it is the spot's group, nearly whole."""
    rng = np.random.default_rng(3)
    maps, rare = _rare_class(n=500, k_rare=0, seed=3)
    rare[rng.choice(len(maps), 25, replace=False)] = True
    strength = np.exp(rng.normal(0.0, 0.6, rare.sum()))
    assert strength.max() / strength.min() > 15
    maps[rare, 2:5, 22:25] += strength[:, None, None]
    raw = ScoringConfig(hotspot_split="share", hotspot_separation=1.0)
    log = ScoringConfig(hotspot_split="log_share", hotspot_separation=1.0)
    raw_best = hotspot_groups(ClassStats(maps, _no_graph(len(maps)), raw), raw)[0][0]
    whole = hotspot_groups(ClassStats(maps, _no_graph(len(maps)), log), log)[0][0]
    assert (raw_best & rare).sum() <= 0.5 * rare.sum()
    assert (whole & rare).sum() >= 0.75 * rare.sum() and (whole & ~rare).sum() <= 2
    # The defaults (log shares, separation 11.5) find the same group.
    default = ScoringConfig()
    assert default.hotspot_split == "log_share"
    found = hotspot_groups(ClassStats(maps, _no_graph(len(maps)), default), default)
    assert found and (found[0][0] == whole).all()
    # A floor far above every share makes the logarithm linear: the raw split's groups come back.
    flat = ScoringConfig(hotspot_split="log_share", hotspot_separation=1.0, hotspot_log_floor=1e3)
    assert (hotspot_groups(ClassStats(maps, _no_graph(len(maps)), flat), flat)[0][0] == raw_best).all()


def test_a_distinct_hot_spot_group_represents_its_pattern_over_a_partial_cluster() -> None:
    """A cluster holding 14 of the 20 spot samples and 6 others, and the hot-spot group holding all 20:
    without ``hotspot_distinct`` the cluster represents the pattern; a group past it wins on its own."""
    maps, rare = _rare_class()
    partial = np.zeros(len(maps), dtype=bool)
    partial[np.flatnonzero(rare)[:14]] = True
    partial[np.flatnonzero(~rare)[:6]] = True
    clustering = ClusteringResult({5: np.where(partial, 1, 0).astype(np.int32)}, 5, 5, {})

    def spot_version(config: ScoringConfig) -> np.ndarray:
        stats = ClassStats(maps, _no_graph(len(maps)), config)
        cands = merge_patterns(all_candidates(stats, clustering, config), 28, 28, config)
        versions = [c for c in cands if (c.member & rare).sum() >= 10]
        assert len(versions) == 1  # the group and the cluster are merged into one pattern
        return versions[0].member

    default = ScoringConfig()
    ratio = hotspot_groups(ClassStats(maps, _no_graph(len(maps)), default), default)[0][1]
    assert (spot_version(ScoringConfig(hotspot_distinct=None)) == partial).all()
    assert (spot_version(ScoringConfig(hotspot_distinct=ratio)) == rare).all()
    assert (spot_version(ScoringConfig(hotspot_distinct=ratio * 1.01)) == partial).all()


def test_nested_versions_of_one_pattern_merge_into_the_best_isolated(planted: Case) -> None:
    """k=2: the planted set with a few others; k=3: the planted set exactly; k=4: half of it. One
    candidate comes out for the pattern, the exact one, and the rest of the class stays a candidate."""
    config = ScoringConfig(hotspots=False)
    truth = planted.truth
    n = len(truth)
    loose = truth.copy()
    loose[np.flatnonzero(~truth)[:10]] = True
    half = truth.copy()
    half[np.flatnonzero(truth)[::2]] = False
    lab2, lab3, lab4 = (
        loose.astype(np.int32),
        truth.astype(np.int32),
        np.where(truth, 1 + half, 0).astype(np.int32),
    )
    clustering = ClusteringResult({2: lab2, 3: lab3, 4: lab4}, 2, 2, {})
    stats = ClassStats(planted.maps, planted.spectral, config)
    cands = all_candidates(stats, clustering, config)
    assert len(cands) == 6  # 7 clusters, but k=3 and k=4 share the rest of the class: analysed once
    merged = merge_patterns(cands, 32, 32, config)
    pattern = [c for c in merged if (c.member & truth).sum() > 0.4 * truth.sum() and c.member.sum() < n / 2]
    assert len(pattern) == 1 and (pattern[0].member == truth).all() and pattern[0].k == 3
    exact = analyse_cluster(stats, 3, 1, truth, config)
    assert pattern[0].map_score == exact.map_score


def test_hotspot_groups_are_disjoint_and_stored_as_the_k0_labelling() -> None:
    from spray.analysis.scoring import HOTSPOT_K, hotspot_labelling
    from spray.analysis.scoring.findings import score_class

    maps, rare = _rare_class()
    maps[rare.nonzero()[0][:10], 20:23, 2:5] += 1.0  # half of the spot's samples also have a second spot
    config = ScoringConfig()
    stats = ClassStats(maps, _no_graph(len(maps)), config)
    groups = hotspot_groups(stats, config)
    taken = np.zeros(len(maps), dtype=int)
    for m, _ in groups:
        taken += m
    assert taken.max() == 1
    ids = [f"s{i}" for i in range(len(maps))]
    halves = ClusteringResult({2: (np.arange(len(maps)) % 2).astype(np.int32)}, 2, 2, {})
    found = score_class(0, "x", ids, maps, _no_graph(len(maps)), halves, config=config)
    labels = hotspot_labelling(found, ids)
    assert labels is not None
    for f in found:
        if f.k == HOTSPOT_K:
            assert [ids[i] for i in np.flatnonzero(labels == f.cluster_id)] == f.member_ids
    assert hotspot_labelling([f for f in found if f.k != HOTSPOT_K], ids) is None


def test_the_whole_group_represents_its_pattern_over_a_part_that_won_a_rounded_tie() -> None:
    """An outside-in check (ResNet-18, 64×64): the 50 stamped images formed one cluster (consistency 1.000),
    a 17-image part of it another (0.9963, a slightly higher map score) and the other 33 a third. The part
    won the rounded tie and the 33 were a second finding; with scoring.select_superset the whole group
    represents the pattern."""
    from spray.analysis.scoring.geometry import Region
    from spray.analysis.scoring.signals import Candidate

    n = 400
    whole, part, rest = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
    whole[:50], part[:17], rest[17:50] = True, True, True
    region = Region("window", 4, 20, 20)

    def cand(k: int, member: np.ndarray, consistency: float, map_score: float) -> Candidate:
        signals = {"consistency": consistency}
        return Candidate(k, 0, member, region, False, 4, signals, map_score)

    cands = [cand(6, part, 0.9963, 0.0585), cand(2, whole, 1.0, 0.0570), cand(7, rest, 0.998, 0.0500)]
    on = ScoringConfig(select_superset=0.9)
    got = merge_patterns(cands, 28, 28, on)
    assert [(c.k, int(c.member.sum())) for c in got] == [(2, 50)]
    # the default (off: the tuning split did not keep it): the part represents the pattern, and the rest of
    # the group is a second one
    old = merge_patterns(cands, 28, 28, ScoringConfig())
    assert [(c.k, int(c.member.sum())) for c in old] == [(6, 17), (7, 33)]
    # a wider group that isolates the pattern worse does not take over
    worse = [cand(6, part, 0.9963, 0.0585), cand(2, whole, 0.97, 0.0570)]
    assert [c.k for c in merge_patterns(worse, 28, 28, on)] == [6]

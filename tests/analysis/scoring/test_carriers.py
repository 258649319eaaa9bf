"""Carriers: the other samples of a class that repeat a flagged cluster's stamp (also when it jitters)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spray.analysis.clustering import cluster_sweep
from spray.analysis.preprocess import normalize_heatmaps, reduce_dimension
from spray.analysis.scoring import InterventionProbe, score_class
from spray.analysis.scoring.carriers import Stamp, stamp_distance
from spray.analysis.scoring.geometry import Region
from spray.analysis.spectral import spectral_embedding
from spray.config import ScoringConfig
from spray.config.analysis import KChoiceConfig
from tests.analysis.scoring.cases import CLASS, NAME, Case, make_probe, patch_predictor, score


def test_stamp_distance_finds_the_stamp_anywhere_and_a_whole_grid_template_in_place() -> None:
    g = np.zeros((2, 8, 8, 1))
    g[0, 5:7, 1:3] = 1.0  # the stamp, elsewhere
    stamp = Stamp(np.ones((4, 1)), np.ones(4), (2, 2), np.zeros(3))
    d = stamp_distance(stamp, g)
    assert d[0] == 0.0 and d[1] == 1.0
    frame = Region("frame", 1).mask(8, 8)
    fs = Stamp(frame.reshape(-1, 1).astype(float), frame.ravel().astype(float), (8, 8), np.zeros(3), True)
    g[1][frame] = 1.0
    assert stamp_distance(fs, g)[1] == 0.0 and stamp_distance(fs, g)[0] > 0.9


def test_flagged_finding_lists_the_other_samples_that_carry_its_stamp(planted: Case) -> None:
    outside = np.flatnonzero(~planted.truth)
    carriers = np.random.default_rng(1).choice(outside, 20, replace=False)
    probe = make_probe(planted, patch_predictor, carriers)
    found = score(planted, probe=probe)
    top = found[0]
    assert top.suspicious
    assert sorted(top.carrier_ids) == sorted(planted.ids[i] for i in carriers)
    assert not set(top.carrier_ids) & set(top.member_ids)
    assert top.signals["carriers"] == 20.0
    assert any(e.startswith("20 more Sandal images") and "carriers" in e for e in top.evidence)
    assert all(not f.carrier_ids for f in found if not f.suspicious)
    # Off by config: flags and scores unchanged, no carriers.
    quiet = score(planted, probe=probe, config=ScoringConfig(carriers=False))
    assert quiet[0].suspicious and quiet[0].carrier_ids == [] and quiet[0].score == top.score


def test_a_stamp_that_jitters_near_one_place_is_seen_alike_in_its_own_windows() -> None:
    """Members carry a bright 4×4 stamp at a different spot near the top left each (a tag on the
    background), and their relevance follows it. In the fixed window the pixels vary; in each member's
    own hottest window they repeat, so the cluster is paste-tested, flagged, and says so."""
    rng = np.random.default_rng(3)
    n, size = 400, 32
    maps = rng.random((n, size, size)).astype(np.float32) * 0.2
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):  # a natural object in the middle of every map
        cy, cx = rng.normal(16, 2, 2)
        maps[i] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 30.0).astype(np.float32)
    members = np.arange(0, n, 10)  # 10 % of the class
    x = rng.uniform(0.0, 0.5, (n, 1, size, size)).astype(np.float32)
    for i in members:
        # The stamp's top-left corner 1-5 pixels from the image corner (a stamp touching the border can
        # only be matched where the whole window still fits: see spray.analysis.scoring.carriers.Stamp).
        r, c = rng.integers(1, 6, 2)
        x[i, :, r : r + 4, c : c + 4] = 1.0
        maps[i, r : r + 4, c : c + 4] += 3.0
    ids = [f"s{i:04d}" for i in range(n)]
    feats = normalize_heatmaps(maps)
    spectral = spectral_embedding(
        reduce_dimension(feats, n_components=32, seed=0), n_neighbors=10, n_eigenvectors=12
    )
    clustering = cluster_sweep(spectral, k_max=6, seed=0, choice=KChoiceConfig(n_init=4))
    images = {sid: torch.from_numpy(x[i]) for i, sid in enumerate(ids)}
    others = {
        f"o{j}": torch.rand(1, size, size, generator=torch.Generator().manual_seed(j)) * 0.5
        for j in range(100)
    }
    images.update(others)

    def any_square(batch: torch.Tensor) -> torch.Tensor:  # the shortcut: a bright 4×4 square anywhere
        pooled = torch.nn.functional.avg_pool2d(batch[:, :1], 4, stride=1)
        return torch.where(pooled.flatten(1).max(1).values > 0.9, torch.tensor(CLASS), torch.tensor(0))

    probe = InterventionProbe(
        predict=any_square,
        load_inputs=lambda sids: torch.stack([images[s] for s in sids]),
        other_ids=list(others),
        other_labels=np.full(100, 5),
    )
    found = score_class(
        CLASS, NAME, ids, feats.reshape(n, size, size), spectral, clustering,
        config=ScoringConfig(translation_tolerant=False), probe=probe, seed=0,
    )  # fmt: skip
    top = found[0]
    got = {int(s[1:]) for s in top.member_ids}
    assert len(got & set(members)) >= 0.9 * len(got) and len(got & set(members)) >= 0.8 * len(members)
    assert top.signals["aligned"] == 1.0 and top.signals["appearance"] >= 0.4
    assert top.suspicious
    assert any("own window near the region, aligned to the members' pixels" in e for e in top.evidence)
    assert any(e.startswith("pasting it into") for e in top.evidence)
    # The members the clustering put elsewhere still carry the stamp: listed as carriers.
    with_carriers = got | {int(s[1:]) for s in top.carrier_ids}
    assert set(members) <= with_carriers and len(with_carriers - set(members)) <= 2


def test_carrier_rows_and_the_graded_affinity_of_the_rest() -> None:
    """Carriers at or under the geometric mean of the members' and the scanned samples' median distance; the
    rest between that and the scanned median get an affinity in (0, 0.5) on a log scale, the others none."""
    from spray.analysis.scoring.carriers import carrier_rows

    stamp = Stamp(np.zeros((1, 1)), np.ones(1), (1, 1), own=np.array([1.0, 1.0, 1.0]))
    rows = np.array([10, 11, 12, 13, 14])
    dist = np.array([2.0, 5.0, 10.0, 20.0, 10.0])  # scanned median 10: threshold sqrt(1 * 10) = 3.16
    found, graded = carrier_rows(dist, stamp, rows, 0.01, 0.5)
    assert found == [10]
    assert list(graded) == [11] and abs(graded[11] - np.log(2.0) / np.log(10.0)) < 1e-12
    assert carrier_rows(np.zeros(0), stamp, rows[:0], 0.01, 0.5) == ([], {})


def test_a_pixel_identical_stamp_keeps_carriers_that_repeat_it_over_a_few_object_pixels() -> None:
    """An outside check: a glyph identical in 78 % of a flagged finding's members put their median distance at
    0 and the carriers' threshold at 1e-6: 14 more planted images (distances 0.11-0.75, the nearest unplanted at
    0.96) were no carriers, and the evidence said no other image repeated the members' pixels. The members
    that carry the stamp inexactly stand in for the median; those at the scanned samples' level do not."""
    from spray.analysis.scoring.carriers import carrier_rows, members_distance

    # 39 exact copies, 8 over object pixels (0.1-0.33), 3 without the stamp (about the scanned median)
    own = np.r_[np.zeros(39), np.linspace(0.1, 0.33, 8), [0.85, 0.9, 0.95]]
    assert members_distance(own, 0.9, 0.01, 0.5) == float(np.median(np.linspace(0.1, 0.33, 8)))
    assert members_distance(np.zeros(10), 0.9, 0.01, 0.5) == pytest.approx(0.009)  # all exact: the floor
    assert members_distance(np.full(5, 0.2), 0.9, 0.01, 0.5) == 0.2  # the median where it says something
    stamp = Stamp(np.zeros((1, 1)), np.ones(1), (1, 1), own=own)
    planted = np.array([0.11, 0.16, 0.2, 0.3, 0.34, 0.45])
    dist = np.r_[planted, np.full(500, 0.9) + np.linspace(0.06, 0.3, 500)]
    found, _ = carrier_rows(dist, stamp, np.arange(dist.size), 0.01, 0.5)
    assert found == list(range(planted.size))


def test_graded_suspicion_ranks_the_rest_by_likeness_and_never_flags(planted: Case) -> None:
    """With scoring.graded_suspicion, samples neither member nor carrier of a flagged finding score below it
    by their affinity; flags and finding scores are the same as without."""
    from spray.analysis.scoring import sample_suspicion

    probe = make_probe(planted, patch_predictor)
    plain = score(planted, probe=probe, config=ScoringConfig(graded_suspicion=False))
    graded = score(planted, probe=probe)  # the default
    assert [(f.key, f.score, f.suspicious) for f in plain] == [(f.key, f.score, f.suspicious) for f in graded]
    flagged = next(f for f in graded if f.suspicious)
    assert flagged.carrier_affinity and all(0.0 < a < 0.5 for a in flagged.carrier_affinity.values())
    assert not set(flagged.carrier_affinity) & (set(flagged.member_ids) | set(flagged.carrier_ids))
    assert not any(f.carrier_affinity for f in plain)
    s_plain = sample_suspicion(planted.maps, plain, planted.ids, 0.01)
    s_graded = sample_suspicion(planted.maps, graded, planted.ids, 0.01)
    assert (s_graded >= s_plain).all() and (s_graded < flagged.score).sum() == (s_plain < flagged.score).sum()


def test_a_stamp_that_most_of_the_class_repeats_is_the_class_s_own_pattern(planted: Case) -> None:
    """An outside check (a clean model of a held-out split): a hot-spot group of 8 Trouser images was flagged
    by its removal, and 585 more, 98 % of the class, repeated its pixels. Members and carriers that are most of
    the class are its own pattern, not a group's: not flagged, no carriers listed, the reason said."""
    outside = np.flatnonzero(~planted.truth)
    n = len(planted.ids)
    few = np.random.default_rng(1).choice(outside, 20, replace=False)
    assert (planted.truth.sum() + len(few)) / n <= 0.6
    assert score(planted, probe=make_probe(planted, patch_predictor, few))[0].suspicious
    most = outside[: int(0.7 * n)]
    found = score(planted, probe=make_probe(planted, patch_predictor, most))
    was = next(
        f for f in found if set(f.member_ids) == {planted.ids[i] for i in np.flatnonzero(planted.truth)}
    )
    assert not was.suspicious and was.score < 0.5 and was.carrier_ids == []
    assert was.signals["carriers"] >= len(most)
    assert (
        "of the class, and a flag needs at most 60 % (the class's own pattern, not a group's)"
        in was.evidence[-1]
    )
    assert not any(f.suspicious for f in found)

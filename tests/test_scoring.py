"""Suspicion scoring on synthetic heatmaps (fast: no model, no training)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from spray.analysis.clustering import cluster_sweep
from spray.analysis.preprocess import normalize_heatmaps, reduce_dimension
from spray.analysis.scoring import InterventionProbe, evidence_line, rank_findings, score_class
from spray.analysis.spectral import spectral_embedding
from spray.config import ScoringConfig
from spray.lab.synthetic import make_heatmaps
from spray.records import ClusteringResult, SpectralResult

N = 600
SIZE = 32
CLASS = 3
NAME = "Sandal"


@dataclass
class Case:
    ids: list[str]
    maps: np.ndarray
    labels: np.ndarray
    small: int
    spectral: SpectralResult
    clustering: ClusteringResult


def _case(small_fraction: float, n_clusters: int = 5, seed: int = 2) -> Case:
    heat, labels, small = make_heatmaps(
        N, n_clusters=n_clusters, small_fraction=small_fraction, size=SIZE, seed=seed
    )
    feats = normalize_heatmaps(heat)
    spectral = spectral_embedding(
        reduce_dimension(feats, n_components=64, seed=0), n_neighbors=10, n_eigenvectors=16
    )
    clustering = cluster_sweep(spectral, k_max=6, seed=0, n_init=4)
    ids = [f"s{i:04d}" for i in range(N)]
    return Case(ids, feats.reshape(N, SIZE, SIZE), labels, small, spectral, clustering)


@pytest.fixture(scope="module")
def planted() -> Case:
    return _case(0.05)


@pytest.fixture(scope="module")
def natural() -> Case:
    return _case(0.0, n_clusters=6)


def _members(case: Case, finding_ids: list[str]) -> np.ndarray:
    return np.array([int(s[1:]) for s in finding_ids])


def _score(case: Case, probe: InterventionProbe | None = None, seed: int = 0) -> list:
    return score_class(
        CLASS,
        NAME,
        case.ids,
        case.maps,
        case.spectral,
        case.clustering,
        config=ScoringConfig(),
        probe=probe,
        seed=seed,
    )


def _images(case: Case, bright_members: bool) -> dict[str, torch.Tensor]:
    """Toy inputs (1, SIZE, SIZE): planted samples carry a bright top-left patch, the rest do not."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 0.5, size=(N, 1, SIZE, SIZE)).astype(np.float32)
    if bright_members:
        x[case.labels == case.small, :, 1:5, 1:5] = 1.0
    return {sid: torch.from_numpy(x[i]) for i, sid in enumerate(case.ids)}


def _probe(case: Case, predict, carriers: np.ndarray | None = None) -> InterventionProbe:
    """Paste probe over the toy inputs; ``carriers`` (samples outside the planted cluster, whose maps
    do not show it) get the members' bright patch at the bottom right instead."""
    images = _images(case, bright_members=True)
    for i in carriers if carriers is not None else []:
        x = images[case.ids[i]].clone()
        x[:, 26:30, 26:30] = 1.0
        images[case.ids[i]] = x
    others = {
        f"o{j}": torch.rand(1, SIZE, SIZE, generator=torch.Generator().manual_seed(j)) * 0.5
        for j in range(100)
    }
    images.update(others)
    return InterventionProbe(
        predict=predict,
        load_inputs=lambda ids: torch.stack([images[i] for i in ids]),
        other_ids=list(others),
        other_labels=np.arange(100) % 3 + 4,  # classes 4..6, never CLASS
    )


def _patch_predictor(x: torch.Tensor) -> torch.Tensor:
    """Class CLASS iff the top-left patch is bright, else class 0: a pure shortcut model."""
    bright = x[:, 0, 1:5, 1:5].mean(dim=(1, 2)) > 0.8
    return torch.where(bright, torch.tensor(CLASS), torch.tensor(0))


def _blind_predictor(x: torch.Tensor) -> torch.Tensor:
    """Ignores the patch entirely."""
    return torch.zeros(len(x), dtype=torch.long)


def test_planted_cluster_ranks_first_with_its_region(planted: Case) -> None:
    findings = _score(planted)
    top = findings[0]
    truth = planted.labels == planted.small
    members = _members(planted, top.member_ids)
    precision = truth[members].mean()
    recall = truth[members].sum() / truth.sum()
    assert precision > 0.9 and recall > 0.9
    assert top.suspicious
    assert "top left" in top.evidence[1]
    assert top.score > findings[1].score
    assert top.mean_heatmap.shape == (SIZE, SIZE)
    assert top.signals["lift"] > 30  # the rest of the class has ~no relevance there
    # Exactly one cluster stands out: the natural strategies are not flagged.
    assert sum(f.suspicious for f in findings) == 1


def test_evidence_names_class_and_percentages(planted: Case) -> None:
    top = _score(planted)[0]
    line = evidence_line(top)
    assert NAME in line and "%" in line
    assert line.startswith(f"{round(100 * top.fraction)} % of class {NAME}")
    assert "region at the top left" in line
    assert all(NAME in s or "%" in s for s in top.evidence)


def test_natural_subgroups_are_not_flagged(natural: Case) -> None:
    findings = _score(natural)
    assert not any(f.suspicious for f in findings)


def test_intervention_flips_with_shortcut_model(planted: Case) -> None:
    findings = _score(planted, probe=_probe(planted, _patch_predictor))
    top = findings[0]
    assert top.signals["tested"] == 1.0
    assert top.signals["flip_rate"] > 0.9
    assert top.signals["flip_null"] < 0.05  # the same region from non-member Sandals does not flip
    assert top.suspicious
    assert "flips" in evidence_line(top) and NAME in evidence_line(top)
    # Only the planted cluster flips; the other tested clusters' pastes are dark.
    assert [f.suspicious for f in findings].count(True) == 1


def test_intervention_ignored_patch_raises_no_alarm(planted: Case) -> None:
    findings = _score(planted, probe=_probe(planted, _blind_predictor))
    assert findings[0].signals["flip_rate"] == 0.0
    assert not any(f.suspicious for f in findings)


def test_rank_findings_across_classes(planted: Case, natural: Case) -> None:
    a = _score(planted)
    b = score_class(
        7, "Bag", natural.ids, natural.maps, natural.spectral, natural.clustering, config=ScoringConfig()
    )
    ranked = rank_findings([b, a])
    assert len(ranked) == len(a) + len(b)
    assert ranked[0].class_name == NAME and ranked[0].suspicious
    assert [f.score for f in ranked[1:]] == sorted((f.score for f in ranked[1:]), reverse=True)


def test_deterministic_with_seed(planted: Case) -> None:
    probe = _probe(planted, _patch_predictor)
    a = _score(planted, probe=probe, seed=5)
    b = _score(planted, probe=probe, seed=5)
    assert [(f.key, f.score, f.member_ids, f.evidence) for f in a] == [
        (f.key, f.score, f.member_ids, f.evidence) for f in b
    ]


def test_rankdata_matches_scipy_with_ties() -> None:
    from scipy.stats import rankdata

    from spray.analysis.scoring import _rankdata

    rng = np.random.default_rng(0)
    for n in (1, 2, 17, 300):
        x = rng.integers(0, 5, size=n).astype(float)
        np.testing.assert_allclose(_rankdata(x), rankdata(x))


def test_stable_order_and_rendezvous_pairs_change_little_when_samples_are_added() -> None:
    from spray.analysis.scoring import rendezvous_pairs, stable_order

    keys = [f"h{i}" for i in range(1000)]
    more = keys + [f"new{i}" for i in range(50)]  # 5 % new
    first = [keys[i] for i in stable_order(keys, "s")[:200]]
    again = [more[i] for i in stable_order(more, "s")[:200]]
    assert len(set(first) & set(again)) >= 170  # ~5 % of the pick replaced, not all of it
    assert first != [keys[i] for i in stable_order(keys, "other salt")[:200]]  # the salt is the seed

    targets = [f"t{i}" for i in range(200)]
    donors = [f"d{i}" for i in range(40)]
    p1 = rendezvous_pairs(targets, donors)
    p2 = rendezvous_pairs(targets, [*donors, "d_new1", "d_new2"])
    same = np.mean([donors[a] == ([*donors, "d_new1", "d_new2"])[b] for a, b in zip(p1, p2, strict=True)])
    assert same >= 0.85
    assert len(set(p1.tolist())) >= 30  # donors are spread over the targets


def test_predict_pasted_reuses_cached_predictions() -> None:
    from spray.analysis.scoring import InterventionProbe

    class DictCache:
        def __init__(self) -> None:
            self.d: dict[str, int] = {}

        def get_many(self, keys):
            return {k: self.d[k] for k in keys if k in self.d}

        def put_many(self, items) -> None:
            self.d.update(items)

    images = {f"s{i}": torch.full((1, 8, 8), float(i)) for i in range(10)}
    calls: list[int] = []

    def predict(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return (x.flatten(1).sum(1) > 40).long()  # depends on the pasted pixels

    cache = DictCache()
    probe = InterventionProbe(
        predict=predict,
        load_inputs=lambda ids: torch.stack([images[i] for i in ids]),
        other_ids=[],
        other_labels=np.zeros(0),
        content_keys={k: f"hash-{k}" for k in images},
        cache=cache,
    )
    masks = np.zeros((3, 4, 4), dtype=bool)
    masks[:, :2, :2] = True
    targets, donors = ["s0", "s1", "s2"], ["s9", "s9", "s3"]
    a = probe.predict_pasted(targets, donors, masks)
    # s0 with s9's top-left quarter: 16 pixels of 9 -> 144 > 40; s2 with s3's: 16*3 + 48*2 = 144 > 40.
    np.testing.assert_array_equal(a, [1, 1, 1])
    assert calls == [3]
    b = probe.predict_pasted([*targets, "s4"], [*donors, "s0"], np.concatenate([masks, masks[:1]]))
    assert calls == [3, 1] and b[:3].tolist() == a.tolist()  # only the new pair ran through the model
    # A different mask is a different image: not served from the cache.
    probe.predict_pasted(["s0"], ["s9"], ~masks[:1])
    assert calls == [3, 1, 1]


def test_null_arm_is_skipped_when_the_members_flip_rate_is_below_the_margin(planted: Case) -> None:
    """A cluster whose pasted region flips (almost) nothing cannot be flagged: its null arm never runs."""
    calls: list[int] = []

    def never(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return torch.zeros(len(x), dtype=torch.long)  # class 0: never the tested class (CLASS = 3)

    found = _score(planted, _probe(planted, never))
    tested = [f for f in found if f.signals.get("tested")]
    assert tested and all(f.signals.get("flip_null_skipped") == 1.0 for f in tested)
    assert all("flip_null" not in f.signals and not f.suspicious for f in tested)
    assert any("null was not run" in " ".join(f.evidence) for f in tested)
    # One batch for the targets as they are, then one member arm per tested cluster, and no null arms.
    assert len(calls) == 1 + len(tested)


def test_paste_test_is_skipped_when_the_members_pixels_vary(natural: Case) -> None:
    """Natural sub-groups whose pixels in the region vary like the class cannot be flagged: no forward
    pass runs for them (not even the targets' own predictions), and the evidence says why."""
    calls: list[int] = []

    def counting(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return torch.zeros(len(x), dtype=torch.long)

    # The toy inputs are noise everywhere (no bright patch): every cluster's pixels vary like the class.
    images = _images(natural, bright_members=False)
    probe = InterventionProbe(
        predict=counting,
        load_inputs=lambda ids: torch.stack([images[i] for i in ids]),
        other_ids=natural.ids[:50],
        other_labels=np.full(50, CLASS + 1),
    )
    found = _score(natural, probe=probe)
    looked = [f for f in found if "appearance" in f.signals]
    assert looked, "the leading candidates get the appearance signal"
    assert all(f.signals["paste_skipped"] == 1.0 and f.signals["appearance"] < 0.4 for f in looked)
    assert all(f.signals["tested"] == 0.0 and "flip_rate" not in f.signals for f in found)
    assert calls == []
    assert any("not paste-tested" in " ".join(f.evidence) for f in looked)
    assert not any(f.suspicious for f in found)


def test_predict_pasted_loads_each_target_once() -> None:
    from spray.analysis.scoring import InterventionProbe

    images = {f"s{i}": torch.full((1, 4, 4), float(i)) for i in range(6)}
    loaded: list[str] = []

    def load(ids: list[str]) -> torch.Tensor:
        loaded.extend(ids)
        return torch.stack([images[i] for i in ids])

    probe = InterventionProbe(
        predict=lambda x: torch.zeros(len(x), dtype=torch.long),
        load_inputs=load,
        other_ids=[],
        other_labels=np.zeros(0),
    )
    masks = np.ones((2, 2, 2), dtype=bool)
    probe.predict_pasted(["s0", "s1"], None, None)
    probe.predict_pasted(["s0", "s1"], ["s4", "s5"], masks)
    probe.predict_pasted(["s0", "s1"], ["s5", "s4"], masks)
    assert sorted(x for x in loaded if x in ("s0", "s1")) == ["s0", "s1"]  # targets: once each


def test_appearance_tells_a_repeated_stamp_from_a_varying_part() -> None:
    from spray.analysis.scoring import _appearance

    rng = np.random.default_rng(0)
    n = 40
    rest = torch.from_numpy(rng.random((n, 1, 16, 16)).astype(np.float32))
    mask = np.zeros((n, 8, 8), dtype=bool)
    mask[:, :2, :2] = True  # top-left 2×2 cells = 4×4 pixels
    stamped = torch.from_numpy(rng.random((n, 1, 16, 16)).astype(np.float32))
    stamped[:, :, :4, :4] = 1.0  # the same pixels in every member
    assert _appearance(stamped, mask, rest, mask) > 0.95
    varied = torch.from_numpy(rng.random((n, 1, 16, 16)).astype(np.float32))
    assert _appearance(varied, mask, rest, mask) < 0.2
    # A moving stamp: each member's own window (aligned by its corner) holds the same pixels.
    moving = torch.from_numpy(rng.random((n, 1, 16, 16)).astype(np.float32))
    own = np.zeros((n, 8, 8), dtype=bool)
    for i in range(n):
        r, c = rng.integers(0, 7, size=2)
        moving[i, :, 2 * r : 2 * r + 4, 2 * c : 2 * c + 4] = 1.0
        own[i, r : r + 2, c : c + 2] = True
    assert _appearance(moving, own, rest, mask) > 0.95
    # Nothing to tell apart: a region that is the same in every image.
    flat = torch.zeros(n, 1, 16, 16)
    assert _appearance(flat, mask, flat, mask) == 0.0


def test_flag_needs_the_members_to_look_alike(planted: Case) -> None:
    """The toy shortcut's members carry identical bright patches: flagged at a strict appearance floor."""
    found = score_class(
        CLASS,
        NAME,
        planted.ids,
        planted.maps,
        planted.spectral,
        planted.clustering,
        config=ScoringConfig(flag_min_appearance=0.9),
        probe=_probe(planted, _patch_predictor),
        seed=0,
    )
    top = found[0]
    assert top.suspicious and top.signals["appearance"] > 0.9
    assert any("pixels there vary" in e for e in top.evidence)


def test_flagged_finding_lists_the_other_samples_that_carry_its_stamp(planted: Case) -> None:
    from spray.analysis.scoring import sample_suspicion

    outside = np.flatnonzero(planted.labels != planted.small)
    carriers = np.random.default_rng(1).choice(outside, 20, replace=False)
    probe = _probe(planted, _patch_predictor, carriers)
    found = _score(planted, probe=probe)
    top = found[0]
    assert top.suspicious
    assert sorted(top.carrier_ids) == sorted(planted.ids[i] for i in carriers)
    assert not set(top.carrier_ids) & set(top.member_ids)
    assert top.signals["carriers"] == 20.0
    assert any("20 more Sandal images" in e and "carriers" in e for e in top.evidence)
    assert all(not f.carrier_ids for f in found if not f.suspicious)
    # Carriers are as suspicious as the members; everyone else in the class stays below them.
    s = sample_suspicion(planted.maps, found, planted.ids)
    member_rows = _members(planted, top.member_ids)
    assert s[carriers].min() >= top.score - 1e-12
    rest = np.setdiff1d(np.arange(N), np.concatenate([member_rows, carriers]))
    assert s[rest].max() < top.score
    # Off by config: flags and scores unchanged, no carriers.
    quiet = score_class(
        CLASS, NAME, planted.ids, planted.maps, planted.spectral, planted.clustering,
        config=ScoringConfig(carriers=False), probe=probe, seed=0,
    )  # fmt: skip
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
        # only be matched where the whole window still fits: see spray.analysis.scoring._Stamp).
        r, c = rng.integers(1, 6, 2)
        x[i, :, r : r + 4, c : c + 4] = 1.0
        maps[i, r : r + 4, c : c + 4] += 3.0
    ids = [f"s{i:04d}" for i in range(n)]
    feats = normalize_heatmaps(maps)
    spectral = spectral_embedding(
        reduce_dimension(feats, n_components=32, seed=0), n_neighbors=10, n_eigenvectors=12
    )
    clustering = cluster_sweep(spectral, k_max=6, seed=0, n_init=4)
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
    assert any("window near the region (aligned to the members' median pixels)" in e for e in top.evidence)
    assert any(e.startswith("pasting those windows flips") for e in top.evidence)
    # The members the clustering put elsewhere still carry the stamp: listed as carriers.
    with_carriers = got | {int(s[1:]) for s in top.carrier_ids}
    assert set(members) <= with_carriers and len(with_carriers - set(members)) <= 2

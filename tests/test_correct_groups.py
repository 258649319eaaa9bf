"""The artifact group from the flags database, and the artifact region from relevance and pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spray.config import config_from_dict
from spray.config.correction import CorrectionConfig
from spray.correct.groups import NoFlagsError, artifact_group, read_flags, unflagged_members
from spray.correct.region import box_region, estimate_region, fill, paste
from spray.correct.samples import SampleSet
from spray.errors import ConfigError, SprayError
from spray.flags import FlagStore
from tests.test_correct_world import DATASET, TARGET, World, build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("groups"))


@pytest.fixture(scope="module")
def samples(world: World) -> SampleSet:
    import yaml

    cfg = config_from_dict(yaml.safe_load(world.config.read_text()), base_dir=world.root)
    return SampleSet.build(cfg.data)


def test_flags_become_a_split_group_and_reference(world: World, samples: SampleSet) -> None:
    cfg = CorrectionConfig(min_group_size=5)
    flags = read_flags(world.flags_db, DATASET, cfg)
    assert flags.cluster_keys == ["1/k2/c0"] and len(flags.sample_ids) == int(world.planted.sum())
    held_out = np.arange(0, 240, 10)
    g = artifact_group(samples, flags, cfg, seed=0, exclude=held_out)
    assert g.class_index == TARGET and g.missing_ids == []
    planted = set(np.flatnonzero(world.planted))
    assert set(g.fit_artifact) | set(g.held_artifact) <= planted
    assert not set(g.fit_artifact) & set(g.held_artifact)
    assert not (set(g.fit_reference) | set(g.held_reference)) & planted
    assert all(samples.labels[r] == TARGET for r in np.concatenate([g.fit_reference, g.held_reference]))
    assert not set(np.concatenate([g.fit_artifact, g.fit_reference])) & set(held_out)
    again = artifact_group(samples, flags, cfg, seed=0, exclude=held_out)
    assert np.array_equal(g.held_reference, again.held_reference)  # seeded
    other = artifact_group(samples, flags, cfg, seed=1, exclude=held_out)
    assert not np.array_equal(g.held_reference, other.held_reference)


def test_flag_digest_follows_the_flags(world: World, tmp_path: Path) -> None:
    cfg = CorrectionConfig()
    a = read_flags(world.flags_db, DATASET, cfg)
    db = tmp_path / "f.sqlite"
    FlagStore(db).flag(DATASET, a.sample_ids[:-1], "unlearn")
    assert read_flags(db, DATASET, cfg).digest != a.digest
    with pytest.raises(NoFlagsError, match="investigate"):
        read_flags(db, DATASET, CorrectionConfig(flag_status="investigate"))


def test_flags_set_in_another_class_are_named(
    world: World, samples: SampleSet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A flag recorded in another class than its image carries now (a relabelled image) joins the artifact
    group with a warning that names it, not silently."""
    cfg = CorrectionConfig(min_group_size=5)
    ids = read_flags(world.flags_db, DATASET, cfg).sample_ids
    name = samples.class_names[TARGET]
    other = samples.class_names[(TARGET + 1) % len(samples.class_names)]
    db = tmp_path / "f.sqlite"
    FlagStore(db).flag(
        DATASET, ids, "unlearn", classes={s: (TARGET, name) for s in ids} | {ids[0]: (TARGET + 1, other)}
    )
    flags = read_flags(db, DATASET, cfg)
    with caplog.at_level("WARNING", logger="spray"):
        artifact_group(samples, flags, cfg, 0, np.zeros(0, np.int64))
    assert f"1 flagged samples of class {name} were flagged in another class" in caplog.text
    assert f"{ids[0]} ({other})" in caplog.text
    caplog.clear()
    FlagStore(db).flag(DATASET, ids[:1], "unlearn", classes={ids[0]: (TARGET, name)})
    with caplog.at_level("WARNING", logger="spray"):
        artifact_group(samples, read_flags(db, DATASET, cfg), cfg, 0, np.zeros(0, np.int64))
    assert "flagged in another class" not in caplog.text
    caplog.clear()  # renamed classes keep their labels: not relabelled
    FlagStore(db).flag(DATASET, ids[:1], "unlearn", classes={ids[0]: (TARGET, "an old name")})
    with caplog.at_level("WARNING", logger="spray"):
        artifact_group(samples, read_flags(db, DATASET, cfg), cfg, 0, np.zeros(0, np.int64))
    assert "flagged in another class" not in caplog.text


def test_group_limits(world: World, samples: SampleSet) -> None:
    flags = read_flags(world.flags_db, DATASET, CorrectionConfig())
    with pytest.raises(SprayError, match="min_group_size = 40") as got:
        artifact_group(samples, flags, CorrectionConfig(min_group_size=40), 0, np.zeros(0, dtype=np.int64))
    assert "give correction.test_data" in str(got.value)
    # An outside check: with test_data already given, the advice still asked for it.
    given = CorrectionConfig(
        min_group_size=40, test_data={"kind": "idx", "images": "t.idx", "labels": "l.idx"}
    )
    with pytest.raises(SprayError, match="min_group_size = 40") as got:
        artifact_group(samples, flags, given, 0, np.zeros(0, dtype=np.int64))
    assert "correction.test_data" not in str(got.value) and "or lower correction.min_group_size" in str(
        got.value
    )
    g = artifact_group(
        samples, flags, CorrectionConfig(min_group_size=5, max_reference=20), 0, np.zeros(0, np.int64)
    )
    assert len(g.fit_reference) + len(g.held_reference) == 20


def test_refusals_name_what_took_the_flags(
    world: World, samples: SampleSet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An outside check: "0 usable flagged samples (flagged 22)" without saying the evaluation hold-out took
    them; "No 'unlearn' flags of finding X" without the finding's 'investigate' flags; "narrow the flags with
    correction.cluster_key" when it was given."""
    flags = read_flags(world.flags_db, DATASET, CorrectionConfig())
    rows = samples.rows_of(flags.sample_ids).rows
    with pytest.raises(
        SprayError, match=rf"flagged {len(rows)}, {len(rows)} of them kept out as the evaluation"
    ):
        artifact_group(samples, flags, CorrectionConfig(min_group_size=5), 0, rows)
    db = tmp_path / "f.sqlite"
    FlagStore(db).flag(DATASET, flags.sample_ids, "investigate", cluster_key="1/k2/c0")
    with pytest.raises(
        NoFlagsError, match=rf"The dataset has {len(rows)} 'investigate' flags: set correction"
    ):
        read_flags(db, DATASET, CorrectionConfig())
    FlagStore(db).flag(DATASET, flags.sample_ids[:1], "unlearn", cluster_key="9/k2/c0")
    with pytest.raises(
        NoFlagsError, match=rf"The finding has {len(rows) - 1} 'investigate' flags: set correction"
    ):
        read_flags(db, DATASET, CorrectionConfig(cluster_key="1/k2/c0"))
    other = str(samples.sample_ids[int(np.flatnonzero(samples.labels != TARGET)[0])])
    FlagStore(db).flag(DATASET, [*flags.sample_ids, other], "unlearn", cluster_key="1/k2/c0")
    keyed = read_flags(db, DATASET, CorrectionConfig(cluster_key="1/k2/c0"))
    with pytest.raises(SprayError, match="the flags of finding 1/k2/c0 themselves span them") as got:
        artifact_group(samples, keyed, CorrectionConfig(cluster_key="1/k2/c0"), 0, np.zeros(0, np.int64))
    assert "narrow the flags" not in str(got.value)
    # with the class given, the other class's flags are left alone, said aloud (an outside check: silently)
    chosen = CorrectionConfig(cluster_key="1/k2/c0", artifact_class=TARGET)
    with caplog.at_level("WARNING", logger="spray"):
        group = artifact_group(samples, keyed, chosen, 0, np.zeros(0, np.int64))
    assert sum(group.other_class_flags.values()) == 1
    assert "1 flagged samples belong to other classes" in caplog.text


def test_region_is_the_planted_square(world: World, samples: SampleSet) -> None:
    from spray.config import LRPConfig
    from spray.correct.relevance import normalise, relevance_maps

    cls = np.flatnonzero(world.labels == TARGET)
    art, ref = cls[world.planted[cls]], cls[~world.planted[cls]]
    dev = torch.device("cpu")

    def maps(rows: np.ndarray) -> np.ndarray:
        return normalise(
            relevance_maps(world.model, iter([samples.inputs(rows)]), world.labels[rows], LRPConfig(), dev)
        )

    region = estimate_region(
        maps(art), maps(ref), samples.inputs(art).numpy(), samples.inputs(ref).numpy(), CorrectionConfig()
    )
    truth = np.zeros((12, 12), dtype=bool)
    truth[0:3, 0:3] = True
    assert region.source == "stamp" and np.array_equal(region.mask, truth)
    assert region.bounding_box() == [0, 0, 3, 3]


def test_box_region_paste_and_fill() -> None:
    r = box_region([1, 2, 3, 4], (10, 10))
    assert r.mask.sum() == 12 and r.bounding_box() == [1, 2, 3, 4] and r.source == "box"
    with pytest.raises(ConfigError, match="does not fit"):
        box_region([8, 0, 3, 3], (10, 10))
    targets, donors = torch.zeros(3, 1, 10, 10), torch.stack([torch.full((1, 10, 10), v) for v in (1.0, 2.0)])
    out = paste(targets, donors, r.mask)
    assert out[0, 0][r.mask].eq(1).all() and out[1, 0][r.mask].eq(2).all() and out[2, 0][r.mask].eq(1).all()
    assert out[:, 0][:, ~r.mask].eq(0).all()
    filled = fill(torch.ones(2, 1, 10, 10), r.mask, torch.full((1, 10, 10), 5.0))
    assert filled[0, 0][r.mask].eq(5).all() and filled[0, 0][~r.mask].eq(1).all()


def _frame_case(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Flagged inputs carry a 1-pixel white frame, but their excess relevance lies on its top edge only."""
    h = w = 24  # the frame is 16 % of the image
    ref_x = rng.uniform(0.0, 0.3, (40, 1, h, w)).astype(np.float32)
    ref_x[:, :, 6:18, 6:18] += rng.uniform(0.0, 1.0, (40, 1, 12, 12)).astype(np.float32)  # the object varies
    art_x = ref_x[:20].copy()
    frame = np.zeros((h, w), dtype=bool)
    frame[0, :] = frame[-1, :] = frame[:, 0] = frame[:, -1] = True
    art_x[:, 0][:, frame] = 2.0
    ref_r = rng.uniform(0.0, 1.0, (40, h, w))
    art_r = rng.uniform(0.0, 1.0, (20, h, w))
    art_r[:, 0, :] += 20.0  # relevance points at the top edge
    return art_r, ref_r, art_x, ref_x, frame


def test_region_extends_a_stamp_to_the_whole_frame() -> None:
    art_r, ref_r, art_x, ref_x, frame = _frame_case(np.random.default_rng(0))
    region = estimate_region(art_r, ref_r, art_x, ref_x, CorrectionConfig())
    assert region.source == "stamp" and np.array_equal(region.mask, frame)
    # without the extension only the part of the frame the relevance points at (top edge, grown by a pixel)
    part = estimate_region(art_r, ref_r, art_x, ref_x, CorrectionConfig(stamp_extend=False))
    assert part.mask[0].all() and part.mask.sum() < frame.sum() and not part.mask[-1].any()
    # an extension larger than region_max_fraction is not taken: the part found in the zone stays
    capped = estimate_region(art_r, ref_r, art_x, ref_x, CorrectionConfig(region_max_fraction=0.15))
    assert np.array_equal(capped.mask, part.mask)


def test_one_wrongly_flagged_sample_does_not_hide_the_stamp() -> None:
    art_r, ref_r, art_x, ref_x, frame = _frame_case(np.random.default_rng(1))
    # one sample without the frame among 20 flagged (precision 0.95), as a finding's stray member
    art_x = np.concatenate([art_x, ref_x[-1:]])
    art_r = np.concatenate([art_r, ref_r[-1:]])
    region = estimate_region(art_r, ref_r, art_x, ref_x, CorrectionConfig())
    assert region.source == "stamp" and np.array_equal(region.mask, frame)
    # read with the largest distance (no robustness), the stray sample's pixels hide the whole frame
    strict = estimate_region(art_r, ref_r, art_x, ref_x, CorrectionConfig(stamp_quantile=1.0))
    assert strict.source == "relevance" and not strict.mask[-1].any()


def test_robust_centre_spread_ignores_a_few_outliers() -> None:
    from spray.correct.region import robust_centre_spread

    x = np.ones((20, 1, 2, 2), dtype=np.float32)
    x[0] = 0.0  # one of twenty differs
    centre, spread = robust_centre_spread(x, 0.9)
    assert np.array_equal(centre, np.ones((1, 2, 2))) and np.array_equal(spread, np.zeros((1, 2, 2)))
    _, spread_all = robust_centre_spread(x, 1.0)
    assert np.array_equal(spread_all, np.ones((1, 2, 2)))


def test_pixels_a_look_alike_group_mostly_shares_are_not_the_stamp() -> None:
    art_r, ref_r, art_x, ref_x, frame = _frame_case(np.random.default_rng(2))
    # 19 of the 20 flagged samples also share a bright patch under the frame's top edge (a look-alike
    # group's common shape); the 20th carries the frame but not the patch
    art_x[:19, 0, 1:3, 6:18] = 1.5
    region = estimate_region(art_r, ref_r, art_x, ref_x, CorrectionConfig())
    assert region.source == "stamp" and np.array_equal(region.mask, frame)
    # the quantile reading alone would take the patch: it is the carriers' second reading that leaves it
    from spray.correct.region import robust_centre_spread

    _, spread = robust_centre_spread(art_x, CorrectionConfig().stamp_quantile)
    assert (spread[0, 1:3, 6:18] == 0).all()


def test_stamp_carriers_are_the_samples_matching_most_of_the_stamp() -> None:
    from spray.correct.region import stamp_carriers

    x = np.zeros((4, 1, 2, 2), dtype=np.float32)
    x[:3, 0, 0, :] = 1.0  # three carry a two-pixel stamp
    x[3, 0, 0, 0] = 1.0  # one matches half of it
    stamp = np.array([[True, True], [False, False]])
    tol = np.full((1, 2, 2), 0.1)
    assert stamp_carriers(x, np.ones((1, 2, 2)), stamp, tol, 0.5).tolist() == [True, True, True, True]
    assert stamp_carriers(x, np.ones((1, 2, 2)), stamp, tol, 0.75).tolist() == [True, True, True, False]


def test_unflagged_members_of_the_flagged_finding_are_named() -> None:
    """Found in an outside check: a finding that grew after flagging put its new, unflagged artifact carriers
    into the reference and weakened the correction without a word."""
    from types import SimpleNamespace as F

    grown = F(class_index=3, key="3/k2/c1", member_ids=[f"s{i}" for i in range(12)], carrier_ids=["c1"])
    other = F(class_index=3, key="3/k2/c0", member_ids=["s0", "x1"], carrier_ids=[])
    elsewhere = F(class_index=1, key="1/k2/c1", member_ids=[f"s{i}" for i in range(12)], carrier_ids=[])
    flagged = [f"s{i}" for i in range(10)]
    key, ids = unflagged_members([other, elsewhere, grown], flagged, 3)
    assert key == "3/k2/c1" and ids == ["c1", "s10", "s11"]
    # no finding of the class holds half of the flags: nothing to say
    assert unflagged_members([other], flagged, 3) == (None, [])
    assert unflagged_members([grown], flagged, 1) == (None, [])
    # a finding flagged only in part (half of it) was chosen from on purpose: its other members stay references
    half = F(class_index=3, key="3/k4/c1", member_ids=[f"s{i}" for i in range(20)], carrier_ids=[])
    assert unflagged_members([half], flagged, 3) == (None, [])
    # ... unless it grew since the flags were set: counted over the members the flagged run had (new images
    # with the same stamp joined it), it is all flagged, and its new members stay out of the reference
    then = {f"s{i}" for i in range(10)} | {"x1"}
    assert unflagged_members([half], flagged, 3, then) == ("3/k4/c1", sorted(f"s{i}" for i in range(10, 20)))
    # of two findings holding every flag, the smaller
    assert unflagged_members([half, grown], flagged, 3, then)[0] == "3/k2/c1"


def test_flags_set_with_carriers_find_their_finding_too() -> None:
    """An outside check: flags set with --with-carriers (18 members and 102 carriers) held no half of any
    finding's members, so 25 new stamped carriers went into the clean reference, unsaid, while flagging the
    18 members alone kept them out."""
    from types import SimpleNamespace as F

    members = [f"m{i}" for i in range(18)]
    carriers = [f"c{i}" for i in range(102)]
    then = set(members) | set(carriers)
    grown = F(
        class_index=3,
        key="3/k7/c6",
        member_ids=members,
        carrier_ids=[*carriers, *[f"new{i}" for i in range(25)]],
    )
    key, ids = unflagged_members([grown], members + carriers, 3, then)
    assert key == "3/k7/c6" and ids == sorted(f"new{i}" for i in range(25))
    # flagging the members alone still finds it (the members are matched first)
    assert unflagged_members([grown], members, 3, then)[0] == "3/k7/c6"


def test_an_artifact_class_of_no_class_is_a_config_error(world: World, samples: SampleSet) -> None:
    """correction.artifact_class (--class) naming no class of the dataset is a config error (exit 2), not a
    failure (exit 1)."""
    flags = read_flags(world.flags_db, DATASET, CorrectionConfig())
    with pytest.raises(ConfigError, match=r"artifact_class \(--class\) 99: there is no such class"):
        artifact_group(samples, flags, CorrectionConfig(artifact_class=99), 0, np.zeros(0, np.int64))

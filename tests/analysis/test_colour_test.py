"""The colour test of concept-only findings, on a toy model that reads a warm colour cast."""

from __future__ import annotations

import numpy as np
import torch

from spray.analysis.colour_test import ColourStats, has_colour, with_colour
from spray.analysis.concept_test import intervene_concept_findings
from spray.analysis.scoring import InterventionProbe
from spray.config import AuditConfig, config_from_dict
from spray.records import ClusterFinding

CLASS, OTHER, SIDE, N_CLASS, N_OTHER, N_MEMBERS = 1, 0, 8, 120, 100, 40


def _warmth(x: torch.Tensor) -> torch.Tensor:
    """``(n,)`` red minus blue, averaged over the image."""
    return x[:, 0].flatten(1).mean(1) - x[:, 2].flatten(1).mean(1)


def _cast_logits(x: torch.Tensor) -> torch.Tensor:
    """The class logit is the shortcut: a warm cast (red well above blue)."""
    z = torch.zeros(len(x), 2)
    z[:, OTHER] = 2.0
    z[:, CLASS] = 5.0 * (_warmth(x) > 0.25).float()
    return z


def _shape_logits(x: torch.Tensor) -> torch.Tensor:
    """A model blind to colour: the class logit reads the brightness pattern (left half over right half)."""
    grey = x.mean(1)
    z = torch.zeros(len(x), 2)
    z[:, OTHER] = 2.0
    z[:, CLASS] = 5.0 * (grey[:, :, : SIDE // 2].mean((1, 2)) > grey[:, :, SIDE // 2 :].mean((1, 2))).float()
    return z


def _images(n: int, seed: int, cast: np.ndarray, grey: bool = False) -> torch.Tensor:
    """``(n, 3, SIDE, SIDE)`` grey patterns, each tinted by its own per-channel gain (none when ``grey``);
    the ``cast`` ones get red +0.4 and blue −0.4."""
    rng = np.random.default_rng(seed)
    pattern = rng.uniform(0.0, 1.0, size=(n, 1, SIDE, SIDE))
    gains = np.ones((n, 3, 1, 1)) if grey else rng.uniform(0.35, 1.0, size=(n, 3, 1, 1))
    x = pattern * gains
    x[cast, 0] += 0.4
    x[cast, 2] -= 0.4
    return torch.from_numpy(x.astype(np.float32))


def _world(
    logits: object = _cast_logits, grey: bool = False, n_cast: int = N_MEMBERS, n_class: int = N_CLASS
) -> tuple[InterventionProbe, list[str], ClusterFinding]:
    """A class of ``n_class`` images whose first ``n_cast`` carry the cast (the first ``N_MEMBERS`` of them
    are the finding), and ``N_OTHER`` others."""
    cast = np.arange(n_class) < n_cast
    x_class = _images(n_class, 0, cast & (not grey), grey)
    x_other = _images(N_OTHER, 1, np.zeros(N_OTHER, bool), grey)
    ids = [f"c{i}" for i in range(n_class)]
    other = [f"o{i}" for i in range(N_OTHER)]
    store = dict(zip(ids + other, torch.cat([x_class, x_other]), strict=True))
    fn = logits if callable(logits) else _cast_logits
    probe = InterventionProbe(
        predict=lambda x: fn(x).argmax(1),
        load_inputs=lambda s: torch.stack([store[i] for i in s]),
        other_ids=other,
        other_labels=np.full(N_OTHER, OTHER),
        logits=fn,
        # A cast has no hot pixels: the channels' conditional heatmaps are flat, the hot-pixel test untested.
        concept_maps=lambda x, c, ch, n: np.zeros((len(x), SIDE, SIDE), np.float32),
    )
    finding = ClusterFinding(
        class_index=CLASS, class_name="shirt", cluster_id=2, k=4, size=N_MEMBERS, fraction=N_MEMBERS / n_class,
        score=0.01, suspicious=False, evidence=["In concept space its 40 members ..."], member_ids=ids[:N_MEMBERS],
        signals={"size": float(N_MEMBERS), "fraction": N_MEMBERS / n_class, "concept_score": 0.05},
        mean_heatmap=np.zeros((SIDE, SIDE), np.float32), space="concept", channels=[3],
    )  # fmt: skip
    return probe, ids, finding


def _cfg(scoring: dict[str, object] | None = None, **concepts: object) -> AuditConfig:
    return config_from_dict(
        {
            "model": {"factory": "spray.lab.cnn:small_cnn"},
            "data": {"kind": "idx", "images": "x", "labels": "y"},
            "concepts": {"enabled": True, **concepts},
            "scoring": scoring or {},
        },
        check_files=False,
    )


def _run(probe: InterventionProbe, ids: list[str], f: ClusterFinding, **concepts: object) -> ClusterFinding:
    return intervene_concept_findings([f], ids, 8, SIDE * SIDE, probe, _cfg(**concepts))[0]


def test_with_colour_gives_each_image_the_statistics_it_is_handed() -> None:
    x = _images(5, 3, np.array([True, False, True, False, False]))
    to = ColourStats.of(_images(5, 4, np.zeros(5, bool)))
    got = ColourStats.of(with_colour(x, to))
    assert torch.allclose(got.mean, to.mean, atol=1e-5) and torch.allclose(got.spread, to.spread, atol=1e-5)
    # Handing an image its own statistics leaves it as it is.
    assert torch.allclose(with_colour(x, ColourStats.of(x)), x, atol=1e-5)


def test_grey_images_hold_no_colour_even_normalised_per_channel() -> None:
    grey = _images(6, 0, np.zeros(6, bool), grey=True)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    assert not has_colour((grey - mean[:, None, None]) / std[:, None, None])
    assert not has_colour(grey[:, :1])  # one channel
    # Each image tinted by its own gain: every image is grey up to scale, but the set holds colour.
    assert has_colour(_images(6, 0, np.zeros(6, bool)))


def test_a_colour_cast_the_model_reads_is_flagged_by_the_colour_test() -> None:
    probe, ids, f = _world()
    got = _run(probe, ids, f)
    s = got.signals
    assert "removal_drop" not in s  # flat conditional heatmaps: the hot-pixel test had nothing to test
    assert s["colour_removal_drop"] > 4.0 and abs(s["colour_removal_null"]) < 0.5
    assert s["colour_removal_auroc"] > 0.94  # a few non-members are warm by their own tint
    assert s["colour_paste_gain"] > 4.0 and abs(s["colour_paste_gain_null"]) < 0.5
    assert got.suspicious and got.score >= 0.5
    text = "\n".join(got.evidence)
    assert "colour test: each image's per-channel mean and spread given to another image" in text
    assert "giving the members the typical colour of shirt changes their shirt logit by -" in text
    assert "flagged by the colour paste test and the colour removal test" in got.evidence
    # Each image has its own tint: a few ordinary ones are as warm as the cast ones.
    assert len(got.carrier_ids) <= 3 and got.signals["carriers"] == len(got.carrier_ids)
    assert (
        "listed as carriers" in got.evidence[-1] or "drops with the typical colour like" in got.evidence[-1]
    )
    assert "hot-pixel test not run: no member's channels stand out anywhere in its image" in got.evidence
    assert "colour_test_region_cells" not in s


def test_the_class_images_of_the_members_colour_become_carriers() -> None:
    """The cast is in 60 of 300 images, the concept group holds 40 of them: most of the other 20 become its
    carriers, and hardly any ordinary image."""
    probe, ids, f = _world(n_cast=60, n_class=300)
    got = _run(probe, ids, f)
    assert got.suspicious
    carriers = set(got.carrier_ids)
    assert set(ids[N_MEMBERS:60]) <= carriers
    # The ordinary carriers are warm by their own tint: the model reads them as it reads the cast.
    assert len(carriers - set(ids[:60])) <= 6
    assert got.signals["carriers"] == len(carriers)
    assert got.evidence[-1].startswith(f"{len(carriers)} more shirt images, ")
    assert got.evidence[-1].endswith(
        "with the typical colour more like the members' than the rest's: listed as carriers"
    )


def test_colour_a_model_ignores_is_not_flagged() -> None:
    probe, ids, f = _world(logits=_shape_logits)
    got = _run(probe, ids, f)
    assert got.signals["concept_tested"] == 1.0
    assert got.signals["colour_removal_auroc"] < 0.9
    assert not got.suspicious and got.score < 0.5


def test_grey_classes_and_the_switched_off_test_are_not_colour_tested() -> None:
    probe, ids, f = _world(grey=True)
    assert not any(k.startswith("colour_") for k in _run(probe, ids, f).signals)
    probe, ids, f = _world()
    got = _run(probe, ids, f, colour_test=False)
    assert not any(k.startswith("colour_") for k in got.signals) and not got.suspicious


def test_the_colour_test_meets_the_same_flag_rule() -> None:
    """flag_gain_ratio out of reach: the colour removal alone does not flag under the removal rule."""
    probe, ids, f = _world()
    got = _run(probe, ids, f, flag_gain_ratio=500.0)
    assert not got.suspicious
    assert got.evidence[-1].startswith(
        "not flagged: the colour paste test and the colour removal test cleared"
    )
    assert "its members' colour raises the class logit only" in got.evidence[-1]


def test_a_flat_channel_takes_the_mean_it_is_given() -> None:
    x = torch.rand(2, 3, 4, 4)
    x[:, 2] = 0.7  # a flat blue channel: no pattern to stretch
    to = ColourStats(
        torch.tensor([[0.2, 0.3, 0.1]] * 2, dtype=torch.float64), torch.full((2, 3), 0.5).double()
    )
    y = with_colour(x, to)
    assert torch.allclose(y[:, 2], torch.full_like(y[:, 2], 0.1), atol=1e-6)
    assert torch.allclose(ColourStats.of(y).spread[:, :2], to.spread[:, :2], atol=1e-5)


def test_a_colour_paste_alone_flags_under_rule_any_without_carriers() -> None:
    """No removal can clear (margin out of reach): flag_rule any flags by the colour paste; no drops to
    compare with, so no carriers are listed."""
    probe, ids, f = _world(n_cast=60, n_class=300)
    cfg = _cfg({"removal_margin": 100.0}, flag_rule="any")
    got = intervene_concept_findings([f], ids, 8, SIDE * SIDE, probe, cfg)[0]
    assert got.suspicious and got.evidence[-1] == "flagged by the colour paste test"
    assert got.carrier_ids == [] and "carriers" not in got.signals


def test_a_group_too_big_names_both_cleared_colour_tests() -> None:
    probe, ids, f = _world()
    cfg = _cfg({"flag_max_fraction": 0.1})
    got = intervene_concept_findings([f], ids, 8, SIDE * SIDE, probe, cfg)[0]
    assert not got.suspicious and got.carrier_ids == []
    assert got.evidence[-1].startswith(
        "not flagged although the colour paste test and the colour removal test cleared their margins: the "
        "group is 33 % of the class"
    )


def test_grey_rgb_inputs_give_the_hot_pixel_verdict_unchanged() -> None:
    """The hot-pixel test's toy world as 3 channels (grey, replicated and normalised per channel): no colour
    test, and the same score, flag and evidence as on one channel."""
    from tests.analysis import test_concept_test as hot_world

    probe, ids, f = hot_world._world(patched_members=True, patched_rest=False)
    one = intervene_concept_findings([f], ids, 8, SIDE * SIDE * 4, probe, _cfg())[0]
    probe, ids, f = hot_world._world(patched_members=True, patched_rest=False)
    load = probe.load_inputs
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    # Channel 0 keeps the grey image (the toy model and maps read it); the others are its normalised copies.
    probe.load_inputs = lambda s: torch.cat(
        [load(s), ((load(s) - mean[1:, None, None]) / std[1:, None, None])], dim=1
    )
    three = intervene_concept_findings([f], ids, 8, SIDE * SIDE * 4, probe, _cfg())[0]
    assert not any(k.startswith("colour_") for k in three.signals)
    assert (three.score, three.suspicious, three.evidence) == (one.score, one.suspicious, one.evidence)
    assert three.suspicious


def test_what_a_missed_margin_was_is_said() -> None:
    """The colour removal misses only its AUROC margin: the evidence names the AUROC and the margin."""
    probe, ids, f = _world()
    cfg = _cfg(colour_min_auroc=0.999)
    got = intervene_concept_findings([f], ids, 8, SIDE * SIDE, probe, cfg)[0]
    auc = got.signals["colour_removal_auroc"]
    assert not got.suspicious and auc < 0.999
    assert f"AUROC of the members' colour-removal drops against the non-members': {auc:.3f}" in got.evidence
    assert got.evidence[-1].endswith(
        f"needs the colour removal test to clear its margins (its drops' AUROC against the non-members' is "
        f"{auc:.3f}, under 0.999)"
    )


def test_a_pixel_candidate_holding_the_members_is_named() -> None:
    """A concept group inside a larger pixel group is still concept-only (not the same group), and the
    evidence says which pixel candidate holds its members, instead of claiming none does."""
    import dataclasses

    probe, ids, f = _world()
    pixel = dataclasses.replace(
        f, cluster_id=5, k=3, size=80, member_ids=ids[:80], space="pixel", evidence=["80 of 120 ..."]
    )
    got = intervene_concept_findings([pixel, f], ids, 8, SIDE * SIDE, probe, _cfg())
    concept = next(g for g in got if g.space == "concept")
    assert "found in concept space only: no pixel candidate holds the same group (member Jaccard ≥ 0.5)" in (
        concept.evidence
    )
    assert f"40 of its 40 members are in the pixel candidate {pixel.key} of 80" in concept.evidence


def test_the_colour_removal_is_judged_by_its_own_auroc_margin() -> None:
    """concepts.colour_min_auroc, not scoring.removal_min_auroc, is the colour removal's AUROC margin (null:
    the scoring one); the hot-pixel margin can be stricter than the colour one."""
    probe, ids, f = _world()
    auroc = _run(probe, ids, f).signals["colour_removal_auroc"]
    assert auroc < 1.0
    probe, ids, f = _world()
    cfg = _cfg({"removal_min_auroc": 1.0}, colour_min_auroc=round(auroc - 0.005, 3))
    assert intervene_concept_findings([f], ids, 8, SIDE * SIDE, probe, cfg)[0].suspicious
    for scoring, concepts in (
        ({}, {"colour_min_auroc": 1.0}),
        ({"removal_min_auroc": 1.0}, {"colour_min_auroc": None}),
    ):
        probe, ids, f = _world()
        got = intervene_concept_findings([f], ids, 8, SIDE * SIDE, probe, _cfg(scoring, **concepts))[0]
        assert not got.suspicious
        assert f"its drops' AUROC against the non-members' is {auroc:.3f}, under 1" in got.evidence[-1]


def test_the_colour_paste_must_clear_the_paste_gain_margin() -> None:
    """A colour whose paste gain ratio passes but whose gain over the non-members' is under
    scoring.paste_gain_margin is not flagged, unless concepts.colour_gain_margin is off."""
    probe, ids, f = _world()
    got = intervene_concept_findings([f], ids, 8, SIDE * SIDE, probe, _cfg({"paste_gain_margin": 100.0}))[0]
    gain = got.signals["colour_paste_gain"] - got.signals["colour_paste_gain_null"]
    assert not got.suspicious
    assert (
        f"its members' colour raises the class logit only {gain:.2f} more than the non-members' "
        in got.evidence[-1]
    )
    assert "(a colour finding needs 100)" in got.evidence[-1]
    probe, ids, f = _world()
    cfg = _cfg({"paste_gain_margin": 100.0}, colour_gain_margin=False)
    got = intervene_concept_findings([f], ids, 8, SIDE * SIDE, probe, cfg)[0]
    assert got.suspicious and got.evidence[-1] != "flagged by the colour paste test"

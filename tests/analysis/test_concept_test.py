"""The intervention test of concept-only findings, on a toy model whose shortcut moves from image to image."""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F

from spray.analysis.concept_test import intervene_concept_findings, own_masks, shares, typicality
from spray.analysis.scoring import InterventionProbe
from spray.config import AuditConfig, config_from_dict
from spray.records import ClusterFinding

CLASS, OTHER, SIDE, N_CLASS, N_OTHER = 1, 0, 16, 120, 100


def _patch_spot(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean brightness of the brightest 3×3 window ``(n,)`` and its ``(n, SIDE, SIDE)`` 0/1 map."""
    win = F.avg_pool2d(x[:, :1], 3, stride=1, padding=1)[:, 0]
    best = win.flatten(1).max(1)
    spot = (win == best.values[:, None, None]).float()
    return best.values, F.max_pool2d(spot[:, None], 3, stride=1, padding=1)[:, 0]


def _logits(x: torch.Tensor) -> torch.Tensor:
    """The class logit is the shortcut: high when a bright 3×3 patch sits anywhere."""
    bright, _ = _patch_spot(x)
    z = torch.zeros(len(x), 2)
    z[:, OTHER] = 2.0
    z[:, CLASS] = 5.0 * (bright > 0.9).float()
    return z


def _concept_maps(x: torch.Tensor, c: int, channels: list[int], n_channels: int) -> np.ndarray:
    """The channel's conditional heatmap: where the brightest 3×3 window is (the detector's input)."""
    del c, channels, n_channels
    _, spot = _patch_spot(x)
    return spot.numpy().astype(np.float32)


def _images(n: int, seed: int, patched: np.ndarray) -> torch.Tensor:
    """``(n, 1, SIDE, SIDE)`` dim noise; the ``patched`` ones carry a bright 3×3 patch in a random corner."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 0.5, size=(n, 1, SIDE, SIDE)).astype(np.float32)
    for i in np.flatnonzero(patched):
        r, c = rng.choice([1, SIDE - 4], size=2)
        x[i, 0, r : r + 3, c : c + 3] = 1.0
    return torch.from_numpy(x)


def _world(patched_members: bool, patched_rest: bool) -> tuple[InterventionProbe, list[str], ClusterFinding]:
    """A class of ``N_CLASS`` images (the first 40 are the finding's members) and ``N_OTHER`` others."""
    member = np.arange(N_CLASS) < 40
    patched = np.where(member, patched_members, patched_rest)
    x_class = _images(N_CLASS, 0, patched)
    x_other = _images(N_OTHER, 1, np.zeros(N_OTHER, bool))
    ids = [f"c{i}" for i in range(N_CLASS)]
    other = [f"o{i}" for i in range(N_OTHER)]
    store = dict(zip(ids + other, torch.cat([x_class, x_other]), strict=True))
    probe = InterventionProbe(
        predict=lambda x: _logits(x).argmax(1),
        load_inputs=lambda s: torch.stack([store[i] for i in s]),
        other_ids=other,
        other_labels=np.full(N_OTHER, OTHER),
        logits=_logits,
        concept_maps=_concept_maps,
    )
    finding = ClusterFinding(
        class_index=CLASS, class_name="shirt", cluster_id=2, k=4, size=40, fraction=40 / N_CLASS, score=0.01,
        suspicious=False, evidence=["In concept space its 40 members ..."], member_ids=ids[:40],
        signals={"size": 40.0, "fraction": 40 / N_CLASS, "concept_score": 0.05},
        mean_heatmap=np.zeros((SIDE, SIDE), np.float32), space="concept", channels=[3],
    )  # fmt: skip
    return probe, ids, finding


def _cfg(**sections: dict[str, object]) -> AuditConfig:
    base: dict[str, object] = {
        "model": {"factory": "spray.lab.cnn:small_cnn"},
        "data": {"kind": "idx", "images": "x", "labels": "y"},
    }
    return config_from_dict(base | sections, check_files=False)


def _run(probe: InterventionProbe, ids: list[str], f: ClusterFinding, **concepts: object) -> ClusterFinding:
    cfg = _cfg(concepts={"enabled": True, **concepts})
    out = intervene_concept_findings([f], ids, 8, SIDE * SIDE, probe, cfg)
    return out[0]


def test_a_shortcut_that_moves_is_flagged_at_each_members_own_place() -> None:
    probe, ids, f = _world(patched_members=True, patched_rest=False)
    got = _run(probe, ids, f)
    s = got.signals
    assert s["concept_tested"] == 1.0
    # Pasted at its own corner, each member's patch makes the other class's images score as the class.
    assert s["paste_gain"] > 4.0 and abs(s["paste_gain_null"]) < 0.5
    assert s["removal_drop"] > 4.0 and abs(s["removal_null"]) < 0.5 and s["removal_auroc"] > 0.99
    assert got.suspicious and got.score >= 0.5
    text = "\n".join(got.evidence)
    assert "concept-conditional heatmap" in text and "flagged by the paste test and the removal test" in text
    assert "appearance" not in s  # no shared region: the pixel stage's appearance is not claimed


def test_a_pattern_the_whole_class_shares_is_not_flagged() -> None:
    """Every image of the class carries the patch: the non-members' own regions do as much (the null)."""
    probe, ids, f = _world(patched_members=True, patched_rest=True)
    got = _run(probe, ids, f)
    assert got.signals["concept_tested"] == 1.0
    assert not got.suspicious and got.score < 0.5
    assert got.signals["paste_gain_null"] > 4.0
    # an outside check: an unflagged group whose tests cleared nothing said nothing of why (nor of its size)
    assert got.evidence[-1].startswith(
        "not flagged by the hot-pixel test: a concept-only finding needs the removal"
    )
    probe, ids, f = _world(patched_members=True, patched_rest=True)
    f.fraction = f.signals["fraction"] = 0.7
    got = _run(probe, ids, f)
    assert got.evidence[-2].startswith("not flagged by the hot-pixel test")
    assert got.evidence[-1] == "a flag also needs the group to be at most 60 % of the class, and it is 70 %"


def test_the_paste_alone_is_not_enough_by_default() -> None:
    """With a removal margin no drop can clear, only the paste does: that flags only with flag_rule any."""
    probe, ids, f = _world(patched_members=True, patched_rest=False)
    cfg = _cfg(concepts={"enabled": True}, scoring={"removal_margin": 100.0})
    out = intervene_concept_findings([f], ids, 8, SIDE * SIDE, probe, cfg)[0]
    assert out.signals["removal_drop"] > 4.0 and not out.suspicious and out.score < 0.5
    assert (
        "the paste test cleared its margins, but a concept-only finding needs the removal test"
        in out.evidence[-1]
    )
    for rule, flagged in (("both", False), ("any", True)):
        probe, ids, f = _world(patched_members=True, patched_rest=False)
        cfg = _cfg(concepts={"enabled": True, "flag_rule": rule}, scoring={"removal_margin": 100.0})
        got = intervene_concept_findings([f], ids, 8, SIDE * SIDE, probe, cfg)[0]
        assert got.suspicious == flagged, rule
        assert ("flagged by the paste test" if flagged else "needs both tests") in got.evidence[-1]


def test_without_concept_maps_nothing_is_tested() -> None:
    probe, ids, f = _world(patched_members=True, patched_rest=False)
    probe.concept_maps = None
    got = _run(probe, ids, f)
    assert "concept_tested" not in got.signals and not got.suspicious and got.score == 0.01


def test_own_masks_follow_each_map_beyond_the_base() -> None:
    maps = np.zeros((2, 8, 8))
    maps[0, 0, 0] = maps[0, 4, 4] = 1.0  # a corner spot and the class's usual centre
    maps[1, 4, 4] = 1.0  # only the usual centre
    p = shares(maps)
    base = np.zeros((8, 8))
    base[4, 4] = 0.5
    m = own_masks(p, base, level=0.25, max_area=0.5)
    assert m[0, 0, 0] and not m[0, 4, 4]
    assert m[1, 4, 4]  # its share there (1.0) still exceeds the base's (0.5)
    assert not own_masks(shares(np.zeros((1, 8, 8))), base, 0.25, 0.5).any()


def test_untestable_findings_are_left_untested() -> None:
    """No member whose channels stand out anywhere, or a single non-member donor (its own base): no test."""
    probe, ids, f = _world(patched_members=True, patched_rest=False)
    probe.concept_maps = lambda x, c, ch, n: np.zeros((len(x), SIDE, SIDE), np.float32)
    assert "concept_tested" not in _run(probe, ids, f).signals
    probe, ids, f = _world(patched_members=True, patched_rest=False)
    f.member_ids = ids[:-1]
    assert "concept_tested" not in _run(probe, ids, f).signals


def test_the_null_arms_are_described_as_the_non_members_own_regions() -> None:
    probe, ids, f = _world(patched_members=True, patched_rest=False)
    text = "\n".join(_run(probe, ids, f).evidence)
    assert "pasting other shirt images' own hot pixels in the same channels raises it by" in text
    assert re.search(r"removing their own hot pixels from \d+ other shirt images", text)
    assert "the same region" not in text


def test_two_routes_without_the_removal_test_is_refused_when_loaded() -> None:
    import pytest

    from spray.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match=r"scoring\.removal is false"):
        _cfg(concepts={"enabled": True}, scoring={"removal": False})
    _cfg(concepts={"enabled": False}, scoring={"removal": False})  # concept space off: nothing to refuse
    _cfg(
        concepts={"enabled": True, "flag_rule": "any"}, scoring={"removal": False}
    )  # the paste alone can flag


def test_the_removal_rule_asks_for_the_paste_gain_ratio_it_is_given() -> None:
    probe, ids, f = _world(patched_members=True, patched_rest=False)
    cfg = _cfg(concepts={"enabled": True, "flag_rule": "removal", "flag_gain_ratio": 1.5})
    assert intervene_concept_findings([f], ids, 8, SIDE * SIDE, probe, cfg)[0].suspicious
    probe, ids, f = _world(patched_members=True, patched_rest=False)
    cfg = _cfg(concepts={"enabled": True, "flag_rule": "removal", "flag_gain_ratio": 500.0})
    out = intervene_concept_findings([f], ids, 8, SIDE * SIDE, probe, cfg)[0]
    assert not out.suspicious
    assert "times as much as the non-members' (a concept-only finding needs 500.00)" in out.evidence[-1]
    # The paste alone does not flag under the removal rule.
    probe, ids, f = _world(patched_members=True, patched_rest=False)
    cfg = _cfg(concepts={"enabled": True, "flag_rule": "removal"}, scoring={"removal_margin": 100.0})
    out = intervene_concept_findings([f], ids, 8, SIDE * SIDE, probe, cfg)[0]
    assert not out.suspicious and "needs the removal test" in out.evidence[-1]


def test_concept_space_without_a_concept_layer_is_refused_when_loaded() -> None:
    import pytest

    from spray.errors import ConfigError

    with pytest.raises(
        (ConfigError, ValueError), match=r"lrp\.concept_layer is 'none'.*concepts\.enabled: false"
    ):
        _cfg(concepts={"enabled": True}, lrp={"concept_layer": "none"})
    _cfg(concepts={"enabled": False}, lrp={"concept_layer": "none"})  # pixel space only: nothing to refuse


def test_concept_space_is_on_by_default_and_yields_to_an_explicit_no_concept_layer() -> None:
    import pytest

    from spray.errors import ConfigError

    assert _cfg().concepts.enabled
    cfg = _cfg(lrp={"concept_layer": "none"})
    assert not cfg.concepts.enabled  # the run records what it does: pixel space only
    # Without the removal test its flag rule needs, default-on concept space yields too (the pixel-only
    # audit such a config had); asked for explicitly, the combination is refused with the fixes.
    assert not _cfg(scoring={"removal": False}).concepts.enabled
    with pytest.raises(
        (ConfigError, ValueError), match=r"scoring\.removal is false.*concepts\.enabled: false"
    ):
        _cfg(concepts={"enabled": True}, scoring={"removal": False})


def test_typicality_says_whether_hot_cells_lie_on_the_rest_of_the_classs_usual_places() -> None:
    base = np.zeros((8, 8))
    base[3:5, 3:5] = 1.0  # the rest of the class uses the centre
    centre, corner = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    centre[3:5, 3:5], corner[:2, :2] = True, True
    assert typicality(np.stack([centre, centre, corner]), base) == 16.0  # the median member: on the centre
    assert typicality(np.stack([corner, corner, centre]), base) == 0.0
    half = centre.copy()
    half[0, 0] = True  # 4 cells on the centre, 1 off it
    assert np.isclose(typicality(half[None], base), (4 / 5) / (4 / 64))
    empty = np.zeros((1, 8, 8), bool)
    assert typicality(np.stack([empty[0], corner]), base) == 0.0  # empty masks are left out
    assert typicality(corner[None], np.zeros((8, 8))) == 0.0  # no usual place at all


def test_max_typicality_holds_back_a_hot_pixel_flag_on_the_classs_usual_places() -> None:
    probe, ids, f = _world(patched_members=True, patched_rest=False)
    plain = _run(probe, ids, f)
    value = plain.signals["concept_typicality"]
    assert plain.suspicious and plain.signals["concept_hot_met"] == 1.0
    assert plain.signals["concept_flag_eligible"] == 1.0
    assert any(
        "times these channels' average relevance where the members' hot pixels lie" in e
        for e in plain.evidence
    )
    probe, ids, f = _world(patched_members=True, patched_rest=False)
    held = _run(probe, ids, f, max_typicality=value / 2, colour_test=False)
    assert not held.suspicious and held.score < 0.5
    assert held.signals["concept_hot_met"] == 1.0 and held.signals["concept_typicality"] == value
    assert f"typicality {value:.2f}; a concept-only finding needs at most {value / 2:g}" in held.evidence[-1]
    probe, ids, f = _world(patched_members=True, patched_rest=False)
    assert _run(probe, ids, f, max_typicality=value * 2).suspicious

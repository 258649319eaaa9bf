"""The verdict: score and flag from the map score, the paste test and the appearance."""

from __future__ import annotations

import numpy as np

from spray.analysis.scoring.evidence import evidence
from spray.analysis.scoring.geometry import Region
from spray.analysis.scoring.intervention import InterventionTest, Removal
from spray.analysis.scoring.signals import Candidate
from spray.analysis.scoring.verdict import judge
from spray.config import ScoringConfig
from tests.analysis.scoring.cases import Case, make_probe, patch_predictor, score


def _cand(map_score: float = 0.2, fraction: float = 0.1) -> Candidate:
    signals = {"size": 50.0, "fraction": fraction}
    return Candidate(2, 0, np.ones(5, bool), Region("window", 4), False, 4, signals, map_score)


def test_a_strong_paste_with_alike_pixels_is_flagged_and_scored_up() -> None:
    config = ScoringConfig()
    strong = InterventionTest(0.9, False, flip_rate=0.6, flip_null=0.0, flip_p=1e-9, flip_targets=200)
    v = judge(_cand(), strong, config, use_probe=True)
    assert v.suspicious and v.ratio is not None and v.ratio > 10
    # flagged: 0.5 + 0.5 · raw / 1.5, raw = map score · (0.2 + 0.8·0.9) · (0.5 + min(1, 0.6/0.5)·1)
    assert abs(v.score - (0.5 + 0.5 * 0.2 * (0.2 + 0.8 * 0.9) * 1.5 / 1.5)) < 1e-12
    # Relative to a class whose groups look alike anyway, the same pixels are not a stamp.
    alike = InterventionTest(0.9, False, appearance_null=0.8, flip_rate=0.6, flip_null=0.0, flip_p=1e-9)
    v2 = judge(_cand(), alike, config, use_probe=True)
    assert not v2.suspicious and v2.score < 0.5


def test_each_flag_condition_can_veto() -> None:
    config = ScoringConfig()
    base = dict(flip_rate=0.6, flip_null=0.0, flip_p=1e-9, flip_targets=200)
    assert not judge(_cand(), InterventionTest(0.3, False, **base), config, True).suspicious  # pixels vary
    assert not judge(
        _cand(fraction=0.7), InterventionTest(0.9, False, **base), config, True
    ).suspicious  # most of class
    weak = dict(base, flip_rate=0.04)
    assert not judge(
        _cand(), InterventionTest(0.9, False, **weak), config, True
    ).suspicious  # below the margin
    natural = dict(base, flip_rate=0.2, flip_null=0.1)
    assert not judge(_cand(), InterventionTest(0.9, False, **natural), config, True).suspicious  # ratio < 2
    noisy = dict(base, flip_p=0.2)
    assert not judge(
        _cand(), InterventionTest(0.9, False, **noisy), config, True
    ).suspicious  # not significant
    assert not judge(_cand(), InterventionTest(0.9, False), config, True).suspicious  # not pasted
    assert not judge(_cand(), None, config, True).suspicious  # not looked at


def test_evidence_says_why_a_cleared_test_did_not_flag() -> None:
    """A group that is most of its class, or whose map stands out too little, says so in its evidence."""
    config = ScoringConfig(flag_min_map_score=0.01)
    removal = Removal(drop=3.0, null=0.0, p=1e-9, auroc=1.0, spread=0.1)
    test = InterventionTest(0.9, False, removal=removal)
    for cand, expected in (
        (_cand(fraction=0.75), "the group is 75 % of the class, and a flag needs at most 60 %"),
        (
            _cand(map_score=1e-4),
            "its relevance stands out too little from the class's (map score 0.000, a flag needs 0.010)",
        ),
    ):
        cand.signals.update(separation=0.8, share_in=0.3, share_out=0.05, consistency=0.9)
        v = judge(cand, test, config, use_probe=True)
        assert v.routes == ("removal",) and not v.suspicious
        said = evidence(cand, "dog", 40, 8, 8, test, config, v)
        assert (
            said[-1].startswith("not flagged although the removal test cleared its margins")
            and expected in said[-1]
        )


def test_evidence_names_the_removal_margin_missed_when_no_test_cleared() -> None:
    """An outside check: "0.64 vs 0.13 logits, p = 0.00052" read as cleared, and no line said why the group
    was not flagged (its drops' AUROC, 0.68, was under the 0.94 needed)."""
    config = ScoringConfig()
    removal = Removal(drop=0.64, null=0.13, p=0.00052, auroc=0.68, spread=0.1, n_members=20, n_others=40)
    test = InterventionTest(0.9, False, removal=removal)
    cand = _cand()
    cand.signals.update(separation=0.8, share_in=0.3, share_out=0.05, consistency=0.9)
    v = judge(cand, test, config, use_probe=True)
    assert not v.routes and not v.suspicious
    said = evidence(cand, "Bag", 40, 8, 8, test, config, v)
    assert said[-1] == (
        "not flagged: no test cleared its margins (the removal test: its drops' AUROC against the non-members' "
        "is 0.680, under 0.94)"
    )
    assert "removing it lowers the Bag logit of the 20 members tested by 0.64 on average" in said
    assert "removing it from 40 other Bag images lowers theirs by 0.13" in said
    # the members' pixels less alike than typical groups': said so, not "0 % of the way to identical"
    unlike = InterventionTest(0.2, False, appearance_null=0.4, null_count=5, removal=removal)
    assert any(
        e.endswith("the members' pixels are no more alike than that")
        for e in evidence(cand, "Bag", 40, 8, 8, unlike, config, v)
    )


def test_two_agreeing_interventions_need_less_alike_pixels() -> None:
    """Relative appearance 0.6 (appearance 0.8 against a class typical of 0.5): below the one-route threshold
    (0.65), above the two-route one (0.55)."""
    config = ScoringConfig()
    assert config.flag_min_relative_appearance_two_routes < 0.6 < config.flag_min_relative_appearance
    removal = Removal(drop=3.0, null=0.0, p=1e-9, auroc=1.0, spread=0.1)
    paste = dict(flip_rate=0.6, flip_null=0.0, flip_p=1e-9, flip_targets=200)
    both = InterventionTest(0.8, False, appearance_null=0.5, removal=removal, **paste)
    v = judge(_cand(), both, config, use_probe=True)
    assert v.suspicious and v.routes == ("paste", "removal")
    for one in (InterventionTest(0.8, False, appearance_null=0.5, **paste),
                InterventionTest(0.8, False, appearance_null=0.5, removal=removal)):  # fmt: skip
        v1 = judge(_cand(), one, config, use_probe=True)
        assert len(v1.routes) == 1 and not v1.suspicious
        cand = _cand()
        cand.signals.update(separation=0.8, share_in=0.3, share_out=0.05, consistency=0.9)
        said = evidence(cand, "Shirt", 500, 8, 8, one, config, v1)
        route = v1.routes[0]
        assert said[-1].startswith(f"not flagged: only the {route} test cleared its margins")
        assert (
            "with one test alone a flag needs pixels more alike" in said[-1]
            and "these are 60.0 %" in said[-1]
        )
    # The paste test alone cleared, the removal test just missed its AUROC: both are said (an outside-in
    # check read only the appearance half of it).
    near = Removal(drop=3.0, null=0.0, p=1e-9, auroc=0.93, spread=0.1)
    half = InterventionTest(0.8, False, appearance_null=0.5, removal=near, **paste)
    vh = judge(_cand(), half, config, use_probe=True)
    assert vh.routes == ("paste",) and not vh.suspicious
    cand = _cand()
    cand.signals.update(separation=0.8, share_in=0.3, share_out=0.05, consistency=0.9)
    line = evidence(cand, "Shirt", 500, 8, 8, half, config, vh)[-1]
    assert "(the removal test: its drops' AUROC against the non-members' is 0.930, under 0.94)" in line
    # A natural group far below the class's look-alike level stays unflagged even with both routes.
    plain = InterventionTest(0.7, False, appearance_null=0.5, removal=removal, **paste)
    assert not judge(_cand(), plain, config, use_probe=True).suspicious


def test_the_two_route_threshold_is_never_the_stricter_one() -> None:
    """A config that lowers only the one-route threshold (an open-gate tuning run sets it to 0) loads, and
    both routes then need no more than it."""
    config = ScoringConfig(flag_min_relative_appearance=0.3)
    assert config.gate_relative_appearance == 0.3
    removal = Removal(drop=3.0, null=0.0, p=1e-9, auroc=1.0, spread=0.1)
    paste = dict(flip_rate=0.6, flip_null=0.0, flip_p=1e-9, flip_targets=200)
    both = InterventionTest(0.7, False, appearance_null=0.5, removal=removal, **paste)  # relative 0.4
    assert judge(_cand(), both, config, use_probe=True).suspicious


def test_without_a_probe_the_map_score_decides() -> None:
    config = ScoringConfig()
    assert judge(_cand(0.5), None, config, use_probe=False).suspicious
    assert not judge(_cand(0.1), None, config, use_probe=False).suspicious
    assert judge(_cand(0.1), None, config, use_probe=False).score == 0.5 * 0.1 / 1.5


def test_flag_needs_the_members_to_look_alike(planted: Case) -> None:
    """The toy shortcut's members carry identical bright patches: flagged at a strict appearance floor."""
    found = score(
        planted, probe=make_probe(planted, patch_predictor), config=ScoringConfig(flag_min_appearance=0.9)
    )
    top = found[0]
    assert top.suspicious and top.signals["appearance"] > 0.9
    assert any("pixels there vary" in e for e in top.evidence)


def test_natural_subgroups_are_not_flagged(natural: Case) -> None:
    assert not any(f.suspicious for f in score(natural))

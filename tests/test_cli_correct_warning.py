"""``spray correct``'s (and report.html's) clean-accuracy warning: only for a loss the noise cannot explain, with the advice of
the method that was run (P-ClArC trains nothing, so "a lower rr_lambda or lr" is no remedy for it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from spray.correct.record import CorrectionRecord, Verdict


@dataclass
class _Record:
    """What the warning reads of a :class:`~spray.correct.record.CorrectionRecord`."""

    method: str
    verdict: Verdict
    parameters: dict[str, Any] = field(default_factory=dict)
    footprint: object | None = None
    reaudit: object | None = None
    subspace: object | None = None
    kept_shortcut = CorrectionRecord.kept_shortcut
    cleared = CorrectionRecord.cleared
    acts_still = CorrectionRecord.acts_still
    more_directions = CorrectionRecord.more_directions
    lost_accuracy = CorrectionRecord.lost_accuracy

    def moved_warning(self) -> str:
        return ""  # these records paste nothing at the opposite place

    def lookalike_warning(self) -> str:
        return ""  # nor have test data that carries the shortcut


def _accuracy_warning(rec: _Record) -> str:
    return CorrectionRecord.accuracy_warning(rec)  # type: ignore[arg-type]


def _lost(points: float, interval: tuple[float, float] | None) -> Verdict:
    """A verdict whose clean accuracy changed by ``-points`` (interval in points, or None)."""
    kept = None if interval is None else [interval[0] / 100, interval[1] / 100]
    return Verdict(0.9, 0.9, -points / 100, True, kept)


def test_the_advice_is_the_methods_own() -> None:
    significant = _lost(3.0, (-4.5, -1.5))
    pclarc = _accuracy_warning(_Record("pclarc", significant))
    assert pclarc.startswith("the corrected model lost 3.00 points of clean accuracy")
    assert "trains nothing" in pclarc and "--method rrclarc" in pclarc and "--method retrain" in pclarc
    assert "rr_lambda" not in pclarc and "correction.lr" not in pclarc
    rr = _accuracy_warning(_Record("rrclarc", significant, {"rr_directions": 2}, footprint=object()))
    assert "correction.rr_lambda" in rr and "correction.lr" in rr and "no training" not in rr
    assert "rr_directions 1" in rr and "rr_region_weight" in rr
    assert "retrain_epochs" in _accuracy_warning(_Record("retrain", significant, {"retrain_init": "scratch"}))
    fine_tuned = _accuracy_warning(_Record("retrain", significant, {"retrain_init": "checkpoint"}))
    assert "correction.epochs" in fine_tuned and "rr_lambda" not in fine_tuned


@pytest.mark.parametrize(
    ("points", "interval", "warned"),
    [
        (3.0, (-4.5, -1.5), True),  # the interval excludes 0: a real loss
        (1.07, (-3.2, 1.07), False),  # the interval holds 0: the noise of which images flipped
        (3.0, (-6.0, 0.0), False),  # touching 0 is not excluding it
        (3.0, None, True),  # a record written before the interval was kept: the point goal alone
        (0.5, (-0.8, -0.2), False),  # significant but within the goal of a point
    ],
)
def test_only_a_significant_loss_is_warned_of(
    points: float, interval: tuple[float, float] | None, warned: bool
) -> None:
    for method in ("pclarc", "rrclarc", "retrain"):
        assert bool(_accuracy_warning(_Record(method, _lost(points, interval)))) is warned


def test_a_model_that_gives_up_the_class_is_warned_of() -> None:
    """The flip rate falls to 0 when the model stops answering the class at all: the class's own accuracy
    says which happened (an outside-in check saw 71 % of shirts right before RR-ClArC, 3 % after)."""
    from types import SimpleNamespace

    from spray.correct.record import CorrectionRecord

    def rec(
        before: float | None, after: float | None, limit: float | None = None, method: str = "rrclarc"
    ) -> Any:
        ev = SimpleNamespace(
            before=SimpleNamespace(class_accuracy=before), after=SimpleNamespace(class_accuracy=after)
        )
        params = {} if limit is None else {"max_class_accuracy_drop": limit}
        return SimpleNamespace(
            evaluation=ev, group=SimpleNamespace(class_name="shirt"), parameters=params, method=method,
            kept_shortcut=lambda: False, lookalike_warning=lambda: "",
        )  # fmt: skip

    text = CorrectionRecord.class_accuracy_warning(rec(0.71, 0.03))
    assert "gets 3.0 % of the class shirt's own clean images right, against 71.0 % before" in text
    assert "smaller rr_lambda" in text
    # P-ClArC is not told to try P-ClArC (an outside check read that advice on a P-ClArC record)
    text = CorrectionRecord.class_accuracy_warning(rec(0.71, 0.03, method="pclarc"))
    assert "P-ClArC" not in text and "later layer" in text
    assert CorrectionRecord.class_accuracy_warning(rec(0.71, 0.65)) == ""  # within the 0.1 default
    assert CorrectionRecord.class_accuracy_warning(rec(0.71, 0.65, limit=0.05)) != ""
    assert CorrectionRecord.class_accuracy_warning(rec(None, 0.1)) == ""  # not measured (an older record)


def test_flags_of_a_concept_only_finding_are_warned_of() -> None:
    """A concept-only group's shortcut may move; the correction's one fixed region may not hold it (an
    outside-in check corrected such a group through a scattered region whose box was 24 × 28 of 28 × 28)."""
    from types import SimpleNamespace

    from spray.correct.record import CorrectionRecord

    def rec(*keys: str) -> Any:
        ev = SimpleNamespace(region_source="relevance", region_pixels=160, region_box=[2, 0, 24, 28])
        return SimpleNamespace(flags=SimpleNamespace(cluster_keys=list(keys)), evaluation=ev)

    text = CorrectionRecord.region_warning(rec("8/concept/k6/c2"))
    assert "concept-only finding 8/concept/k6/c2" in text and "160 pixels in the box [2, 0, 24, 28]" in text
    assert (
        CorrectionRecord.region_warning(rec("6/k3/c2")) == ""
    )  # a pixel finding: its region is where it sits
    assert CorrectionRecord.region_warning(rec()) == ""  # flags set on samples, not from a finding


def test_a_correction_that_strengthened_the_shortcut_says_so_and_what_to_try() -> None:
    """An outside-in check saw P-ClArC on a ConvNeXt raise the paste flip rate 40 % → 48 %, printed as
    "flip rate down -20.00 %" with no warning."""
    from types import SimpleNamespace

    from spray.correct.record import CorrectionRecord, change_words

    assert change_words(-0.2) == "up 20.0 %" and change_words(0.943) == "down 94.3 %"
    assert change_words(None) == "not measured"
    assert change_words(-4e-5) == "unchanged (0.0 %)"

    def rec(flip_drop: float | None, share_drop: float | None) -> Any:
        return SimpleNamespace(
            verdict=Verdict(flip_drop, share_drop, 0.0, False), method="pclarc",
            direction=SimpleNamespace(layer="stages.3.downsample.0"), more_directions=list, larger_lambda=list,
        )  # fmt: skip

    text = CorrectionRecord.stronger_warning(rec(-0.2, 0.1))
    assert text.startswith("the paste flip rate rose: pclarc at stages.3.downsample.0 did not remove")
    assert "correction.layer" in text and "--method rrclarc" in text
    assert "paste flip rate and the relevance share rose" in CorrectionRecord.stronger_warning(
        rec(-0.2, -0.5)
    )
    assert CorrectionRecord.stronger_warning(rec(0.9, 0.8)) == ""
    assert CorrectionRecord.stronger_warning(rec(None, None)) == ""
    # an outside check: a share of 40.33 % before and after (a relative change of -4e-5) was said to rise
    assert CorrectionRecord.stronger_warning(rec(0.5, -4e-5)) == ""


def test_a_finding_the_reaudit_still_flags_gets_the_next_step_of_its_method() -> None:
    """An outside-in check: the default RR-ClArC left the watermark flagged, P-ClArC cleared it, and nothing
    said to try it."""
    from types import SimpleNamespace

    from spray.correct.record import CorrectionRecord

    def rec(method: str, cleared: bool | None) -> Any:
        return SimpleNamespace(
            method=method, reaudit=SimpleNamespace(cleared=cleared), more_directions=list,
            larger_lambda=lambda: ["a larger correction.rr_lambda"],
        )  # fmt: skip

    assert "--method pclarc" in CorrectionRecord.not_cleared_advice(rec("rrclarc", False))
    assert "correction.layer" in CorrectionRecord.not_cleared_advice(rec("pclarc", False))
    assert "retrain_mode: mask" in CorrectionRecord.not_cleared_advice(rec("retrain", False))
    assert CorrectionRecord.not_cleared_advice(rec("rrclarc", True)) == ""
    assert CorrectionRecord.not_cleared_advice(rec("rrclarc", None)) == ""
    assert CorrectionRecord.not_cleared_advice(SimpleNamespace(method="pclarc", reaudit=None)) == ""


def test_the_cli_and_the_report_show_the_same_warnings_in_one_order() -> None:
    from types import SimpleNamespace

    from spray.correct.record import CorrectionRecord

    said = {
        "weak_shortcut_warning": "y",
        "accuracy_warning": "z",
        "stronger_warning": "a",
        "not_cleared_advice": "",
        "hidden_warning": "h",
        "little_effect_warning": "l",
        "lingering_warning": "b",
        "class_accuracy_warning": "c",
        "region_warning": "d",
        "moved_warning": "e",
        "lookalike_warning": "f",
    }
    rec = SimpleNamespace(**{name: (lambda text=text: text) for name, text in said.items()}, flag_notes=["x"])
    assert CorrectionRecord.warnings(rec) == ["x", "y", "z", "a", "h", "l", "b", "c", "d", "e", "f"]  # type: ignore[arg-type]

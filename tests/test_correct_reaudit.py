"""The re-audit's verdict: "no longer flagged" only for a finding that was flagged before the correction."""

from __future__ import annotations

import pytest

from spray.correct.reaudit import Reaudit
from spray.correct.source import FindingMatch


def _match(*, suspicious: bool, rank: int = 1, score: float = 0.016) -> FindingMatch:
    return FindingMatch("0/k2/c1", rank, score, suspicious, 1.0, None, 41)


@pytest.mark.parametrize(
    ("before", "still", "cleared", "outcome"),
    [
        (True, False, True, "no longer flagged"),
        (True, True, False, "still flagged"),
        (False, True, False, "flagged now (it was not before)"),
        # the outside-in case: never flagged, the same cluster still first after the correction
        (False, False, None, "not judged: it was not flagged before either"),
    ],
)
def test_the_verdict_needs_a_flag_before_the_correction(
    before: bool, still: bool, cleared: bool | None, outcome: str
) -> None:
    r = Reaudit(
        "id", "reaudit/x", _match(suspicious=before), _match(suspicious=still, score=0.019), still, []
    )
    assert r.cleared is cleared and r.outcome == outcome
    line = r.describe()
    assert (
        line.startswith(outcome)
        and "rank 1 score 0.016, 41 members → 0/k2/c1 rank 1 score 0.019, 41 members" in line
    )
    assert ("cannot show the shortcut gone" in line) == (cleared is None)


def test_a_reaudit_whose_own_checks_doubt_its_heatmaps_judges_nothing() -> None:
    """An outside check: P-ClArC left a model near chance (74 % of predictions one class); its re-audit flagged
    nothing and the correction said "no longer flagged", cleared, exit 0 under --fail-if-not-cleared."""
    from spray.correct.reaudit import doubts

    extra = {
        "model_accuracy": {
            "accuracy": 0.337, "majority_share": 0.2, "n_samples": 3000, "near_chance": True,
            "shifted": {"cross": "circle", "ring": "circle"},
        },
        "label_conflicts": {"n_groups": 1, "examples": []},
    }  # fmt: skip
    said = doubts(extra)
    assert len(said) == 2 and "answers circle for nearly everything" in said[0] and "only 34%" in said[1]
    assert doubts({}) == [] and doubts({"model_accuracy": {**extra["model_accuracy"], "near_chance": False,
                                                           "shifted": {}}}) == []  # fmt: skip
    r = Reaudit("id", "reaudit/x", _match(suspicious=True), _match(suspicious=False), False, [], said)
    assert r.cleared is None and r.outcome.startswith("not judged: the re-audit's heatmaps")
    assert "The re-audit's own checks: The model predicts the images of 2 other classes" in r.describe()
    # a finding still flagged is still a failure, whatever the checks say
    still = Reaudit(
        "id", "reaudit/x", _match(suspicious=True), _match(suspicious=True), True, ["0/k2/c1"], said
    )
    assert still.cleared is False and still.outcome == "still flagged"

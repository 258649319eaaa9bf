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

"""The flag's operating curve: the offline replay matches the audit's own flags, and the rule picks as
documented."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
ROWS = ROOT / "benchmarks" / "results" / "detection_heldout_reporting_p02_p005_2026-12-03.jsonl"


@pytest.fixture(scope="module")
def curve():
    return load_benchmark("flag_curve")


def test_replay_reproduces_the_flags_a_real_run_raised(curve) -> None:
    """Rows of the reporting run (the thresholds it ran with): the replay flags exactly what the audit did."""
    from spray.config import ScoringConfig

    rows = [json.loads(li) for li in ROWS.read_text().splitlines() if li.strip()]
    config = ScoringConfig(
        flag_min_appearance=0.4, flag_min_relative_appearance=0.65, removal_min_auroc=0.8, removal_margin=1.0
    )
    flagged = 0
    for row in rows:
        got = sorted(c["key"] for c in curve.flags(row, config))
        assert got == sorted(c["key"] for c in row["tested"] if c["suspicious"]), row["family"]
        flagged += len(got)
    assert flagged > 20  # the rows do hold flags to reproduce


def _point(curve, rel: float, recall: float, clean: int = 0, other: float = 0.0, two: float | None = None):
    return curve.Point(0.4, rel, 0.98, rel if two is None else two, recall, 0.5, clean, 20, other, 1.0)


def test_rule_needs_a_safe_lower_neighbour_and_prefers_recall_then_caution(curve) -> None:
    points = [
        _point(curve, 0.40, 0.95, clean=1),  # unsafe itself
        _point(curve, 0.45, 0.95),  # safe, but its lower neighbour is not
        _point(curve, 0.50, 0.90),
        _point(curve, 0.55, 0.90),  # same recall, higher threshold: wins the tie
        _point(curve, 0.60, 0.80, other=0.03),  # unsafe (other alarms)
    ]
    chosen = curve.choose(points)
    assert (chosen.relative, chosen.recall) == (0.55, 0.90)
    assert curve.choose([_point(curve, 0.5, 1.0, clean=2)]) is None


def test_rule_lowers_both_relative_thresholds_for_the_margin(curve) -> None:
    points = [
        _point(curve, 0.65, 0.70, two=0.50, clean=1),
        _point(curve, 0.60, 0.80, two=0.55, other=0.05),  # the margin neighbour of (0.65, 0.60): unsafe
        _point(curve, 0.65, 0.80, two=0.60),
        _point(curve, 0.60, 0.75, two=0.50),  # the margin neighbour of (0.65, 0.55): safe
        _point(curve, 0.65, 0.75, two=0.55),
        _point(curve, 0.65, 0.75, two=0.65),  # same recall, stricter two-route threshold: wins the tie
        _point(curve, 0.60, 0.70, two=0.60),
    ]
    chosen = curve.choose(points)
    assert (chosen.relative, chosen.two_routes) == (0.65, 0.65)


def test_rows_of_another_split_are_refused(curve, tmp_path: Path) -> None:
    rows = [json.loads(li) for li in ROWS.read_text().splitlines()[:1]]
    f = tmp_path / "r.jsonl"
    f.write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(SystemExit, match=r"held-out split.*reporting"):
        curve.main([str(f)])


def test_replay_at_a_lower_removal_margin_reproduces_the_run_at_that_margin(curve) -> None:
    """Rows of the tuning run at removal margin 0.5: replayed at 0.5 they give the run's own flag verdicts,
    at 1.0 (the margin before analysis version 10) fewer flags."""
    import gzip

    from spray.config import ScoringConfig

    path = ROOT / "benchmarks" / "results" / "detection_heldout_tuning_removal_margin0.5_2026-12-04.jsonl.gz"
    rows = [json.loads(li) for li in gzip.decompress(path.read_bytes()).decode().splitlines() if li.strip()]
    config = ScoringConfig(removal_margin=0.5, removal_min_auroc=0.98)
    for row in rows:
        hit = any(c["class"] == row["target"] and c["precision"] >= 0.5 for c in curve.flags(row, config))
        assert hit == (row["flagged"] and row["family"] != "none"), (row["family"], row["seed"])
    at = {m: curve.evaluate(rows, 0.5, 0.65, 0.98, 0.55, removal_margin=m) for m in (0.5, 1.0)}
    assert at[1.0].recall < at[0.5].recall


def test_one_threshold_rule_needs_a_safe_lower_neighbour_and_prefers_recall_then_the_stricter_value(
    curve,
) -> None:
    grid = (1.0, 0.75, 0.5, 0.25)
    points = {
        1.0: _point(curve, 0.65, 0.80),
        0.75: _point(curve, 0.65, 0.85),
        0.5: _point(curve, 0.65, 0.85),  # same recall as 0.75: the stricter 0.75 wins
        0.25: _point(curve, 0.65, 0.95, other=0.05),  # unsafe, and only the neighbour of 0.5
    }
    assert curve.choose_along(points, grid) == 0.75
    points[0.5] = _point(curve, 0.65, 0.85, clean=1)
    assert curve.choose_along(points, grid) == 1.0  # 0.75's neighbour 0.5 is unsafe now
    points[0.75] = _point(curve, 0.65, 0.85, clean=1)
    assert curve.choose_along(points, grid) is None  # and 1.0's neighbour 0.75 too
    assert (
        curve.choose_along(
            {1.0: _point(curve, 0.65, 0.9, clean=1), 0.5: _point(curve, 0.65, 0.9)}, (1.0, 0.5)
        )
        is None
    )

"""The order of published runs: by spray's run-folder names only, and a new run always sorts as the newest
(an outside check: a copied run folder, or a clock set back, became "the newest run" for good)."""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import spray.runs.publish as publish_module
from spray.runs.layout import LATEST
from spray.runs.publish import find_run, list_runs, newer_run, prune_runs, run_dir_name
from tests.runs.builders import make_report, write_published


def _publish(runs: Path, run_id: str) -> Path:
    report, stage = make_report(n_per_class=4)
    report.run_id = run_id
    return write_published(runs, report, stage)


def _audit(run: Path) -> dict[str, str]:
    from spray.runs.reader import read_summary

    s = read_summary(run)
    return {"name": s.name, "dataset": s.dataset}


def test_a_copied_run_folder_is_passed_over_once_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """runs/keep-first-audit sorted after every <time>-<id> name: it was the newest run for good, retention
    (keep 1) deleted the real runs, and unchanged inputs were analysed again every night."""
    runs = tmp_path / "runs"
    first = _publish(runs, "a" * 64)
    shutil.copytree(first, runs / "keep-first-audit")
    second = _publish(runs, "b" * 64)
    with caplog.at_level(logging.WARNING, logger="spray.runs.publish"):
        assert list_runs(runs) == [second, first]
        assert list_runs(runs) == [second, first]
    said = [r.getMessage() for r in caplog.records if "keep-first-audit" in r.getMessage()]
    assert len(said) == 1 and "passed over" in said[0] and "outside the runs folder" in said[0]
    # the run of these inputs is the newest: reused, not analysed and published again
    assert newer_run(second, **_audit(second)) is None
    assert find_run(runs, "b" * 64) == second
    # retention keeps the newest real run and never deletes the copy a person kept aside
    assert prune_runs(runs, 1, **_audit(second)) == [first]
    assert (runs / "keep-first-audit").is_dir() and second.is_dir()


def test_a_clock_behind_the_newest_run_still_names_the_new_run_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With the clock a day behind, each night's run sorted before the current one: the same inputs were
    published again every night (exit 10, notified), and retention deleted the current runs."""
    runs = tmp_path / "runs"
    first = _publish(runs, "a" * 64)

    class Behind(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return datetime.now(UTC) - timedelta(days=1)

    monkeypatch.setattr(publish_module, "datetime", Behind)
    with caplog.at_level(logging.WARNING, logger="spray.runs.publish"):
        second = _publish(runs, "b" * 64)
    assert second.name > first.name and list_runs(runs) == [second, first]
    assert (runs / LATEST).resolve() == second
    assert any("clock" in r.getMessage() and first.name in r.getMessage() for r in caplog.records)
    # an outside check: after a night with the clock ahead, each night asked whether the (right) clock was wrong
    assert any("or it was ahead when that run was made" in r.getMessage() for r in caplog.records)
    assert newer_run(second, **_audit(second)) is None
    assert prune_runs(runs, 1, **_audit(second)) == [first] and second.is_dir()
    third = _publish(runs, "c" * 64)  # still behind: after the second, which was named after the first
    assert list_runs(runs) == [third, second]


def test_run_dir_name_sorts_after_the_newest_only_when_the_clock_is_behind() -> None:
    now = datetime(2026, 12, 6, 23, 0, tzinfo=UTC)
    assert run_dir_name("a" * 64, now, after="20261205T000000000000Z-bbbbbbbbbbbb") == (
        "20261206T230000000000Z-aaaaaaaaaaaa"
    )
    assert run_dir_name("a" * 64, now, after="20261207T000000000000Z-bbbbbbbbbbbb") == (
        "20261207T000000000001Z-aaaaaaaaaaaa"
    )
    # digits that are no date (a folder named by hand) give no time to follow
    assert run_dir_name("a" * 64, now, after="99991399T000000000000Z-bbbbbbbbbbbb").startswith("20261206T23")

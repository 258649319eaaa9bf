"""A job that fails or is stopped after publishing its run (an outside check): it said "nothing was published"
with no run_dir in the status, and since the next runs of the same inputs were up to date, nothing ever made
the missing ``latest`` link or applied the retention the job had left undone."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import spray.audit as audit_module
from spray.cli.run import Terminated
from spray.exit_codes import EXIT_FAILURE
from spray.runs.layout import LATEST
from spray.runs.publish import list_runs
from tests.faults.cli import assert_clean_failure
from tests.faults.test_nightly_faults import EXIT_TERMINATED, _config, _edit, _run, _status


def test_latest_not_made_says_published_and_the_next_run_makes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No inode left for the link (or kill -9 between the rename and the link): exit 1 said "the next run
    resumes", and every later run was up to date and left `latest` missing for good."""
    cfg = _config(tmp_path)
    runs = tmp_path / "runs"
    symlink = os.symlink

    def no_inode(src: str, dst: str | Path, *a: object, **k: object) -> None:
        if Path(dst).name.startswith(f".{LATEST}."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        symlink(src, dst)

    monkeypatch.setattr(os, "symlink", no_inode)
    res = _run(capsys, cfg)
    (run,) = list_runs(runs)
    assert_clean_failure(res, EXIT_FAILURE, f"run {run.name} is published", str(runs / LATEST))
    assert _status(res)["run_dir"] == str(run) and not (runs / LATEST).is_symlink()
    monkeypatch.setattr(os, "symlink", symlink)
    res = _run(capsys, cfg)
    assert _status(res)["status"] == "up_to_date", res.output
    assert (runs / LATEST).resolve() == run and "`latest` was missing" in res.output
    (runs / LATEST).unlink()
    (runs / LATEST).symlink_to("gone")  # dangling: pointed to the newest run too
    res = _run(capsys, cfg)
    assert (runs / LATEST).resolve() == run and "`latest` pointed to gone" in res.output
    res = _run(capsys, cfg)  # nothing to repair: nothing said
    assert (runs / LATEST).resolve() == run and "`latest`" not in res.output


def test_stopped_after_publishing_says_so_and_the_next_run_applies_retention(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM during retention: "nothing was published", status 143 without run_dir, and retention was never
    done (the next runs were up to date)."""
    cfg = _config(tmp_path)
    runs = tmp_path / "runs"
    _run(capsys, cfg)
    (first,) = list_runs(runs)
    _edit(cfg, "scoring", map_threshold=0.001)  # other settings: another run id

    def stopped(*a: object, **k: object) -> list[Path]:
        raise Terminated()

    monkeypatch.setattr(audit_module, "prune_runs", stopped)
    res = _run(capsys, cfg, "--keep-runs", "1")
    second = list_runs(runs)[0]
    assert res.code == EXIT_TERMINATED and second != first and first.is_dir()
    assert f"after publishing run {second}" in res.output and "nothing was published" not in res.output
    assert _status(res)["run_dir"] == str(second)
    monkeypatch.undo()
    res = _run(capsys, cfg, "--keep-runs", "1")
    assert _status(res)["status"] == "up_to_date", res.output
    assert list_runs(runs) == [second] and not first.exists()


def test_a_stop_between_the_rename_and_the_link_names_the_published_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import spray.runs.publish as publish_module

    cfg = _config(tmp_path)

    def stopped(*a: object, **k: object) -> None:
        raise Terminated()

    monkeypatch.setattr(publish_module, "point_latest", stopped)
    res = _run(capsys, cfg)
    (run,) = list_runs(tmp_path / "runs")
    assert res.code == EXIT_TERMINATED and f"after publishing run {run}" in res.output
    assert _status(res)["run_dir"] == str(run)
    monkeypatch.undo()
    res = _run(capsys, cfg)
    assert _status(res)["status"] == "up_to_date" and (tmp_path / "runs" / LATEST).resolve() == run

"""The alert marker (``.alert-pending-<run16>``) on a full disk (an outside check): written with
``write_text``, it failed with a raw ``OSError: [Errno 28]`` naming neither folder nor fix, left an empty
marker for a run never published, and another audit's job then took that marker for its own (exit 10, "the
job that published run ... was stopped before it reported")."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from spray.exit_codes import EXIT_FAILURE, EXIT_FINDINGS, EXIT_OK
from spray.nightly import pending_marker
from spray.runs.publish import list_runs
from tests.faults.cli import assert_clean_failure
from tests.faults.test_nightly_faults import _config, _run, _status

_FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_at_the_marker_is_a_clear_failure_and_leaves_no_marker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(tmp_path)
    runs = tmp_path / "runs"
    write_text, mkstemp = Path.write_text, tempfile.mkstemp

    def full_text(self: Path, *a: Any, **k: Any) -> int:
        if not self.name.startswith(".alert-pending-"):
            return write_text(self, *a, **k)
        write_text(self, "")  # the file is made, its bytes do not fit
        raise _FULL

    def full_tmp(*a: Any, prefix: str | None = None, **k: Any) -> tuple[int, str]:
        if prefix is not None and ".alert-pending-" in prefix:
            raise _FULL
        return mkstemp(*a, prefix=prefix, **k)

    monkeypatch.setattr(Path, "write_text", full_text)
    monkeypatch.setattr(tempfile, "mkstemp", full_tmp)
    res = _run(capsys, cfg)
    assert_clean_failure(res, EXIT_FAILURE, f"no space left on {runs}", "--runs-dir")
    assert not list(runs.glob(".alert-pending-*")) and list_runs(runs) == []
    monkeypatch.undo()
    res = _run(capsys, cfg)  # space again: the run is published and alerts once
    assert res.code == EXIT_FINDINGS and _status(res)["status"] == "published", res.output


def test_an_empty_marker_is_no_audits_alert_unless_its_run_is_published(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path)
    runs = tmp_path / "runs"
    assert _run(capsys, cfg).code == EXIT_FINDINGS
    assert _run(capsys, cfg).code == EXIT_OK
    never = pending_marker(runs, "f" * 64)
    never.write_text("")  # left by a failed write of another audit, whose run was never published
    res = _run(capsys, cfg)
    assert res.code == EXIT_OK and _status(res)["status"] == "up_to_date", res.output
    assert "was stopped before it reported" not in res.output and "empty or damaged" in res.output
    assert not never.exists()
    # an unreadable marker of a published run of this audit is still this audit's owed alert
    run_id = _status(res)["run_id"]
    pending_marker(runs, run_id).write_text("")
    assert _run(capsys, cfg).code == EXIT_FINDINGS
    assert _run(capsys, cfg).code == EXIT_OK

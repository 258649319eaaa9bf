"""``nightly.notify_command`` checked when the config is loaded, and a failed notification said in the status
line: found in an outside check, where ``echo 'hi`` passed validation, then crashed the published run's job
(``ValueError: No closing quotation``, exit 1 instead of 10, no alert)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from spray.exit_codes import EXIT_CONFIG, EXIT_FINDINGS
from spray.runs.publish import list_runs
from tests.faults.cli import assert_clean_failure, run_main
from tests.runs.builders import tiny_config


def _config(tmp_path: Path, notify: str) -> Path:
    """A tiny audit that flags clusters without a trained model (exit 10 on its first run)."""
    tiny_config(tmp_path, scoring={"intervention": False, "map_threshold": 0.0})
    path = tmp_path / "tiny.yaml"
    raw = yaml.safe_load(path.read_text())  # written by hand: tiny_config would load (and refuse) it
    raw["nightly"] = {"notify_command": notify}
    path.write_text(yaml.safe_dump(raw))
    return path


def _status(stdout: str) -> dict[str, Any]:
    return dict(json.loads([ln for ln in stdout.splitlines() if ln.startswith("{")][-1]))


def test_an_unbalanced_quote_is_refused_when_the_config_is_loaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    res = run_main(["run", "--config", str(_config(tmp_path, "echo 'hi"))], capsys)
    assert_clean_failure(res, EXIT_CONFIG, "nightly.notify_command", "close the quote")
    assert list_runs(tmp_path / "runs") == []  # refused before any work


def test_a_notifier_not_on_path_is_warned_at_load_and_its_failure_is_in_the_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    res = run_main(["run", "--config", str(_config(tmp_path, "no-such-notifier-xyz --now"))], capsys)
    assert res.code == EXIT_FINDINGS, res.output  # the findings' exit code stands
    assert "'no-such-notifier-xyz' is not found on PATH" in res.stderr
    status = _status(res.stdout)
    assert status["status"] == "published" and "nobody was notified" in status["notify_error"]

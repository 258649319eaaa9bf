"""SIGHUP (the terminal or ssh session of a job started by hand closed; an outside check): it ended the job
with no log line and no status line, and ``--status-file`` kept saying "running"."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from spray.runs.publish import list_runs
from tests.faults.cli import REPO, CliResult, assert_clean_failure, spray_env
from tests.faults.test_nightly_faults import EXIT_TERMINATED, _slow_config, _status


def _default_signals() -> None:
    # what a terminal gives (a test runner under nohup or `&` passes SIGHUP / SIGINT on ignored)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sighup_stops_the_run_like_sigterm_with_a_status(tmp_path: Path) -> None:
    cfg = _slow_config(tmp_path)
    err_path, status_file = tmp_path / "err.log", tmp_path / "status.json"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spray.cli",
                "run",
                "--config",
                str(cfg),
                "--status-file",
                str(status_file),
            ],
            cwd=REPO,
            env=spray_env(SPRAY_TEST_SAMPLE_DELAY="0.05"),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            preexec_fn=_default_signals,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and "written" not in err_path.read_text():
            time.sleep(0.05)
        proc.send_signal(signal.SIGHUP)
        out, _ = proc.communicate(timeout=120)
    res = CliResult(proc.returncode, out, err_path.read_text())
    assert_clean_failure(res, EXIT_TERMINATED, "SIGHUP", "finished shards are kept")
    assert _status(res)["status"] == "terminated"
    assert json.loads(status_file.read_text())["status"] == "terminated"
    assert list_runs(tmp_path / "runs") == [] and list((tmp_path / "runs").glob(".cache/*/shard-*.npz"))

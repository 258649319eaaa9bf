"""``spray.cli.logs``: what reaches stderr is log records, JSON lines under ``--log-format json``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_an_exception_python_cannot_raise_is_one_log_record() -> None:
    """An outside check: a SIGTERM to the nightly job's process group (systemd, Kubernetes) killed the
    DataLoader workers, and the DataLoader's ``__del__`` printed a raw traceback of ~20 lines among the JSON
    lines on stderr."""
    code = (
        "from spray.cli.logs import setup_logging\n"
        "setup_logging(json_logs=True)\n"
        "class Workers:\n"
        "    def __del__(self):\n"
        "        raise RuntimeError('DataLoader worker (pid 1) is killed by signal: Terminated.')\n"
        "w = Workers()\n"
        "del w\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    record = json.loads(lines[0])
    assert record["level"] == "warning" and "killed by signal: Terminated" in record["msg"]
    assert "Workers.__del__" in record["msg"]

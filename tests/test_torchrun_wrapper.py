"""pipelines/spray-torchrun.sh: spray's own exit code through torchrun, and a rank 0 killed before its status."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

WRAPPER = Path(__file__).resolve().parent.parent / "pipelines" / "spray-torchrun.sh"
# A stand-in for torchrun: writes the given status into --status-file and exits with the given code.
FAKE = """#!/usr/bin/env bash
while [[ $# -gt 0 ]]; do
  if [[ "$1" == "--status-file" ]]; then printf '%s\\n' "$FAKE_STATUS" > "$2"; fi
  shift
done
exit "$FAKE_RC"
"""


@pytest.mark.parametrize(
    ("status", "rc", "code", "says"),
    [
        ('{"exit_code": 10, "status": "published"}', 1, 10, ""),  # torchrun's 1 hides spray's 10
        ('{"exit_code": null, "status": "running", "pid": 7}', 137, 137, "without a final status"),
        ('{"exit_code": null, "status": "running", "pid": 7}', 0, 1, "without a final status"),
    ],
)
def test_the_wrapper_returns_sprays_code_or_says_rank_0_was_killed(
    tmp_path: Path, status: str, rc: int, code: int, says: str
) -> None:
    fake = tmp_path / "torchrun"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    env = {**os.environ, "SPRAY_TORCHRUN": str(fake), "FAKE_STATUS": status, "FAKE_RC": str(rc)}
    done = subprocess.run(
        ["bash", str(WRAPPER), "2", "--config", "x.yaml"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == code, done.stderr
    assert says in done.stderr

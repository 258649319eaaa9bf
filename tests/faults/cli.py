"""How the fault-and-fuzz suite runs the ``spray`` command and judges what it printed.

A fault case passes when the command exits with the expected code, prints no raw traceback, and names the
key, file or value the user has to fix. Two ways to run it:

- :func:`run_main` calls :func:`spray.cli.main` in this process (fast): an exception that escapes ``main``
  is a raw traceback and fails the case.
- :func:`run_spray` starts ``python -m spray.cli`` (for signals, locks, exit codes seen by a scheduler).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class CliResult:
    """What one command printed and returned."""

    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_main(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> CliResult:
    """Run ``spray <argv>`` in this process; an escaping exception fails the test as a raw traceback."""
    from spray.cli import main

    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return CliResult(code, out, err)


def spray_env(**extra: str) -> dict[str, str]:
    """Environment of a spray subprocess: this checkout importable, one thread."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **extra)
    return env


def run_spray(argv: Sequence[str], *, cwd: Path | None = None, timeout: float = 300, **env: str) -> CliResult:
    """Run ``python -m spray.cli <argv>`` as a child process."""
    res = subprocess.run(
        [sys.executable, "-m", "spray.cli", *argv],
        cwd=cwd,
        env=spray_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return CliResult(res.returncode, res.stdout, res.stderr)


def assert_clean_failure(result: CliResult, code: int, *names: str) -> None:
    """Exit ``code``, no traceback, and every one of ``names`` (the key or file to fix) in the output."""
    assert "Traceback (most recent call last)" not in result.output, result.output
    assert result.code == code, f"exit {result.code}, expected {code}:\n{result.output}"
    for name in names:
        assert name in result.output, f"{name!r} not named in:\n{result.output}"

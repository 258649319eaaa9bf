"""The command as a process: `python -m spray`, and a reader that closes its output early (`spray flags list | head -0`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from spray.cli import EXIT_CLOSED_PIPE
from spray.flags import FlagStore

REPO = Path(__file__).resolve().parents[1]


def test_a_closed_pipe_ends_the_command_without_a_traceback(tmp_path: Path) -> None:
    db = tmp_path / "flags.sqlite"
    FlagStore(db).flag("ds", [f"sample_{i}.png" for i in range(50)], "unlearn")
    for command in ("list", "export"):
        # `true` leaves before spray has imported: every write of spray's goes to a closed pipe.
        cmd = f'{sys.executable} -m spray.cli flags {command} --db {db} | true; exit "${{PIPESTATUS[0]}}"'
        p = subprocess.run(["bash", "-c", cmd], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert "Traceback" not in p.stderr and "BrokenPipeError" not in p.stderr, p.stderr[-2000:]
        assert p.returncode == EXIT_CLOSED_PIPE, (command, p.returncode, p.stderr[-2000:])


def test_python_dash_m_spray_is_the_spray_command() -> None:
    """An outside check: ``python -m spray`` said "No module named spray.__main__"."""
    p = subprocess.run([sys.executable, "-m", "spray", "--help"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert p.returncode == 0 and "audit" in p.stdout and "correct" in p.stdout, p.stderr[-2000:]

"""A reader that closes spray's output early (``spray flags list | head -0``): no traceback."""

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

"""``python -m tests.rank_failure <spray arguments>``: the spray command, with rank 1's analysis failing.

Fault injection for ``tests/test_torchrun.py``: under torchrun, rank 1 raises a :class:`DataError` when it
starts its first class, as a sample that became unreadable during the paste test would.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import spray.analysis_stage
from spray.cli import main
from spray.errors import DataError


def _failing(*args: Any, **kwargs: Any) -> Any:
    raise DataError("injected: class analysis failed on rank 1")


if __name__ == "__main__":
    if os.environ.get("RANK") == "1":
        spray.analysis_stage.analyze_class = _failing  # type: ignore[assignment]
    sys.exit(main(sys.argv[1:]))

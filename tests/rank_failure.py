"""``python -m tests.rank_failure <spray arguments>``: the spray command, with rank 1's analysis failing.

Fault injection for ``tests/test_torchrun.py``: under torchrun, rank 1 raises a :class:`DataError` when it
starts its first class, as a sample that became unreadable during the paste test would; with
``SPRAY_TEST_RANK1=kill`` it kills itself with SIGKILL there instead, and with ``SPRAY_TEST_RANK1=batch`` it
raises a :class:`ModelError` on its first batch of the batch stage (where no collective carries the error:
torchrun stops rank 0 with SIGTERM). With ``SPRAY_TEST_RANK1=data`` rank 1 reads the config file named by
``SPRAY_TEST_RANK1_CONFIG`` instead (other data, as a second machine with its own copy of the files would).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import spray.analysis_stage
from spray.attribution import BatchStage
from spray.cli import main
from spray.errors import DataError, ModelError


def _failing(*args: Any, **kwargs: Any) -> Any:
    raise DataError("injected: class analysis failed on rank 1")


def _failing_batch(*args: Any, **kwargs: Any) -> Any:
    raise ModelError("injected: relevance overflow on rank 1")


def _killed(*args: Any, **kwargs: Any) -> Any:
    os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would


if __name__ == "__main__":
    argv = sys.argv[1:]
    if os.environ.get("RANK") == "1" and os.environ.get("SPRAY_TEST_RANK1") == "data":
        argv[argv.index("--config") + 1] = os.environ["SPRAY_TEST_RANK1_CONFIG"]
    elif os.environ.get("RANK") == "1" and os.environ.get("SPRAY_TEST_RANK1") == "batch":
        BatchStage._explain = _failing_batch  # type: ignore[method-assign]
    elif os.environ.get("RANK") == "1":
        how = _killed if os.environ.get("SPRAY_TEST_RANK1") == "kill" else _failing
        spray.analysis_stage.analyze_class = how  # type: ignore[assignment]
    sys.exit(main(argv))

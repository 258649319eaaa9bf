"""The context of the running audit that every log record carries: run id, stage and (under torchrun) rank.

A module-level dict rather than a contextvar because the background shard writer logs from its own
thread; one process runs one audit at a time (the runs-directory lock guarantees it). This module
imports nothing heavy, so the command's log handlers can install :class:`RunContextFilter` before
torch is imported.
"""

from __future__ import annotations

import logging
from typing import Any

#: ``run_id`` (first 16 hex digits), ``stage`` and ``rank`` of the running audit.
RUN_CONTEXT: dict[str, Any] = {}

#: The stages, in order, as the JSON logs name them.
STAGES = ("setup", "check", "batch", "merge", "analysis", "compare", "write", "publish", "done")


def set_stage(stage: str, **fields: Any) -> None:
    """Record the stage the audit is in (one of :data:`STAGES`) and other fields (``run_id``, ``rank``)
    so that every later log record carries them."""
    RUN_CONTEXT["stage"] = stage
    RUN_CONTEXT.update(fields)


class RunContextFilter(logging.Filter):
    """Stamps every record with :data:`RUN_CONTEXT`; attributes a record already has (``extra=``) win."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in RUN_CONTEXT.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class SetupEchoFilter(logging.Filter):
    """Under torchrun, drops the data source's warnings of the setup stage on ranks other than 0: every rank
    lists the same data and repeated them word for word (rank 0's stay, and the run records its data notes)."""

    def filter(self, record: logging.LogRecord) -> bool:
        echo = record.levelno == logging.WARNING and record.name.startswith("spray.data")
        return not (echo and RUN_CONTEXT.get("stage", "setup") == "setup" and RUN_CONTEXT.get("rank", 0) != 0)

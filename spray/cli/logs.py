"""Logging of the ``spray`` command: readable lines, or JSON lines for schedulers."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from spray.runlog import RUN_CONTEXT, RunContextFilter, SetupEchoFilter

# Structured fields that log records may carry (``extra=``) and the JSON lines then include.
_LOG_FIELDS = (
    "rank",
    "shard",
    "n_samples",
    "n_computed",
    "n_cached",
    "shards_computed",
    "shards_reused",
    "n_paste_computed",
    "n_paste_cached",
    "exit_code",
    "n_new",
    "n_grown",
    "n_resolved",
    "n_suspicious",
    "run_dir",
    "up_to_date",
)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, plus run id and stage when set."""

    def format(self, record: logging.LogRecord) -> str:
        d = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("stage", "run_id"):
            if hasattr(record, key):
                d[key] = getattr(record, key)
        return json.dumps(d)


def log_unraisable(unraisable: Any) -> None:
    """An exception Python cannot raise (in a ``__del__``: a DataLoader joining the workers a group SIGTERM
    killed) as one log record, not a raw traceback among the JSON lines on stderr (``sys.unraisablehook``
    while a command runs)."""
    err = unraisable.exc_value
    what = f"{type(err).__name__}: {err}" if err is not None else (unraisable.err_msg or "an exception")
    obj = unraisable.object
    where = "" if obj is None else f" in {getattr(obj, '__qualname__', None) or repr(obj)}"
    logging.getLogger("spray").warning("ignored%s: %s", where, what)


def setup_logging(verbose: bool = False, json_logs: bool = False) -> None:
    """Log to stderr: human-readable by default, JSON lines with ``--log-json``."""
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # faiss says at INFO that it fell back from its AVX512 build: a normal event that reads as a failure
    for noisy in ("numba", "matplotlib", "PIL", "urllib3", "streamlit", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def configure_run_logging(verbose: bool, fmt: str) -> None:
    """Logging of ``spray run``: JSON lines (or text) stamped with the run id, stage and rank."""

    class NightlyJsonFormatter(JsonLogFormatter):
        """The CLI's JSON lines plus the structured fields of the nightly job (counts, shard, rank)."""

        def format(self, record: logging.LogRecord) -> str:
            d = json.loads(super().format(record))
            for key in _LOG_FIELDS:
                if hasattr(record, key) and key not in d:
                    d[key] = getattr(record, key)
            if record.exc_info:
                d["exc"] = self.formatException(record.exc_info)
            return json.dumps(d, default=str)

    setup_logging(verbose, json_logs=fmt == "json")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # under torchrun from the first line on (a config error too): every rank logs, and the lines must say whose
        RUN_CONTEXT["rank"] = int(os.environ.get("RANK", "0"))
    for h in logging.getLogger().handlers:
        if fmt == "json":
            h.setFormatter(NightlyJsonFormatter())
        elif "rank" in RUN_CONTEXT:
            h.setFormatter(
                logging.Formatter(
                    "%(asctime)s [rank %(rank)s] %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"
                )
            )
        h.addFilter(RunContextFilter())
        if "rank" in RUN_CONTEXT:
            h.addFilter(SetupEchoFilter())

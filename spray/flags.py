"""The flag store: what an auditor decided about samples, kept in SQLite so it outlives runs.

Flags are keyed by ``(dataset, sample_id)`` — not by run — so a flag set on Monday's run still applies to
Tuesday's run of the same dataset (the dataset key is ``summary["dataset"]``, see
:meth:`spray.config.AuditConfig.dataset_key`).

Schema (format :data:`SCHEMA_VERSION`)::

    events    append-only history: one row per sample per action
              (id, action_id, dataset, sample_id, status, note, run_id, cluster_key, source, author, created_at)
              status is one of STATUSES, or "unflag"
    current   view: the latest event of every (dataset, sample_id) whose status is not "unflag"

History is never rewritten: unflagging appends an ``unflag`` event. The current state is derived from the
history, so two sessions flagging at the same time cannot leave the two tables disagreeing; SQLite's WAL
mode plus a busy timeout serialises the writers, and each action is one transaction, so nothing is lost.

Command line::

    spray flags export --db runs/flags.sqlite --format csv --status unlearn -o unlearn.csv
    spray flags list --db runs/flags.sqlite
"""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STATUSES = ("unlearn", "investigate", "ok")
UNFLAG = "unflag"
EXPORT_FORMATS = ("csv", "json", "parquet")
DEFAULT_DB_NAME = "flags.sqlite"
EXPORT_COLUMNS = [
    "dataset",
    "sample_id",
    "status",
    "note",
    "run_id",
    "cluster_key",
    "source",
    "author",
    "flagged_at",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    action_id   TEXT NOT NULL,
    dataset     TEXT NOT NULL,
    sample_id   TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('unlearn', 'investigate', 'ok', 'unflag')),
    note        TEXT NOT NULL DEFAULT '',
    run_id      TEXT,
    cluster_key TEXT,
    source      TEXT,
    author      TEXT,
    created_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_sample ON events (dataset, sample_id, id);
CREATE INDEX IF NOT EXISTS events_action ON events (action_id);
CREATE VIEW IF NOT EXISTS current AS
    SELECT e.dataset, e.sample_id, e.status, e.note, e.run_id, e.cluster_key, e.source, e.author,
           e.created_at AS flagged_at, e.action_id, e.id AS event_id
    FROM events e
    WHERE e.id = (SELECT MAX(id) FROM events x WHERE x.dataset = e.dataset AND x.sample_id = e.sample_id)
      AND e.status != 'unflag';
"""


def default_db_path(runs_dir: str | Path) -> Path:
    """``<runs_dir>/flags.sqlite``: next to the run folders, never inside one."""
    return Path(runs_dir) / DEFAULT_DB_NAME


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FlagStore:
    """Flags on samples, in one SQLite file (WAL mode).

    One connection per call: instances are cheap, thread-safe and can be shared by the dashboard's
    sessions (each Streamlit session runs in its own thread).

    Parameters
    ----------
    path : str or Path
        Database file; created with its folder on first use.
    timeout : float
        Seconds a writer waits for another writer's transaction before giving up.
    """

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)
            con.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a writer takes the write lock up
        # front and waits (busy timeout) instead of failing half-way on a lock upgrade.
        con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        try:
            con.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            con.execute("PRAGMA synchronous = NORMAL")
            yield con
        finally:
            con.close()

    # -- writing ----------------------------------------------------------------------------------------

    def _append(
        self,
        dataset: str,
        sample_ids: Iterable[str],
        status: str,
        note: str,
        run_id: str | None,
        cluster_key: str | None,
        source: str | None,
        author: str | None,
    ) -> str:
        ids = list(dict.fromkeys(str(s) for s in sample_ids))  # de-duplicate, keep order
        if not dataset:
            raise ValueError("dataset must be a non-empty key")
        action = uuid.uuid4().hex
        if not ids:
            return action
        t = _now()
        rows = [(action, dataset, s, status, note or "", run_id, cluster_key, source, author, t) for s in ids]
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                con.executemany(
                    "INSERT INTO events (action_id, dataset, sample_id, status, note, run_id, cluster_key, "
                    "source, author, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        log.info("flags: %s %d samples of %s (action %s)", status, len(ids), dataset, action[:8])
        return action

    def flag(
        self,
        dataset: str,
        sample_ids: Iterable[str],
        status: str,
        note: str = "",
        *,
        run_id: str | None = None,
        cluster_key: str | None = None,
        source: str | None = None,
        author: str | None = None,
    ) -> str:
        """Set the status of samples (one transaction, one history event per sample).

        Parameters
        ----------
        dataset : str
            Dataset key (``summary["dataset"]``).
        sample_ids : iterable of str
            Samples to flag.
        status : str
            ``"unlearn"``, ``"investigate"`` or ``"ok"``.
        note : str
            Free text shown in the history and exported.
        run_id, cluster_key, source, author : str, optional
            Where the decision was made (kept for the history; not part of the key).

        Returns
        -------
        str
            The action id grouping these events.
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        return self._append(dataset, sample_ids, status, note, run_id, cluster_key, source, author)

    def unflag(
        self,
        dataset: str,
        sample_ids: Iterable[str],
        note: str = "",
        *,
        run_id: str | None = None,
        source: str | None = None,
        author: str | None = None,
    ) -> str:
        """Remove the current flag of samples (appends an ``unflag`` event; history is kept)."""
        return self._append(dataset, sample_ids, UNFLAG, note, run_id, None, source, author)

    # -- reading ----------------------------------------------------------------------------------------

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute(sql, params)]

    def current(self, dataset: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """Current flags (latest non-unflag event per sample), newest first."""
        where, params = [], []
        if dataset is not None:
            where.append("dataset = ?")
            params.append(dataset)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        sql = "SELECT * FROM current" + (" WHERE " + " AND ".join(where) if where else "")
        return self._query(sql + " ORDER BY event_id DESC", tuple(params))

    def status_of(self, dataset: str, sample_ids: Iterable[str] | None = None) -> dict[str, str]:
        """``sample_id -> status`` of the flagged samples among ``sample_ids`` (all when None)."""
        rows = self._query("SELECT sample_id, status FROM current WHERE dataset = ?", (dataset,))
        out = {r["sample_id"]: r["status"] for r in rows}
        if sample_ids is None:
            return out
        return {s: out[s] for s in map(str, sample_ids) if s in out}

    def history(
        self, dataset: str | None = None, sample_id: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Every event, newest first (optionally of one dataset / one sample)."""
        where, params = [], []
        if dataset is not None:
            where.append("dataset = ?")
            params.append(dataset)
        if sample_id is not None:
            where.append("sample_id = ?")
            params.append(str(sample_id))
        sql = (
            "SELECT * FROM events" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self._query(sql, tuple(params))

    def actions(self, dataset: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """The history grouped by action (one row per flag / unflag click), newest first."""
        sql = (
            "SELECT action_id, dataset, status, note, run_id, cluster_key, source, author, "
            "MIN(created_at) AS created_at, COUNT(*) AS n_samples, MIN(id) AS first_event "
            "FROM events" + (" WHERE dataset = ?" if dataset is not None else "") + " GROUP BY action_id "
            "ORDER BY first_event DESC"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self._query(sql, (dataset,) if dataset is not None else ())

    def datasets(self) -> list[str]:
        """Dataset keys that have any event."""
        return [r["dataset"] for r in self._query("SELECT DISTINCT dataset FROM events ORDER BY dataset")]

    def counts(self, dataset: str | None = None) -> dict[str, int]:
        """Number of currently flagged samples per status."""
        sql = "SELECT status, COUNT(*) AS n FROM current" + (" WHERE dataset = ?" if dataset else "")
        rows = self._query(sql + " GROUP BY status", (dataset,) if dataset else ())
        return {r["status"]: r["n"] for r in rows}

    # -- export -----------------------------------------------------------------------------------------

    def export_frame(self, dataset: str | None = None, status: str | None = "unlearn") -> Any:
        """Current flags as a pandas DataFrame with :data:`EXPORT_COLUMNS` (``status=None``: all)."""
        import pandas as pd

        rows = self.current(dataset, status)
        return pd.DataFrame(rows, columns=EXPORT_COLUMNS) if rows else pd.DataFrame(columns=EXPORT_COLUMNS)

    def export_bytes(self, fmt: str, dataset: str | None = None, status: str | None = "unlearn") -> bytes:
        """Current flags serialised as ``csv``, ``json`` (a list of objects) or ``parquet``."""
        return frame_to_bytes(self.export_frame(dataset, status), fmt)


def frame_to_bytes(frame: Any, fmt: str) -> bytes:
    """Serialise an export table (see :meth:`FlagStore.export_frame`)."""
    if fmt == "csv":
        return frame.to_csv(index=False).encode()
    if fmt == "json":
        records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        return (json.dumps(records, indent=1) + "\n").encode()
    if fmt == "parquet":
        buf = io.BytesIO()
        frame.astype({c: "string" for c in frame.columns}).to_parquet(buf, index=False)
        return buf.getvalue()
    raise ValueError(f"format must be one of {EXPORT_FORMATS}, not {fmt!r}")


MIME_TYPES = {"csv": "text/csv", "json": "application/json", "parquet": "application/vnd.apache.parquet"}

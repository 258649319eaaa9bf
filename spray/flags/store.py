"""The flag store: what an auditor decided about samples, kept in SQLite so it outlives runs.

Flags are keyed by ``(dataset, sample_id)`` — not by run — so a flag set on Monday's run still applies to
Tuesday's run of the same dataset (the dataset key is ``summary["dataset"]``, see
:meth:`spray.config.AuditConfig.dataset_key`). Each event also records the content hash the sample had in
the run it was flagged on, so a later run can tell when an id now names other content
(:mod:`spray.flags.content`).

The schema, the ``current`` view (which note a flag shows) and the upgrades of older files are in
:mod:`spray.flags.schema`; older files are upgraded the first time they are opened for writing, and read
as they are when read-only.

History is never rewritten: unflagging appends an ``unflag`` event. The current state is derived from the
history, so two sessions flagging at the same time cannot leave the two tables disagreeing; SQLite's WAL
mode plus a busy timeout serialises the writers, and each action is one transaction, so nothing is lost.
A writer may pass the newest event id it has shown its user (``since``): when another decision on the same
samples came in after that, the action is refused with :class:`FlagConflict` instead of silently
overriding it. Readers (``read_only=True``) never take the write lock, so ``spray flags list`` answers
while a writer holds it.

A damaged, truncated or foreign database is never repaired or replaced here (the flags are the auditor's
work): every SQLite failure becomes a :class:`~spray.errors.DataError` that names the file and the fix,
and a lock held past the timeout a :class:`~spray.errors.LockedError`.
"""

from __future__ import annotations

import getpass
import logging
import os
import sqlite3
import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from spray.errors import ConfigError, DataError, LockedError, SprayError
from spray.flags.lockless import changed_since, disk_nearly_full, file_state, immutable_suffix
from spray.flags.records import STATUSES, UNFLAG, Flag, FlagAction, FlagConflict, FlagEvent
from spray.flags.schema import (
    SCHEMA,
    SCHEMA_VERSION,
    maybe_database,
    read_current_as_now,
    stored_version,
    upgrade,
)
from spray.flags.table import EXPORT_COLUMNS, INTEGER_COLUMNS, frame_to_bytes
from spray.runs.layout import project_root

log = logging.getLogger("spray.flags")

DEFAULT_DB_NAME = "flags.sqlite"

_INSERT = (
    "INSERT INTO events (action_id, dataset, sample_id, status, note, run_id, cluster_key, source, author, "
    "created_at, content_hash, class_name, class_index) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def default_db_path(runs_dir: str | Path) -> Path:
    """The project's flag database for the runs folder ``runs_dir``: ``flags.sqlite`` next to the run folders,
    never inside one; for a correction's re-audit runs folder, the project's (:func:`~spray.runs.layout.project_root`)."""
    return project_root(runs_dir) / DEFAULT_DB_NAME


def default_author() -> str:
    """Who flags when nobody said: ``$SPRAY_AUTHOR``, else the operating-system user."""
    env = os.environ.get("SPRAY_AUTHOR", "").strip()
    if env:
        return env
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers): better empty than invented
        return ""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@contextmanager
def _transaction(con: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taking the write lock up front (BEGIN IMMEDIATE); rolled back on any error."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _record(cls: type, row: sqlite3.Row) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: row[k] for k in row.keys() if k in names})  # noqa: SIM118 (sqlite3.Row)


class FlagStore:
    """Flags on samples, in one SQLite file (WAL mode).

    One connection per call: instances are cheap, thread-safe and can be shared by the dashboard's
    sessions (each Streamlit session runs in its own thread).

    Parameters
    ----------
    path : str or Path
        Database file; created with its folder on first use (not with ``read_only``).
    timeout : float
        Seconds a writer waits for another writer's transaction before giving up.
    read_only : bool
        Open for reading only: never creates, migrates or locks the file for writing (``spray flags list``
        and ``export``, ``spray dashboard --read-only``).

    Raises
    ------
    DataError
        The path is a folder, or the file is damaged, truncated or not a spray flag database.
    ConfigError
        ``read_only`` and the file does not exist.
    """

    def __init__(self, path: str | Path, *, timeout: float = 30.0, read_only: bool = False) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.read_only = read_only
        if self.path.is_dir():
            raise DataError(
                f"The flag database {self.path} is a folder, not a SQLite file: give the file instead "
                f"(for example --db {self.path / DEFAULT_DB_NAME})."
            )
        if read_only:
            if not self.path.is_file():
                raise ConfigError(
                    f"No flag database at {self.path}. Flags are created from the dashboard (spray dashboard) or with "
                    "spray flags set --runs-dir RUNS --finding CLASS/kK/cC."
                )
            self._check_schema(create=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._check_schema(create=True)

    # -- connections ------------------------------------------------------------------------------------

    def _fail(self, err: sqlite3.Error) -> SprayError:
        msg = str(err)
        if "locked" in msg or "busy" in msg:
            return LockedError(
                f"The flag database {self.path} stayed locked by another writer for {self.timeout:.0f} s; "
                "nothing was written. Try again when the other writer has finished."
            )
        if "readonly" in msg or "read-only" in msg:
            return DataError(
                f"The flag database {self.path} is read-only here ({msg}): make the file and its folder "
                "writable, or browse without flagging (spray dashboard --read-only)."
            )
        if "is full" in msg or ("disk I/O" in msg and disk_nearly_full(self.path)):
            return DataError(
                f"The flag database {self.path} cannot be read or written: the disk it is on is full ({msg}). "
                "The database is not damaged: free space on that disk, then try again."
            )
        if "unable to open" in msg:
            return DataError(
                f"Cannot open the flag database {self.path} ({msg}): check that its folder exists and is "
                "readable and writable."
            )
        if not maybe_database(self.path):  # a config given as the database: moving it aside is no fix
            return DataError(
                f"{self.path} is not a flag database: it is not a SQLite file ({msg}). Give the flag database "
                "(--db / --flags-db, correction.flags_db; by default RUNS_DIR/flags.sqlite), or a new path to "
                "start an empty one."
            )
        return DataError(
            f"The flag database {self.path} is damaged or not a SQLite file ({msg}). spray does not touch "
            f"it: restore it from a backup, or move it aside (mv {self.path} {self.path}.damaged) to start "
            "an empty one."
        )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a writer takes the write lock up
        # front and waits (busy timeout) instead of failing half-way on a lock upgrade.
        state = None
        try:
            if self.read_only:
                immutable = immutable_suffix(self.path)
                # read without SQLite's locks: a writer that came meanwhile voids what was read
                state = file_state(self.path) if immutable else None
                uri = f"file:{quote(str(self.path.resolve()))}?mode=ro{immutable}"
                con = sqlite3.connect(
                    uri, uri=True, timeout=self.timeout, isolation_level=None, check_same_thread=False
                )
            else:
                con = sqlite3.connect(
                    self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
                )
        except sqlite3.Error as err:
            raise self._fail(err) from None
        try:
            con.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            if not self.read_only:
                con.execute("PRAGMA synchronous = NORMAL")
            con.row_factory = sqlite3.Row
            if self.read_only:
                read_current_as_now(con)
            yield con
        except sqlite3.Error as err:
            raise changed_since(self.path, state) or self._fail(err) from None
        finally:
            con.close()
        if changed := changed_since(self.path, state):
            raise changed

    def _check_schema(self, *, create: bool) -> None:
        """Refuse a foreign SQLite file; create the tables in an empty one (only then take the write lock)."""
        with self._connect() as con:
            names = {
                r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type IN ('table','view')")
            }
            if {"events", "current"} <= names:
                if create and stored_version(con) > SCHEMA_VERSION:
                    # a flag written by this spray would lack what the newer one records for every flag
                    raise DataError(
                        f"{self.path} is a flag database of schema {stored_version(con)}, written by a newer spray "
                        f"than this one (schema {SCHEMA_VERSION}): upgrade spray to write "
                        "flags into it; reading and exporting them works as it is."
                    )
                if create and stored_version(con) < SCHEMA_VERSION:
                    self._upgrade(con)
                return
            if names - {"meta", "sqlite_sequence"} or not create:
                raise DataError(
                    f"{self.path} is a SQLite file but not a spray flag database (it lacks spray's events table "
                    "and current view"
                    f"{'; tables: ' + ', '.join(sorted(names)) if names else ''}). Give the right file with "
                    "--db / --flags-db, or a new path to start an empty flag database."
                )
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(
                "BEGIN IMMEDIATE;"
                + SCHEMA
                + f"INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}');"
                + "COMMIT;"
            )

    def _upgrade(self, con: sqlite3.Connection) -> None:
        """An older file brought to :data:`SCHEMA_VERSION` (:func:`spray.flags.schema.upgrade`)."""
        with _transaction(con):
            had = upgrade(con)  # another writer may have upgraded meanwhile: then nothing happens
        if had < SCHEMA_VERSION:
            log.info(
                "flags: upgraded %s from schema %d to %d (no flag changed)", self.path, had, SCHEMA_VERSION
            )

    def check(self) -> None:
        """Read every page once (``PRAGMA quick_check``): a truncated or damaged file fails here, loudly.

        Raises
        ------
        DataError
            When SQLite reports any problem.
        """
        with self._connect() as con:
            result = [r[0] for r in con.execute("PRAGMA quick_check")]
        if result != ["ok"]:
            raise self._fail(sqlite3.DatabaseError("; ".join(map(str, result[:3]))))

    # -- writing ----------------------------------------------------------------------------------------

    def _append(
        self,
        dataset: str,
        sample_ids: Iterable[str],
        status: str,
        note: str,
        *,
        run_id: str | None,
        cluster_key: str | None,
        source: str | None,
        author: str | None,
        since: int | None,
        content_hashes: Mapping[str, str] | None = None,
        classes: Mapping[str, tuple[int, str]] | None = None,
    ) -> str:
        if self.read_only:
            raise DataError(f"The flag database {self.path} is open read-only: nothing can be flagged.")
        ids = list(dict.fromkeys(str(s) for s in sample_ids))  # de-duplicate, keep order
        if not dataset:
            raise ValueError("dataset must be a non-empty key")
        action = uuid.uuid4().hex
        if not ids:
            return action
        t = _now()
        hashes, known = content_hashes or {}, classes or {}
        rows = [
            (
                action,
                dataset,
                s,
                status,
                note or "",
                run_id,
                cluster_key,
                source,
                author,
                t,
                hashes.get(s),
                known[s][1] if s in known else None,
                known[s][0] if s in known else None,
            )
            for s in ids
        ]
        with self._connect() as con, _transaction(con):
            if since is not None:
                wanted = set(ids)
                newer = [
                    _record(FlagEvent, r)
                    for r in con.execute(
                        "SELECT * FROM events WHERE dataset = ? AND id > ? ORDER BY id DESC",
                        (dataset, int(since)),
                    )
                    if r["sample_id"] in wanted
                ]
                if newer:
                    raise FlagConflict(newer)
            con.executemany(_INSERT, rows)
        by = f" by {author}" if author else ""
        log.info("flags: %s %d samples of %s%s (action %s)", status, len(ids), dataset, by, action[:8])
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
        since: int | None = None,
        content_hashes: Mapping[str, str] | None = None,
        classes: Mapping[str, tuple[int, str]] | None = None,
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
            Where and by whom the decision was made (kept for the history; not part of the key).
        since : int, optional
            The newest event id the author had seen (:meth:`last_event_id`); when any of these samples got
            an event after it, nothing is written and :class:`FlagConflict` is raised.
        content_hashes : mapping of str to str, optional
            ``sample_id -> content hash`` in the run flagged from (``RunReader.content_hashes()``); recorded
            with each event so that a later run can tell when an id names other content.
        classes : mapping of str to (int, str), optional
            ``sample_id -> (label, class name)`` in that run; recorded so that a later run can tell when a
            flagged image carries another label.

        Returns
        -------
        str
            The action id grouping these events.
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        return self._append(
            dataset,
            sample_ids,
            status,
            note,
            run_id=run_id,
            cluster_key=cluster_key,
            source=source,
            author=author,
            since=since,
            content_hashes=content_hashes,
            classes=classes,
        )

    def move(
        self, dataset: str, moves: Sequence[tuple[Flag, str]], *, run_id: str | None, author: str | None
    ) -> str:
        """Move flags to the ids their content is under now, in one action (``spray flags rebind``).

        Each old id is unflagged (unless another flag moves onto it), then each flag is set again on its
        new id with its status, note, finding, content hash and class; the history says where it came from.

        Parameters
        ----------
        dataset : str
            Dataset key.
        moves : sequence of (Flag, str)
            A current flag and the sample id its content is under now.
        run_id, author : str, optional
            The run the new ids come from, and who moved them.

        Returns
        -------
        str
            The action id.
        """
        if self.read_only:
            raise DataError(f"The flag database {self.path} is open read-only: no flag can be moved.")
        action, t = uuid.uuid4().hex, _now()
        targets = {new for _, new in moves}
        src = "spray flags rebind"
        rows: list[tuple[Any, ...]] = [
            (
                action,
                dataset,
                f.sample_id,
                UNFLAG,
                f"moved to {new}",
                run_id,
                None,
                src,
                author,
                t,
                None,
                None,
                None,
            )
            for f, new in moves
            if f.sample_id not in targets
        ]
        rows += [
            (
                action,
                dataset,
                new,
                f.status,
                f.note,
                run_id,
                f.cluster_key,
                f"{src} (from {f.sample_id})",
                author,
                t,
                f.content_hash,
                f.class_name,
                f.class_index,
            )
            for f, new in moves
        ]
        with self._connect() as con, _transaction(con):
            con.executemany(_INSERT, rows)
        log.info(
            "flags: moved %d flags of %s to their content's new ids (action %s)",
            len(moves),
            dataset,
            action[:8],
        )
        return action

    def unflag(
        self,
        dataset: str,
        sample_ids: Iterable[str],
        note: str = "",
        *,
        run_id: str | None = None,
        source: str | None = None,
        author: str | None = None,
        since: int | None = None,
        cluster_key: str | None = None,
    ) -> str:
        """Remove the current flag of samples (appends an ``unflag`` event; history is kept; ``cluster_key``:
        the finding it was made from, for the history)."""
        return self._append(
            dataset,
            sample_ids,
            UNFLAG,
            note,
            run_id=run_id,
            cluster_key=cluster_key,
            source=source,
            author=author,
            since=since,
        )

    # -- reading ----------------------------------------------------------------------------------------

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._connect() as con:
            return list(con.execute(sql, params))

    def current(self, dataset: str | None = None, status: str | None = None) -> list[Flag]:
        """Current flags (latest non-unflag event per sample), newest first."""
        where, params = [], []
        if dataset is not None:
            where.append("dataset = ?")
            params.append(dataset)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        sql = "SELECT * FROM current" + (" WHERE " + " AND ".join(where) if where else "")
        return [_record(Flag, r) for r in self._rows(sql + " ORDER BY event_id DESC", tuple(params))]

    def status_of(self, dataset: str, sample_ids: Iterable[str] | None = None) -> dict[str, str]:
        """``sample_id -> status`` of the flagged samples among ``sample_ids`` (all when None)."""
        rows = self._rows("SELECT sample_id, status FROM current WHERE dataset = ?", (dataset,))
        out = {r["sample_id"]: r["status"] for r in rows}
        if sample_ids is None:
            return out
        return {s: out[s] for s in map(str, sample_ids) if s in out}

    def history(
        self, dataset: str | None = None, sample_id: str | None = None, limit: int | None = None
    ) -> list[FlagEvent]:
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
        return [_record(FlagEvent, r) for r in self._rows(sql, tuple(params))]

    def actions(self, dataset: str | None = None, limit: int | None = None) -> list[FlagAction]:
        """The history grouped by action (one row per flag / unflag click), newest first."""
        sql = (
            "SELECT action_id, dataset, status, note, run_id, cluster_key, source, author, "
            "MIN(created_at) AS created_at, COUNT(*) AS n_samples, MIN(id) AS first_event "
            "FROM events" + (" WHERE dataset = ?" if dataset is not None else "") + " GROUP BY action_id "
            "ORDER BY first_event DESC"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_record(FlagAction, r) for r in self._rows(sql, (dataset,) if dataset is not None else ())]

    def datasets(self) -> list[str]:
        """Dataset keys that have any event."""
        return [r["dataset"] for r in self._rows("SELECT DISTINCT dataset FROM events ORDER BY dataset")]

    def counts(self, dataset: str | None = None) -> dict[str, int]:
        """Number of currently flagged samples per status."""
        sql = "SELECT status, COUNT(*) AS n FROM current" + (" WHERE dataset = ?" if dataset else "")
        rows = self._rows(sql + " GROUP BY status", (dataset,) if dataset else ())
        return {r["status"]: r["n"] for r in rows}

    def last_event_id(self, dataset: str | None = None) -> int:
        """The newest event id (0 when there is none): a cheap "did anything change" token."""
        sql = "SELECT COALESCE(MAX(id), 0) FROM events" + (" WHERE dataset = ?" if dataset else "")
        return int(self._rows(sql, (dataset,) if dataset else ())[0][0])

    # -- export -----------------------------------------------------------------------------------------

    def export_frame(
        self,
        dataset: str | None = None,
        status: str | None = "unlearn",
        leave_out: Collection[tuple[str, str]] = (),
    ) -> Any:
        """Current flags as a pandas DataFrame with :data:`EXPORT_COLUMNS` (``status=None``: all), without
        the ``(dataset, sample_id)`` pairs in ``leave_out``."""
        import pandas as pd

        skip = set(leave_out)
        flags = [f for f in self.current(dataset, status) if (f.dataset, f.sample_id) not in skip]
        rows = [{c: asdict(f)[c] for c in EXPORT_COLUMNS} for f in flags]
        # nullable integers: a column of 3 and None is 3.0 in pandas (the dashboard's table showed it)
        return pd.DataFrame(rows, columns=EXPORT_COLUMNS).astype({c: "Int64" for c in INTEGER_COLUMNS})

    def export_bytes(
        self,
        fmt: str,
        dataset: str | None = None,
        status: str | None = "unlearn",
        leave_out: Collection[tuple[str, str]] = (),
    ) -> bytes:
        """Current flags serialised as ``csv``, ``json`` (a list of objects) or ``parquet``."""
        return frame_to_bytes(self.export_frame(dataset, status, leave_out), fmt)

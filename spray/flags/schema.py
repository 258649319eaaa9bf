"""The flag database's schema: its tables, the ``current`` view and the upgrades of older files.

Format :data:`SCHEMA_VERSION`::

    meta      key/value: schema_version
    events    append-only history: one row per sample per action
              (id, action_id, dataset, sample_id, status, note, run_id, cluster_key, source, author,
              created_at, content_hash, class_name, class_index); status is one of the flag statuses, or "unflag"; note is
              what the person typed in that action ('' when nothing); class_name and class_index the sample's
              class in the run it was flagged from
    current   view: the latest event of every (dataset, sample_id) whose status is not "unflag", with the
              newest note typed since the sample took that status (flagging a flagged sample again without
              a note keeps the note; another status, or an unflag, starts without one)

Upgrades (only when a file is opened for writing; no event row changes): 1 → 2 adds ``content_hash``;
2 → 3 rebuilds the view, which took the latest event's note, so a note-less repeat erased a note; 3 → 4 adds
``class_name`` and ``class_index`` (a flag set by sample id recorded no class, so a file moved to another class
folder kept its flag unnamed).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA_VERSION = 4

TABLES = """
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
    created_at  TEXT NOT NULL,
    content_hash TEXT,
    class_name  TEXT,
    class_index INTEGER
);
CREATE INDEX IF NOT EXISTS events_sample ON events (dataset, sample_id, id);
CREATE INDEX IF NOT EXISTS events_action ON events (action_id);
"""
VIEW = """
CREATE VIEW IF NOT EXISTS current AS
    SELECT e.dataset, e.sample_id, e.status,
           COALESCE((
               SELECT n.note FROM events n
               WHERE n.dataset = e.dataset AND n.sample_id = e.sample_id AND n.note != ''
                 AND n.id > COALESCE((
                     SELECT MAX(y.id) FROM events y
                     WHERE y.dataset = e.dataset AND y.sample_id = e.sample_id AND y.status != e.status
                 ), 0)
               ORDER BY n.id DESC LIMIT 1
           ), '') AS note,
           e.run_id, e.cluster_key, e.source, e.author,
           e.created_at AS flagged_at, e.action_id, e.id AS event_id, e.content_hash,
           e.class_name, e.class_index
    FROM events e
    WHERE e.id = (SELECT MAX(id) FROM events x WHERE x.dataset = e.dataset AND x.sample_id = e.sample_id)
      AND e.status != 'unflag';
"""
SCHEMA = TABLES + VIEW


def event_columns(con: sqlite3.Connection) -> set[str]:
    """The columns of the ``events`` table."""
    return {str(r[1]) for r in con.execute("PRAGMA table_info(events)")}


def stored_version(con: sqlite3.Connection) -> int:
    """The file's schema version (``meta``); 1 for a file without ``content_hash`` that does not say."""
    row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is not None and str(row[0]).isdigit():
        return int(row[0])
    return 2 if "content_hash" in event_columns(con) else 1


def read_current_as_now(con: sqlite3.Connection) -> None:
    """On a connection that cannot upgrade an older file (read-only), a temporary ``current`` view with this
    schema's rules (the note kept since the status was taken), which SQLite finds before the file's own;
    columns the file lacks read as NULL. Readers of an upgraded and a not yet upgraded file then agree."""
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type IN ('table','view')")}
    if not {"events", "current", "meta"} <= names or stored_version(con) >= SCHEMA_VERSION:
        return  # not a spray flag database (the store's own check says so), or a current one
    sql = VIEW.replace("CREATE VIEW IF NOT EXISTS current", "CREATE TEMP VIEW IF NOT EXISTS current")
    columns = event_columns(con)
    for column in ("content_hash", "class_name", "class_index"):
        if column not in columns:
            sql = sql.replace(f"e.{column}", f"NULL AS {column}")
    con.execute(sql)


def upgrade(con: sqlite3.Connection) -> int:
    """Bring an older file to :data:`SCHEMA_VERSION` inside the caller's write transaction; returns the
    version it had (no event row changes)."""
    had = stored_version(con)
    if had >= SCHEMA_VERSION:
        return had
    columns = event_columns(con)
    for column, kind in (("content_hash", "TEXT"), ("class_name", "TEXT"), ("class_index", "INTEGER")):
        if column not in columns:
            con.execute(f"ALTER TABLE events ADD COLUMN {column} {kind}")
    con.execute("DROP VIEW IF EXISTS current")
    con.execute(VIEW)
    con.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
    )
    return had


#: The first bytes of every SQLite 3 database file (sqlite.org/fileformat.html).
SQLITE_HEADER = b"SQLite format 3\x00"
#: Names of a database file: without SQLite's header such a file is a damaged database, any other a wrong path.
DB_SUFFIXES = (".sqlite", ".sqlite3", ".db")


def maybe_database(path: Path) -> bool:
    """Whether ``path`` may be a (damaged) SQLite database: it starts with SQLite's header, is empty or
    unreadable (SQLite's own message says more), or is named as a database file; False for another kind of
    file given as one (a config, an image)."""
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError:
        return True
    return not head or head == SQLITE_HEADER or path.suffix.lower() in DB_SUFFIXES

"""Content hashes of an image folder's files, remembered under their file status.

The run id holds what the images are, not their files' times: a ``chmod``, a copy or a restore from a
backup gives every file a new ctime, and when the ctime was in the run id each of them published the same
run again (and gave every correction of it a new id, so an RR-ClArC fine-tune ran again). Reading every file
each night to hash it would cost a pass over the data, so each file's content hash is kept in
``.cache/file_hashes.sqlite`` under its size, mtime and ctime, and only a file whose status changed is read
again (a file rewritten with its size and mtime restored still has a new ctime, which no user can set).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

from spray.data.sample import content_hash
from spray.runs.layout import RunsFolder

log = logging.getLogger(__name__)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS files (root TEXT NOT NULL, sample_id TEXT NOT NULL, size INTEGER NOT NULL, "
    "mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, hash TEXT NOT NULL, PRIMARY KEY (root, sample_id))"
)
#: Above this many files to read, say so (a restored or copied folder is read once).
_SAY_READING = 1000

Status = tuple[int, int, int]


def folder_hashes(
    root: Path, sample_ids: Sequence[str], runs_dir: Path | None, *, complete: bool = True
) -> list[str]:
    """The content hash of each file ``root / sample_id`` (BLAKE2b of its bytes, as ``samples.parquet``'s
    ``content_hash``), read only where the runs folder's memo has no hash for the file's current status.

    Parameters
    ----------
    root : Path
        The image folder.
    sample_ids : sequence of str
        Paths of the files below ``root``.
    runs_dir : Path, optional
        The runs folder whose ``.cache`` keeps the memo; None, or one that cannot be written (a read-only
        copy), reads every file.
    complete : bool
        ``sample_ids`` are every file of the folder (no ``data.limit``): the memo forgets the files that are
        gone.

    Returns
    -------
    list of str
        One per sample id; a file that cannot be read gives ``unreadable <errno> <status>`` instead (its
        hash once it is readable again is another run).
    """
    key = str(root.resolve())
    memo = _load(runs_dir, key)
    out: list[str] = []
    fresh: list[tuple[str, Status, str]] = []
    said = False
    for sample_id in sample_ids:
        path = root / sample_id
        try:
            st = path.stat()
            status = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            known = memo.get(sample_id)
            if known is not None and known[0] == status:
                out.append(known[1])
                continue
            if not said and len(sample_ids) - len(out) > _SAY_READING:
                # a copied or restored folder: every file is read once, then its hash is remembered
                log.info(
                    "hashing the content of up to %d files new to the memo or changed since",
                    len(sample_ids) - len(out),
                )
                said = True
            h = content_hash(path.read_bytes())
        except OSError as err:
            out.append(f"unreadable {err.errno} {_status_text(path)}")
            continue
        out.append(h)
        fresh.append((sample_id, status, h))
    gone = sorted(set(memo) - set(sample_ids)) if complete else []
    if fresh or gone:
        _store(runs_dir, key, fresh, gone)
    return out


def _status_text(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return "-"
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}"


def _memo_path(runs_dir: Path) -> Path:
    return RunsFolder(runs_dir).file_hashes


def _load(runs_dir: Path | None, root: str) -> dict[str, tuple[Status, str]]:
    """``sample_id -> (status, hash)`` of the files of ``root`` in the memo ({} without one)."""
    if runs_dir is None or not _memo_path(runs_dir).is_file():
        return {}
    try:
        with closing(sqlite3.connect(f"file:{_memo_path(runs_dir)}?mode=ro", uri=True, timeout=30)) as con:
            rows = con.execute(
                "SELECT sample_id, size, mtime_ns, ctime_ns, hash FROM files WHERE root = ?", (root,)
            ).fetchall()
    except sqlite3.Error as err:  # a damaged memo costs a read of the files, never a wrong hash
        log.info("file hash memo %s not read (%s): the files are read again", _memo_path(runs_dir), err)
        return {}
    return {r[0]: ((int(r[1]), int(r[2]), int(r[3])), str(r[4])) for r in rows}


def _store(runs_dir: Path | None, root: str, rows: list[tuple[str, Status, str]], gone: list[str]) -> None:
    """Add ``rows`` to the memo and drop the ``gone`` files; a runs folder that cannot be written keeps none
    (said at debug level)."""
    if runs_dir is None:
        return
    path = _memo_path(runs_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(path, timeout=30)) as con, con:
            con.execute(_SCHEMA)
            con.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
                [(root, sid, *status, h) for sid, status, h in rows],
            )
            con.executemany(
                "DELETE FROM files WHERE root = ? AND sample_id = ?", [(root, sid) for sid in gone]
            )
    except (OSError, sqlite3.Error) as err:
        log.debug("file hash memo %s not written (%s)", path, err)

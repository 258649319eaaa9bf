"""Reading a flag database in a folder this user may not write, where SQLite cannot take its locks.

A WAL database is read with a shared-memory file next to it, which SQLite cannot create on a read-only mount
or snapshot, or in a folder closed to this user (a colleague's copy, ``chmod -R a-w``). While no connection
holds the database open (no ``-shm`` file) and its write-ahead log is empty, the file is what was last
written, and SQLite reads it as immutable. Another user who may write there could still open it meanwhile:
the file's state before and after the read tells, and a changed file voids the read.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from spray.errors import DataError, LockedError


def folder_closed(path: Path) -> bool:
    """Whether this user cannot write the folder of ``path`` (a read-only file system or permissions)."""
    folder = path.resolve().parent
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY) or not os.access(folder, os.W_OK)
    except OSError:  # no such folder (yet): nothing to read there, and creating it is the writer's business
        return False


def immutable_suffix(path: Path) -> str:
    """``&immutable=1`` for a reader of ``path`` in a folder it cannot write while no connection holds the
    database open; empty otherwise.

    Raises
    ------
    DataError
        The folder cannot be written and a write-ahead log without its shared-memory file is left there.
    """
    folder = path.resolve().parent
    wal = folder / f"{path.name}-wal"
    if not folder_closed(path) or (folder / f"{path.name}-shm").exists():
        return ""
    if wal.exists() and wal.stat().st_size > 0:
        raise DataError(
            f"The flag database {path} is in a folder this user cannot write (a read-only file system or "
            f"permissions) and still has a write-ahead log ({wal.name}) without its shared-memory file: SQLite "
            "cannot read it consistently there. Copy the database with its -wal file to a writable folder and "
            "open the copy."
        )
    return "&immutable=1"


def file_state(path: Path) -> tuple[object, ...]:
    """What a writer changes: the file's size and mtime, and whether its WAL files exist."""
    st = path.stat()
    folder = path.resolve().parent
    return (st.st_size, st.st_mtime_ns, *((folder / f"{path.name}{x}").exists() for x in ("-wal", "-shm")))


def changed_since(path: Path, state: tuple[object, ...] | None) -> LockedError | None:
    """A LockedError when the file read as immutable changed since ``state`` was taken (None otherwise, and
    when ``state`` is None: read with SQLite's locks)."""
    if state is None:
        return None
    try:
        if file_state(path) == state:
            return None
    except OSError:
        pass
    return LockedError(
        f"The flag database {path} was written by someone else while it was read (in a folder this user may "
        "not write it is read without SQLite's locks): nothing was read. Try again."
    )


def disk_nearly_full(path: Path) -> bool:
    """Whether the disk of ``path``'s folder has under 16 MB free (SQLite says "disk I/O error" when it cannot
    make the files a read needs on a full disk: it is no sign of a damaged database then)."""
    try:
        return shutil.disk_usage(path.resolve().parent).free < 16 * 2**20
    except OSError:
        return False

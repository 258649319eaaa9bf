"""Per-rank status files of ``spray run`` under torchrun: which rank ended a distributed run.

When one rank dies outright (kill -9, the out-of-memory killer), torchrun stops the others with SIGTERM
and rank 0 would only know that it was terminated. So every rank above 0 keeps its own record beside
``--status-file`` (``<status-file>.rank<k>``): "running" with its pid and host from its start, its final
status when it fails, removed when it ends well. Rank 0 reads them when its run fails and names the rank
that failed or vanished.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from spray.runs.locking import command_line


def rank_status_path(status_file: str | None, rank: int) -> str | None:
    """Where ``rank`` writes its status: ``status_file`` itself for rank 0, ``<status_file>.rank<k>`` else."""
    if not status_file:
        return None
    return status_file if rank == 0 else f"{status_file}.rank{rank}"


#: The fields every record ``spray run`` writes into ``--status-file`` carries (running, final, usage error).
STATUS_FIELDS = ("exit_code", "status")

#: A status record is one JSON line; a file far larger than that is no record of spray's.
_MAX_STATUS_BYTES = 1 << 20


def status_file_problem(path: str | None) -> str | None:
    """Why ``spray run`` must not write its status into ``path`` (None when it may).

    It may replace an empty file (the torchrun wrapper's ``mktemp``) or an earlier status record (a JSON
    object with :data:`STATUS_FIELDS`); anything else is someone's file (the config, an image) that a
    mistyped option would destroy, and a missing folder is a typo rather than a request to create one.

    Parameters
    ----------
    path : str or None
        The ``--status-file`` given (None: no status file).

    Returns
    -------
    str or None
        The message naming the problem and the fix, or None.
    """
    if not path:
        return None
    target, fix = Path(path), "pass the path of a new file or of an earlier status file"
    if not target.parent.is_dir():
        what = "is a file, not a folder" if target.parent.exists() else "does not exist"
        return f"--status-file {path}: the folder {target.parent} {what}: create it or {fix}"
    if target.is_dir():
        return f"--status-file {path} is a folder: {fix}"
    if not target.exists():
        return None
    size = -1
    try:
        size = target.stat().st_size
        said = json.loads(target.read_bytes()) if 0 < size <= _MAX_STATUS_BYTES else {}
    except (OSError, ValueError) as err:
        said = str(err)
    if size == 0 or (isinstance(said, dict) and all(k in said for k in STATUS_FIELDS)):
        return None
    return (
        f"--status-file {path} exists and is not a spray status record (a JSON object with "
        f"{' and '.join(STATUS_FIELDS)}): not overwritten; {fix}"
    )


def running_record(rank: int) -> dict[str, Any]:
    """The record a rank writes at its start (``exit_code`` null: a killed rank leaves it like that)."""
    return {
        "exit_code": None,
        "status": "running",
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "rank": rank,
        "started": time.time(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def held_by_another_job(path: str | None) -> int | None:
    """The pid of another live spray job on this host whose "running" record ``path`` holds (None when
    none): its status file, which a second job (locked out at once) must not overwrite. A pid reused since
    by another program (after a kill -9 left the record) is no holder: its command line must name spray."""
    if not path:
        return None
    try:
        said = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return None
    pid = _running_here(said) if isinstance(said, dict) else None
    if pid is None or pid == os.getpid() or not _alive(pid):
        return None
    argv = command_line(pid)
    return pid if argv is None or any("spray" in a for a in argv) else None


def _running_here(rec: dict[str, Any]) -> int | None:
    """The pid of a "running" record written on this host (None for another status, host or no pid)."""
    pid = rec.get("pid")
    mine = rec.get("status") == "running" and rec.get("host") == socket.gethostname()
    return pid if mine and isinstance(pid, int) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process holds the pid now
        return True
    return True


def _records(status_file: str | None, world_size: int, since: float) -> dict[int, dict[str, Any]]:
    """The records of this run's ranks above 0 (a previous run's, older than ``since``, left out)."""
    out: dict[int, dict[str, Any]] = {}
    for rank in range(1, world_size):
        try:
            rec = json.loads(Path(str(rank_status_path(status_file, rank))).read_text())
        except (OSError, ValueError, TypeError):
            continue
        if isinstance(rec, dict) and float(rec.get("started", 0.0)) >= since - 120.0:
            out[rank] = rec
    return out


def _still_running(rec: dict[str, Any]) -> bool:
    return (pid := _running_here(rec)) is not None and _alive(pid)


def lost_ranks(status_file: str | None, world_size: int, since: float, grace_s: float = 3.0) -> list[str]:
    """What went wrong on the ranks above 0, one phrase each, from their status files.

    Parameters
    ----------
    status_file : str or None
        Rank 0's ``--status-file`` (None: nothing to read).
    world_size : int
        The number of ranks of this run.
    since : float
        Rank 0's start (``time.time()``); older files are a previous run's and are ignored.
    grace_s : float
        How long to wait for a rank whose process is alive to write its final record.

    Returns
    -------
    list[str]
        E.g. ``"rank 1 (pid 812) ended without a final status (killed, e.g. by the out-of-memory killer)"``
        for a rank whose record still says running while its process is gone, or ``"rank 2 failed: ..."``.
    """
    records = _records(status_file, world_size, since)
    deadline = time.monotonic() + grace_s
    # a rank that failed at the same moment may be writing its record still: its cause is worth the wait
    while time.monotonic() < deadline and any(_still_running(r) for r in records.values()):
        time.sleep(0.1)
        records = _records(status_file, world_size, since)
    out: list[str] = []
    for rank, rec in records.items():
        if (pid := _running_here(rec)) is not None and not _alive(pid):
            out.append(
                f"rank {rank} (pid {pid}) ended without a final status (killed, e.g. by the out-of-memory "
                "killer or kill -9)"
            )
        elif rec.get("status") == "failed":
            out.append(f"rank {rank} failed: {rec.get('error', 'see its log lines')}")
    return out

"""An exclusive, non-blocking lock on a runs directory (``fcntl.flock``).

The lock is tied to an open file descriptor, so the kernel releases it when the process dies, even by
``kill -9``: a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
from pathlib import Path
from types import TracebackType

from spray.errors import LockedError
from spray.runs.atomic import translate_write_errors

_COMMANDS = ("audit", "run", "correct", "demo")


def _command(argv: list[str]) -> str:
    """``"spray audit"`` etc. from a command line ("spray command" when it names none)."""
    return next((f"spray {a}" for a in argv if a in _COMMANDS), "spray command")


def command_line(pid: int) -> list[str] | None:
    """The arguments of process ``pid`` from Linux's ``/proc`` ([] when it is gone; None where they cannot be
    read: another platform, no permission)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return []
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")


def holder(text: str) -> str:
    """Who holds a lock, from its file's ``"<pid> <host> <command>"`` (an older spray wrote the pid alone: its
    command is then read from ``/proc``, which only this host's processes are in)."""
    pid, _, rest = text.strip().partition(" ")
    host, _, command = rest.partition(" ")
    if not host:
        argv = command_line(int(pid)) if pid.isdigit() else None
        return f"{_command(argv or [])} (pid {pid or 'unknown'})"
    where = "" if host == socket.gethostname() else f" on {host}"
    return f"{command or 'spray command'} (pid {pid}{where})"


class _Flock:
    """An ``fcntl.flock`` held on an open file until the ``with`` block ends."""

    _fd: int | None = None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class RunLock(_Flock):
    """Context manager holding ``<runs_dir>/.lock``; raises :class:`LockedError` (exit 75) if taken.

    A folder that cannot be written (read-only, no permission, disk full) raises
    :class:`~spray.runs.errors.RunWriteError` naming it.
    """

    def __init__(self, runs_dir: Path) -> None:
        self.path = Path(runs_dir) / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        # A read-only folder or a full disk is a RunWriteError naming the folder, not a raw OSError.
        with translate_write_errors(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = holder(os.pread(fd, 256, 0).decode(errors="replace"))
            os.close(fd)
            raise LockedError(
                f"Another {who} is already running on {str(self.path.parent)!r}. Nothing was touched; try "
                "again when it has finished."
            ) from None
        os.ftruncate(fd, 0)
        # the pid, host and command: on a shared file system the holder may be another host's process
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {_command(sys.argv)}".encode(), 0)
        self._fd = fd
        return self


def _pin_path(run: Path) -> Path:
    return run.parent / f".pin-{run.name}"


class RunPin(_Flock):
    """A shared lock on ``<runs_dir>/.pin-<run folder>``, held while a command reads a run at length (``spray
    correct`` reads its source run for minutes): retention (:func:`spray.runs.publish.prune_runs`) keeps a
    pinned run. Like :class:`RunLock` the kernel drops it when the process dies; a folder where the pin
    cannot be made (read-only) leaves the run unpinned, which retention there cannot touch anyway."""

    def __init__(self, run: Path) -> None:
        self.path = _pin_path(Path(run))
        self._fd: int | None = None

    def __enter__(self) -> RunPin:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return self
        fcntl.flock(fd, fcntl.LOCK_SH)
        self._fd = fd
        return self


def pinned(run: Path) -> bool:
    """Whether a live process holds a :class:`RunPin` on ``run``."""
    path = _pin_path(Path(run))
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock just taken
    return False


def unpin(run: Path) -> None:
    """Remove a deleted run's pin file (none held it)."""
    _pin_path(Path(run)).unlink(missing_ok=True)

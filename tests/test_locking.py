"""The runs-directory lock: exclusive, non-blocking, released by the kernel when its holder dies."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spray.errors import LockedError
from spray.runs.errors import RunWriteError
from spray.runs.locking import RunLock


def test_second_holder_gets_locked_error_with_exit_75(tmp_path: Path) -> None:
    with RunLock(tmp_path / "runs"):
        with pytest.raises(LockedError) as info, RunLock(tmp_path / "runs"):
            pass
        assert info.value.exit_code == 75
        assert f"pid {os.getpid()}" in str(info.value) and "already running" in str(info.value)
    # Released on exit: it can be taken again.
    with RunLock(tmp_path / "runs"):
        pass


def test_a_read_only_folder_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock file of a read-only runs folder cannot be created: RunWriteError naming the folder."""

    def read_only(*args: object) -> int:
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "runs" / ".lock"))

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(RunWriteError, match="read-only file system") as info, RunLock(tmp_path / "runs"):
        pass
    assert str(tmp_path / "runs") in str(info.value) and "--runs-dir" in str(info.value)


def test_lock_of_a_killed_process_is_released(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    code = (
        "import sys, time; from pathlib import Path; from spray.runs.locking import RunLock\n"
        f"lock = RunLock(Path({str(runs)!r})).__enter__(); print('held', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(LockedError), RunLock(runs):
            pass
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while True:  # the kernel drops the flock with the process's last file descriptor
            try:
                with RunLock(runs):
                    break
            except LockedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_failed_attempt_does_not_touch_the_lock_file(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with RunLock(runs):
        before = (runs / ".lock").read_bytes(), (runs / ".lock").stat().st_mtime_ns
        with pytest.raises(LockedError), RunLock(runs):
            pass
        after = (runs / ".lock").read_bytes(), (runs / ".lock").stat().st_mtime_ns
    assert before == after


def test_the_locked_message_names_the_holders_command(tmp_path: Path) -> None:
    """An outside check: the message said "Another spray run" while spray audit held the lock."""
    runs = tmp_path / "runs"
    code = (
        "import sys, time; from pathlib import Path; from spray.runs.locking import RunLock\n"
        f"lock = RunLock(Path({str(runs)!r})).__enter__(); print('held', flush=True); time.sleep(60)\n"
    )
    # argv as `python -c ... audit` shows it in /proc: the command among the arguments
    proc = subprocess.Popen([sys.executable, "-c", code, "audit"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        said = rf"Another spray audit \(pid {proc.pid}\) is already running"
        with pytest.raises(LockedError, match=said), RunLock(runs):
            pass
    finally:
        proc.kill()
        proc.wait()


def test_the_holder_is_read_from_the_lock_file_with_its_host() -> None:
    """A review: on a shared file system the lock's pid may be another host's; the command came from this
    host's /proc and could name an unrelated local process."""
    import socket

    from spray.runs.locking import holder

    assert holder("812 node-7 spray run") == "spray run (pid 812 on node-7)"
    assert holder(f"812 {socket.gethostname()} spray audit") == "spray audit (pid 812)"
    assert holder("999999999") == "spray command (pid 999999999)"  # an older spray's file: the pid alone

"""Atomic writes: no temporary files left, and a full disk or a read-only folder give a clear error while
the previous file stays intact."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

from spray.runs import atomic
from spray.runs.atomic import atomic_save_npz, atomic_write_json, write_error
from spray.runs.errors import RunWriteError


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    atomic_write_json(tmp_path / "a.json", {"b": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"b": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    # Canonical bytes: the same content gives the same file.
    atomic_write_json(tmp_path / "b.json", {"a": [1, 2], "b": 1})
    atomic_write_json(tmp_path / "c.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "b.json").read_bytes() == (tmp_path / "c.json").read_bytes()


def test_an_atomic_file_gets_the_mode_a_plain_open_would(tmp_path: Path) -> None:
    """mkstemp's private 0600 is not kept: an export read by another user's unlearning job must be readable;
    a file the user made private stays private when it is written again."""
    atomic_write_json(tmp_path / "a.json", {"a": 1})
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~atomic._UMASK
    (tmp_path / "a.json").chmod(0o600)
    atomic_write_json(tmp_path / "a.json", {"a": 2})
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o600
    assert int(os.popen("sh -c umask").read().strip(), 8) == atomic._UMASK


def test_disk_full_names_the_folder_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "runs" / "x.npz"
    atomic_save_npz(target, a=np.arange(3))
    before = target.read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(RunWriteError, match=f"no space left on {target.parent}") as info:
        atomic_save_npz(target, a=np.arange(1000))
    assert info.value.path == target and "previous runs and the cache are intact" in str(info.value)
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == ["x.npz"]


def test_read_only_and_other_errors(tmp_path: Path) -> None:
    ro = write_error(tmp_path / "f", OSError(errno.EROFS, "Read-only file system"))
    assert ro is not None and "read-only file system" in str(ro) and "output.runs_dir" in str(ro)
    assert write_error(tmp_path / "f", OSError(errno.EACCES, "denied")) is not None
    assert write_error(tmp_path / "f", OSError(errno.EIO, "I/O error")) is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_gives_a_clear_error(tmp_path: Path) -> None:
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    try:
        with pytest.raises(RunWriteError, match="not writable for this user"):
            atomic_write_json(d / "a.json", {})
    finally:
        d.chmod(0o755)


def test_a_short_write_is_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """numpy's ``tofile`` reports a full disk as a short write without an errno; a file of a run being
    written (in its staging folder) names the runs folder."""
    target = tmp_path / "runs" / ".staging" / "abc" / "heatmaps.npy"

    def short(fh: object, array: np.ndarray) -> None:
        raise OSError("2587200 requested and 905152 written")

    monkeypatch.setattr(atomic.np, "save", short)
    with pytest.raises(RunWriteError, match=f"no space left on {tmp_path / 'runs'} \\(") as info:
        atomic.atomic_save_npy(target, np.zeros(3))
    assert "heatmaps.npy, which alone needed 2.6 MB: 905.2 kB fit" in str(info.value)
    assert list(target.parent.iterdir()) == []
    assert write_error(tmp_path / "f", OSError("something else")) is None
    assert write_error(tmp_path / "f", OSError(errno.EDQUOT, "Disk quota exceeded")) is not None

"""The image files' content hashes, remembered under their file status (the data fingerprint's memo)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from spray.data.sample import content_hash
from spray.runs import file_hashes
from spray.runs.file_hashes import folder_hashes
from spray.runs.layout import RunsFolder


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every file content the memo had to hash (read) during the test."""
    seen: list[bytes] = []

    def counted(data: bytes) -> str:
        seen.append(data)
        return content_hash(data)

    monkeypatch.setattr(file_hashes, "content_hash", counted)
    return seen


def _rows(runs: Path) -> set[str]:
    with sqlite3.connect(RunsFolder(runs).file_hashes) as con:
        return {r[0] for r in con.execute("SELECT sample_id FROM files")}


def test_files_are_read_once_then_when_their_status_changes(tmp_path: Path, hashed: list[bytes]) -> None:
    root, runs = tmp_path / "imgs", tmp_path / "runs"
    root.mkdir()
    ids = [f"{i}.png" for i in range(4)]
    for i, sid in enumerate(ids):
        (root / sid).write_bytes(bytes([i]) * 10)
    first = folder_hashes(root, ids, runs)
    assert first == [content_hash(bytes([i]) * 10) for i in range(4)] and len(hashed) == 4
    hashed.clear()
    assert folder_hashes(root, ids, runs) == first and hashed == []
    os.chmod(root / "1.png", 0o600)  # a new ctime: read again, same hash
    (root / "2.png").write_bytes(b"other")  # new content
    again = folder_hashes(root, ids, runs)
    assert len(hashed) == 2 and again[1] == first[1] and again[2] == content_hash(b"other")
    # a file gone leaves the memo when the ids are the whole folder, not for a data.limit subset
    (root / "3.png").unlink()
    folder_hashes(root, ids[:3], runs, complete=False)
    assert "3.png" in _rows(runs)
    folder_hashes(root, ids[:3], runs)
    assert _rows(runs) == set(ids[:3])


def test_without_a_usable_memo_every_file_is_read_and_nothing_fails(
    tmp_path: Path, hashed: list[bytes]
) -> None:
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "a.png").write_bytes(b"a")
    assert folder_hashes(root, ["a.png"], None) == [content_hash(b"a")]
    runs = tmp_path / "runs"
    RunsFolder(runs).file_hashes.parent.mkdir(parents=True)
    RunsFolder(runs).file_hashes.write_bytes(b"not a database")  # damaged: read the files, say why at INFO
    assert folder_hashes(root, ["a.png"], runs) == [content_hash(b"a")]
    assert len(hashed) == 2
    # a file that cannot be read gives a marker that changes once it can be
    missing = folder_hashes(root, ["gone.png"], runs)
    assert missing[0].startswith("unreadable ")

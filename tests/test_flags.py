"""The SQLite flag store and ``spray flags export``."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from spray import cli
from spray.errors import DataError, LockedError
from spray.flags import EXPORT_COLUMNS, FlagStore


@pytest.fixture
def store(tmp_path: Path) -> FlagStore:
    return FlagStore(tmp_path / "flags.sqlite")


def test_flags_are_keyed_by_dataset_and_sample_and_keep_history(store: FlagStore) -> None:
    store.flag("fmnist", ["1", "2", "2", "3"], "unlearn", "corner stamp", run_id="r1", cluster_key="6/k5/c4")
    store.flag("other", ["1"], "ok")
    store.flag("fmnist", ["3"], "investigate", "not sure", run_id="r2")
    store.unflag("fmnist", ["2"], "false alarm")
    cur = {r.sample_id: r for r in store.current("fmnist")}
    assert set(cur) == {"1", "3"}
    assert cur["1"].status == "unlearn" and cur["1"].cluster_key == "6/k5/c4"
    assert cur["3"].status == "investigate" and cur["3"].run_id == "r2"
    assert store.status_of("fmnist", ["1", "2", "3", "9"]) == {"1": "unlearn", "3": "investigate"}
    assert store.status_of("other") == {"1": "ok"}
    hist = store.history("fmnist", "2")
    assert [h.status for h in hist] == ["unflag", "unlearn"]  # newest first, nothing rewritten
    acts = store.actions("fmnist")
    assert [a.n_samples for a in acts] == [1, 1, 3]  # duplicate id counted once
    assert store.counts("fmnist") == {"unlearn": 1, "investigate": 1}
    assert store.datasets() == ["fmnist", "other"]
    with pytest.raises(ValueError):
        store.flag("fmnist", ["1"], "delete")


def test_flags_survive_reopening_and_use_wal(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "flags.sqlite"
    FlagStore(db).flag("d", ["a"], "unlearn")
    assert FlagStore(db).status_of("d") == {"a": "unlearn"}
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_two_sessions_flagging_at_once_lose_nothing(tmp_path: Path) -> None:
    db = tmp_path / "flags.sqlite"
    FlagStore(db)
    errors: list[BaseException] = []

    def session(name: str) -> None:
        s = FlagStore(db)  # its own store object and connections, like a second browser session
        try:
            for i in range(40):
                s.flag("d", [f"{name}-{i}-{j}" for j in range(25)], "unlearn", f"{name} {i}")
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=session, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    s = FlagStore(db)
    assert len(s.current("d")) == 2 * 40 * 25
    assert len(s.actions("d")) == 80


def test_two_processes_flagging_at_once_lose_nothing(tmp_path: Path) -> None:
    db = tmp_path / "flags.sqlite"
    FlagStore(db)
    code = (
        "import sys; from spray.flags import FlagStore; s = FlagStore(sys.argv[1]); n = sys.argv[2]\n"
        "for i in range(30): s.flag('d', [f'{n}-{i}-{j}' for j in range(10)], 'investigate')"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(db), n]) for n in ("p", "q")]
    assert [p.wait(60) for p in procs] == [0, 0]
    assert FlagStore(db).counts("d") == {"investigate": 600}


def test_export_formats_round_trip(store: FlagStore) -> None:
    store.flag("d", ["1", "2"], "unlearn", "stamp, top-left")
    store.flag("d", ["3"], "ok")
    csv = pd.read_csv(io.BytesIO(store.export_bytes("csv", "d")), dtype=str)
    assert list(csv.columns) == EXPORT_COLUMNS and sorted(csv["sample_id"]) == ["1", "2"]
    assert set(csv["note"]) == {"stamp, top-left"}
    js = json.loads(store.export_bytes("json", "d", status=None))
    assert sorted(r["sample_id"] for r in js) == ["1", "2", "3"]
    pq = pd.read_parquet(io.BytesIO(store.export_bytes("parquet", "d")))
    assert sorted(pq["sample_id"]) == ["1", "2"]
    empty = pd.read_csv(io.BytesIO(store.export_bytes("csv", "nothing")))
    assert list(empty.columns) == EXPORT_COLUMNS and empty.empty
    with pytest.raises(ValueError):
        store.export_bytes("xlsx")


def test_every_format_keeps_the_class_index_an_integer(store: FlagStore) -> None:
    """A flag set with its class and one without: 3 and no value, never "3" or 3.0 (pandas made the column
    floats, and Parquet stored it as text)."""
    store.flag("d", ["with"], "unlearn", classes={"with": (3, "cat")})
    store.flag("d", ["without"], "unlearn")
    import pyarrow.parquet

    data = store.export_bytes("parquet", "d")
    assert str(pyarrow.parquet.read_schema(io.BytesIO(data)).field("class_index").type) == "int64"
    pq = pd.read_parquet(io.BytesIO(data)).set_index("sample_id")["class_index"]
    assert pq["with"] == 3 and pd.isna(pq["without"])
    assert pd.read_parquet(io.BytesIO(data))["sample_id"].dtype != "int64"  # the text columns stay text
    js = {r["sample_id"]: r["class_index"] for r in json.loads(store.export_bytes("json", "d"))}
    assert js == {"with": 3, "without": None} and type(js["with"]) is int
    rows = store.export_bytes("csv", "d").decode().splitlines()
    assert rows[0].endswith(",class_index") and {r.rsplit(",", 1)[1] for r in rows[1:]} == {"3", ""}
    # the table the dashboard's Flags page shows is the same frame
    shown = store.export_frame("d").set_index("sample_id")["class_index"]
    assert str(shown.dtype) == "Int64" and shown["with"] == 3 and str(shown.astype(str)["with"]) == "3"


def main(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("COLUMNS", "120")
    return cli.main(argv)


def test_cli_export(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "flags.sqlite"
    s = FlagStore(db)
    s.flag("d", ["1", "2"], "unlearn")
    s.flag("d", ["3"], "investigate")
    out = tmp_path / "u.parquet"
    assert main(["flags", "export", "--db", str(db), "--format", "parquet", "-o", str(out)], monkeypatch) == 0
    assert sorted(pd.read_parquet(out)["sample_id"]) == ["1", "2"]
    assert (
        main(
            ["flags", "export", "--runs-dir", str(tmp_path), "--format", "json", "--status", "all"],
            monkeypatch,
        )
        == 0
    )
    assert len(json.loads(capsysbinary.readouterr().out)) == 3
    assert main(["flags", "export", "--db", str(tmp_path / "missing.sqlite")], monkeypatch) == 2
    assert main(["flags", "list", "--db", str(db)], monkeypatch) == 0
    assert b"d: unlearn 2, investigate 1, ok 0" in capsysbinary.readouterr().out


def test_cli_export_writes_the_format_its_file_name_ends_in_and_overwrites_only_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outside check: ``-o out.json`` and ``-o out.parquet`` both got CSV without a word, and ``-o demo.yaml``
    overwrote a config."""
    db = tmp_path / "flags.sqlite"
    FlagStore(db).flag("d", ["1", "2"], "unlearn")
    base = ["flags", "export", "--db", str(db)]
    assert main([*base, "-o", str(tmp_path / "out.json")], monkeypatch) == 0
    assert sorted(r["sample_id"] for r in json.loads((tmp_path / "out.json").read_text())) == ["1", "2"]
    assert main([*base, "-o", str(tmp_path / "out.parquet")], monkeypatch) == 0
    assert sorted(pd.read_parquet(tmp_path / "out.parquet")["sample_id"]) == ["1", "2"]
    assert (
        main([*base, "-o", str(tmp_path / "out.json"), "--format", "csv"], monkeypatch) == 2
    )  # contradiction
    config = tmp_path / "demo.yaml"
    config.write_text("name: demo\n")
    assert main([*base, "-o", str(config)], monkeypatch) == 2
    assert config.read_text() == "name: demo\n"
    assert main([*base, "-o", str(tmp_path / "out.json")], monkeypatch) == 0  # an earlier export is replaced
    # a nightly job exporting to a name of its own replaces its own file, night after night (a review)
    for fmt in ("csv", "json", "parquet"):
        for _ in range(2):
            assert main([*base, "--format", fmt, "-o", str(tmp_path / f"flags-{fmt}.txt")], monkeypatch) == 0
    # an Excel name got CSV bytes without a word (an outside check); --format writes what it says under any name
    assert main([*base, "-o", str(tmp_path / "flags.xlsx")], monkeypatch) == 2
    assert not (tmp_path / "flags.xlsx").exists()
    (tmp_path / "empty.txt").touch()
    assert main([*base, "-o", str(tmp_path / "empty.txt")], monkeypatch) == 0
    # a file with an export's ending that holds something else is not overwritten either (a review)
    (tmp_path / "labels.csv").write_text("path,label\na.png,cat\n")
    (tmp_path / "notes.json").write_text('{"keep": true}')
    for kept in ("labels.csv", "notes.json"):
        before = (tmp_path / kept).read_text()
        assert main([*base, "-o", str(tmp_path / kept)], monkeypatch) == 2
        assert (tmp_path / kept).read_text() == before


@pytest.fixture
def read_only_mount(tmp_path: Path):
    """A read-only bind mount of a folder (needs root and mount rights; skipped elsewhere)."""
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    ok = subprocess.run(["mount", "--bind", str(src), str(ro)], capture_output=True).returncode == 0
    if (
        ok
        and subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], capture_output=True).returncode != 0
    ):
        subprocess.run(["umount", str(ro)], capture_output=True)
        ok = False
    if not ok:
        pytest.skip("cannot make a read-only bind mount here (needs root and mount rights)")
    try:
        yield src, ro
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


def test_a_reader_opens_a_wal_database_on_a_read_only_mount(read_only_mount) -> None:
    """SQLite cannot create a WAL database's shared-memory file on a read-only mount, so ``mode=ro`` alone
    fails there; the reader opens it as immutable, and refuses one whose write-ahead log is not empty."""
    src, ro = read_only_mount
    writer = FlagStore(src / "flags.sqlite")
    writer.flag("ds", ["1", "2"], "unlearn", "stamp")
    assert not (src / "flags.sqlite-shm").exists()  # the last connection closed: the log was checkpointed
    reader = FlagStore(ro / "flags.sqlite", read_only=True)
    assert sorted(f.sample_id for f in reader.current("ds")) == ["1", "2"]
    # A log left behind (a writer still open when the snapshot was taken): a clear error, not stale flags.
    (src / "flags.sqlite-wal").write_bytes(b"\0" * 32)
    with pytest.raises(DataError, match="write-ahead log"):
        FlagStore(ro / "flags.sqlite", read_only=True)


def test_a_reader_opens_a_closed_database_in_a_folder_it_cannot_write(tmp_path: Path) -> None:
    """An outside check: a read-only copy of a project (chmod -R a-w) whose database was closed cleanly
    could not be read at all (list, export, the dashboard), and the advice to use --read-only did not help."""
    writer = FlagStore(tmp_path / "ro" / "flags.sqlite")
    writer.flag("ds", ["1", "2"], "unlearn", "stamp")
    assert not (tmp_path / "ro" / "flags.sqlite-shm").exists()
    code = (
        "import sys; from spray.flags import FlagStore; "
        "print(len(FlagStore(sys.argv[1], read_only=True).current('ds')))"
    )
    cmd = [sys.executable, "-c", code, str(tmp_path / "ro" / "flags.sqlite")]
    if os.geteuid() == 0:  # root reads and writes anywhere: drop the capabilities that let it
        if shutil.which("setpriv") is None:
            pytest.skip("root without setpriv cannot be kept out of a folder")
        cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", *cmd]
    (tmp_path / "ro" / "flags.sqlite").chmod(0o444)
    (tmp_path / "ro").chmod(0o555)
    try:
        root = str(Path(__file__).resolve().parent.parent)
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": root}
        )
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert done.returncode == 0 and done.stdout.strip() == "2", done.stderr[-2000:]


def test_a_lockless_read_that_a_writer_overlapped_reads_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review: read as immutable (no SQLite locks) in a folder another user may write, a write meanwhile
    could give wrong rows, or an error read as a damaged database; the read is now refused, to be retried."""
    import spray.flags.store as store_module

    db = tmp_path / "flags.sqlite"
    FlagStore(db).flag("ds", ["1"], "unlearn")
    monkeypatch.setattr(
        store_module, "immutable_suffix", lambda path: "&immutable=1"
    )  # as in a closed folder
    reader = FlagStore(db, read_only=True)
    assert [f.sample_id for f in reader.current("ds")] == ["1"]  # nothing written meanwhile: read
    changed = pytest.raises(LockedError, match="written by someone else while it was read")
    with changed, reader._connect() as con:
        con.execute("SELECT COUNT(*) FROM events").fetchall()
        FlagStore(db).flag("ds", ["2"], "ok")  # another user's write in the middle of the read


def test_an_unflag_keeps_the_finding_it_was_made_from(store: FlagStore) -> None:
    """Found in an outside check: the dashboard's unflag events lost their cluster key."""
    store.flag("ds", ["a", "b"], "investigate", cluster_key="6/k8/c7")
    store.unflag("ds", ["a"], cluster_key="6/k8/c7")
    store.unflag("ds", ["b"])
    keys = {(e.sample_id, e.status): e.cluster_key for e in store.history("ds")}
    assert keys[("a", "unflag")] == "6/k8/c7" and keys[("b", "unflag")] is None
    assert store.current("ds") == []


def test_flagging_again_without_a_note_keeps_the_note(store: FlagStore) -> None:
    """An outside-in check flagged 120 samples with a note, then flagged overlapping findings again without
    one: the export showed every note empty. A note-less repeat of the same status now keeps the note."""
    store.flag("ds", ["a", "b"], "unlearn", "moving magenta sticker", cluster_key="3/k10/c7")
    store.flag("ds", ["b", "c"], "unlearn", cluster_key="3/k12/c8")
    now = {f.sample_id: f for f in store.current("ds")}
    assert now["b"].note == "moving magenta sticker" and now["b"].cluster_key == "3/k12/c8"
    assert now["a"].note == "moving magenta sticker" and now["c"].note == ""
    store.flag("ds", ["b"], "unlearn", "a new note")  # a note given replaces it
    assert {f.sample_id: f.note for f in store.current("ds")}["b"] == "a new note"
    store.flag("ds", ["a"], "ok")  # another status is another decision: its note is not carried over
    assert {f.sample_id: f.note for f in store.current("ds")}["a"] == ""
    store.unflag("ds", ["b"])
    store.flag("ds", ["b"], "unlearn")  # an unflag in between: flagged anew, without the old note
    assert {f.sample_id: f.note for f in store.current("ds")}["b"] == ""
    # The history shows what each action typed, never a note carried from an earlier one.
    notes = [(a.n_samples, a.note) for a in reversed(store.actions("ds"))]
    assert notes == [(2, "moving magenta sticker"), (2, ""), (1, "a new note"), (1, ""), (1, ""), (1, "")]

"""Flags bound to content: a flag records its sample's content hash, and a later run tells when the id
names another image (IDX records removed, a file replaced) instead of acting on it silently."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from spray.cli import main
from spray.data import write_idx
from spray.flags import Flag, FlagStore, bind_flags
from spray.flags.content import describe
from spray.runs.publish import list_runs
from spray.runs.reader import RunReader
from tests.faults.cli import assert_clean_failure, run_main
from tests.test_correct_world import DATASET, World, build_world


def _flag(sample_id: str, content_hash: str | None) -> Flag:
    return Flag(DATASET, sample_id, "unlearn", "", None, None, None, None, "t", "a", 1, content_hash)


def test_a_flagged_file_the_run_could_not_read_is_not_called_deleted(tmp_path: Path) -> None:
    """An outside check truncated a flagged image: the run skipped it, and the message called it a deleted
    file and said to unset its flag, which a restored file would have needed again."""
    from tests.runs.builders import make_report, write_published

    report, stage = make_report(n_per_class=4)  # its run skipped cat/broken.png as a corrupt image
    run = write_published(tmp_path / "runs", report, stage)
    b = bind_flags([_flag("cat/broken.png", "h-old"), _flag("cat/gone.png", "h-gone")], {"0": "h-b"})
    text = describe(b, str(run))
    assert (
        "1 flagged sample ids could not be read in this run and were skipped (cat/broken.png: corrupt" in text
    )
    assert "their flags stay; restore or repair the files" in text
    assert "deleted files: cat/gone.png)" in text and "unset --run" in text  # the deleted one only


def test_a_flag_set_later_on_a_run_this_folder_lacks_is_not_called_deleted(tmp_path: Path) -> None:
    """An outside check synced a colleague's flag database (new images audited and flagged there) into a
    project without that run: its flags were called deleted files, with the advice to unset them."""
    from dataclasses import replace

    from tests.runs.builders import make_report, write_published

    report, stage = make_report(n_per_class=4)
    run = write_published(tmp_path / "runs", report, stage)
    later = replace(_flag("cat/new.png", "h-new"), run_id="f" * 64, flagged_at="2999-01-01T00:00:00.000000Z")
    pruned = replace(
        _flag("cat/old.png", "h-old"), run_id="e" * 64, flagged_at="2000-01-01T00:00:00.000000Z", event_id=2
    )
    held = replace(later, sample_id="cat/held.png", run_id=report.run_id, event_id=3)  # its run is here
    binding = bind_flags([later, pruned, held], {"0": "h-b"})
    # a review: through runs/latest (what `spray flags check --run runs/latest` passes) it read "deleted" again
    for where in (run, run.parent / "latest"):
        text = describe(binding, str(where))
        said = (
            "1 flag names sample ids this run does not hold (cat/new.png) and was set after it, on run ffff"
        )
        assert said in text
        assert "deleted files: cat/old.png, cat/held.png)" in text


def test_bind_flags_sorts_each_kind() -> None:
    run = {"0": "h-b", "1": "h-c", "2": "h-x", "3": "h-d", "4": "h-d"}
    flags = [
        _flag("1", "h-c"),  # same content
        _flag("0", "h-a"),  # now other content; h-a nowhere → replaced
        _flag("2", "h-b"),  # its image is now under "0" → moved
        _flag("9", "h-c"),  # the id is gone, its image is under "1" → moved
        _flag("8", "h-z"),  # gone with its content (a deleted file): not wrong
        _flag("7", "h-d"),  # gone, its content under two ids: the flag acts on no image → gone
        _flag("3", None),  # set before flags recorded content
        _flag("6", None),  # set before flags recorded content, and its id is gone: a deleted file
    ]
    b = bind_flags(flags, run)
    assert [f.sample_id for f in b.bound] == ["1", "3"] and b.unchecked == 1
    kinds = {c.flag.sample_id: c.kind for c in b.changed}
    assert kinds == {"0": "replaced", "2": "moved", "9": "moved", "8": "gone", "7": "gone", "6": "gone"}
    assert {c.flag.sample_id: c.found_at for c in b.of_kind("moved")} == {"2": ["0"], "9": ["1"]}
    assert sorted(c.flag.sample_id for c in b.wrong) == ["0", "2", "9"]
    text = describe(b, "runs/latest")
    assert "2 → 0" in text and "spray flags rebind --run runs/latest" in text and "spray flags unset" in text
    # flags on deleted files are named too: they act on no image, yet an export would hand them out
    assert "2 flags name sample ids that are no longer in the run, and their content is not found" in text
    assert "8, 6" in text
    # one whose content is now under two ids is not called deleted: both copies are named
    assert (
        "1 flags name sample ids that are no longer in the run, and their content is now under several ids"
        in text
    )
    assert "7 → 3 and 4" in text
    assert describe(bind_flags(flags[:1], run), "r") == ""
    # the suggested commands are pasted into a shell: a path with a space stays one argument
    assert "spray flags rebind --run '/w s/runs dir/latest'" in describe(b, "/w s/runs dir/latest")


def test_rebind_moves_swaps_and_never_lets_one_flag_overwrite_another() -> None:
    from spray.flags.content import plan_moves

    run = {"b": "h-a", "a": "h-b", "c": "h-c", "n": "h-x", "t": "h-t"}
    flags = [
        _flag("a", "h-a"),  # a and b swapped names: both flags move
        _flag("b", "h-b"),
        _flag("old", "h-x"),  # its image is now "n", which has a newer flag of its own
        _flag("n", "h-x"),
        _flag("d1", "h-t"),  # two flagged copies of one image, merged into "t": neither wins
        _flag("d2", "h-t"),
    ]
    moves, clashes, _ = plan_moves(bind_flags(flags, run))
    assert sorted((f.sample_id, to) for f, to in moves) == [("a", "b"), ("b", "a")]
    assert sorted(c.flag.sample_id for c in clashes) == ["d1", "d2", "old"]


def test_a_newer_database_is_read_but_not_written(tmp_path: Path) -> None:
    """An outside check: every spray wrote into a flag database of a newer schema without a word, leaving
    flags without what the newer spray records for each (content, class)."""
    from spray.errors import DataError

    db = tmp_path / "flags.sqlite"
    FlagStore(db).flag("ds", ["1"], "unlearn")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    assert [f.sample_id for f in FlagStore(db, read_only=True).current("ds")] == ["1"]
    with pytest.raises(DataError, match="schema 99, written by a newer spray"):
        FlagStore(db).flag("ds", ["2"], "unlearn")
    assert [f.sample_id for f in FlagStore(db, read_only=True).current("ds")] == ["1"]


def test_a_schema_1_database_is_upgraded_without_losing_a_flag(tmp_path: Path) -> None:
    db = tmp_path / "flags.sqlite"
    con = sqlite3.connect(db)
    con.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, action_id TEXT NOT NULL,
            dataset TEXT NOT NULL, sample_id TEXT NOT NULL, status TEXT NOT NULL, note TEXT NOT NULL DEFAULT '',
            run_id TEXT, cluster_key TEXT, source TEXT, author TEXT, created_at TEXT NOT NULL);
        CREATE VIEW current AS SELECT e.dataset, e.sample_id, e.status, e.note, e.run_id, e.cluster_key,
            e.source, e.author, e.created_at AS flagged_at, e.action_id, e.id AS event_id FROM events e
            WHERE e.id = (SELECT MAX(id) FROM events x WHERE x.dataset = e.dataset AND x.sample_id = e.sample_id)
              AND e.status != 'unflag';
        INSERT INTO meta VALUES ('schema_version', '1');
        INSERT INTO events (action_id, dataset, sample_id, status, note, created_at)
            VALUES ('a1', 'ds', '17', 'unlearn', 'old note', '2026-11-01T00:00:00Z');
        """
    )
    con.close()
    # read-only: read as it is, never changed
    (old,) = FlagStore(db, read_only=True).current("ds")
    assert (old.sample_id, old.note, old.content_hash) == ("17", "old note", None)
    # an outside check: flagged again without a note by the old spray, the sample's note read '' read-only and
    # 'old note' once the file was upgraded (by any write, or by opening the dashboard): read-only agrees now
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO events (action_id, dataset, sample_id, status, note, created_at) "
            "VALUES ('a2', 'ds', '17', 'unlearn', '', '2026-11-02T00:00:00Z')"
        )
    assert [f.note for f in FlagStore(db, read_only=True).current("ds")] == ["old note"]
    assert FlagStore(db, read_only=True).export_frame("ds")["note"].tolist() == ["old note"]
    assert "content_hash" not in {r[1] for r in sqlite3.connect(db).execute("PRAGMA table_info(events)")}
    # writable: one column added, the flag kept, new flags record their content
    store = FlagStore(db)
    store.flag("ds", ["18"], "investigate", content_hashes={"18": "h18"})
    got = {f.sample_id: (f.status, f.note, f.content_hash) for f in store.current("ds")}
    assert got == {"17": ("unlearn", "old note", None), "18": ("investigate", "", "h18")}
    assert sqlite3.connect(db).execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
        "4",
    )
    store.flag("ds", ["19"], "unlearn", classes={"19": (7, "seven")})  # schema 4: the class is recorded
    got = {f.sample_id: (f.class_index, f.class_name) for f in store.current("ds")}
    assert got == {"17": (None, None), "18": (None, None), "19": (7, "seven")}
    store.flag("ds", ["17"], "unlearn")  # schema 3's view: a note-less repeat keeps the note
    assert {f.sample_id: f.note for f in store.current("ds")}["17"] == "old note"
    assert {"content_hash", "class_name"} <= set(store.export_frame("ds", status=None).columns)


@pytest.fixture(scope="module")
def flagged(tmp_path_factory: pytest.TempPathFactory) -> World:
    """A tiny IDX world, audited, its planted samples flagged with `spray flags set`."""
    world = build_world(tmp_path_factory.mktemp("content"), flag=False)
    assert main(["audit", "--config", str(world.config), "-q"]) == 0
    ids = ",".join(str(i) for i in np.flatnonzero(world.planted))
    assert main(["flags", "set", "--runs-dir", str(world.runs_dir), "--sample-ids", ids]) == 0
    return world


def _audit_again(world: World, images: np.ndarray, labels: np.ndarray) -> None:
    write_idx(world.root / "images.idx", images)
    write_idx(world.root / "labels.idx", labels.astype(np.uint8))
    assert main(["audit", "--config", str(world.config), "-q"]) == 0


def test_removed_idx_records_are_caught_and_the_flags_follow_their_images(
    flagged: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world, runs = flagged, str(flagged.runs_dir)
    planted = np.flatnonzero(world.planted)
    flags = FlagStore(world.flags_db).current(DATASET)
    reader = RunReader.open(world.runs_dir / "latest")
    assert {f.content_hash for f in flags} <= set((reader.content_hashes() or {}).values())
    assert run_main(["flags", "check", "--runs-dir", runs], capsys).code == 0
    # Remove the first record (unflagged): every later id now names the image one record further on.
    assert planted.min() > 0
    capsys.readouterr()
    _audit_again(world, world.images[1:], world.labels[1:])
    assert "flagged images are now under another sample id" in capsys.readouterr().err  # the audit warns
    assert main(["audit", "--config", str(world.config), "-q"]) == 0  # up to date: the run is reused
    assert "flagged images are now under another sample id" in capsys.readouterr().err  # and still warns
    res = run_main(["flags", "check", "--runs-dir", runs], capsys)
    assert res.code == 1 and f"{len(planted)} moved to another id" in res.output
    # spray correct refuses to treat the images now under the flagged ids as the artifact group
    res = run_main(["correct", "--config", str(world.config), "--method", "pclarc"], capsys)
    assert_clean_failure(res, 1, "now name other content", "spray flags rebind")
    # the nightly job's status line carries it too (here an up-to-date run: flags change between runs)
    res = run_main(["run", "--config", str(world.config)], capsys)
    status = json.loads(res.stdout.strip().splitlines()[-1])
    # exit 10 once when the hand audit's run has clusters no nightly job reported yet, then 0
    assert res.code == 10 and status["status"] == "up_to_date"
    assert "flagged images are now under another sample id" in status["flag_warnings"][0]
    res = run_main(["run", "--config", str(world.config)], capsys)
    status = json.loads(res.stdout.strip().splitlines()[-1])
    assert res.code == 0 and status["status"] == "up_to_date"
    assert "flagged images are now under another sample id" in status["flag_warnings"][0]
    # the database the config names (correction.flags_db), as the audit and spray correct read it
    other = yaml.safe_load(world.config.read_text())
    other["correction"]["flags_db"] = str(world.root / "other-flags.sqlite")
    FlagStore(world.root / "other-flags.sqlite").flag(DATASET, ["0"], "investigate")
    (world.root / "other.yaml").write_text(yaml.safe_dump(other))
    res = run_main(["run", "--config", str(world.root / "other.yaml")], capsys)
    assert "flag_warnings" not in json.loads(res.stdout.strip().splitlines()[-1])
    res = run_main(["flags", "export", "--runs-dir", runs, "-o", str(world.root / "unlearn.csv")], capsys)
    assert res.code == 0 and f"left out of the export: {len(planted)} flags" in res.output
    assert pd.read_csv(world.root / "unlearn.csv").empty  # none is handed to unlearning for the wrong image
    argv = ["flags", "export", "--runs-dir", runs, "-o", str(world.root / "strict.csv"), "--fail-if-left-out"]
    assert run_main(argv, capsys).code == 1 and (world.root / "strict.csv").is_file()  # a cron job notices
    argv = ["flags", "export", "--runs-dir", runs, "-o", str(world.root / "ok.csv"), "--status", "ok"]
    assert run_main([*argv, "--fail-if-left-out"], capsys).code == 0  # none of the flags it asked for is out
    argv = [
        "flags",
        "export",
        "--db",
        str(world.flags_db),
        "-o",
        str(world.root / "x.csv"),
        "--fail-if-left-out",
    ]
    assert_clean_failure(run_main(argv, capsys), 2, "--fail-if-left-out needs --runs-dir")
    res = run_main(
        ["flags", "export", "--db", str(world.flags_db), "-o", str(world.root / "all.csv")], capsys
    )
    assert "exported without checking" in res.output and len(pd.read_csv(world.root / "all.csv")) == len(
        planted
    )
    older = list_runs(world.runs_dir)[1]  # the run before the records were removed
    # flagging from it works (its ids are what was shown), with a warning that the data moved on since
    argv = [
        "flags",
        "set",
        "--run",
        str(older),
        "--db",
        str(world.root / "scratch.sqlite"),
        "--sample-ids",
        "3",
    ]
    res = run_main(argv, capsys)
    assert (
        res.code == 0
        and "is not the newest run of this audit" in res.output
        and "spray flags check" in res.output
    )
    res = run_main(["flags", "rebind", "--run", str(older)], capsys)
    assert_clean_failure(res, 2, "is not the newest run of this audit", "spray flags rebind --run")
    # A newer decision on one image's new id (set on the new run) is never overwritten by the old id's flag.
    first, new_id = int(planted.min()), str(int(planted.min()) - 1)
    assert (
        run_main(["flags", "set", "--runs-dir", runs, "--sample-ids", new_id, "--status", "ok"], capsys).code
        == 0
    )
    res = run_main(["flags", "rebind", "--runs-dir", runs], capsys)
    assert res.code == 1 and f"moved {len(planted) - 1} flags" in res.output
    assert "1 flags not moved" in res.output and f"{first} (unlearn) → {new_id} (ok)" in res.output
    current = {f.sample_id: f.status for f in FlagStore(world.flags_db).current(DATASET)}
    assert current[new_id] == "ok" and current[str(first)] == "unlearn"
    # the person keeps one decision: the old id's flag is dropped, and nothing is left to move
    assert run_main(["flags", "unset", "--runs-dir", runs, "--sample-ids", str(first)], capsys).code == 0
    assert run_main(["flags", "set", "--runs-dir", runs, "--sample-ids", new_id], capsys).code == 0
    now = sorted(int(f.sample_id) for f in FlagStore(world.flags_db).current(DATASET, "unlearn"))
    assert now == sorted(planted - 1)
    assert run_main(["flags", "check", "--runs-dir", runs], capsys).code == 0


def test_an_image_replaced_in_place_keeps_no_silent_flag(
    flagged: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world, runs = flagged, str(flagged.runs_dir)
    images = world.images[1:].copy()  # the state the test above left
    flag = FlagStore(world.flags_db).current(DATASET, "unlearn")[0]
    target = int(flag.sample_id)
    # a note about the old content (an outside check: re-flagging carried "stamp" onto an unstamped image)
    FlagStore(world.flags_db).flag(DATASET, [flag.sample_id], "unlearn", "stamp", content_hashes={flag.sample_id: flag.content_hash})  # fmt: skip
    images[target] = 255 - images[target]
    _audit_again(world, images, world.labels[1:])
    res = run_main(["flags", "check", "--runs-dir", runs], capsys)
    assert res.code == 1 and "1 on ids that now name other content" in res.output
    newest = (flagged.runs_dir / "latest").resolve()  # the folder's only dataset: its newest run, by name
    assert f"spray flags unset --run {newest} --sample-ids ID" in res.output
    # keeping the flag on the new content is a decision, recorded with the new content
    res = run_main(["flags", "set", "--runs-dir", runs, "--sample-ids", str(target)], capsys)
    assert res.code == 0
    assert f"1 of them keep a note written when their file held other content (e.g. {target})" in res.output
    res = run_main(
        ["flags", "set", "--runs-dir", runs, "--sample-ids", str(target), "--note", "inverted"], capsys
    )
    assert res.code == 0 and "keep a note" not in res.output
    assert run_main(["flags", "check", "--runs-dir", runs], capsys).code == 0
    assert run_main(["flags", "unset", "--runs-dir", runs, "--sample-ids", str(target)], capsys).code == 0
    assert str(target) not in {f.sample_id for f in FlagStore(world.flags_db).current(DATASET)}
    # a flag on a sample no longer in the run (a deleted file) can be dropped too; an unknown id cannot
    FlagStore(world.flags_db).flag(DATASET, ["99999"], "unlearn")
    assert run_main(["flags", "unset", "--runs-dir", runs, "--sample-ids", "99999"], capsys).code == 0
    assert "99999" not in {f.sample_id for f in FlagStore(world.flags_db).current(DATASET)}
    assert run_main(["flags", "unset", "--runs-dir", runs, "--sample-ids", "88888"], capsys).code == 2


def test_flags_left_under_an_old_dataset_key_are_pointed_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """A data folder moved without data.name gets a new key (its path): the old key's flags name the same
    images, so the audit says how to keep them instead of showing a dataset without flags."""
    import logging
    import shutil

    from spray.audit import audit
    from spray.config import load_config
    from tests.runs.builders import tiny_config

    cfg = tiny_config(tmp_path)
    first = audit(cfg, progress=False)
    old_key = cfg.dataset_key()
    hashes = RunReader.open(first.run_dir).content_hashes() or {}
    FlagStore(cfg.flags_db_path()).flag(old_key, ["cat/003.png"], "unlearn", content_hashes=hashes)
    shutil.move(tmp_path / "imgs", tmp_path / "moved")
    raw = yaml.safe_load((tmp_path / "tiny.yaml").read_text())
    raw["data"]["path"] = str(tmp_path / "moved")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(raw))
    moved = load_config(tmp_path / "tiny.yaml")
    assert moved.dataset_key() != old_key
    with caplog.at_level(logging.WARNING, logger="spray"):
        audit(moved, progress=False)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert f"1 of 1 under {old_key!r}" in said and "set data.name" in said
    res = run_main(["flags", "check", "--runs-dir", str(moved.output.runs_dir)], capsys)
    assert f"1 of 1 under {old_key!r}" in res.output


def test_moves_onto_an_image_of_another_class_are_named() -> None:
    """An outside check: a flagged file moved from ``0 two/`` to ``1 ten/`` kept its flag under the new
    label without a word; a flag set from a finding knows its class (its key's first part)."""
    from dataclasses import replace

    from spray.flags.content import class_changes

    moved = replace(_flag("0 two/a.png", "h"), cluster_key="0/k3/c1")
    stays = replace(_flag("0 two/b.png", "h2"), cluster_key="0/k3/c1")
    unknown = _flag("0 two/c.png", "h3")  # set by id: no class to compare
    labels = {"1 ten/a.png": 1, "0 two/b2.png": 0, "1 ten/c.png": 1}
    got = class_changes(
        [(moved, "1 ten/a.png"), (stays, "0 two/b2.png"), (unknown, "1 ten/c.png")], labels, ["two", "ten"]
    )
    assert got == ["0 two/a.png → 1 ten/a.png (flagged in class two, now labelled ten)"]


def test_a_flag_set_by_sample_id_knows_its_class() -> None:
    """A flag set by id (no finding) records its class: a move to another class is named, and the recorded
    class wins over a key's class index (which names another class once a class folder is added)."""
    from dataclasses import replace

    from spray.flags.content import class_changes

    by_id = replace(_flag("0 two/a.png", "h"), class_name="two")
    keyed = replace(_flag("0 two/b.png", "h2"), cluster_key="0/k3/c1", class_name="ten")
    labels = {"1 ten/a.png": 1, "1 ten/b.png": 1}
    got = class_changes([(by_id, "1 ten/a.png"), (keyed, "1 ten/b.png")], labels, ["two", "ten"])
    assert got == ["0 two/a.png → 1 ten/a.png (flagged in class two, now labelled ten)"]
    assert class_changes([(by_id, "0 two/a.png")], {"0 two/a.png": 1}, ["two", "ten"]) == [
        "0 two/a.png (flagged in class two, now labelled ten)"
    ]
    # a review: renamed classes (data.class_names) keep their labels, and an inserted class folder shifts the
    # labels but keeps the names; neither is a relabelled image
    recorded = replace(by_id, class_index=0)
    assert class_changes([(recorded, "0 two/a.png")], {"0 two/a.png": 0}, ["deux", "dix"]) == []
    assert class_changes([(recorded, "0 two/a.png")], {"0 two/a.png": 1}, ["aaa", "two"]) == []
    assert len(class_changes([(recorded, "0 two/a.png")], {"0 two/a.png": 1}, ["two", "ten"])) == 1


def test_a_relabelled_flagged_image_is_named_by_flags_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check: an IDX label fixed by an annotator keeps the image's id and bytes, so its flag stayed
    bound, and `spray flags check` said nothing although the flag was set in another class."""
    world = build_world(tmp_path, flag=False)
    assert main(["audit", "--config", str(world.config), "-q"]) == 0
    planted = np.flatnonzero(world.planted)
    ids = ",".join(str(i) for i in planted)
    assert main(["flags", "set", "--runs-dir", str(world.runs_dir), "--sample-ids", ids]) == 0
    names = RunReader.open(world.runs_dir / "latest").summary.class_names
    flags = FlagStore(world.flags_db).current(DATASET)
    assert {f.class_name for f in flags} == {names[int(world.labels[planted[0]])]}
    runs = str(world.runs_dir)
    assert "another label" not in run_main(["flags", "check", "--runs-dir", runs], capsys).output
    first = int(planted[0])
    was = int(world.labels[first])
    labels = world.labels.copy()
    labels[first] = (was + 1) % len(names)
    capsys.readouterr()
    _audit_again(world, world.images, labels)
    assert "1 flagged images now carry another label" in capsys.readouterr().err  # the audit warns
    res = run_main(["flags", "check", "--runs-dir", runs], capsys)
    assert res.code == 0 and "1 flagged images now carry another label" in res.output
    assert f"{first} (flagged in class {names[was]}, now labelled {names[labels[first]]})" in res.output
    exported = tmp_path / "unlearn.csv"
    res = run_main(["flags", "export", "--runs-dir", runs, "-o", str(exported)], capsys)
    assert res.code == 0
    assert set(pd.read_csv(exported, dtype=str)["class_name"]) == {names[was]}
    # an outside check: the export, the one command an unlearning job runs, kept the flagged-in class silently
    assert "1 flagged images now carry another label" in res.output
    assert "class_name and class_index are the class each was flagged in" in res.output


def test_flags_of_an_older_database_take_content_and_class_from_their_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check (an upgrade): flags set before the database recorded content and class (schemas
    1-3) were called "on their content" after IDX records were removed, and a relabelled image went
    unnamed; the run each flag was set on still held both. A run that kept no content (an older layout)
    of other data than the checked run's makes them unverified, never silently bound."""
    world = build_world(tmp_path / "w", flag=False)
    runs = str(world.runs_dir)
    assert main(["audit", "--config", str(world.config), "-q"]) == 0
    planted = np.flatnonzero(world.planted)
    ids = ",".join(str(i) for i in planted)
    assert main(["flags", "set", "--runs-dir", runs, "--sample-ids", ids]) == 0
    with sqlite3.connect(world.flags_db) as conn:  # as an older spray wrote them
        conn.execute("UPDATE events SET content_hash = NULL, class_name = NULL, class_index = NULL")
    origin = list_runs(world.runs_dir)[0]
    _audit_again(world, world.images[1:], world.labels[1:])
    res = run_main(["flags", "check", "--runs-dir", runs], capsys)
    assert res.code == 1 and f"{len(planted)} moved to another id" in res.output
    res = run_main(["correct", "--config", str(world.config), "--method", "pclarc"], capsys)
    assert_clean_failure(res, 1, "now name other content", "spray flags rebind")
    # an outside check: list counted such flags without a word
    res = run_main(["flags", "list", "--runs-dir", runs], capsys)
    assert f"unlearn {len(planted)}" in res.stdout
    assert (
        f"({len(planted)} of them no longer name the images they were set on in the newest run" in res.stdout
    )
    # the run of the flags kept no content hashes (an older run layout): unverified, not "on their content"
    table = pd.read_parquet(origin / "samples.parquet")
    table.drop(columns=["content_hash"]).to_parquet(origin / "samples.parquet")
    res = run_main(["flags", "check", "--runs-dir", runs], capsys)
    assert (
        res.code == 1
        and f"{len(planted)} set before flags recorded content on a run of other data" in res.output
    )
    assert "nothing tells which" in res.output
    res = run_main(["correct", "--config", str(world.config), "--method", "pclarc"], capsys)
    assert_clean_failure(res, 1, "were set before flags recorded the content", "whose data differ")
    res = run_main(["flags", "export", "--runs-dir", runs, "-o", str(tmp_path / "u.csv")], capsys)
    assert (
        f"left out of the export: {len(planted)} flags" in res.output
        and pd.read_csv(tmp_path / "u.csv").empty
    )


def test_an_older_flag_of_a_relabelled_image_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check (an upgrade): a flag without a recorded class (schema 3) gave no word when its image
    was relabelled; its class is the one its run gave the sample."""
    world = build_world(tmp_path / "w", flag=False)
    runs = str(world.runs_dir)
    assert main(["audit", "--config", str(world.config), "-q"]) == 0
    first = int(np.flatnonzero(world.planted)[0])
    assert main(["flags", "set", "--runs-dir", runs, "--sample-ids", str(first)]) == 0
    with sqlite3.connect(world.flags_db) as conn:
        conn.execute("UPDATE events SET class_name = NULL, class_index = NULL")
    labels = world.labels.copy()
    labels[first] = (labels[first] + 1) % (labels.max() + 1)
    _audit_again(world, world.images, labels)
    res = run_main(["flags", "check", "--runs-dir", runs], capsys)
    assert f"{first} (flagged in class" in res.output, res.output


def test_flags_with_content_are_not_refused_for_an_older_flags_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A review: one flag without a recorded content (its run since deleted) made spray correct refuse every
    flag, naming the run of the newer flags, whose data had only grown (no id moved; flags check exits 0)."""
    world = build_world(tmp_path / "w", flag=False)
    runs = str(world.runs_dir)
    assert main(["audit", "--config", str(world.config), "-q"]) == 0
    planted = np.flatnonzero(world.planted)
    assert main(["flags", "set", "--runs-dir", runs, "--sample-ids", ",".join(map(str, planted))]) == 0
    one = str(planted[0])
    with sqlite3.connect(world.flags_db) as conn:  # one flag of an older spray, set on a run since deleted
        conn.execute("UPDATE events SET content_hash = NULL, run_id = ? WHERE sample_id = ?", ("0" * 64, one))
    grown = np.concatenate([world.images, world.images[:1]]), np.concatenate([world.labels, world.labels[:1]])
    _audit_again(world, *grown)  # the data grew, no id moved
    assert run_main(["flags", "check", "--runs-dir", runs], capsys).code == 0
    res = run_main(["correct", "--config", str(world.config), "--method", "pclarc", "--no-reaudit"], capsys)
    assert "were set before flags recorded the content" not in res.output, res.output[-700:]


def test_an_export_says_which_flags_it_could_not_check(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An outside check: flags of an older database (no content recorded) set on a run since removed were
    exported without a word, while IDX ids shifted since named other images; the export now says so."""
    import logging

    from spray.flags.left_out import left_out_of_export
    from tests.runs.builders import make_report, write_published

    report, stage = make_report(n_per_class=4)
    run = write_published(tmp_path / "runs", report, stage)
    db = tmp_path / "runs" / "flags.sqlite"
    ids = list(stage.batch.sample_ids[:2])
    FlagStore(db).flag(report.dataset, ids, "unlearn", run_id="e" * 64)  # no content: an older spray's flags
    with caplog.at_level(logging.WARNING):
        assert left_out_of_export(db, run) == set()
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"2 flags of {report.dataset} were set before flags recorded") for m in said), (
        said
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        left_out_of_export(db, run, first=False)
    assert not caplog.records


def test_only_positional_ids_of_other_data_make_a_flag_unverified() -> None:
    """A review: an image folder's fingerprint changes with any new file or a chmod, but its ids are paths,
    which that cannot shift; only IDX (and factory) ids are positions."""
    from spray.flags.content import _Origin

    assert _Origin(None, {}, "before").other_data("after")
    assert not _Origin(None, {}, "before", positional=False).other_data("after")
    assert not _Origin(None, {}, "same").other_data("same") and not _Origin(None, {}, None).other_data(
        "after"
    )


def test_a_flagged_file_moved_into_another_class_folder_is_named(tmp_path: Path) -> None:
    """An outside check: a flagged file moved into another class folder got only "now under another sample id
    ... rebind moves their flags", without a word that the image changed class (an IDX relabel got one)."""
    from spray.flags.content import ChangedFlag, relabelled
    from tests.runs.builders import make_report, write_published

    report, stage = make_report()
    run = write_published(tmp_path / "runs", report, stage)
    dog = next(s for s in stage.batch.sample_ids if s.startswith("dog/"))
    old = Flag(DATASET, "cat/gone.png", "unlearn", "", None, None, None, None, "t", "a", 1, "h-x", "cat", 0)
    moved = ChangedFlag(old, None, [dog])
    assert relabelled([], run, [moved]) == [f"cat/gone.png → {dog} (flagged in class cat, now labelled dog)"]
    assert relabelled([], run) == []

"""``spray flags set``: flagging a published run's finding from the command line, as the dashboard does."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest

from spray.cli import main
from spray.flags import FlagStore
from spray.runs.reader import RunReader
from tests.faults.cli import assert_clean_failure, run_main
from tests.test_correct_world import DATASET, World, build_world


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> World:
    world = build_world(tmp_path_factory.mktemp("flagset"), flag=False)
    assert main(["audit", "--config", str(world.config), "-q"]) == 0
    return world


def test_flags_set_flags_a_findings_members(
    audited: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPRAY_AUTHOR", "alice")
    reader = RunReader.open(audited.runs_dir / "latest")
    top = reader.findings()[0]
    res = run_main(["flags", "set", "--runs-dir", str(audited.runs_dir), "--finding", top.key], capsys)
    assert res.code == 0 and f"flagged {len(top.member_ids)} samples" in res.output
    flags = FlagStore(audited.runs_dir / "flags.sqlite").current(DATASET, "unlearn")
    assert sorted(f.sample_id for f in flags) == sorted(str(i) for i in top.member_ids)
    assert {f.cluster_key for f in flags} == {top.key}
    assert {f.author for f in flags} == {"alice"}  # $SPRAY_AUTHOR, as the dashboard records it
    # single samples, into a database named on the command line
    db = audited.root / "other.sqlite"
    some = [str(i) for i in top.member_ids[:2]]
    argv = ["flags", "set", "--run", str(audited.runs_dir / "latest"), "--db", str(db), "--status", "ok"]
    assert run_main([*argv, "--sample-ids", ",".join(some)], capsys).code == 0
    assert sorted(f.sample_id for f in FlagStore(db).current(DATASET, "ok")) == sorted(some)


def test_flags_set_bad_input(audited: World, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    base = ["flags", "set", "--runs-dir", str(audited.runs_dir), "--db", str(tmp_path / "f.sqlite")]
    assert_clean_failure(
        run_main([*base, "--finding", "9/k99/c7"], capsys), 2, "No finding '9/k99/c7'", "top findings"
    )
    assert_clean_failure(run_main([*base, "--sample-ids", "nope,0"], capsys), 2, "not in", "nope")
    assert_clean_failure(run_main(base, capsys), 2, "--finding KEY or --sample-ids")
    assert_clean_failure(run_main(["flags", "set", "--finding", "1/k2/c0"], capsys), 2, "--run RUN_FOLDER")
    assert not (tmp_path / "f.sqlite").exists()


def test_flags_set_finds_run_names_and_run_id_prefixes_in_the_runs_folder(
    audited: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An outside check: ``--runs-dir runs --run <folder name or run-id prefix>`` failed with 'summary.json:
    missing: not a run folder' (the name was read against the current folder), while ``spray correct
    --source-run`` takes both."""
    run = (audited.runs_dir / "latest").resolve()
    run_id = RunReader.open(run).summary.run_id
    sid = RunReader.open(run).sample_ids()[0]
    for given in (run.name, run_id[:10]):
        db = tmp_path / f"{given}.sqlite"
        argv = ["flags", "set", "--runs-dir", str(audited.runs_dir), "--run", given, "--db", str(db)]
        res = run_main([*argv, "--sample-ids", sid], capsys)
        assert res.code == 0, res.output
        assert [f.run_id for f in FlagStore(db).current(DATASET)] == [run_id]
    res = run_main(
        ["flags", "set", "--runs-dir", str(audited.runs_dir), "--run", "nosuchrun", "--sample-ids", sid],
        capsys,
    )
    assert_clean_failure(res, 2, "neither a run folder nor the name or run id of a run in")
    # an outside check: a run's summary.json given as --run was read as a folder ("summary.json/summary.json")
    res = run_main(["flags", "set", "--run", str(run / "summary.json"), "--sample-ids", sid], capsys)
    assert_clean_failure(res, 2, "is a file: --run takes a run's folder", f"({run})")


def test_options_that_would_be_ignored_are_refused(
    audited: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An outside check: ``--with-carriers`` with ``--sample-ids`` and ``--dataset`` with ``--run`` were accepted
    and ignored."""
    run = str((audited.runs_dir / "latest").resolve())
    sid = RunReader.open(run).sample_ids()[0]
    db = tmp_path / "f.sqlite"
    base = ["flags", "set", "--db", str(db), "--run", run, "--sample-ids", sid]
    assert_clean_failure(run_main([*base, "--with-carriers"], capsys), 2, "give it with --finding")
    assert_clean_failure(run_main([*base, "--dataset", DATASET], capsys), 2, "give one of them")
    assert not db.exists()


def test_flags_set_takes_the_reports_class_and_cluster_columns(
    audited: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The audit's table shows class and cluster (``dog``, ``k2/c0``): either form names the finding."""
    from spray.report import cluster_label

    reader = RunReader.open(audited.runs_dir / "latest")
    findings = reader.summary.findings
    top = findings[0]
    db = tmp_path / "f.sqlite"
    base = ["flags", "set", "--runs-dir", str(audited.runs_dir), "--db", str(db)]
    shown = f"{top.class_name}/{cluster_label(top)}"
    assert run_main([*base, "--finding", shown], capsys).code == 0
    assert {f.cluster_key for f in FlagStore(db).current(DATASET, "unlearn")} == {top.key}
    # A cluster column that several classes share is ambiguous: the message names each with its class.
    labels = Counter(cluster_label(f) for f in findings)
    shared, count = labels.most_common(1)[0]
    assert count > 1, "the fixture run should have a cluster label in several classes"
    same = [f for f in findings if cluster_label(f) == shared]
    res = run_main([*base, "--finding", shared], capsys)
    assert_clean_failure(res, 2, "Several findings", *(f"{f.key} ({f.class_name})" for f in same))


def test_every_flags_action_takes_flags_db_as_dashboard_and_correct_do(
    audited: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``--flags-db`` (the name of spray dashboard, correct and export fiftyone) is ``--db`` here too."""
    db = tmp_path / "named.sqlite"
    run = ["--run", str(audited.runs_dir / "latest"), "--flags-db", str(db)]
    ids = [str(i) for i in RunReader.open(audited.runs_dir / "latest").findings()[0].member_ids[:3]]
    assert run_main(["flags", "set", *run, "--sample-ids", ",".join(ids)], capsys).code == 0
    assert sorted(f.sample_id for f in FlagStore(db).current(DATASET, "unlearn")) == sorted(ids)
    assert f"{DATASET}: unlearn 3," in run_main(["flags", "list", "--flags-db", str(db)], capsys).stdout
    exported = run_main(["flags", "export", "--flags-db", str(db), "--format", "json"], capsys).stdout
    assert all(f'"{i}"' in exported for i in ids)
    assert f"({db}) against" in run_main(["flags", "check", *run], capsys).stdout
    assert (
        f"moved 0 flags of {DATASET} to their content's ids in {db}"
        in run_main(["flags", "rebind", *run], capsys).stdout
    )
    assert run_main(["flags", "unset", *run, "--sample-ids", ids[0]], capsys).code == 0
    assert len(FlagStore(db).current(DATASET, "unlearn")) == 2
    # Samples without a flag are not counted as removed, and leave no action in the history.
    history = len(FlagStore(db).history(DATASET))
    res = run_main(["flags", "unset", *run, "--sample-ids", ids[0]], capsys)
    assert (
        res.code == 0
        and "unflagged 0 samples" in res.stdout
        and "1 of the given samples had no flag" in res.stdout
    )
    assert len(FlagStore(db).history(DATASET)) == history
    # A dataset key the database does not hold is an error naming the ones it does, not an empty export.
    res = run_main(["flags", "export", "--flags-db", str(db), "--dataset", "/tmp/typo"], capsys)
    assert_clean_failure(res, 2, "'/tmp/typo'", f"its keys: {DATASET}")
    for action in ("set", "export", "list", "unset", "check", "rebind"):
        assert "--flags-db PATH" in run_main(["flags", action, "--help"], capsys).stdout


def test_flags_check_before_anything_was_flagged_is_not_an_error(
    audited: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An outside check: `spray flags check` exited 2 when no flag database existed yet (a CI step read it
    as a broken job); a --db that does not exist is still a typo."""
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(audited.runs_dir, runs, symlinks=True, ignore=shutil.ignore_patterns("flags.sqlite*"))
    res = run_main(["flags", "check", "--runs-dir", str(runs)], capsys)
    assert res.code == 0 and "0 flags on their content" in res.stdout, res.output
    assert not (runs / "flags.sqlite").exists()  # checking creates nothing
    res = run_main(["flags", "check", "--runs-dir", str(runs), "--db", str(tmp_path / "typo.sqlite")], capsys)
    assert res.code == 2


def test_a_missing_latest_link_says_to_give_the_run(
    audited: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "latest").symlink_to(runs / "gone")
    res = run_main(["flags", "check", "--runs-dir", str(runs)], capsys)
    assert_clean_failure(res, 2, "holds no readable run", "--run RUN_FOLDER")


def test_sample_ids_from_a_file_are_taken_exactly_and_the_run_is_named(
    audited: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--sample-ids-file: one id per line, commas and spaces kept (an image named 'a,b.png' is one id)."""
    db = tmp_path / "f.sqlite"
    base = ["flags", "set", "--runs-dir", str(audited.runs_dir), "--db", str(db)]
    ids = tmp_path / "ids.txt"
    ids.write_text("0\n1\n\n")
    res = run_main([*base, "--sample-ids-file", str(ids)], capsys)
    run_name = (audited.runs_dir / "latest").resolve().name
    assert res.code == 0 and "flagged 2 samples" in res.output and f"(run {run_name})" in res.output
    assert sorted(f.sample_id for f in FlagStore(db).current(DATASET)) == ["0", "1"]
    ids.write_text("0\nwith,comma.png\n")
    assert_clean_failure(run_main([*base, "--sample-ids-file", str(ids)], capsys), 2, "'with,comma.png'")
    assert_clean_failure(
        run_main([*base, "--sample-ids-file", str(tmp_path / "none.txt")], capsys), 2, "cannot read it"
    )
    unset = ["flags", "unset", "--runs-dir", str(audited.runs_dir), "--db", str(db)]
    ids.write_text("1\n")
    assert run_main([*unset, "--sample-ids-file", str(ids)], capsys).code == 0
    assert [f.sample_id for f in FlagStore(db).current(DATASET)] == ["0"]
    # an outside check: a byte-order mark (a file saved by a Windows editor) made the first id unknown, and
    # a repeated id was counted twice ("flagged 3 samples", 2 stored)
    ids.write_bytes("\ufeff2\r\n3\r\n".encode())
    res = run_main([*base, "--sample-ids-file", str(ids)], capsys)
    assert res.code == 0 and "flagged 2 samples" in res.output
    res = run_main([*base, "--sample-ids", "4,4,5"], capsys)
    assert res.code == 0 and "flagged 2 samples" in res.output
    assert sorted(f.sample_id for f in FlagStore(db).current(DATASET)) == ["0", "2", "3", "4", "5"]


def test_flags_moved_to_another_finding_are_said_and_a_finding_can_be_unflagged(
    audited: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Found in an outside check: flagging a second, overlapping finding moved the first one's flags to it
    in silence, and a finding could be flagged in one command but unflagged only id by id."""
    reader = RunReader.open(audited.runs_dir / "latest")
    first = reader.findings()[0]
    # another finding of the same class sharing members with the first (nested clusters across k)
    second = next(
        f
        for f in reader.findings()
        if f.key != first.key
        and f.class_index == first.class_index
        and set(f.member_ids) & set(first.member_ids)
    )
    shared = set(first.member_ids) & set(second.member_ids)
    base = ["flags", "set", "--runs-dir", str(audited.runs_dir), "--db", str(tmp_path / "f.sqlite")]
    assert run_main([*base, "--finding", first.key], capsys).code == 0
    res = run_main([*base, "--finding", second.key], capsys)
    assert res.code == 0
    assert f"{len(shared)} of them were flagged from finding {first.key} before" in res.output
    assert f"now name {second.key}" in res.output
    # flagging the same finding again moves nothing and says nothing about it
    assert "before" not in run_main([*base, "--finding", second.key], capsys).output
    unset = ["flags", "unset", "--runs-dir", str(audited.runs_dir), "--db", str(tmp_path / "f.sqlite")]
    res = run_main([*unset, "--finding", second.key], capsys)
    assert res.code == 0 and f"unflagged {len(second.member_ids)} samples" in res.output
    left = {f.sample_id for f in FlagStore(tmp_path / "f.sqlite").current(DATASET)}
    assert left == {str(i) for i in first.member_ids} - {str(i) for i in second.member_ids}
    assert_clean_failure(run_main(unset, capsys), 2, "--finding KEY or --sample-ids")
    both = ["--finding", second.key, "--sample-ids", "0"]
    assert_clean_failure(run_main([*unset, *both], capsys), 2, "not both")
    assert_clean_failure(run_main([*base, *both], capsys), 2, "not both")


def test_a_shared_runs_folder_checks_each_datasets_flags_against_its_own_newest_run(
    audited: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An outside check: another audit's run became `latest`, and `flags export --runs-dir` then checked the
    flags against that run (or none), so a flag on a replaced image went to unlearning without a word."""
    import json
    import shutil

    runs = tmp_path / "runs"
    mine = (audited.runs_dir / "latest").resolve()
    shutil.copytree(mine, runs / mine.name)
    other = runs / ("29" + mine.name[2:])  # a newer run folder name, of another audit's dataset
    shutil.copytree(mine, other)
    summary = json.loads((other / "summary.json").read_text())
    summary["dataset"] = "other-data"
    (other / "summary.json").write_text(json.dumps(summary))
    (runs / "latest").symlink_to(other.name)
    db = runs / "flags.sqlite"
    store = FlagStore(db)
    # (quiet: the CLI's log handler of an earlier test still points at that test's closed output)
    logging.getLogger("spray.flags").disabled = True
    try:
        store.flag(DATASET, ["0"], "unlearn", content_hashes={"0": "a-replaced-image"})
        store.flag(DATASET, ["1"], "unlearn", content_hashes=RunReader.open(mine).content_hashes())
    finally:
        logging.getLogger("spray.flags").disabled = False

    res = run_main(["flags", "check", "--runs-dir", str(runs)], capsys)
    assert_clean_failure(res, 2, "holds runs of 2 datasets", "--dataset KEY")
    res = run_main(["flags", "check", "--runs-dir", str(runs), "--dataset", DATASET], capsys)
    assert res.code == 1 and "1 on ids that now name other content" in res.output
    out = tmp_path / "unlearn.csv"
    res = run_main(["flags", "export", "--runs-dir", str(runs), "--fail-if-left-out", "-o", str(out)], capsys)
    assert res.code == 1 and "left out of the export: 1 flags" in res.output
    assert [line.split(",")[1] for line in out.read_text().splitlines()[1:]] == ["1"]
    # a newer run that cannot be read is refused, not passed over for an older one (a review)
    damaged = runs / ("39" + mine.name[2:])
    shutil.copytree(mine, damaged)
    (damaged / "summary.json").write_text('{"run_id"')
    res = run_main(["flags", "check", "--runs-dir", str(runs), "--dataset", DATASET], capsys)
    assert_clean_failure(res, 2, f"{damaged.name} is newer than {mine.name} and cannot be read", "--run")


def test_ids_split_at_their_commas_point_to_the_ids_file() -> None:
    """``--sample-ids "2 cät, é/x.png"`` splits at the comma: the refusal says why and what to use."""
    import argparse
    from types import SimpleNamespace

    from spray.cli.flags import _sample_ids
    from spray.errors import ConfigError

    reader = SimpleNamespace(sample_ids=lambda: ["2 cät, é/x.png", "a.png"])
    args = argparse.Namespace(sample_ids="2 cät, é/x.png", sample_ids_file=None)
    with pytest.raises(ConfigError, match=r"hold a comma.*--sample-ids-file FILE"):
        _sample_ids(args, reader, Path("run"), "flag")  # type: ignore[arg-type]
    args = argparse.Namespace(sample_ids="b.png", sample_ids_file=None)
    with pytest.raises(ConfigError) as info:
        _sample_ids(args, SimpleNamespace(sample_ids=lambda: ["a.png"]), Path("run"), "flag")  # type: ignore[arg-type]
    assert "comma" not in str(info.value)


def test_a_key_naming_another_group_than_in_the_previous_run_is_said(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An outside check: finding keys are numbered per run; a key copied from yesterday's report into
    `flags set --finding` (the newest run by default) flagged another group without a word."""
    import numpy as np

    from spray.data.idx import write_idx

    world = build_world(tmp_path / "w", flag=False)
    assert main(["audit", "--config", str(world.config), "-q"]) == 0
    keep = np.arange(len(world.labels)) % 3 != 0  # a third of the records gone: the clusters move
    write_idx(world.root / "images.idx", world.images[keep])
    write_idx(world.root / "labels.idx", world.labels[keep].astype(np.uint8))
    assert main(["audit", "--config", str(world.config), "-q"]) == 0
    runs = str(world.runs_dir)
    # measured on this world: 0/k4/c1 shares none of its members with yesterday's 0/k4/c1, 1/k2/c0 most
    res = run_main(["flags", "set", "--runs-dir", runs, "--finding", "0/k4/c1"], capsys)
    assert res.code == 0 and "shares 0 of them with finding 0/k4/c1 of the previous run" in res.output
    assert "flag it with --run" in res.output
    res = run_main(["flags", "set", "--runs-dir", runs, "--finding", "1/k2/c0"], capsys)
    assert res.code == 0 and "keys are numbered per run" not in res.output


def test_a_reaudit_runs_default_flag_database_is_the_projects(tmp_path: Path) -> None:
    """An outside check: ``spray flags --run <a correction's re-audit run>`` wrote to a database inside the
    correction folder, where ``spray correct`` never looks."""
    import argparse

    from spray.cli.flags import _db_from_args, _run_db

    run = (
        tmp_path / "runs" / "corrections" / "20261206T100000Z-cccccccccccc" / "reaudit" / "20261206T110000Z-r"
    )
    got = _run_db(argparse.Namespace(db=None, run=str(run), runs_dir=None), run)
    assert got == tmp_path / "runs" / "flags.sqlite"
    ns = argparse.Namespace(db=None, runs_dir=str(run.parent))
    assert _db_from_args(ns) == tmp_path / "runs" / "flags.sqlite"
    plain = tmp_path / "runs" / "20261206T110000Z-r"
    assert (
        _run_db(argparse.Namespace(db=None, run=str(plain), runs_dir=None), plain)
        == plain.parent / "flags.sqlite"
    )

"""``spray correct --cluster-key`` takes a finding as the findings table shows it, as ``spray flags set
--finding`` does (one resolver): the key, the class and cluster columns, or the cluster column alone when
one class has it; an unknown or ambiguous name lists the findings with their keys."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from spray.cli import main
from spray.flags import FlagStore
from spray.records import ClusterFinding
from spray.report import cluster_label
from spray.runs.reader import RunReader
from tests.faults.cli import CliResult, assert_clean_failure, run_main
from tests.test_correct_world import DATASET, TARGET, World, build_world

NAMES = ["bar", "ring", "wide ring"]


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The tiny world with named classes and a published audit run; no flags yet."""
    world = build_world(tmp_path_factory.mktemp("clusterkey"), flag=False)
    raw = yaml.safe_load(world.config.read_text())
    raw["data"]["class_names"] = NAMES
    world.config.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["audit", "--config", str(world.config), "-q"]) == 0
    return world


def _findings(world: World) -> list[ClusterFinding]:
    return RunReader.open(world.runs_dir / "latest").summary.findings


def _correct(
    world: World, capsys: pytest.CaptureFixture[str], key: str, runs: Path | None = None
) -> CliResult:
    argv = ["correct", "--config", str(world.config), "-q", "--no-reaudit", "--method", "pclarc"]
    argv += ["--cluster-key", key] + (["--runs-dir", str(runs)] if runs is not None else [])
    return run_main(argv, capsys)


def _flag_as(world: World, finding: ClusterFinding) -> None:
    """Flag the planted samples as set from ``finding`` (the flags keep its key)."""
    ids = [str(i) for i in np.flatnonzero(world.planted)]
    FlagStore(world.flags_db).flag(DATASET, ids, "unlearn", cluster_key=finding.key)


def test_the_class_and_cluster_columns_select_the_findings_flags(
    audited: World, capsys: pytest.CaptureFixture[str]
) -> None:
    ring = [f for f in _findings(audited) if f.class_index == TARGET]
    assert len(ring) >= 2, "the fixture run should have several findings in the target class"
    flagged, other = ring[0], ring[1]
    _flag_as(audited, flagged)
    try:
        # Another finding of the class, named by its columns: its key, which holds no flags, is the one read.
        res = _correct(audited, capsys, f"ring/{cluster_label(other)}")
        # never flagged: a config error (exit 2, also with --if-flagged), which says to flag it first
        assert_clean_failure(res, 2, f"finding {other.key!r}", flagged.key, "flag its samples first")
        res = _correct(audited, capsys, f"ring/{cluster_label(flagged)}")
        assert res.code == 0, res.output
        assert "(pclarc) of class ring" in res.stdout
    finally:
        FlagStore(audited.flags_db).unflag(DATASET, [str(i) for i in np.flatnonzero(audited.planted)])


def test_unknown_and_ambiguous_names_list_the_findings(
    audited: World, capsys: pytest.CaptureFixture[str]
) -> None:
    findings = _findings(audited)
    res = _correct(audited, capsys, "ring/k99/c7")
    assert_clean_failure(res, 2, "No finding 'ring/k99/c7'", "top findings", findings[0].key)
    shared, count = Counter(cluster_label(f) for f in findings).most_common(1)[0]
    assert count > 1, "the fixture run should have a cluster label in several classes"
    same = [f for f in findings if cluster_label(f) == shared]
    res = _correct(audited, capsys, shared)
    assert_clean_failure(
        res, 2, "Several findings", "--cluster-key", *(f"{f.key} ({f.class_name})" for f in same)
    )
    assert "--finding" not in res.output


def test_a_name_needs_a_published_run_of_the_dataset(
    audited: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    empty = tmp_path / "runs"
    empty.mkdir()
    res = _correct(audited, capsys, "ring/k2/c0", runs=empty)
    assert_clean_failure(res, 2, "'ring/k2/c0'", "no published run of dataset", "6/k3/c2")


def test_fail_if_not_cleared_exits_10_while_the_reaudit_flags_the_finding(
    audited: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import json
    import shutil

    from spray.correct.record import RECORD_NAME

    runs = tmp_path / "runs"
    # the audited run without the corrections other tests of this module published
    shutil.copytree(audited.runs_dir, runs, symlinks=True, ignore=shutil.ignore_patterns("corrections"))
    flagged = next(f for f in _findings(audited) if f.class_index == TARGET)
    ids = [str(i) for i in np.flatnonzero(audited.planted)]
    db = runs / "flags.sqlite"
    FlagStore(db).flag(DATASET, ids, "unlearn", cluster_key=flagged.key)
    argv = ["correct", "--config", str(audited.config), "-q", "--method", "pclarc", "--runs-dir", str(runs)]
    argv += ["--flags-db", str(db), "--fail-if-not-cleared"]
    first = run_main(argv, capsys)
    (folder,) = [p for p in (runs / "corrections").iterdir() if (p / RECORD_NAME).is_file()]
    record = json.loads((folder / RECORD_NAME).read_text())
    cleared = record["verdict"]["finding_cleared"]
    assert first.code == (10 if cleared is False else 0), first.output
    # The published record says the re-audit still flags the finding: the rerun (a no-op) exits 10.
    record["reaudit"]["still_flagged"] = True
    record["reaudit"]["before"]["suspicious"] = True
    (folder / RECORD_NAME).write_text(json.dumps(record))
    again = run_main(argv, capsys)
    assert again.code == 10 and "still flags the finding" in again.output, again.output
    assert run_main([a for a in argv if a != "--fail-if-not-cleared"], capsys).code == 0
    # Without a re-audit there is nothing to fail on: refused, naming both options.
    assert_clean_failure(
        run_main([*argv, "--no-reaudit"], capsys), 2, "--fail-if-not-cleared", "--no-reaudit"
    )
    # Neither run flags the finding: the flag cannot judge, exit 0 with a warning that says so.
    record["reaudit"]["still_flagged"] = False
    record["reaudit"]["before"]["suspicious"] = False
    (folder / RECORD_NAME).write_text(json.dumps(record))
    neither = run_main(argv, capsys)
    assert neither.code == 0 and "cannot judge" in neither.output, neither.output


def test_a_key_that_reads_as_a_numbered_class_is_refused_and_key_prefix_settles_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Classes named "1", "2", "0" (index 0, 1, 2): ``2/k…`` is class index 2's cluster as a key, and class
    "2"'s (index 1) as the table shows it. Refused with both readings; ``key:`` is the key."""
    world = build_world(tmp_path, flag=False)
    raw = yaml.safe_load(world.config.read_text())
    raw["data"]["class_names"] = ["1", "2", "0"]
    world.config.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["audit", "--config", str(world.config), "-q"]) == 0
    target = [f for f in _findings(world) if f.class_index == TARGET]
    assert TARGET == 1 and target, "the fixture's artifact class is index 1, named '2'"
    finding = target[0]
    _flag_as(world, finding)
    as_key = f"2/{finding.key.split('/', 1)[1]}"  # class index 2 (named "0")
    res = _correct(world, capsys, as_key)
    assert_clean_failure(res, 2, "ambiguous", f"key:{as_key}", f"key:{finding.key}")
    res = _correct(world, capsys, f"key:{finding.key}")
    assert res.code == 0, res.output
    assert "(pclarc) of class 2" in res.stdout
    # a key whose class-name reading names no cluster of the run is no clash: taken as the key
    findings = _findings(world)
    keys = {f.key for f in findings}
    lone = next(f for f in findings if f.class_index == 0 and f"2/{f.key.split('/', 1)[1]}" not in keys)
    res = _correct(world, capsys, lone.key)
    assert "ambiguous" not in res.output and lone.key in res.output


def test_if_flagged_refuses_when_the_flags_sit_under_another_dataset_key(
    audited: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An outside check: a misspelt data.name (or a data folder moved without one) found no flags, and
    --if-flagged exited 0 without a word under -q: a nightly correction job would never run."""
    run = RunReader.open(audited.runs_dir / "latest")
    hashes = run.content_hashes() or {}
    ids = [str(i) for i in np.flatnonzero(audited.planted)]
    db = tmp_path / "flags.sqlite"
    FlagStore(db).flag("old-key", ids, "unlearn", content_hashes={i: hashes[i] for i in ids})
    argv = ["correct", "--config", str(audited.config), "-q", "--method", "pclarc", "--flags-db", str(db)]
    res = run_main([*argv, "--if-flagged"], capsys)
    assert_clean_failure(res, 2, "--if-flagged found no flags", "'old-key'", "data.name")
    FlagStore(db).flag("another-data", ["x"], "unlearn", content_hashes={"x": "not-these-images"})
    FlagStore(db).unflag("old-key", ids)
    assert run_main([*argv, "--if-flagged"], capsys).code == 0  # another dataset's flags: nothing to do here


def test_if_flagged_without_a_run_of_the_data_says_the_other_keys_flags_are_unchecked(
    audited: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An outside check: a data folder moved without data.name and not audited since: --if-flagged found no
    flags under the new key, no run to compare the old key's flags with, and exited 0 without a word."""
    ids = [str(i) for i in np.flatnonzero(audited.planted)]
    db = tmp_path / "flags.sqlite"
    FlagStore(db).flag("old-key", ids, "unlearn")
    raw = yaml.safe_load(audited.config.read_text())
    raw["data"]["name"] = "new-key"  # as a moved folder's new path would be
    moved = audited.config.with_name("moved.yaml")  # beside it: its relative paths resolve the same
    moved.write_text(yaml.safe_dump(raw, sort_keys=False))
    argv = ["correct", "--config", str(moved), "-q", "--method", "pclarc", "--flags-db", str(db)]
    res = run_main([*argv, "--if-flagged"], capsys)
    moved.unlink()
    assert res.code == 0, res.output
    assert f"{len(ids)} under 'old-key'" in res.output and "audit it (spray run)" in res.output, res.output

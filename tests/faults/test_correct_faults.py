"""``spray correct`` under bad input: every case exits with a clear message that names what to fix."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from spray.flags import FlagStore
from spray.runs.locking import RunLock
from tests.faults.cli import CliResult, assert_clean_failure, run_main
from tests.test_correct_world import DATASET, TARGET, World, build_world


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> World:
    """A tiny world with flags and a published audit run (copied per test)."""
    world = build_world(tmp_path_factory.mktemp("faults"))
    from spray.cli import main

    assert main(["audit", "--config", str(world.config), "-q"]) == 0
    return world


@pytest.fixture
def world(base: World, tmp_path: Path) -> World:
    root = tmp_path / "w"
    shutil.copytree(base.root, root, symlinks=True)
    return World(root, root / "audit.yaml", root / "runs" / "flags.sqlite", root / "runs", base.images,
                 base.labels, base.planted, base.model)  # fmt: skip


@contextmanager
def _quiet() -> Iterator[None]:
    # the CLI's log handler of an earlier call writes to a capture stream pytest has closed since
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _reflag(world: World, ids: list[str], dataset: str = DATASET) -> None:
    world.flags_db.unlink()
    for p in world.flags_db.parent.glob("flags.sqlite-*"):
        p.unlink()
    with _quiet():
        FlagStore(world.flags_db).flag(dataset, ids, "unlearn", cluster_key="1/k2/c0")


def _unflag_all(world: World) -> None:
    with _quiet():
        FlagStore(world.flags_db).unflag(DATASET, [str(i) for i in np.flatnonzero(world.planted)])


def _edit(world: World, **correction: object) -> None:
    raw = yaml.safe_load(world.config.read_text())
    raw["correction"].update(correction)
    world.config.write_text(yaml.safe_dump(raw))


def _correct(world: World, capsys: pytest.CaptureFixture[str], *extra: str) -> CliResult:
    return run_main(["correct", "--config", str(world.config), "-q", "--no-reaudit", *extra], capsys)


def test_missing_flag_database(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    res = _correct(world, capsys, "--flags-db", str(world.root / "nope.sqlite"))
    assert_clean_failure(res, 2, "nope.sqlite", "No flag database", "dashboard")


def test_no_flag_database_yet_means_nothing_flagged(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """Before anyone flagged, the default database does not exist: exit 1, and 0 for the nightly job."""
    default = world.runs_dir / "flags.sqlite"
    default.rename(default.with_suffix(".bak"))
    try:
        assert_clean_failure(_correct(world, capsys), 1, "No flag database", "dashboard")
        res = _correct(world, capsys, "--if-flagged")
        assert res.code == 0 and "Traceback" not in res.output
    finally:
        default.with_suffix(".bak").rename(default)


def test_flag_database_that_is_not_sqlite(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    bad = world.root / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    assert_clean_failure(
        _correct(world, capsys, "--flags-db", str(bad)), 1, "bad.sqlite", "not a SQLite file", "restore it"
    )


def test_a_config_given_as_the_flag_database(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """An outside check: ``--flags-db demo.yaml`` advised ``mv demo.yaml demo.yaml.damaged``."""
    res = _correct(world, capsys, "--flags-db", str(world.config))
    assert_clean_failure(res, 1, str(world.config), "is not a flag database", "--flags-db")
    assert ".damaged" not in res.output


def test_no_flags(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    _unflag_all(world)
    assert_clean_failure(_correct(world, capsys), 1, "No 'unlearn' flags", DATASET, "Flag the shortcut")


def test_no_flags_is_fine_with_if_flagged(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    _unflag_all(world)
    res = _correct(world, capsys, "--if-flagged")
    assert res.code == 0 and "Traceback" not in res.output


def test_flags_of_another_dataset(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    _reflag(world, ["1", "2", "3"], dataset="someone-else")
    assert_clean_failure(_correct(world, capsys), 1, "someone-else", "data.name", DATASET)


def test_unknown_layer_lists_the_layers(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    res = _correct(world, capsys, "--layer", "featurs")
    assert_clean_failure(res, 2, "'featurs'", "Did you mean 'features'", "classifier.1", "correction.layer")


def test_the_logits_layer_is_refused(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing trains after the logits, and a direction there mixes the classes (an outside check: P-ClArC at a
    ViT's head cost 5 points and advised 'a later layer')."""
    res = _correct(world, capsys, "--layer", "classifier", "--method", "rrclarc")
    assert_clean_failure(res, 2, "correction.layer", "'classifier'", "returns the model's output")


@pytest.mark.parametrize(
    ("value", "shown"),
    [("-1", "-1.0"), ("0", "0.0"), ("1e9", "1000000000.0"), ("nan", "should be a finite number (got nan)")],
)
def test_lambda_out_of_range(
    world: World, capsys: pytest.CaptureFixture[str], value: str, shown: str
) -> None:
    assert_clean_failure(_correct(world, capsys, "--lambda", value), 2, "correction.rr_lambda", shown)


def test_too_few_unflagged_samples(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    cls = np.flatnonzero(world.labels == TARGET)
    _reflag(world, [str(i) for i in cls[:-3]])
    assert_clean_failure(_correct(world, capsys), 1, "unflagged samples for the reference", "min_group_size")


def test_too_few_flagged_samples(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    _reflag(world, [str(i) for i in np.flatnonzero(world.planted)[:3]])
    assert_clean_failure(_correct(world, capsys), 1, "usable flagged samples", "min_group_size")


def test_flags_in_several_classes(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    ids = [str(i) for i in np.flatnonzero(world.planted)] + [
        str(i) for i in np.flatnonzero(world.labels == 0)[:20]
    ]
    _reflag(world, ids)
    assert_clean_failure(
        _correct(world, capsys), 1, "span several classes", "correction.artifact_class", "--class"
    )


def test_class_without_flags(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    assert_clean_failure(_correct(world, capsys, "--class", "2"), 2, "artifact_class 2", "holds none")


def test_flagged_ids_not_in_the_dataset(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    _reflag(world, ["img-a", "img-b"])
    assert_clean_failure(_correct(world, capsys), 1, "None of the 2 flagged samples", "img-a")


def test_unknown_finding_key(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    assert_clean_failure(_correct(world, capsys, "--cluster-key", "9/k2/c0"), 2, "9/k2/c0", "1/k2/c0")


def test_no_published_run(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    for run in world.runs_dir.glob("2*"):
        shutil.rmtree(run)
    assert_clean_failure(_correct(world, capsys), 1, "No published run", "spray audit")


def test_unknown_source_run(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    assert_clean_failure(_correct(world, capsys, "--source-run", "deadbeef"), 2, "deadbeef", "Runs there")


def test_unknown_method(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    assert_clean_failure(_correct(world, capsys, "--method", "magic"), 2, "magic")


def test_typo_in_the_correction_section(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    _edit(world, rr_lamda=5)
    assert_clean_failure(_correct(world, capsys), 2, "correction.rr_lamda", "rr_lambda")


def test_missing_test_data(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    _edit(world, test_data={"kind": "idx", "images": "test.idx", "labels": "labels.idx"})
    assert_clean_failure(_correct(world, capsys), 2, "correction.test_data.images", "test.idx")


def test_artifact_box_outside_the_image(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    _edit(world, artifact_box=[10, 0, 4, 4])
    assert_clean_failure(_correct(world, capsys), 2, "correction.artifact_box", "12x12")


def test_direction_that_separates_nothing(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    # flag random unplanted samples of the class: nothing tells them apart from the rest
    cls = np.flatnonzero((world.labels == TARGET) & ~world.planted)
    _reflag(world, [str(i) for i in cls[::2]])
    _edit(world, min_separation=0.9)
    assert_clean_failure(_correct(world, capsys), 1, "AUROC", "correction.min_separation", "correction.layer")


def test_another_correction_is_running(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    with RunLock(world.runs_dir / "corrections"):
        assert_clean_failure(_correct(world, capsys), 75, "already running")


def test_a_cluster_key_typo_is_an_error_even_with_if_flagged(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A nightly job with --if-flagged must not exit 0 forever on a misspelt key; a finding whose flags
    were all removed since is "nothing flagged" (exit 0)."""
    _reflag(world, [str(i) for i in np.flatnonzero(world.planted)])
    res = _correct(world, capsys, "--if-flagged", "--cluster-key", "1/k2/c9")
    assert_clean_failure(res, 2, "'1/k2/c9'", "No flag was ever set from that finding", "1/k2/c0")
    _unflag_all(world)
    res = _correct(world, capsys, "--if-flagged", "--cluster-key", "1/k2/c0")
    assert res.code == 0 and "Traceback" not in res.output


def _deny_writes(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """``folder`` reads as a read-only file system (``os.access``): root writes anywhere, so no chmod."""
    real = os.access
    inside = folder.resolve()

    def access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
        if mode & os.W_OK and Path(path).resolve().is_relative_to(inside):
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def test_a_read_only_runs_folder(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like ``spray run``: a read-only runs folder answers from a published correction, and otherwise
    exits 1 naming the folder and --runs-dir (no traceback from the lock file)."""
    corrections = world.runs_dir / "corrections"
    with monkeypatch.context() as m:
        _deny_writes(m, world.runs_dir)
        res = _correct(world, capsys, "--method", "pclarc")
        assert_clean_failure(res, 1, str(corrections), "not writable", "--runs-dir", "not published yet")
        assert not corrections.exists()
    assert _correct(world, capsys, "--method", "pclarc").code == 0
    _deny_writes(monkeypatch, world.runs_dir)
    res = _correct(world, capsys, "--method", "pclarc")
    assert res.code == 0 and "already published, nothing to do" in res.stdout, res.output
    assert_clean_failure(
        _correct(world, capsys, "--method", "pclarc", "--force"), 1, "--force", "not writable"
    )
    _unflag_all(world)
    res = _correct(world, capsys, "--method", "pclarc", "--if-flagged")
    assert res.code == 0 and "Traceback" not in res.output

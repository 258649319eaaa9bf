"""Publishing: atomic rename, the ``latest`` pointer, finding runs, retention of runs and cache
directories, the clean-up after a crash, and the runs folder itself."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from spray.errors import ConfigError
from spray.runs.atomic import atomic_write_json
from spray.runs.cache import ShardCache
from spray.runs.layout import CACHE_DIR, LATEST, WORK_DIR
from spray.runs.publish import (
    check_runs_dir,
    clean_staging,
    find_run,
    latest_run,
    list_runs,
    prune_cache,
    prune_runs,
    publish,
    staging_dir,
)
from spray.runs.reader import RunReader
from tests.runs.builders import make_report, write_published
from tests.runs.test_cache import _batch


def _publish(runs: Path, run_id: str, cache: str = "") -> Path:
    report, stage = make_report(n_per_class=4)
    report.run_id = run_id
    report.cache = cache
    return write_published(runs, report, stage)


def test_publish_is_atomic_and_moves_latest(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    first = _publish(runs, "a" * 64)
    assert (runs / LATEST).resolve() == first and latest_run(runs) == first
    second = _publish(runs, "b" * 64)
    assert os.readlink(runs / LATEST) == second.name
    assert list_runs(runs) == [second, first]  # newest first; the latest symlink is not a run
    assert find_run(runs, "a" * 64) == first and find_run(runs, "c" * 64) is None
    # Readable by the dashboard's user (mkstemp would leave 0600).
    assert stat.S_IMODE((second / "summary.json").stat().st_mode) == 0o644
    assert RunReader.open(runs / LATEST).summary.run_id == "b" * 64
    assert not any((runs / ".staging").iterdir())


def test_a_damaged_run_is_never_taken_as_published(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run = _publish(runs, "a" * 64)
    (run / "summary.json").write_text("{")
    assert find_run(runs, "a" * 64) is None


def test_prune_keeps_the_newest_n(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    made = [_publish(runs, c * 64) for c in "abcd"]
    removed = prune_runs(runs, 2)
    assert sorted(removed) == sorted(made[:2])
    assert list_runs(runs) == [made[3], made[2]]


def test_retention_keeps_a_run_a_correction_reads(tmp_path: Path) -> None:
    """An outside check: spray run --keep-runs 1 deleted the source run of a spray correct in progress, which
    published anyway with a source_run_dir that no longer existed."""
    from spray.runs.locking import RunPin, pinned

    runs = tmp_path / "runs"
    made = [_publish(runs, c * 64) for c in "abc"]
    with RunPin(made[0]):
        assert pinned(made[0]) and not pinned(made[1])
        assert prune_runs(runs, 1) == [made[1]]
        assert made[0].exists()
    assert not pinned(made[0])
    assert prune_runs(runs, 1) == [made[0]] and not (runs / f".pin-{made[0].name}").exists()
    # a pin made on a run already gone is cleared by the next retention
    with RunPin(runs / "gone"):
        pass
    prune_runs(runs, 1)
    assert not list(runs.glob(".pin-*"))


def test_retention_renames_before_deleting_and_clears_a_killed_ones_trash(tmp_path: Path) -> None:
    """Deleted in place, a run killed mid-delete could lose summary.json first and stay forever, unseen."""
    runs = tmp_path / "runs"
    made = [_publish(runs, c * 64) for c in "abc"]
    leftover = runs / ".trash-older"  # a retention killed while deleting
    (leftover / "classes").mkdir(parents=True)
    prune_runs(runs, 1)
    assert not leftover.exists() and not list(runs.glob(".trash-*"))
    assert list_runs(runs) == [made[2]] and not made[0].exists() and not made[1].exists()


def test_clean_staging_removes_crash_leftovers_but_keeps_finished_shards(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    half = staging_dir(runs, "e" * 64)
    (half / "summary.json").write_text("{")
    cache = ShardCache(runs / CACHE_DIR / "m-l", by_label=False)
    cache.write(0, _batch(["x"]), None, None)
    (cache.dir / ".shard-000000064-abc.npz.12345.tmp").write_bytes(b"partial")
    clean_staging(runs)
    assert not any((runs / ".staging").iterdir())
    assert [p.name.startswith("shard-") for p in cache.dir.iterdir()] == [True]
    assert list_runs(runs) == []


def test_clean_staging_drops_the_manifests_of_published_runs_only(tmp_path: Path) -> None:
    """A stop between publishing and removing the run's shard manifests leaves them; the next run (under
    the lock) removes them, and keeps those of a run not yet published (its resume needs them)."""
    runs = tmp_path / "runs"
    report, stage = make_report(n_per_class=4)
    write_published(runs, report, stage)
    done, pending = runs / CACHE_DIR / WORK_DIR / report.run_id[:16], runs / CACHE_DIR / WORK_DIR / ("f" * 16)
    for d in (done, pending):
        d.mkdir(parents=True)
        (d / "manifest.json").write_text("{}")
    clean_staging(runs)
    assert not done.exists() and (pending / "manifest.json").is_file()
    # an outside check: the manifests of a run that failed and was never published stayed for good (~125 MB
    # a failed night at 1M images); once a newer run is published, they go
    import os

    old = runs / CACHE_DIR / WORK_DIR / ("a" * 16)
    old.mkdir()
    (old / "manifest.json").write_text("{}")
    (run,) = list_runs(runs)
    os.utime(old, (run.stat().st_mtime - 60, run.stat().st_mtime - 60))
    clean_staging(runs)  # older than the newest run, but within output.resume_days (another audit's, maybe)
    assert old.exists()
    week = 8 * 86400
    os.utime(old, (run.stat().st_mtime - week, run.stat().st_mtime - week))
    clean_staging(runs, resume_days=7)
    assert not old.exists() and (pending / "manifest.json").is_file()


def test_cache_retention_keeps_only_the_directories_of_kept_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    cache = runs / CACHE_DIR
    for name in ("m1-l", "m2-l", "m3-l", WORK_DIR):
        (cache / name).mkdir(parents=True)
        (cache / name / "shard-0.npz").write_bytes(b"x")
    _publish(runs, "a" * 64, cache="m1-l")
    _publish(runs, "b" * 64, cache="m2-l")
    prune_runs(runs, 1)  # run a (model m1) is gone
    removed = prune_cache(runs, in_use="m3-l")
    assert sorted(p.name for p in removed) == ["m1-l"]
    assert sorted(p.name for p in cache.iterdir()) == sorted(["m2-l", "m3-l", WORK_DIR])
    # A run that does not say which directory it uses (unrecorded or unreadable) keeps none but stops
    # nothing (an outside check: one damaged old run turned retention off for good, and the cache grew
    # by a dataset's heatmaps with every retrained model); every run holds its own heatmaps.
    staged = staging_dir(runs, "c" * 64)
    atomic_write_json(staged / "summary.json", {"run_id": "c" * 64})
    publish(runs, staged, "c" * 64)
    (cache / "m4-l").mkdir()
    assert [p.name for p in prune_cache(runs, in_use="m3-l")] == ["m4-l"] and (cache / "m2-l").exists()


def test_check_runs_dir(tmp_path: Path) -> None:
    assert check_runs_dir(tmp_path / "new" / "runs") and (tmp_path / "new" / "runs").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_runs_dir(tmp_path / "file")
    with pytest.raises(ConfigError, match="cannot be created"):
        check_runs_dir(tmp_path / "file" / "runs")
    assert json.dumps(str(tmp_path))  # paths are named in the messages as given


def test_prune_keeps_each_audits_own_runs_in_a_shared_folder(tmp_path: Path) -> None:
    """Two audits in one runs folder: retention of one never deletes the other's runs (nor their cache)."""
    runs = tmp_path / "runs"

    def publish_as(run_id: str, name: str, dataset: str) -> Path:
        report, stage = make_report(n_per_class=4)
        report.run_id, report.name, report.dataset = run_id, name, dataset
        return write_published(runs, report, stage)

    a = [publish_as(c * 64, "audit", "shirts") for c in "ab"]
    b = [publish_as(c * 64, "audit_b", "bags") for c in "cd"]
    removed = prune_runs(runs, 1, name="audit_b", dataset="bags")
    assert removed == [b[0]]
    assert sorted(list_runs(runs)) == sorted([*a, b[1]])
    assert prune_runs(runs, 1, name="audit", dataset="shirts") == [a[0]]

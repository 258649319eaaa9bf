"""Run storage: atomic writes, the shard cache (incl. shards written by other processes), publishing,
the ``latest`` pointer, retention and the clean-up after a crash."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np

from spray.records import AttributionBatch
from spray.runs.storage import (
    CACHE_DIR,
    LATEST,
    RunData,
    ShardCache,
    atomic_write_json,
    clean_staging,
    find_run,
    latest_run,
    list_runs,
    prune_runs,
    publish,
    staging_dir,
)


def _batch(ids: list[str], seed: int = 0) -> AttributionBatch:
    rng = np.random.default_rng(seed)
    n = len(ids)
    return AttributionBatch(
        sample_ids=ids,
        labels=np.arange(n) % 2,
        predictions=np.arange(n) % 2,
        probabilities=rng.random((n, 2)).astype(np.float32),
        relevance=rng.standard_normal((n, 4, 4)).astype(np.float16),
        targets=np.arange(n) % 2,
        content_hashes=[f"h-{i}" for i in ids],
    )


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    atomic_write_json(tmp_path / "a.json", {"b": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"b": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_shard_cache_hits_by_content_and_sees_shards_of_other_processes(tmp_path: Path) -> None:
    root = tmp_path / CACHE_DIR
    a = ShardCache(root, "m" * 64, "l" * 64)
    b = ShardCache(root, "m" * 64, "l" * 64)  # another rank, opened before a's shard exists
    batch = _batch(["x", "y", "z"])
    thumbs = np.zeros((3, 8, 8, 3), np.uint8)
    a.write(0, batch, thumbs, None)
    assert "h-y" in a and "h-y" not in b
    assert b.refresh() == 1 and "h-y" in b and b.refresh() == 0
    got, th = b.gather(["z", "x"], ["h-z", "h-x"], np.asarray([0, 0]))
    np.testing.assert_array_equal(got.relevance, batch.relevance[[2, 0]])
    assert th is not None and th.shape == (2, 8, 8, 3)
    # A different model or LRP setting is a different cache: nothing is shared.
    assert "h-x" not in ShardCache(root, "n" * 64, "l" * 64)


def test_damaged_shard_is_ignored_and_recomputed(tmp_path: Path) -> None:
    root = tmp_path / CACHE_DIR
    c = ShardCache(root, "m" * 64, "l" * 64)
    c.write(0, _batch(["x"]), None, None)
    (c.dir / "shard-000000064-deadbeefdeadbeef.npz").write_bytes(b"not a zip")
    again = ShardCache(root, "m" * 64, "l" * 64)
    assert "h-x" in again and len(again) == 1


def _publish(runs: Path, run_id: str) -> Path:
    staged = staging_dir(runs, run_id)
    (staged / "data.bin").write_bytes(b"x")
    atomic_write_json(staged / "summary.json", {"run_id": run_id})
    return publish(runs, staged, run_id)


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
    assert RunData.open(runs / LATEST).summary["run_id"] == "b" * 64
    assert not any((runs / ".staging").iterdir())


def test_prune_keeps_the_newest_n(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    made = [_publish(runs, c * 64) for c in "abcd"]
    removed = prune_runs(runs, 2)
    assert sorted(removed) == sorted(made[:2])
    assert list_runs(runs) == [made[3], made[2]]


def test_clean_staging_removes_crash_leftovers_but_keeps_finished_shards(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    half = staging_dir(runs, "e" * 64)
    (half / "summary.json").write_text("{")
    cache = ShardCache(runs / CACHE_DIR, "m" * 64, "l" * 64)
    cache.write(0, _batch(["x"]), None, None)
    (cache.dir / ".shard-000000064-abc.npz.12345.tmp").write_bytes(b"partial")
    clean_staging(runs)
    assert not any((runs / ".staging").iterdir())
    assert [p.name.startswith("shard-") for p in cache.dir.iterdir()] == [True]
    assert list_runs(runs) == []


def test_paste_cache_roundtrip_persists_and_survives_damage(tmp_path: Path) -> None:
    from spray.runs.storage import PasteCache

    c = PasteCache(tmp_path)
    assert c.get_many(["a", "b"]) == {}
    c.put_many({"a": 3, "b": 7})
    c.put_many({"a": 9})  # an existing key keeps its value (same key, same prediction)
    c.close()
    again = PasteCache(tmp_path)
    assert again.get_many(["a", "b", "c"]) == {"a": 3, "b": 7}
    assert (again.hits, again.misses) == (2, 1)
    # More keys than SQLite's bound-parameter limit in one call.
    again.put_many({f"k{i}": i % 10 for i in range(1200)})
    assert len(again.get_many([f"k{i}" for i in range(1200)])) == 1200
    again.close()
    # Without a database every key is a miss (the run's log counts those pastes as predicted).
    assert again.get_many(["a", "a", "z"]) == {}
    assert (again.hits, again.misses) == (1202, 3)
    # A damaged file is moved aside and replaced by an empty cache: the run goes on.
    (tmp_path / PasteCache.FILE).write_bytes(b"this is not a database" * 100)
    for extra in ("-wal", "-shm"):
        (tmp_path / (PasteCache.FILE + extra)).unlink(missing_ok=True)
    fresh = PasteCache(tmp_path)
    assert fresh.get_many(["a"]) == {}
    fresh.put_many({"a": 1})
    assert fresh.get_many(["a"]) == {"a": 1}
    assert list(tmp_path.glob("paste.damaged-*"))


def test_cache_retention_keeps_only_the_directories_of_kept_runs(tmp_path: Path) -> None:
    from spray.runs.storage import WORK_DIR, prune_cache

    runs = tmp_path / "runs"
    cache = runs / CACHE_DIR
    for name in ("m1-l", "m2-l", "m3-l", WORK_DIR):
        (cache / name).mkdir(parents=True)
        (cache / name / "shard-0.npz").write_bytes(b"x")
    made = []
    for rid, key in (("a" * 64, "m1-l"), ("b" * 64, "m2-l")):
        staged = staging_dir(runs, rid)
        atomic_write_json(staged / "summary.json", {"run_id": rid, "cache": key})
        made.append(publish(runs, staged, rid))
    prune_runs(runs, 1)  # run a (model m1) is gone
    removed = prune_cache(runs, in_use="m3-l")
    assert sorted(p.name for p in removed) == ["m1-l"]
    assert sorted(p.name for p in cache.iterdir()) == sorted(["m2-l", "m3-l", WORK_DIR])
    # A run that does not record its cache directory (older layout): nothing is deleted.
    _publish(runs, "c" * 64)
    assert prune_cache(runs, in_use="m3-l") == [] and (cache / "m2-l").exists()

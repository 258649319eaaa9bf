"""The per-sample caches: shards keyed by content (and label when the label is explained), shards of
other processes, damaged shards; the paste cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spray.records import AttributionBatch
from spray.runs.cache import PasteCache, ShardCache, sample_key
from spray.runs.layout import paste_db_file
from spray.versions import PASTE_VERSION


def _batch(
    ids: list[str], seed: int = 0, labels: list[int] | None = None, hashes: list[str] | None = None
) -> AttributionBatch:
    rng = np.random.default_rng(seed)
    n = len(ids)
    lab = np.asarray(labels if labels is not None else np.arange(n) % 2, dtype=np.int64)
    return AttributionBatch(
        sample_ids=ids,
        labels=lab,
        predictions=lab.copy(),
        probabilities=rng.random((n, 2)).astype(np.float32),
        relevance=rng.standard_normal((n, 4, 4)).astype(np.float16),
        targets=lab.copy(),
        content_hashes=hashes or [f"h-{i}" for i in ids],
    )


def test_shard_cache_hits_by_content_and_sees_shards_of_other_processes(tmp_path: Path) -> None:
    a = ShardCache(tmp_path / "m-l", by_label=False)
    b = ShardCache(tmp_path / "m-l", by_label=False)  # another rank, opened before a's shard exists
    batch = _batch(["x", "y", "z"])
    thumbs = np.zeros((3, 8, 8, 3), np.uint8)
    a.write(0, batch, thumbs, None)
    assert "h-y" in a and "h-y" not in b
    assert b.refresh() == 1 and "h-y" in b and b.refresh() == 0
    got, th = b.gather(["z", "x"], ["h-z", "h-x"], np.asarray([0, 0]))
    np.testing.assert_array_equal(got.relevance, batch.relevance[[2, 0]])
    assert th is not None and th.shape == (2, 8, 8, 3)
    # Another directory (model or LRP setting) is another cache: nothing is shared.
    assert "h-x" not in ShardCache(tmp_path / "n-l", by_label=False)


def test_explained_label_is_part_of_the_key(tmp_path: Path) -> None:
    c = ShardCache(tmp_path / "m-l", by_label=True)
    # The same bytes in two class folders: two entries, two heatmaps.
    batch = _batch(["cat/a.png", "dog/a.png"], labels=[0, 1], hashes=["same", "same"])
    c.write(0, batch, None, None)
    assert c.key_of("same", 0) in c and c.key_of("same", 1) in c and c.key_of("same", 2) not in c
    assert c.content_hashes() == frozenset({"same"})
    got, _ = c.gather(["dog/a.png"], ["same"], np.asarray([1]))
    np.testing.assert_array_equal(got.relevance[0], batch.relevance[1])
    assert sample_key("h", 3, by_label=True) == "h/3" and sample_key("h", 3, by_label=False) == "h"
    # Reopened from disk: the same keys.
    again = ShardCache(tmp_path / "m-l", by_label=True)
    assert len(again) == 2 and again.key_of("same", 1) in again


def test_damaged_shard_is_ignored_and_recomputed(tmp_path: Path) -> None:
    c = ShardCache(tmp_path / "m-l", by_label=False)
    c.write(0, _batch(["x"]), None, None)
    (c.dir / "shard-000000064-deadbeefdeadbeef.npz").write_bytes(b"not a zip")
    again = ShardCache(tmp_path / "m-l", by_label=False)
    assert "h-x" in again and len(again) == 1


def test_paste_cache_roundtrip_persists_and_survives_damage(tmp_path: Path) -> None:
    c = PasteCache(tmp_path)
    assert c.path.name == paste_db_file(PASTE_VERSION)
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
    again.path.write_bytes(b"this is not a database" * 100)
    for extra in ("-wal", "-shm"):
        again.path.with_name(again.path.name + extra).unlink(missing_ok=True)
    fresh = PasteCache(tmp_path)
    assert fresh.get_many(["a"]) == {}
    fresh.put_many({"a": 1})
    assert fresh.get_many(["a"]) == {"a": 1}
    assert list(tmp_path.glob("paste-*.damaged-*"))


def test_paste_caches_of_other_analysis_versions_are_removed(tmp_path: Path) -> None:
    """After an upgrade the old version's paste cache is never read again: it is removed, with its SQLite
    sidecars; the current one, and files that only look alike, stay."""
    old = [paste_db_file(PASTE_VERSION - 1) + suffix for suffix in ("", "-wal", "-shm")]
    keep = [paste_db_file(PASTE_VERSION), "paste-aX.sqlite", "paste-a3.sqlite.damaged-12", "shard-0.npz"]
    for name in old + keep:
        (tmp_path / name).write_bytes(b"x" * 10)
    assert PasteCache.remove_older(tmp_path) == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_paste_logits_are_kept_per_image_and_class(tmp_path: Path) -> None:
    """The logit tests (paste gain, flips) reuse a pasted image's class logit on a rerun: the same key and
    class come back exactly, another class is a miss."""
    cache = PasteCache(tmp_path)
    cache.put_logits({"paste|t|d|m|class3": (3, 1.234567890123), "plain|t|class3": (0, -2.5)})
    cache.put_logits({"paste|t|d|m|class3": (1, 9.0)})  # a key's result never changes: the first is kept
    again = PasteCache(tmp_path)
    got = again.get_logits(["paste|t|d|m|class3", "plain|t|class3", "plain|t|class4"])
    assert got == {"paste|t|d|m|class3": (3, 1.234567890123), "plain|t|class3": (0, -2.5)}
    assert (again.hits, again.misses) == (2, 1)
    assert again.get_many(["paste|t|d|m|class3"]) == {}  # the predictions table is another one


def test_damage_inside_a_shards_heatmaps_is_moved_aside_and_recomputed_next(tmp_path: Path) -> None:
    """An outside check: 16 flipped bytes inside relevance.npy (the zip directory intact) passed the index;
    gathering then failed with a bare "Bad CRC-32" in this and every later run (exit 1). Now the run that meets
    it names the file and moves it aside, and the next run computes its samples anew."""
    import pytest

    from spray.runs.errors import RunReadError

    c = ShardCache(tmp_path / "m-l", by_label=False)
    ids = [f"s{i}" for i in range(40)]
    path = c.write(0, _batch(ids), None, None)
    data = bytearray(path.read_bytes())
    at = data.index(b"relevance.npy") + 400  # inside the member's 1,280 bytes of data, past its headers
    data[at : at + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    again = ShardCache(tmp_path / "m-l", by_label=False)
    assert "h-s1" in again  # the index reads only the ids
    with pytest.raises(RunReadError, match=r"damaged \(BadZipFile.*moved aside to .*\.damaged: run again"):
        again.gather(ids, [f"h-{i}" for i in ids], np.arange(40) % 2)
    assert not path.exists() and path.with_name(path.name + ".damaged").exists()
    assert len(ShardCache(tmp_path / "m-l", by_label=False)) == 0  # the next run recomputes them

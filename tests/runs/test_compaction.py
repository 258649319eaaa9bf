"""Cache compaction: heatmaps no kept run holds leave the cache; every held one stays, byte for byte."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spray.audit import run_audit
from spray.runs.cache import ShardCache
from spray.runs.compaction import compact_shards
from spray.runs.layout import CACHE_DIR, SHARD_GLOB
from tests.runs.builders import tiny_config
from tests.runs.test_cache import _batch


def test_shards_are_deleted_rewritten_or_kept_by_their_held_share(tmp_path: Path) -> None:
    d = tmp_path / "m-l"
    cache = ShardCache(d, by_label=False)
    batches = {name: _batch([f"{name}{i}" for i in range(4)], seed=s) for s, name in enumerate("abcd")}
    for s, batch in enumerate(batches.values()):
        cache.write(4 * s, batch, np.full((4, 2, 2, 3), s, np.uint8), None)
    held = {f"h-a{i}" for i in range(4)} | {"h-b1"} | {f"h-d{i}" for i in range(3)}  # nothing of c
    done = compact_shards(d, held)
    assert (done.deleted, done.rewritten, done.dropped_samples) == (1, 1, 3 + 4)
    assert done.bytes_freed > 0 and len(list(d.glob(SHARD_GLOB))) == 3
    again = ShardCache(d, by_label=False)
    # a: all held, untouched; b: 1 of 4 held, rewritten with it; c: none, gone; d: 3 of 4, kept whole
    assert len(again) == 4 + 1 + 4 and "h-b0" not in again and "h-c0" not in again and "h-d3" in again
    ids, hashes = ["b1", "a2", "d0"], ["h-b1", "h-a2", "h-d0"]
    got, thumbs = again.gather(ids, hashes, np.asarray([1, 0, 0]))
    want = np.stack([batches["b"].relevance[1], batches["a"].relevance[2], batches["d"].relevance[0]])
    np.testing.assert_array_equal(got.relevance, want)
    assert thumbs is not None and thumbs[:, 0, 0, 0].tolist() == [1, 0, 3]
    assert compact_shards(d, held) == type(done)()  # nothing left to do


def test_a_dataset_rewritten_every_night_keeps_the_cache_bounded(tmp_path: Path) -> None:
    """Every file changes each night (a pipeline re-encoding its images): the cache keeps what kept runs hold."""
    cfg = tiny_config(tmp_path, n_per_class=8, output={"keep_runs": 1})
    files = sorted((tmp_path / "imgs").rglob("*.png"))
    cache_dir = None
    for night in range(4):
        for f in files:  # new content under the same names
            a = np.asarray(Image.open(f)).copy()
            a[0, 0] = (a[0, 0].astype(int) + 37 * (night + 1)) % 256
            Image.fromarray(a).save(f)
        report = run_audit(cfg)
        assert not report.up_to_date
        cache_dir = next(
            p for p in (tmp_path / "runs" / CACHE_DIR).iterdir() if p.is_dir() and p.name != "work"
        )
        held = ShardCache(cache_dir, by_label=False)
        n = len(files)
        assert len(held) <= 2 * n, f"night {night}: {len(held)} cached heatmaps for {n} images"
        for sid, h in report.content_hashes.items():  # the run just published is whole in the cache
            assert h in held, sid
    assert cache_dir is not None


def test_a_compaction_reads_only_the_shards_written_since_while_no_kept_run_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An outside check at 100k images: with the cache over twice the run (kept runs of relabelled images
    hold every entry), each publish re-read every shard for 20-46 s, freed nothing, and logged nothing. A
    review: a shard of an audit that never published must still go."""
    import logging

    import spray.runs.compaction as compaction

    runs = tmp_path / "runs"
    d = runs / CACHE_DIR / "m-l"
    cache = ShardCache(d, by_label=False)
    cache.write(0, _batch([f"a{i}" for i in range(4)], seed=0), np.zeros((4, 2, 2, 3), np.uint8), None)
    held = {f"h-a{i}" for i in range(4)}
    looked: list[set[str] | None] = []
    real = compaction.compact_shards

    def spy(directory: Path, h: set[str], only: set[str] | None = None) -> compaction.ShardCompaction:
        looked.append(only)
        return real(directory, h, only)

    def folder(name: str) -> Path:  # named as spray names run folders: only those are published runs
        return runs / f"20261206T00000{name[-1]}000000Z-{name}"

    def publish(name: str) -> None:
        folder(name).mkdir()
        (folder(name) / "summary.json").write_text("{}")

    monkeypatch.setattr(compaction, "compact_shards", spy)
    monkeypatch.setattr(compaction, "held_content", lambda _runs, _c: held)
    publish("run1")
    with caplog.at_level(logging.INFO, logger="spray.runs.compaction"):
        assert compaction.compact_cache(runs, "m-l", 9, 4) == compaction.ShardCompaction()
    assert "9 cached heatmaps for the 4 samples" in caplog.text and looked == [None]
    publish("run2")  # a run added, no shard written: nothing to read
    compaction.compact_cache(runs, "m-l", 9, 4)
    assert looked == [None]
    # an audit killed after writing its heatmaps, never published: only its shard is read, and it goes
    cache.write(4, _batch([f"k{i}" for i in range(4)], seed=1), np.zeros((4, 2, 2, 3), np.uint8), None)
    assert compaction.compact_cache(runs, "m-l", 13, 4).deleted == 1
    assert looked[-1] is not None and len(looked[-1]) == 1 and len(list(d.glob(SHARD_GLOB))) == 1
    shutil.rmtree(folder("run1"))  # retention removed a run: every shard is read again
    compaction.compact_cache(runs, "m-l", 9, 4)
    assert looked[-1] is None

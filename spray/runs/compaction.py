"""Compaction of a cache directory's shards: drop the heatmaps of samples no kept run holds.

The cache is keyed by content, so a sample whose file changed, or that left the dataset, leaves its old
entry behind; a nightly dataset whose files are all rewritten each night (a pipeline that re-encodes its
JPEGs) would add a dataset's worth of heatmaps every night to the same directory. Runs keep their own
copies of their heatmaps, so the cache is an optimisation only and an entry no kept run holds can go:
after a run is published, a shard none of whose samples a kept run holds is deleted, and one of which
fewer than half are held is rewritten with those only (the directory then holds at most about twice what
the kept runs use). A compaction records the kept runs and the shards it left (``compaction.json``):
until a kept run is removed, the next one reads only the shards written since. The paste predictions'
SQLite file is keyed by hashes of pasted images and is not compacted (it grows by the new images' pastes
only, about a tenth of the shards' bytes).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spray.runs.atomic import atomic_save_npz, atomic_write_json
from spray.runs.cache import load_shard
from spray.runs.errors import RunReadError
from spray.runs.layout import CACHE_DIR, SHARD_GLOB, shard_file

log = logging.getLogger(__name__)

#: A shard with a smaller share of held samples is rewritten (rewriting one with more would cost more
#: writing than it frees).
REWRITE_BELOW = 0.5

#: In a cache directory: the kept runs and the shards the last compaction left.
CHECKED_FILE = "compaction.json"

_START = re.compile(r"shard-(\d+)-")


@dataclass(frozen=True)
class ShardCompaction:
    """What :func:`compact_shards` did in one cache directory."""

    deleted: int = 0
    rewritten: int = 0
    dropped_samples: int = 0
    bytes_freed: int = 0


def compact_shards(directory: Path, held: set[str], only: set[str] | None = None) -> ShardCompaction:
    """Delete or rewrite the shards of ``directory`` whose samples' content hashes are mostly not ``held``.

    Parameters
    ----------
    directory : Path
        A cache directory ``runs/.cache/<model16>-<lrp16>``.
    held : set of str
        Content hashes of every sample a kept run holds (whatever its label: an entry is kept for any).
    only : set of str, optional
        File names of the shards to look at (the others are left alone); all when None.

    Returns
    -------
    ShardCompaction
        Counts of deleted and rewritten shards, dropped samples and bytes freed.
    """
    deleted = rewritten = dropped = freed = 0
    held_sorted = np.array(sorted(held), dtype=str)
    for shard in sorted(directory.glob(SHARD_GLOB)):
        if only is not None and shard.name not in only:
            continue
        try:
            hashes = load_shard(shard, ["content_hashes"])["content_hashes"].astype(str)
            keep = np.isin(hashes, held_sorted)
            arrays = load_shard(shard) if 0 < keep.sum() < REWRITE_BELOW * len(keep) else None
        except Exception as err:  # an unreadable shard is the loader's business (it recomputes it)
            log.info("cache compaction passed over %s (%s)", shard, err)
            continue
        if keep.sum() >= REWRITE_BELOW * len(keep):
            continue
        size = shard.stat().st_size
        if arrays is not None:
            kept = {k: v[keep] for k, v in arrays.items()}
            key16 = hashlib.sha256("\n".join(kept["content_hashes"].tolist()).encode()).hexdigest()[:16]
            m = _START.match(shard.name)
            new = directory / shard_file(int(m.group(1)) if m else 0, key16)
            atomic_save_npz(new, **kept)  # written before the old one goes: a crash loses nothing
            freed -= new.stat().st_size
            rewritten += 1
        else:
            deleted += 1
        shard.unlink(missing_ok=True)
        freed += size
        dropped += int((~keep).sum())
    return ShardCompaction(deleted, rewritten, dropped, freed)


def _last_checked(directory: Path) -> dict[str, Any] | None:
    """The runs and shards of the last compaction of ``directory`` (None: none recorded)."""
    from spray.runs.reader import read_json

    try:
        got = read_json(directory / CHECKED_FILE)
    except RunReadError:
        return None
    return got if isinstance(got, dict) else None


def _remember_checked(directory: Path, runs: list[str], shards: list[str]) -> None:
    """Record the kept runs and the shards a compaction of ``directory`` left (each mostly held by them)."""
    marker = directory / CHECKED_FILE
    try:
        atomic_write_json(marker, {"runs": runs, "shards": shards})
    except OSError as err:  # an optimisation only: the next compaction reads every shard
        log.info("cache compaction: could not record its state in %s (%s)", marker, err)


def held_content(runs: list[Path], cache: str) -> set[str]:
    """Content hashes of the samples of every run in ``runs`` that uses cache directory ``cache``.

    A run that cannot say (unreadable, or without content hashes) holds none: it has its own heatmaps.
    """
    from spray.runs.reader import RunReader

    held: set[str] = set()
    for run in runs:
        try:
            reader = RunReader.open(run)
            if reader.summary.cache != cache:
                continue
            hashes = reader.content_hashes()
        except RunReadError as err:
            log.info(
                "cache compaction: run %s is unreadable (%s); it holds no cached heatmaps", run.name, err
            )
            continue
        held.update((hashes or {}).values())
    return held


def compact_cache(runs_dir: Path, in_use: str, n_entries: int, n_current: int) -> ShardCompaction:
    """After publishing: compact the cache directory ``in_use`` when it holds over twice the samples of
    the run just published (``n_entries`` against ``n_current``), keeping every kept run's samples."""
    from spray.runs.publish import list_runs

    if n_entries <= 2 * n_current:
        return ShardCompaction()  # the usual night: no run needs reading
    runs = list_runs(runs_dir)
    directory = runs_dir / CACHE_DIR / in_use
    # After a compaction every shard left is mostly held by the runs kept then. While runs are only added (none
    # removed) what they hold only grows, so those shards need no second read (tens of seconds at 100k
    # samples): only the shards written since (the new run's, or those of an audit that never published).
    last = _last_checked(directory)
    only = None
    if last is not None and set(last.get("runs") or ()) <= {r.name for r in runs}:
        only = {p.name for p in directory.glob(SHARD_GLOB)} - set(last.get("shards") or ())
        if not only:
            return ShardCompaction()
    log.info(
        "cache compaction: %d cached heatmaps for the %d samples of this run; dropping those no kept run holds",
        n_entries,
        n_current,
    )
    done = compact_shards(directory, held_content(runs, in_use), only)
    _remember_checked(directory, [r.name for r in runs], sorted(p.name for p in directory.glob(SHARD_GLOB)))
    if done.deleted or done.rewritten:
        log.info(
            "cache compaction: %d heatmaps no kept run holds dropped (%d shards deleted, %d rewritten, "
            "%.1f MB freed)",
            done.dropped_samples,
            done.deleted,
            done.rewritten,
            done.bytes_freed / 1e6,
        )
    return done

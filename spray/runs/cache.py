"""The per-sample caches of a runs directory: LRP results by sample key, paste predictions by paste key.

A cache directory ``runs/.cache/<model16>-<lrp16>`` belongs to one model and one setting of everything
else a heatmap depends on (composite and parameters, canonization, precision, target rule, grid,
transform, thumbnails, :data:`spray.versions.LRP_VERSION`; see :func:`spray.runs.identity.cache_dir_name`).
Inside it a sample is found by its *sample key*: its content hash, plus its label when the explained
target is the label (``lrp.target: label``) — the same bytes in two class folders, or an image moved to
another class, are two different heatmaps.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spray import versions
from spray.records import AttributionBatch
from spray.runs.atomic import atomic_save_npz, translate_write_errors
from spray.runs.errors import RunReadError
from spray.runs.layout import PASTE_DB_GLOB, SHARD_GLOB, paste_db_file, paste_db_version, shard_file

log = logging.getLogger(__name__)


def compact_concepts(concepts: np.ndarray) -> np.ndarray:
    """Concept relevance ``(N, C)`` as stored: float16 like the heatmaps (half the bytes of float32),
    float32 when a value lies beyond float16's range (it would become inf)."""
    with np.errstate(over="ignore"):  # an overflow is detected below and answered with float32
        half = concepts.astype(np.float16)
    return (
        half
        if bool(np.isfinite(half).all()) or not bool(np.isfinite(concepts).all())
        else concepts.astype(np.float32)
    )


def load_shard(path: Path, fields: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of one shard file by field name (see :attr:`ShardCache.FIELDS`): ``fields``, or all."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in (z.files if fields is None else fields)}


def sample_key(content_hash: str, label: int, *, by_label: bool) -> str:
    """The cache key of one sample: ``<content hash>`` or, when the label is explained, ``<hash>/<label>``.

    Parameters
    ----------
    content_hash : str
        Hash of the sample's bytes.
    label : int
        Its label in this dataset.
    by_label : bool
        The explained target is the label (``lrp.target: label``), so the heatmap depends on it. With
        ``pred`` or a fixed class index the target follows from the content and the settings.
    """
    return f"{content_hash}/{int(label)}" if by_label else content_hash


@dataclass(frozen=True)
class CachedSample:
    """Location of one cached sample: shard file and position in it."""

    shard: Path
    position: int


class ShardCache:
    """Per-sample LRP results of one cache directory, in shard files written whole and atomically.

    Parameters
    ----------
    directory : Path
        ``runs/.cache/<model16>-<lrp16>`` (created).
    by_label : bool
        Key samples by content and label (``lrp.target: label``), else by content only.
    """

    FIELDS = (
        "sample_ids",
        "content_hashes",
        "labels",
        "predictions",
        "probabilities",
        "relevance",
        "targets",
    )

    def __init__(self, directory: Path, *, by_label: bool) -> None:
        self.dir = Path(directory)
        self.by_label = by_label
        with translate_write_errors(self.dir):
            self.dir.mkdir(parents=True, exist_ok=True)
        self._index: dict[str, CachedSample] = {}
        self._content: set[str] = set()
        self._loaded: dict[Path, dict[str, np.ndarray]] = {}
        self._indexed: set[Path] = set()
        self.refresh()

    def key_of(self, content_hash: str, label: int) -> str:
        """The sample key (see :func:`sample_key`)."""
        return sample_key(content_hash, label, by_label=self.by_label)

    def refresh(self) -> int:
        """Index shard files that appeared since the last scan (written by other ranks or processes).

        Returns
        -------
        int
            Number of newly indexed shard files.
        """
        added = 0
        for shard in sorted(self.dir.glob(SHARD_GLOB)):
            if shard in self._indexed:
                continue
            try:
                with np.load(shard, allow_pickle=False) as z:
                    hashes = z["content_hashes"].tolist()
                    labels = z["labels"].tolist()
            except Exception as err:  # a damaged shard is recomputed, not fatal
                log.warning("ignoring unreadable cache shard %s (%s); it will be recomputed", shard, err)
                continue
            self._indexed.add(shard)
            added += 1
            self._add(shard, hashes, labels)
        return added

    def _add(self, shard: Path, hashes: Sequence[str], labels: Sequence[int]) -> None:
        for pos, (h, lab) in enumerate(zip(hashes, labels, strict=True)):
            self._index.setdefault(self.key_of(str(h), int(lab)), CachedSample(shard, pos))
            self._content.add(str(h))

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def keys(self) -> frozenset[str]:
        """The sample keys cached now (a snapshot: shards written later do not change it)."""
        return frozenset(self._index)

    def content_hashes(self) -> frozenset[str]:
        """Content hashes of every cached sample, whatever its label (lets the loader skip decoding)."""
        return frozenset(self._content)

    def __len__(self) -> int:
        return len(self._index)

    def write(
        self, start: int, batch: AttributionBatch, thumbs: np.ndarray | None, full: np.ndarray | None
    ) -> Path:
        """Atomically write one shard of freshly computed samples and index it.

        Parameters
        ----------
        start : int
            Dataset position of the shard (part of the file name).
        batch : AttributionBatch
            The computed samples; ``content_hashes`` must be set.
        thumbs : np.ndarray, optional
            ``(n, t, t, 3)`` uint8.
        full : np.ndarray, optional
            ``(n, C, H, W)`` full-resolution relevance.
        """
        keys = [self.key_of(h, int(lab)) for h, lab in zip(batch.content_hashes, batch.labels, strict=True)]
        key16 = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
        path = self.dir / shard_file(start, key16)
        arrays: dict[str, np.ndarray] = {
            "sample_ids": np.asarray(batch.sample_ids, dtype=str),
            "content_hashes": np.asarray(batch.content_hashes, dtype=str),
            "labels": batch.labels.astype(np.int64),
            "predictions": batch.predictions.astype(np.int64),
            "probabilities": batch.probabilities.astype(np.float32),
            "relevance": batch.relevance.astype(np.float16),
            "targets": batch.targets.astype(np.int64),
        }
        if thumbs is not None:
            arrays["thumbs"] = thumbs
        if full is not None:
            arrays["full"] = full.astype(np.float16)
        if batch.concepts is not None:
            arrays["concepts"] = compact_concepts(batch.concepts)
        atomic_save_npz(path, **arrays)
        self._indexed.add(path)
        self._add(path, batch.content_hashes, batch.labels.tolist())
        return path

    def _shard(self, path: Path) -> dict[str, np.ndarray]:
        if path not in self._loaded:
            try:
                self._loaded[path] = load_shard(path)
            except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
                # moved aside, so that the next run computes its samples again instead of failing here for good
                # (checking every shard's checksum when indexing would read the whole cache twice per run)
                aside = path.with_name(path.name + ".damaged")
                try:
                    os.replace(path, aside)
                except OSError:
                    aside = path
                raise RunReadError(
                    path,
                    f"damaged ({type(err).__name__}: {err}); "
                    + (
                        f"moved aside to {aside.name}: run again, and its samples are computed anew"
                        if aside != path
                        else "delete it and run again, and its samples are computed anew"
                    ),
                ) from None
        return self._loaded[path]

    def gather(
        self, sample_ids: list[str], content_hashes: list[str], labels: np.ndarray
    ) -> tuple[AttributionBatch, np.ndarray | None]:
        """Assemble cached results in the given order (ids and labels from the current dataset).

        Returns
        -------
        AttributionBatch, thumbs
            ``thumbs`` is ``(N, t, t, 3)`` uint8, or None when any shard lacks thumbnails.
        """
        labels = np.asarray(labels, dtype=np.int64)
        locs = [self._index[self.key_of(h, int(lab))] for h, lab in zip(content_hashes, labels, strict=True)]
        first = self._shard(locs[0].shard) if locs else None
        n = len(locs)
        rel_shape = first["relevance"].shape[1:] if first is not None else (0, 0)
        k = first["probabilities"].shape[1] if first is not None else 0
        rel = np.empty((n, *rel_shape), dtype=np.float16)
        probs = np.empty((n, k), dtype=np.float32)
        preds = np.empty(n, dtype=np.int64)
        targets = np.empty(n, dtype=np.int64)
        thumbs: np.ndarray | None = None
        if first is not None and "thumbs" in first:
            thumbs = np.empty((n, *first["thumbs"].shape[1:]), dtype=np.uint8)
        concepts: np.ndarray | None = None
        if first is not None and "concepts" in first:
            concepts = np.empty((n, first["concepts"].shape[1]), dtype=np.float32)
        for i, loc in enumerate(locs):
            s = self._shard(loc.shard)
            rel[i] = s["relevance"][loc.position]
            probs[i] = s["probabilities"][loc.position]
            preds[i] = s["predictions"][loc.position]
            targets[i] = s["targets"][loc.position]
            if thumbs is not None:
                if "thumbs" not in s:
                    thumbs = None
                else:
                    thumbs[i] = s["thumbs"][loc.position]
            if concepts is not None:
                # a shard without concepts, or of another width, cannot have come from these settings
                if "concepts" not in s or s["concepts"].shape[1] != concepts.shape[1]:
                    raise RunReadError(
                        loc.shard,
                        "lacks the concept relevance its cache directory holds; delete it and rerun",
                    )
                concepts[i] = s["concepts"][loc.position]
        batch = AttributionBatch(
            sample_ids=list(sample_ids),
            labels=labels,
            predictions=preds,
            probabilities=probs,
            relevance=rel,
            targets=targets,
            content_hashes=list(content_hashes),
            concepts=concepts,
        )
        return batch, thumbs

    def gather_full(self, content_hashes: list[str], labels: np.ndarray) -> np.ndarray | None:
        """Full-resolution relevance ``(N, C, H, W)`` float16 in the given order, or None if a shard lacks it."""
        parts = []
        for h, lab in zip(content_hashes, np.asarray(labels).tolist(), strict=True):
            loc = self._index[self.key_of(h, int(lab))]
            s = self._shard(loc.shard)
            if "full" not in s:
                return None
            parts.append(s["full"][loc.position])
        return np.stack(parts) if parts else None

    def release(self) -> None:
        """Drop loaded shard arrays (free memory after gathering)."""
        self._loaded.clear()


_CREATE = "CREATE TABLE IF NOT EXISTS paste (key BLOB PRIMARY KEY, pred INTEGER NOT NULL) WITHOUT ROWID"
# The logit tests' results: the predicted class and one class's logit of a pasted image (the key names the
# class too), so a rerun repeats only the pastes that involve new images.
_CREATE_LOGIT = (
    "CREATE TABLE IF NOT EXISTS paste_logit (key BLOB PRIMARY KEY, pred INTEGER NOT NULL, logit REAL NOT NULL) "
    "WITHOUT ROWID"
)


def _always() -> bool:
    return True


class PasteCache:
    """Predicted classes of the paste test's pasted images, in SQLite next to the relevance shards.

    A pasted image is determined by its key (target content hash, donor content hash, grid mask; see
    :meth:`spray.analysis.scoring.InterventionProbe.predict_pasted`) together with the model and the input
    transform, which fix the :class:`ShardCache` directory this file lives in, and the way a paste is made,
    which :data:`~spray.versions.PASTE_VERSION` names (the file is per paste version). So a cached
    prediction is exactly what the model would predict again, and a nightly run with a few new samples
    repeats only the pastes that involve them.

    The cache is an optimisation only: if the file cannot be opened or written, the paste test runs
    without it (a warning is logged) and a damaged file is moved aside and started afresh.

    Under torchrun the ranks on rank 0's host open the same file (rank 0 first, so that it is created
    once) and write to it concurrently; ranks on other hosts use a :meth:`private` cache, as SQLite's
    WAL mode needs memory shared between the processes.
    """

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / paste_db_file(versions.PASTE_VERSION)
        self._conn: sqlite3.Connection | None = None
        self.hits = 0
        self.misses = 0
        #: Asked before every write: a result stored under a sample's content hash must come from those
        #: bytes, so the analysis stops writing once a sample read again gave other pixels.
        self.writes_allowed: Callable[[], bool] = _always
        try:
            self._conn = self._open()
        except sqlite3.DatabaseError as err:
            aside = self.path.with_suffix(f".damaged-{os.getpid()}")
            log.warning(
                "paste cache %s is unreadable (%s): moved to %s, starting a new one", self.path, err, aside
            )
            try:
                os.replace(self.path, aside)
                self._conn = self._open()
            except (OSError, sqlite3.Error) as err2:
                log.warning("paste cache disabled: %s", err2)
                self._conn = None
        except (OSError, sqlite3.Error) as err:
            log.warning("paste cache disabled: %s", err)

    @staticmethod
    def remove_older(directory: Path) -> int:
        """Delete the paste caches of other paste versions in ``directory`` (their pastes are made
        differently, so no audit of this version reads them; they would stay on disk forever); returns the
        bytes freed. A file that cannot be removed is left, with a warning."""
        freed = 0
        for f in sorted(Path(directory).glob(PASTE_DB_GLOB)):
            v = paste_db_version(f.name)
            if v is None or v == versions.PASTE_VERSION:
                continue
            try:
                size = f.stat().st_size
                f.unlink()
            except OSError as err:
                log.warning("paste cache %s of paste version %d not removed: %s", f, v, err)
                continue
            freed += size
            log.info(
                "removed %s: the paste cache of paste version %d (this is %d)",
                f,
                v,
                versions.PASTE_VERSION,
            )
        return freed

    @classmethod
    def private(cls) -> PasteCache:
        """A cache in this process's memory, shared with nobody and gone when closed: for a rank on another
        host than rank 0 (SQLite's WAL mode shares a file only between processes of one host)."""
        cache = cls.__new__(cls)
        cache.path = Path(":memory:")
        cache.hits = cache.misses = 0
        cache.writes_allowed = _always
        cache._conn = sqlite3.connect(":memory:", isolation_level="IMMEDIATE")
        cache._conn.execute(_CREATE)
        cache._conn.execute(_CREATE_LOGIT)
        return cache

    def _open(self) -> sqlite3.Connection:
        # Several ranks of a torchrun job write to one file: WAL lets them read while one writes, every
        # write transaction takes the write lock up front (IMMEDIATE) and waits up to 30 s for it, and a
        # key's prediction never changes, so concurrent INSERT OR IGNOREs of one key agree.
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level="IMMEDIATE")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(_CREATE)
        conn.execute(_CREATE_LOGIT)
        conn.execute("SELECT count(*) FROM paste LIMIT 1").fetchone()  # fails now if the file is damaged
        return conn

    @staticmethod
    def _blob(key: str) -> bytes:
        return hashlib.blake2b(key.encode(), digest_size=16).digest()

    def _select(self, table: str, columns: str, keys: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        """Rows of ``table`` among ``keys`` (missing ones are left out), counted as hits and misses."""
        if not keys:
            return {}
        if self._conn is None:
            self.misses += len(set(keys))  # disabled: every paste is run, and the log says so
            return {}
        by_blob = {self._blob(k): k for k in keys}
        blobs = list(by_blob)
        out: dict[str, tuple[Any, ...]] = {}
        try:
            for i in range(0, len(blobs), 500):  # SQLite's bound-parameter limit
                part = blobs[i : i + 500]
                q = f"SELECT key, {columns} FROM {table} WHERE key IN ({','.join('?' * len(part))})"
                for b, *values in self._conn.execute(q, part):
                    out[by_blob[bytes(b)]] = tuple(values)
        except sqlite3.Error as err:
            log.warning("paste cache read failed (%s): computing without it", err)
            self.misses += len(by_blob)
            return {}
        self.hits += len(out)
        self.misses += len(set(keys)) - len(out)
        return out

    def _insert(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if self._conn is None or not rows or not self.writes_allowed():
            return
        try:
            with self._conn:
                self._conn.executemany(sql, rows)
        except sqlite3.Error as err:
            log.warning("paste cache write failed (%s): continuing without storing", err)

    def get_many(self, keys: Sequence[str]) -> dict[str, int]:
        """Cached predictions among ``keys`` (missing ones are left out)."""
        return {k: int(v[0]) for k, v in self._select("paste", "pred", keys).items()}

    def put_many(self, items: Mapping[str, int]) -> None:
        """Store predictions (existing keys are kept: the same key always has the same prediction)."""
        rows = [(self._blob(k), int(v)) for k, v in items.items()]
        self._insert("INSERT OR IGNORE INTO paste (key, pred) VALUES (?, ?)", rows)

    def get_logits(self, keys: Sequence[str]) -> dict[str, tuple[int, float]]:
        """Cached ``(predicted class, class logit)`` among ``keys`` (each key names the image and the class)."""
        return {
            k: (int(v[0]), float(v[1])) for k, v in self._select("paste_logit", "pred, logit", keys).items()
        }

    def put_logits(self, items: Mapping[str, tuple[int, float]]) -> None:
        """Store ``(predicted class, class logit)`` per key (existing keys are kept)."""
        rows = [(self._blob(k), int(p), float(z)) for k, (p, z) in items.items()]
        self._insert("INSERT OR IGNORE INTO paste_logit (key, pred, logit) VALUES (?, ?, ?)", rows)

    def close(self) -> None:
        """Close the database."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

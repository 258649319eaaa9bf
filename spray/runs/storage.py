"""On-disk layout: the per-sample relevance cache, run directories, atomic publishing, readers.

Layout of a runs directory (format version :data:`LAYOUT_VERSION`)::

    runs/
      .lock                          fcntl lock held by a running audit
      .cache/<model16>-<lrp16>/      per-sample results, keyed by sample content hash
        shard-<start>-<key16>.npz    one finished shard: ids, hashes, labels, predictions, probabilities,
                                     relevance (n,h,w) f16, targets, thumbs (n,t,t,3) u8 [, full (n,C,H,W) f16]
        paste.sqlite                 predictions of the paste test's pasted images (PasteCache)
      .staging/                      runs being written (never read by the dashboard)
      <YYYYmmddTHHMMSSZ>-<run12>/    a published run
        summary.json                 the report (see docs/run_layout.md)
        samples.parquet              one row per sample: sample_id, row, label, prediction, confidence, target,
                                     cluster (chosen k), x, y, score
        heatmaps.npy                 (N, h, w) float16 pooled relevance, row order of samples.parquet
        thumbs.npy                   (N, t, t, 3) uint8 thumbnails (optional)
        classes/<c>.npz              rows, eigenvalues, eigenvectors, embedding, labels_k<k> for every k
        report.html                  static report (optional)
      latest -> <run dir name>       symlink, replaced atomically after publishing

Every file is written to a temporary name and ``os.replace``d, and a run directory appears only via
an atomic ``rename`` from ``.staging``: a crash never leaves a half-written run visible.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from spray.records import AttributionBatch

log = logging.getLogger(__name__)

LAYOUT_VERSION = 1
CACHE_DIR = ".cache"
#: ``.cache/work``: per-run shard manifests (not a cache directory of a model).
WORK_DIR = "work"
STAGING_DIR = ".staging"
LATEST = "latest"
SUMMARY = "summary.json"


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; on success fsync it and ``os.replace`` it into place.

    A crash (or an exception) at any moment leaves either the old file or the new one, never a partial one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_file(path) as fh:
        fh.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (sorted keys, so identical content gives identical bytes)."""
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default).encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` atomically (a crash leaves no partial shard)."""
    with atomic_file(path) as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` atomically."""
    with atomic_file(path) as fh:
        np.save(fh, array)


# ---------------------------------------------------------------------------------------------------------
# Per-sample cache


@dataclass
class CachedSample:
    """Location of one cached sample: shard file and row."""

    shard: Path
    row: int


class ShardCache:
    """Per-sample relevance cache for one (model, LRP settings) pair.

    Samples are keyed by their content hash, so a renamed or re-ordered dataset still hits the cache,
    and a changed image misses it. Shards are written whole and atomically: the unit of resume.

    Parameters
    ----------
    root : Path
        ``runs/.cache``.
    model_hash, lrp_hash : str
        Hashes of the model weights and of the LRP + batch settings that change the maps.
    """

    FIELDS = ("ids", "hashes", "labels", "predictions", "probabilities", "relevance", "targets")

    def __init__(self, root: Path, model_hash: str, lrp_hash: str) -> None:
        self.dir = Path(root) / f"{model_hash[:16]}-{lrp_hash[:16]}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._index: dict[str, CachedSample] = {}
        self._loaded: dict[Path, dict[str, np.ndarray]] = {}
        self._indexed: set[Path] = set()
        self.refresh()

    def refresh(self) -> int:
        """Index shard files that appeared since the last scan (written by other ranks or processes).

        Returns
        -------
        int
            Number of newly indexed shard files.
        """
        added = 0
        for shard in sorted(self.dir.glob("shard-*.npz")):
            if shard in self._indexed:
                continue
            try:
                with np.load(shard, allow_pickle=False) as z:
                    hashes = z["hashes"]
            except Exception as err:  # a damaged shard is recomputed, not fatal
                log.warning("ignoring unreadable cache shard %s (%s); it will be recomputed", shard, err)
                continue
            self._indexed.add(shard)
            added += 1
            for r, h in enumerate(hashes.tolist()):
                self._index.setdefault(str(h), CachedSample(shard, r))
        return added

    def __contains__(self, content_hash: str) -> bool:
        return content_hash in self._index

    def hashes(self) -> frozenset[str]:
        """The content hashes the cache holds (as of the last :meth:`refresh`)."""
        return frozenset(self._index)

    def __len__(self) -> int:
        return len(self._index)

    @staticmethod
    def shard_name(start: int, hashes: list[str]) -> str:
        """File name of a shard starting at dataset position ``start`` holding samples ``hashes``."""
        key = hashlib.sha256("\n".join(hashes).encode()).hexdigest()[:16]
        return f"shard-{start:09d}-{key}.npz"

    def write(
        self, start: int, batch: AttributionBatch, thumbs: np.ndarray | None, full: np.ndarray | None
    ) -> Path:
        """Atomically write one shard of freshly computed samples and index it."""
        path = self.dir / self.shard_name(start, batch.content_hashes)
        arrays: dict[str, np.ndarray] = {
            "ids": np.asarray(batch.sample_ids, dtype=str),
            "hashes": np.asarray(batch.content_hashes, dtype=str),
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
        atomic_save_npz(path, **arrays)
        self._indexed.add(path)
        for r, h in enumerate(batch.content_hashes):
            self._index.setdefault(h, CachedSample(path, r))
        return path

    def _shard(self, path: Path) -> dict[str, np.ndarray]:
        if path not in self._loaded:
            with np.load(path, allow_pickle=False) as z:
                self._loaded[path] = {k: z[k] for k in z.files}
        return self._loaded[path]

    def gather(
        self, sample_ids: list[str], hashes: list[str], labels: np.ndarray
    ) -> tuple[AttributionBatch, np.ndarray | None]:
        """Assemble cached results in the given order (ids/labels from the current dataset).

        Returns
        -------
        AttributionBatch, thumbs
            ``thumbs`` is ``(N, t, t, 3)`` uint8 or None when any shard lacks thumbnails.
        """
        rows = [self._index[h] for h in hashes]
        first = self._shard(rows[0].shard) if rows else None
        n = len(rows)
        rel_shape = first["relevance"].shape[1:] if first is not None else (0, 0)
        k = first["probabilities"].shape[1] if first is not None else 0
        rel = np.empty((n, *rel_shape), dtype=np.float16)
        probs = np.empty((n, k), dtype=np.float32)
        preds = np.empty(n, dtype=np.int64)
        targets = np.empty(n, dtype=np.int64)
        thumbs: np.ndarray | None = None
        if first is not None and "thumbs" in first:
            thumbs = np.empty((n, *first["thumbs"].shape[1:]), dtype=np.uint8)
        for i, loc in enumerate(rows):
            s = self._shard(loc.shard)
            rel[i] = s["relevance"][loc.row]
            probs[i] = s["probabilities"][loc.row]
            preds[i] = s["predictions"][loc.row]
            targets[i] = s["targets"][loc.row]
            if thumbs is not None:
                if "thumbs" not in s:
                    thumbs = None
                else:
                    thumbs[i] = s["thumbs"][loc.row]
        batch = AttributionBatch(
            sample_ids=list(sample_ids),
            labels=np.asarray(labels, dtype=np.int64),
            predictions=preds,
            probabilities=probs,
            relevance=rel,
            targets=targets,
            content_hashes=list(hashes),
        )
        return batch, thumbs

    def gather_full(self, hashes: list[str]) -> np.ndarray | None:
        """Full-resolution relevance ``(N, C, H, W)`` float16 in the given order, or None if a shard lacks it."""
        parts = []
        for h in hashes:
            loc = self._index[h]
            s = self._shard(loc.shard)
            if "full" not in s:
                return None
            parts.append(s["full"][loc.row])
        return np.stack(parts) if parts else None

    def release(self) -> None:
        """Drop loaded shard arrays (free memory after gathering)."""
        self._loaded.clear()


# ---------------------------------------------------------------------------------------------------------
# Runs


class PasteCache:
    """Predicted classes of the paste test's pasted images, in SQLite next to the relevance shards.

    A pasted image is determined by its key (target content hash, donor content hash, grid mask; see
    :meth:`spray.analysis.scoring.InterventionProbe.predict_pasted`) together with the model and the input
    transform, which fix the :class:`ShardCache` directory this file lives in. So a cached prediction
    is exactly what the model would predict again, and a nightly run with a few new samples repeats only
    the pastes that involve them. With a real model the paste test is most of the analysis (a
    ResNet-18 audit of 3,000 images: 130 of 136 s), and without this cache an incremental run costs
    nearly as much as a full one.

    The cache is an optimisation only: if the file cannot be opened or written, the paste test runs
    without it (a warning is logged) and a damaged file is moved aside and started afresh.
    """

    FILE = "paste.sqlite"

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / self.FILE
        self._conn: sqlite3.Connection | None = None
        self.hits = 0
        self.misses = 0
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

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS paste (key BLOB PRIMARY KEY, pred INTEGER NOT NULL) WITHOUT ROWID"
        )
        conn.execute("SELECT count(*) FROM paste LIMIT 1").fetchone()  # fails now if the file is damaged
        return conn

    @staticmethod
    def _blob(key: str) -> bytes:
        return hashlib.blake2b(key.encode(), digest_size=16).digest()

    def get_many(self, keys: Sequence[str]) -> dict[str, int]:
        """Cached predictions among ``keys`` (missing ones are left out)."""
        if not keys:
            return {}
        if self._conn is None:
            self.misses += len(set(keys))  # disabled: every paste is predicted, and the log says so
            return {}
        by_blob = {self._blob(k): k for k in keys}
        blobs = list(by_blob)
        out: dict[str, int] = {}
        try:
            for i in range(0, len(blobs), 500):  # SQLite's bound-parameter limit
                part = blobs[i : i + 500]
                q = f"SELECT key, pred FROM paste WHERE key IN ({','.join('?' * len(part))})"
                for b, pred in self._conn.execute(q, part):
                    out[by_blob[bytes(b)]] = int(pred)
        except sqlite3.Error as err:
            log.warning("paste cache read failed (%s): computing without it", err)
            self.misses += len(by_blob)
            return {}
        self.hits += len(out)
        self.misses += len(set(keys)) - len(out)
        return out

    def put_many(self, items: Mapping[str, int]) -> None:
        """Store predictions (existing keys are kept: the same key always has the same prediction)."""
        if self._conn is None or not items:
            return
        try:
            with self._conn:
                self._conn.executemany(
                    "INSERT OR IGNORE INTO paste (key, pred) VALUES (?, ?)",
                    [(self._blob(k), int(v)) for k, v in items.items()],
                )
        except sqlite3.Error as err:
            log.warning("paste cache write failed (%s): continuing without storing", err)

    def close(self) -> None:
        """Close the database."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def run_dir_name(run_id: str, when: datetime | None = None) -> str:
    """``<UTC timestamp>-<first 12 of run id>``: sorts by time, identifies the content."""
    t = (when or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{t}-{run_id[:12]}"


def staging_dir(runs_dir: Path, run_id: str) -> Path:
    """A fresh private folder under ``runs/.staging`` to write a run into."""
    base = runs_dir / STAGING_DIR
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{run_id[:12]}-", dir=base))


def publish(runs_dir: Path, staged: Path, run_id: str) -> Path:
    """Atomically move a fully written run into place and point ``latest`` at it."""
    final = runs_dir / run_dir_name(run_id)
    # mkstemp/mkdtemp create 0600/0700; a published run is readable by the dashboard's user.
    os.chmod(staged, 0o755)
    for sub in staged.rglob("*"):
        os.chmod(sub, 0o755 if sub.is_dir() else 0o644)
    os.rename(staged, final)
    link_tmp = runs_dir / f".{LATEST}.{os.getpid()}.tmp"
    link_tmp.unlink(missing_ok=True)
    os.symlink(final.name, link_tmp)
    os.replace(link_tmp, runs_dir / LATEST)
    log.info("published run %s", final)
    return final


def list_runs(runs_dir: str | Path) -> list[Path]:
    """Published runs, newest first (only folders that hold a summary.json)."""
    d = Path(runs_dir)
    if not d.is_dir():
        return []
    runs = [
        p
        for p in d.iterdir()
        if p.is_dir() and not p.is_symlink() and not p.name.startswith(".") and (p / SUMMARY).is_file()
    ]
    return sorted(runs, key=lambda p: p.name, reverse=True)


def find_run(runs_dir: str | Path, run_id: str) -> Path | None:
    """The published run with this run id, if any."""
    for p in list_runs(runs_dir):
        if p.name.endswith(run_id[:12]):
            try:
                if json.loads((p / SUMMARY).read_text()).get("run_id") == run_id:
                    return p
            except (OSError, json.JSONDecodeError):
                continue
    return None


def latest_run(runs_dir: str | Path) -> Path | None:
    """The newest published run."""
    runs = list_runs(runs_dir)
    return runs[0] if runs else None


def prune_runs(runs_dir: Path, keep: int) -> list[Path]:
    """Retention: delete all but the newest ``keep`` runs (never the one ``latest`` points to)."""
    runs = list_runs(runs_dir)
    latest = (runs_dir / LATEST).resolve() if (runs_dir / LATEST).exists() else None
    removed = []
    for p in runs[keep:]:
        if latest is not None and p.resolve() == latest:
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    if removed:
        log.info("retention: removed %d old runs", len(removed))
    return removed


def prune_cache(runs_dir: Path, in_use: str) -> list[Path]:
    """Retention for the cache: delete ``.cache/<model16>-<lrp16>`` directories no published run uses.

    Every nightly run with a retrained model opens a new cache directory (relevance of every sample,
    paste predictions), so without this the cache grows by a dataset's worth of heatmaps per model.
    A directory is kept when it is ``in_use`` (the run just published) or named by the ``cache`` key of
    any run still in ``runs_dir``. If some run predates that key, nothing is deleted (its directory
    cannot be told apart).

    Returns
    -------
    list[Path]
        The deleted directories.
    """
    root = runs_dir / CACHE_DIR
    found = sorted(root.iterdir()) if root.is_dir() else []
    others = [d for d in found if d.is_dir() and d.name not in (in_use, WORK_DIR)]
    if not others:
        return []  # the usual night (same model): no summary needs reading
    keep = {in_use}
    for run in list_runs(runs_dir):
        try:
            key = json.loads((run / SUMMARY).read_text()).get("cache")
        except (OSError, ValueError):
            key = None
        if not key:
            log.info("cache retention skipped: run %s does not record its cache directory", run.name)
            return []
        keep.add(str(key))
    removed = [d for d in others if d.name not in keep]
    for d in removed:
        shutil.rmtree(d, ignore_errors=True)
    if removed:
        log.info("cache retention: removed %d cache directories no kept run uses", len(removed))
    return removed


def clean_staging(runs_dir: Path) -> None:
    """Remove leftovers of crashed runs (call only while holding the lock).

    Removes every folder under ``.staging`` and the ``*.tmp`` files that an atomic write interrupted by
    ``kill -9`` leaves in the cache. Finished cache shards and shard manifests are kept: they are what
    the next run resumes from.
    """
    base = runs_dir / STAGING_DIR
    if base.is_dir():
        for p in base.iterdir():
            shutil.rmtree(p, ignore_errors=True)
    cache = runs_dir / CACHE_DIR
    if cache.is_dir():
        for tmp in cache.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)
    for tmp in runs_dir.glob(f".{LATEST}.*.tmp"):
        tmp.unlink(missing_ok=True)


def work_dir(runs_dir: Path, run_id: str) -> Path:
    """Per-run folder of shard manifests: ``runs/.cache/work/<run16>`` (kept until the run is published)."""
    return runs_dir / CACHE_DIR / WORK_DIR / run_id[:16]


# ---------------------------------------------------------------------------------------------------------
# Readers (used by the dashboard and the report; never write)


@dataclass
class RunData:
    """A published run, opened read-only.

    Attributes
    ----------
    path : Path
        Run directory.
    summary : dict
        Parsed summary.json.
    """

    path: Path
    summary: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> RunData:
        """Open a published run (raises FileNotFoundError when it has no summary.json)."""
        p = Path(path)
        return cls(p, json.loads((p / SUMMARY).read_text()))

    def samples(self) -> Any:
        """The per-sample table as a pandas DataFrame (row order = heatmaps.npy order)."""
        import pandas as pd

        return pd.read_parquet(self.path / "samples.parquet")

    def heatmaps(self) -> np.ndarray:
        """``(N, h, w)`` float16, memory-mapped."""
        return np.load(self.path / "heatmaps.npy", mmap_mode="r")

    def thumbs(self) -> np.ndarray | None:
        """``(N, t, t, 3)`` uint8, memory-mapped, or None when the run stored none."""
        p = self.path / "thumbs.npy"
        return np.load(p, mmap_mode="r") if p.exists() else None

    def class_arrays(self, class_index: int) -> dict[str, np.ndarray]:
        """Arrays of one class: rows, eigenvalues, eigenvectors, embedding, labels_k<k>."""
        with np.load(self.path / "classes" / f"{class_index}.npz", allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def iter_classes(self) -> Iterator[dict[str, Any]]:
        """Per-class entries of the summary."""
        yield from self.summary.get("classes", [])

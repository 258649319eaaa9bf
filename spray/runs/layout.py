"""The one place that names every file and folder of a runs directory and of a run.

Nothing else in spray spells a file name of the runs folder: the writer, the reader, the cache and the
publisher all ask this module. ``docs/run_layout.md`` documents each file (keys, dtypes, shapes, ids);
``tests/runs/test_layout_doc.py`` keeps the two in step.

A runs directory::

    runs/
      .lock                          fcntl lock held by a running audit
      .cache/<model16>-<lrp16>/      per-sample results of one model and LRP setting (ShardCache)
        shard-<start>-<key16>.npz    one finished shard of the batch stage
        paste-a<analysis>.sqlite     the paste test's predictions (PasteCache)
      .cache/work/<run16>/           shard manifests of a run being computed (removed once published)
      .staging/                      runs being written (never read by a reader)
      <YYYYmmddTHHMMSSffffffZ>-<run12>/   a published run (RunFiles)
      latest -> <run folder>         symlink, replaced atomically after publishing
      flags.sqlite                   the dashboard's flags (spray.flags)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spray.runs.errors import RunReadError

#: Version of the files of a run. Readers accept this version and every older one they know
#: (see :mod:`spray.runs.reader`); a newer one is refused with a message to upgrade spray.
# 3: concepts.npy (concept relevance per sample) and summary extra.concept_layer.
# 4: concept-space findings: findings[].space and .channels, "<c>/concept/k<k>/c<id>" keys, the class
# files' concept_labels_k<k>, concept_maps.npz (concept-conditional heatmaps of their members).
# 5: samples.parquet's content_hash (flags record it, spray.flags.content compares it with later runs).
LAYOUT_VERSION = 5

# The runs directory
LOCK = ".lock"
CACHE_DIR = ".cache"
#: ``.cache/file_hashes.sqlite``: the content hash of each image file, by its size, mtime and ctime.
FILE_HASHES = "file_hashes.sqlite"
#: ``.cache/work``: per-run shard manifests (not a cache directory of a model).
WORK_DIR = "work"
STAGING_DIR = ".staging"
LATEST = "latest"
FLAGS_DB = "flags.sqlite"

# A run
SUMMARY = "summary.json"
SAMPLES = "samples.parquet"
HEATMAPS = "heatmaps.npy"
THUMBS = "thumbs.npy"
FULL_RELEVANCE = "relevance_full.npy"
CONCEPTS = "concepts.npy"
CONCEPT_MAPS = "concept_maps.npz"
CLASSES_DIR = "classes"
REPORT_HTML = "report.html"

# A correction (``runs/corrections/<time>-<id12>/``, written by :mod:`spray.correct`)
CORRECTIONS_DIR = "corrections"
#: The correction's re-audit: a runs folder of its own (``reaudit/<run>``); the project's flags stay in ``runs/``.
REAUDIT_DIR = "reaudit"
#: The artifact direction, its reference mean and the artifact region (``vector``, ``reference_mean``, ``region``).
CORRECTION_DIRECTION = "cav.npz"
#: The correction's record (:class:`spray.correct.record.CorrectionRecord`).
CORRECTION_RECORD = "correction.json"

# A cache directory
SHARD_PREFIX = "shard-"
SHARD_GLOB = "shard-*.npz"
MANIFEST_PREFIX = "manifest-"


#: ``summary.json`` → ``extra`` key of :func:`sample_order_digest` (runs written since 8 Dec 2026).
SAMPLE_ORDER = "sample_order"


def sample_order_digest(sample_ids: list[str]) -> str:
    """SHA-256 of the sample ids in storage order: the rows of ``samples.parquet``, which every per-sample
    array and every class file's row positions follow (a table sorted and written back moves them all)."""
    import hashlib

    h = hashlib.sha256()
    for sample_id in sample_ids:
        h.update(sample_id.encode("utf-8", "surrogatepass") + b"\0")
    return "sha256:" + h.hexdigest()


def check_sample_order(f: Path, recorded: str | None, sample_ids: list[str]) -> None:
    """Refuse ``samples.parquet`` (``f``) whose ids ``sample_ids`` are not in the order ``recorded``
    (:func:`sample_order_digest`; None: a run before the digest, not checked).

    Raises
    ------
    RunReadError
        The rows were reordered since the run was written.
    """
    if recorded is not None and recorded != sample_order_digest(sample_ids):
        raise RunReadError(
            f,
            "its rows are not in the order the run wrote them (sorted or edited since: every per-sample array "
            "and class file points at rows by position, so findings and flags would name other images); "
            "restore the file, or audit again with --force",
        )


def shard_file(start: int, key16: str) -> str:
    """``shard-<start, 9 digits>-<key16>.npz``: a shard of the batch stage starting at dataset position
    ``start``; ``key16`` hashes the sample keys it holds, so a shard with other content has another name."""
    return f"{SHARD_PREFIX}{start:09d}-{key16}.npz"


def manifest_file(start: int) -> str:
    """``manifest-<start>.json``: which samples the shard at ``start`` holds in this run (ids, keys,
    labels, skipped samples), written after its shard file."""
    return f"{MANIFEST_PREFIX}{start:09d}.json"


def paste_db_file(paste_version: int) -> str:
    """``paste-a<version>.sqlite``: the paste test's predictions, per :data:`~spray.versions.PASTE_VERSION`
    (the analysis version that last changed how a paste is made: a new one starts an empty file)."""
    return f"paste-a{paste_version}.sqlite"


#: Every paste cache file and sidecar of a cache directory, of any paste version.
PASTE_DB_GLOB = "paste-a*"


def paste_db_version(name: str) -> int | None:
    """The paste version of a paste cache file or its SQLite sidecar (``paste-a14.sqlite``,
    ``paste-a14.sqlite-wal``); None for any other name."""
    head, sep, tail = name.partition(".sqlite")
    if not sep or tail not in ("", "-wal", "-shm") or not head.startswith("paste-a"):
        return None
    digits = head.removeprefix("paste-a")
    return int(digits) if digits.isdigit() else None


@dataclass(frozen=True)
class RunFiles:
    """The files of one run folder (published or in staging)."""

    path: Path

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY

    @property
    def samples(self) -> Path:
        return self.path / SAMPLES

    @property
    def heatmaps(self) -> Path:
        return self.path / HEATMAPS

    @property
    def thumbs(self) -> Path:
        return self.path / THUMBS

    @property
    def full_relevance(self) -> Path:
        return self.path / FULL_RELEVANCE

    @property
    def concepts(self) -> Path:
        return self.path / CONCEPTS

    @property
    def concept_maps(self) -> Path:
        return self.path / CONCEPT_MAPS

    @property
    def classes(self) -> Path:
        return self.path / CLASSES_DIR

    def class_file(self, class_index: int) -> Path:
        """``classes/<c>.npz``: the analysis arrays of class ``c``."""
        return self.path / CLASSES_DIR / f"{int(class_index)}.npz"

    @property
    def report_html(self) -> Path:
        return self.path / REPORT_HTML


@dataclass(frozen=True)
class RunsFolder:
    """The fixed places of a runs directory."""

    root: Path

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    @property
    def cache(self) -> Path:
        return self.root / CACHE_DIR

    @property
    def staging(self) -> Path:
        return self.root / STAGING_DIR

    @property
    def latest(self) -> Path:
        return self.root / LATEST

    @property
    def flags_db(self) -> Path:
        return self.root / FLAGS_DB

    @property
    def file_hashes(self) -> Path:
        """``.cache/file_hashes.sqlite``: image files' content hashes by file status (:mod:`spray.runs.file_hashes`)."""
        return self.root / CACHE_DIR / FILE_HASHES

    def work(self, run_id: str) -> Path:
        """``.cache/work/<run16>``: shard manifests of run ``run_id`` (kept until it is published)."""
        return self.root / CACHE_DIR / WORK_DIR / run_id[:16]

    def cache_dir(self, name: str) -> Path:
        """``.cache/<name>``: the per-sample cache of one model and LRP setting."""
        return self.root / CACHE_DIR / name


def project_root(runs_dir: str | Path) -> Path:
    """The project's runs folder, which holds the flags, for the runs folder ``runs_dir``: ``runs_dir`` itself,
    or ``<runs>`` for a correction's re-audit runs folder ``<runs>/corrections/<correction>/reaudit`` (it holds
    no flags: ``spray correct`` reads and the dashboard writes the project's)."""
    runs_dir = Path(runs_dir)
    if runs_dir.name == REAUDIT_DIR and runs_dir.parent.parent.name == CORRECTIONS_DIR:
        return runs_dir.parent.parent.parent
    return runs_dir

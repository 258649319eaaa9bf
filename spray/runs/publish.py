"""Publishing runs: staging, the atomic rename, ``latest``, finding published runs, retention, clean-up.

A run is written into a private folder under ``runs/.staging`` and appears in the runs directory only by
one atomic ``rename`` (then ``latest`` is replaced atomically): a reader never sees a half-written run,
and a crash leaves nothing but staging leftovers, which the next run removes while holding the lock.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from spray.errors import ConfigError
from spray.runs.atomic import translate_write_errors
from spray.runs.errors import RunReadError, RunWriteError
from spray.runs.layout import CACHE_DIR, LATEST, LOCK, STAGING_DIR, SUMMARY, WORK_DIR, RunsFolder
from spray.runs.locking import pinned, unpin

if TYPE_CHECKING:
    from spray.runs.summary import RunSummary

log = logging.getLogger(__name__)


def check_runs_dir(runs_dir: Path) -> bool:
    """Make sure ``runs_dir`` is a folder, creating it if needed; say whether it is writable.

    Returns
    -------
    bool
        True when this process can write there; False for an existing folder that is read-only (a
        reader can still answer "up to date" from it).

    Raises
    ------
    ConfigError
        ``runs_dir`` is a file, or cannot be created (a parent is a file, no permission, read-only), or its
        ``latest`` is not a link.
    """
    key = "output.runs_dir (or --runs-dir)"
    if "\0" in str(runs_dir):
        raise ConfigError(
            f"{key} {str(runs_dir)!r} holds a NUL byte, which no path can; write the path without it."
        )
    if runs_dir.exists() and not runs_dir.is_dir():
        raise ConfigError(f"{key} {str(runs_dir)!r} is a file, not a folder. Point it at a folder.")
    latest = runs_dir / LATEST
    if latest.exists() and not latest.is_symlink():
        # no run could be published (the link cannot replace a folder), and every rerun would answer "up to date"
        raise ConfigError(
            f"{str(latest)!r} is a {'folder' if latest.is_dir() else 'file'}, not the link spray keeps to the newest "
            "run (a copy made with cp -L or rsync -L turns the link into a folder). Remove it (`rm -r` it, or move "
            "it away if it holds the only copy of a run) and run again: spray writes the link anew."
        )
    if not runs_dir.exists():
        try:
            runs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            why = "a parent is a file" if err.errno in (errno.ENOTDIR, errno.EEXIST) else err.strerror
            raise ConfigError(
                f"{key} {str(runs_dir)!r} cannot be created ({why}). Point it at a folder this user can create."
            ) from None
    _check_own_entries(runs_dir)
    return _writable(runs_dir)


#: The entries spray keeps in a runs folder, whether each is a folder, and what it is.
_OWN_ENTRIES = (
    (LOCK, False, "the lock file of a running audit"),
    (STAGING_DIR, True, "the folder runs are written in before they are published"),
    (CACHE_DIR, True, "the heatmap cache"),
    (f"{CACHE_DIR}/{WORK_DIR}", True, "the shard manifests of runs being computed"),
)


def _check_own_entries(runs_dir: Path) -> None:
    """Refuse a runs folder whose own entries are of the wrong type (``.lock`` a folder, ``.staging`` or
    ``.cache`` a file): they failed with a raw IsADirectoryError / FileExistsError / NotADirectoryError, one
    only after a whole batch stage.

    Raises
    ------
    ConfigError
        Naming the entry and the fix.
    """
    for name, folder, what in _OWN_ENTRIES:
        path = runs_dir / name
        if not path.exists() and not path.is_symlink():
            continue
        if path.is_dir() != folder:
            found = "folder" if path.is_dir() else "file" if path.exists() else "dangling link"
            raise ConfigError(
                f"{str(path)!r} is a {found}, but spray keeps {what} there (a {'folder' if folder else 'file'}). "
                f"Move it out of the runs folder (or remove it: spray made no {found} there) and run again: "
                "spray makes it anew."
            )


def _writable(folder: Path) -> bool:
    """Whether this process may create files in ``folder`` (False on a read-only file system)."""
    return os.access(folder, os.W_OK | os.X_OK)


#: The time part of a run folder's name (:func:`run_dir_name`).
_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"
#: A published run folder's name, ``<UTC time>-<run id's first 12>``. Runs are ordered by this name, so a
#: folder named otherwise (a copy kept aside as ``keep-first-audit``) is no published run: it would
#: otherwise sort as the newest for good (compared with every night, and retention deleting the real runs).
RUN_NAME = re.compile(r"\d{8}T\d{12}Z-[0-9A-Za-z]{1,12}")
#: Folders already warned about, (runs folder, name): list_runs runs many times a job, said once.
_passed_over: set[tuple[str, str]] = set()


def run_dir_name(run_id: str, when: datetime | None = None, *, after: str | None = None) -> str:
    """``<UTC timestamp>-<first 12 of run id>``: sorts by time, identifies the content.

    Parameters
    ----------
    run_id : str
        The run id.
    when : datetime, optional
        The time (default now).
    after : str, optional
        The newest existing run folder's name: the name returned sorts after it even when the clock is
        behind that run's time (a clock set back would otherwise publish runs that sort as older than the
        current one, so the same inputs were analysed and published again every night), with a warning.
    """
    t = when or datetime.now(UTC)
    newest = None if after is None else run_time(after)
    if newest is not None and t <= newest:
        log.warning(
            "the clock (%s UTC) is not after the time in the newest run's name, %s: either the clock is wrong "
            "now, or it was ahead when that run was made (then every run is named like this, a microsecond "
            "after the one before, until the clock passes that time). This run is named just after it, so that "
            "it sorts as the newest",
            t.strftime("%Y-%m-%d %H:%M:%S"),
            after,
        )
        t = newest + timedelta(microseconds=1)
    return f"{t.strftime(_TIME_FORMAT)}-{run_id[:12]}"


def staging_dir(runs_dir: Path, run_id: str) -> Path:
    """A fresh private folder under ``runs/.staging`` to write a run into."""
    base = RunsFolder(runs_dir).staging
    with translate_write_errors(base):
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{run_id[:12]}-", dir=base))


def publish(runs_dir: Path, staged: Path, run_id: str) -> Path:
    """Atomically move a fully written run into place and point ``latest`` at it."""
    newest = list_runs(runs_dir)
    final = runs_dir / run_dir_name(run_id, after=newest[0].name if newest else None)
    with translate_write_errors(runs_dir):
        # mkstemp/mkdtemp create 0600/0700; a published run is readable by the dashboard's user.
        os.chmod(staged, 0o755)
        for sub in staged.rglob("*"):
            os.chmod(sub, 0o755 if sub.is_dir() else 0o644)
        os.rename(staged, final)
    log.info("published run %s", final)
    try:
        point_latest(runs_dir, final, f"run {final.name} is published")
    except BaseException as err:
        # a stop (SIGTERM) between the rename and the link: the job still says which run it published
        setattr(err, "run_dir", str(final))  # noqa: B010
        raise
    return final


class LatestNotMadeError(RunWriteError):
    """A run is published but ``latest`` could not be pointed to it (``run_dir``: that run)."""

    def __init__(self, run_dir: Path, problem: str) -> None:
        self.run_dir = str(run_dir)
        super().__init__(run_dir.parent / LATEST, problem)


def point_latest(runs_dir: Path, run: Path, said: str) -> None:
    """Point ``latest`` at ``run`` atomically (a temporary link replaced into place).

    Raises
    ------
    LatestNotMadeError
        The link cannot be made (no space or inode left, read-only); ``said`` begins its message.
    """
    link_tmp = runs_dir / f".{LATEST}.{os.getpid()}.tmp"
    try:
        link_tmp.unlink(missing_ok=True)
        os.symlink(run.name, link_tmp)
        os.replace(link_tmp, runs_dir / LATEST)
    except OSError as err:
        with contextlib.suppress(OSError):
            link_tmp.unlink(missing_ok=True)
        raise LatestNotMadeError(
            run,
            f"{said}, but the link {runs_dir / LATEST} could not be pointed to it ({err.strerror or err}). "
            "Free some space (or inodes) there, or make it writable: the next `spray run` or `spray audit` "
            "points the link to the newest run; until then the dashboard's `latest` is missing or older.",
        ) from err


def list_runs(runs_dir: str | Path) -> list[Path]:
    """Published run folders, newest first: folders named as spray names runs (:data:`RUN_NAME`) holding a
    summary.json; not the ``latest`` link. A run folder named otherwise (copied or renamed by hand) is passed
    over with a warning, once: ordered by name, it would pass for the newest run."""
    d = Path(runs_dir)
    if not d.is_dir():
        return []
    runs = [
        p
        for p in d.iterdir()
        if p.is_dir() and not p.is_symlink() and not p.name.startswith(".") and (p / SUMMARY).is_file()
    ]
    odd = sorted(p.name for p in runs if not RUN_NAME.fullmatch(p.name))
    if new := [n for n in odd if (str(d), n) not in _passed_over]:
        _passed_over.update((str(d), n) for n in new)
        log.warning(
            "run folder %s in %s: not named as spray names published runs (<UTC time>-<run id>), so passed "
            "over: not taken as the newest run, compared with, shown, reused or deleted by retention. Keep "
            "copies of runs outside the runs folder, or give the folder back its original name to list it",
            ", ".join(new),
            d,
        )
    return sorted((p for p in runs if RUN_NAME.fullmatch(p.name)), key=lambda p: p.name, reverse=True)


def run_time(name: str) -> datetime | None:
    """The UTC time in a run folder's name (None for a name spray did not give)."""
    if not RUN_NAME.fullmatch(name):
        return None
    try:
        return datetime.strptime(name[:22], _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:  # digits of no date (a folder named by hand)
        return None


def find_run(runs_dir: str | Path, run_id: str) -> Path | None:
    """The published, readable run with this run id, if any (a damaged one is logged and passed over)."""
    from spray.runs.reader import read_summary

    for p in list_runs(runs_dir):
        if p.name.endswith(run_id[:12]):
            try:
                if read_summary(p).run_id == run_id:
                    return p
            except RunReadError as err:
                log.warning("run %s is unreadable, not taken as published: %s", p.name, err)
    return None


def newest_run_where(
    runs_dir: str | Path, match: Callable[[RunSummary], bool], *, before: str | None = None
) -> tuple[Path, RunSummary] | None:
    """The newest readable published run whose summary ``match`` accepts, with that summary (None if none);
    only among runs published before the run folder named ``before`` when given."""
    from spray.runs.reader import read_summary

    for p in list_runs(runs_dir):
        if before is not None and p.name >= before:
            continue
        try:
            s = read_summary(p)
        except RunReadError:
            continue
        if match(s):
            return p, s
    return None


def runs_named(runs: list[tuple[Path, RunSummary]], text: str, dataset: str | None = None) -> list[Path]:
    """The run folders ``text`` names among ``runs`` (newest first, with their summaries): a folder name, else a
    prefix of folder names or of run ids. Where they hold several run ids, those of ``dataset`` (a date prefix
    shared with other datasets' runs in one folder); the caller refuses what still names several.
    """
    hits = [(p, s) for p, s in runs if p.name == text] or [
        (p, s) for p, s in runs if p.name.startswith(text) or s.run_id.startswith(text)
    ]
    if dataset is not None and len({s.run_id for _, s in hits}) > 1:
        hits = [(p, s) for p, s in hits if s.dataset == dataset] or hits
    return [p for p, _ in hits]


def _readable(
    runs_dir: Path, unreadable: list[tuple[Path, str]] | None = None
) -> Iterator[tuple[Path, RunSummary]]:
    """Each readable run of ``runs_dir`` with its summary, newest first; an unreadable one is passed over with
    a warning (and added to ``unreadable``)."""
    from spray.runs.reader import read_summary

    for run in list_runs(runs_dir):
        try:
            yield run, read_summary(run)
        except RunReadError as err:
            log.warning("run %s is unreadable, passed over: %s", run.name, err)
            if unreadable is not None:
                unreadable.append((run, str(err)))


def newest_runs(
    runs_dir: Path, unreadable: list[tuple[Path, str]] | None = None, *, full_first: bool = False
) -> dict[str, Path]:
    """The newest readable run of each dataset key in ``runs_dir`` (several audits may share a folder, and
    ``latest`` is the newest run of any of them); the unreadable runs are added to ``unreadable``.

    With ``full_first``, a dataset's newest run that is no ``data.limit`` trial where it has one: what flags
    are checked against (a trial lacks the samples it did not read).
    """
    newest: dict[str, Path] = {}
    full: dict[str, Path] = {}
    for run, s in _readable(runs_dir, unreadable):
        newest.setdefault(s.dataset, run)
        if s.trial_limit is None:
            full.setdefault(s.dataset, run)
    return {ds: full.get(ds, run) if full_first else run for ds, run in newest.items()}


def flag_check_runs(runs_dir: Path) -> dict[str, list[Path]]:
    """Per dataset key, the runs its flags are checked against: first its newest full run (with trials only,
    its newest trial, as :func:`newest_runs` with ``full_first`` gives), then the ``data.limit`` trials newer
    than that full run, newest first: they read the files they hold as they are now."""
    runs: dict[str, list[Path]] = {}
    full: set[str] = set()
    for run, s in _readable(runs_dir):
        if s.dataset in full:
            continue
        if s.trial_limit is None:
            full.add(s.dataset)
            runs.setdefault(s.dataset, []).insert(0, run)
        else:
            runs.setdefault(s.dataset, []).append(run)
    return {ds: found if ds in full else found[:1] for ds, found in runs.items()}


def newest_run_of(runs_dir: str | Path, *, name: str, dataset: str) -> Path | None:
    """The newest readable published run of one audit (its ``name`` and dataset key)."""
    found = newest_run_where(runs_dir, lambda s: s.name == name and s.dataset == dataset)
    return None if found is None else found[0]


def newer_run(run: Path, *, name: str, dataset: str) -> Path | None:
    """The newest run of ``run``'s audit (its ``name`` and dataset key, in ``run``'s folder) when that is not
    ``run`` itself; None when ``run`` is the newest."""
    newest = newest_run_of(run.resolve().parent, name=name, dataset=dataset)
    return None if newest is None or newest.resolve() == run.resolve() else newest


def read_only_reason(runs_dir: str | Path, run_id: str, *, name: str, dataset: str) -> str:
    """Why a read-only runs directory cannot answer an audit of ``run_id``: the run is not published, or it
    is but a newer run of other inputs (:func:`newer_run`) means the audit would publish it again as the
    newest, which needs a writable folder."""
    runs = Path(runs_dir)
    found = find_run(runs, run_id)
    if found is None:
        return (
            f"run {run_id[:12]} is not published yet and the runs directory {runs} is not writable: point "
            "output.runs_dir (--runs-dir) at a folder this user can write to."
        )
    newest = newer_run(found, name=name, dataset=dataset)
    return (
        f"run {run_id[:12]} of these inputs is published ({found.name}), but run "
        f"{newest.name if newest else 'of other inputs'} is newer; on a writable runs directory the audit would "
        f"publish these inputs again as the newest, and {runs} is not writable: open {found} directly, or point "
        "output.runs_dir (--runs-dir) at a folder this user can write to."
    )


def latest_run(runs_dir: str | Path) -> Path | None:
    """The newest published run."""
    runs = list_runs(runs_dir)
    return runs[0] if runs else None


def prune_runs(
    runs_dir: Path, keep: int, *, name: str | None = None, dataset: str | None = None
) -> list[Path]:
    """Retention: delete all but the newest ``keep`` runs of one audit (never the one ``latest`` points to).

    Parameters
    ----------
    runs_dir : Path
        The runs folder.
    keep : int
        Runs of the audit to keep.
    name, dataset : str, optional
        The audit: its runs are those with this ``name`` and dataset key. Several audits may share a runs
        folder; each keeps its own newest ``keep``, and a run that cannot be read (so not attributed) is
        never deleted. None for both: every run counts (one audit per folder).

    Returns
    -------
    list[Path]
        The deleted run folders.
    """
    from spray.runs.reader import read_summary

    runs = list_runs(runs_dir)
    if name is not None or dataset is not None:
        mine = []
        for run in runs:
            try:
                s = read_summary(run)
            except RunReadError:
                continue
            if (name is None or s.name == name) and (dataset is None or s.dataset == dataset):
                mine.append(run)
        runs = mine
    latest = (runs_dir / LATEST).resolve() if (runs_dir / LATEST).exists() else None
    removed = []
    for old in runs_dir.glob(".trash-*"):  # left by a retention that was killed while deleting
        shutil.rmtree(old, ignore_errors=True)
    for p in runs[keep:]:
        if latest is not None and p.resolve() == latest:
            continue
        if pinned(p):  # a correction reads it (its source run): kept until the next retention
            log.info("retention: kept %s, which a running spray correct reads", p.name)
            continue
        # Renamed first, so that a kill while deleting leaves a hidden trash folder (removed next time)
        # rather than half a run that no listing, retention or dashboard sees.
        trash = runs_dir / f".trash-{p.name}"
        try:
            p.rename(trash)
        except OSError:
            trash = p
        shutil.rmtree(trash, ignore_errors=True)
        unpin(p)
        removed.append(p)
    for pin in runs_dir.glob(".pin-*"):  # a pin left by a correction whose run was gone already
        run = runs_dir / pin.name.removeprefix(".pin-")
        if not run.is_dir() and not pinned(run):
            unpin(run)
    if removed:
        log.info("retention: removed %d old runs of %s", len(removed), dataset or name or "this folder")
    return removed


def prune_cache(runs_dir: Path, in_use: str, entries: tuple[int, int] = (0, 0)) -> list[Path]:
    """Retention for the cache: delete ``.cache/<model16>-<lrp16>`` directories no published run uses,
    then compact the one ``in_use`` (:func:`spray.runs.compaction.compact_cache`; ``entries`` is its
    number of cached samples and the published run's number of samples).

    Returns
    -------
    list[Path]
        The deleted directories.
    """
    from spray.runs.compaction import compact_cache

    removed = _prune_cache_dirs(runs_dir, in_use)
    compact_cache(runs_dir, in_use, *entries)
    return removed


def _prune_cache_dirs(runs_dir: Path, in_use: str) -> list[Path]:
    """Delete ``.cache/<model16>-<lrp16>`` directories no published run uses.

    Every nightly run with a retrained model opens a new cache directory (relevance of every sample,
    paste predictions), so without this the cache grows by a dataset's worth of heatmaps per model.
    A directory is kept when it is ``in_use`` (the run just published) or named by the ``cache`` key of
    any run still in ``runs_dir``. A run that does not say (an unreadable run, or one that predates the
    key) keeps none: every run holds its own heatmaps, so a deleted directory costs only recomputation,
    while keeping every directory for one damaged run's sake let the cache grow by a dataset's worth of
    heatmaps with every retrained model, for good.

    Returns
    -------
    list[Path]
        The deleted directories.
    """
    from spray.runs.reader import read_summary

    root = runs_dir / CACHE_DIR
    found = sorted(root.iterdir()) if root.is_dir() else []
    others = [d for d in found if d.is_dir() and d.name not in (in_use, WORK_DIR)]
    if not others:
        return []  # the usual night (same model): no summary needs reading
    keep = {in_use}
    for run in list_runs(runs_dir):
        try:
            key = read_summary(run).cache
        except RunReadError:
            key = ""
        if not key:
            log.info(
                "cache retention: run %s does not say which cache directory it uses; none kept for it",
                run.name,
            )
            continue
        keep.add(key)
    removed = [d for d in others if d.name not in keep]
    for d in removed:
        shutil.rmtree(d, ignore_errors=True)
    if removed:
        log.info("cache retention: removed %d cache directories no kept run uses", len(removed))
    return removed


def clean_staging(runs_dir: Path, resume_days: float = 7.0) -> None:
    """Remove leftovers of crashed runs (call only while holding the lock).

    Removes every folder under ``.staging``, the ``*.tmp`` files that an atomic write interrupted by
    ``kill -9`` leaves in the cache, the shard manifests of runs already published (a stop between
    publishing and removing them), and those of unpublished runs last written more than ``resume_days`` ago
    and before the newest published run (a failed run whose inputs changed since: at 1M images they held
    ~125 MB each; in a shared runs folder another audit's run is as new). Finished cache shards, and the
    other manifests, are kept: they are what the next run resumes from (without its manifests a run still
    finds its heatmaps in the cache, by content).
    """
    base = runs_dir / STAGING_DIR
    if base.is_dir():
        for p in base.iterdir():
            shutil.rmtree(p, ignore_errors=True)
    work = runs_dir / CACHE_DIR / WORK_DIR
    if work.is_dir():
        runs = list_runs(runs_dir)
        published = {p.name[-12:] for p in runs}
        # older than the newest published run and than resume_days
        cutoff = min(
            max((p.stat().st_mtime for p in runs), default=float("-inf")), time.time() - resume_days * 86400
        )
        for w in work.iterdir():
            if w.is_dir() and (w.name[:12] in published or w.stat().st_mtime < cutoff):
                shutil.rmtree(w, ignore_errors=True)
    cache = runs_dir / CACHE_DIR
    if cache.is_dir():
        for tmp in cache.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)
    for tmp in runs_dir.glob(f".{LATEST}.*.tmp"):
        tmp.unlink(missing_ok=True)


def work_dir(runs_dir: Path, run_id: str) -> Path:
    """Per-run folder of shard manifests: ``runs/.cache/work/<run16>`` (kept until the run is published)."""
    return RunsFolder(runs_dir).work(run_id)

"""What a run found up to date still does to its runs folder, and the flags check of a run.

A job stopped or failed after publishing its run (SIGTERM, ``kill -9``, no inode left for the ``latest``
link) leaves ``latest`` unmade and retention undone; the next runs of the same inputs are up to date, so
they make the link and apply retention, or nothing ever would.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spray.errors import SprayError
from spray.flags.content import run_flag_message
from spray.runs.identity import settings_not_applied
from spray.runs.layout import LATEST
from spray.runs.publish import list_runs, point_latest, prune_runs
from spray.runs.reader import RunReader

if TYPE_CHECKING:
    from spray.config import AuditConfig

log = logging.getLogger("spray.audit")


def repair_latest(runs_dir: Path) -> Path | None:
    """Point ``latest`` at the newest published run when it is missing, dangling or points elsewhere.

    Returns
    -------
    Path or None
        The run ``latest`` now points to, when it had to be repaired.

    Raises
    ------
    LatestNotMadeError
        The link cannot be made.
    """
    runs = list_runs(runs_dir)
    link = runs_dir / LATEST
    if not runs or (link.is_symlink() and link.exists() and link.resolve() == runs[0].resolve()):
        return None
    was = f"pointed to {link.readlink()}" if link.is_symlink() else "was missing"
    point_latest(runs_dir, runs[0], f"the newest run {runs[0].name} is published")
    log.warning(
        "`latest` %s: pointed it to the newest run %s (a job was stopped or failed between publishing its run "
        "and pointing `latest` to it)",
        was,
        runs[0].name,
    )
    return runs[0]


def up_to_date_upkeep(cfg: AuditConfig) -> None:
    """For a run found up to date (rank 0, the runs folder writable and locked): repair ``latest``
    (:func:`repair_latest`) and apply retention (a listing; nothing to delete on a usual night)."""
    runs_dir = Path(cfg.output.runs_dir)
    repair_latest(runs_dir)
    prune_runs(runs_dir, cfg.output.keep_runs, name=cfg.audit_name(), dataset=cfg.dataset_key())


def check_run_arrays(run: str | Path) -> None:
    """Open the per-sample arrays of a published run (memory-mapped: their headers against their sizes and
    the run's number of samples), so that a truncated ``heatmaps.npy`` or ``thumbs.npy`` is refused as a
    damaged ``samples.parquet`` is, rather than reused as up to date every night while readers fail on it.

    Raises
    ------
    RunReadError
        An array file is missing, truncated or damaged.
    """
    reader = RunReader.open(run)
    reader.heatmaps()
    reader.thumbs()
    reader.full_relevance()
    reader.concepts()


def check_flags(cfg: AuditConfig, hashes: dict[str, str], run: Path) -> None:
    """Warn when flags of this dataset name other content in the new run than they were set on
    (``hashes``: the run's ``sample_id -> content hash``; empty when unknown, then nothing is checked)."""
    db = cfg.flags_db_path()
    if not hashes:
        return
    try:
        message = run_flag_message(db, cfg.dataset_key(), hashes, str(run))
    except SprayError as err:  # the audit is done; a damaged database is the flag commands' business
        log.warning("flags: could not check %s against this run: %s", db, err)
        return
    if message:
        log.warning("flags: %s", message)


def warn_settings_kept(cfg: AuditConfig, recorded: dict[str, Any]) -> None:
    """Warn when ``cfg`` sets fields a reused run keeps from when it was made (``recorded``, its resolved
    config) to other values: the run is reused as it is (:data:`~spray.runs.identity.KEPT_BY_RUN_FIELDS`)."""
    if changed := settings_not_applied(cfg, recorded):
        log.warning(
            "the published run keeps the settings it was made with, so these changes apply from the next run "
            "that analyses (a change of the model, the data or a result setting), or now with --force: %s",
            "; ".join(changed),
        )

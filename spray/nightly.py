"""``spray run``: the nightly job — idempotent, incremental, resumable, locked, scalable with torchrun.

One command that cron, a systemd timer, a Kubernetes CronJob, an Airflow ``BashOperator`` or
``prefect shell serve`` call unchanged (examples in ``pipelines/``)::

    spray run --config audit.yaml   (the command itself: spray/cli/run.py)
    torchrun --standalone --nproc_per_node=4 -m spray.cli run --config audit.yaml

What it adds to :func:`spray.audit.audit`:

- **Exit codes** (:mod:`spray.exit_codes`: 0, 10 for new or grown suspicious clusters, 1 failure, 2
  config error, 75 locked, 130/143 interrupted / terminated). With ``--fail-on-findings`` /
  ``nightly.fail_on_findings``, 10 on any suspicious cluster at all.
- **Change detection** (:mod:`spray.runs.changes`, the one rule also used by the HTML report and the
  dashboard): the ``changes`` section of summary.json, written before the run is published.
- **Notification**: ``nightly.notify_command`` runs with the summary path appended when the exit code
  is 10.
- **JSON-lines logs** on stderr, every line carrying the run id, the stage and (under torchrun) the rank.
- **A one-line JSON status** on stdout (Airflow pushes the last stdout line to XCom) and, with
  ``--status-file``, in a file: torchrun reports any non-zero worker exit as 1, so a wrapper reads the
  real code there (``pipelines/spray-torchrun.sh``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spray.exit_codes import EXIT_FINDINGS, EXIT_OK
from spray.records import AuditReport

if TYPE_CHECKING:
    from spray.config import AuditConfig

log = logging.getLogger(__name__)


def pending_marker(runs_dir: Path, run_id: str) -> Path:
    """The marker of a published run whose exit 10 (and notification) is not reported yet."""
    return runs_dir / f".alert-pending-{run_id[:16]}"


@contextlib.contextmanager
def owed_once_published(runs_dir: Path) -> Iterator[list[Path]]:
    """Around an audit, yielding the list its ``before_write`` adds the marker :func:`record_changes` wrote
    to: when the audit fails before its run is published (a full disk, a stop in the write stage), that
    marker is removed, since no run owes it (the next job reported exit 10 and notified for a run that never
    existed). Only this job's own: another audit's marker, written meanwhile, is that audit's alert."""
    written: list[Path] = []
    try:
        yield written
    except BaseException:
        from spray.runs.publish import list_runs

        published = {p.name.rsplit("-", 1)[-1] for p in list_runs(runs_dir)}
        for marker in written:
            if marker.name.rsplit("-", 1)[-1][:12] not in published:
                with contextlib.suppress(OSError):
                    marker.unlink()
        raise


def audit_owing_alert(
    cfg: AuditConfig,
    *,
    by: str,
    fail_on_findings: bool | None = None,
    on_changes: Callable[[AuditReport], None] | None = None,
    **audit_kwargs: Any,
) -> AuditReport:
    """Run :func:`spray.audit.audit` the way ``spray run`` and ``spray audit`` both do: before the run is
    published, compare it with the previous run and leave the alert it owes (:func:`record_changes`); when
    the audit fails before publishing, withdraw that alert (:func:`owed_once_published`).

    Parameters
    ----------
    cfg : AuditConfig
        The audit config.
    by : str
        The command publishing the run (``"spray run"``, ``"spray audit"``).
    fail_on_findings : bool, optional
        Any suspicious cluster owes the alert, not only new or grown ones (default: the config's
        ``nightly.fail_on_findings``; ``spray run --fail-on-findings`` overrides it).
    on_changes : callable, optional
        Called with the report once ``report.changes`` is set, before the run is written.
    **audit_kwargs
        Passed to :func:`spray.audit.audit` (``device``, ``progress``, ``force``).

    Returns
    -------
    AuditReport
        The audit's report.
    """
    from spray.audit import audit

    runs_dir = Path(cfg.output.runs_dir)
    gate = cfg.nightly.fail_on_findings if fail_on_findings is None else fail_on_findings
    with owed_once_published(runs_dir) as written:

        def before_write(report: AuditReport) -> None:
            if marker := record_changes(report, runs_dir, cfg, fail_on_findings=gate, by=by):
                written.append(marker)
            if on_changes is not None:
                on_changes(report)

        return audit(cfg, before_write=before_write, **audit_kwargs)


def record_changes(
    report: AuditReport, runs_dir: Path, cfg: AuditConfig, *, fail_on_findings: bool, by: str = "spray run"
) -> Path | None:
    """Compare the run about to be published with this audit's previous run (``report.changes``) and, when
    it has new or grown suspicious clusters (or, with ``fail_on_findings``, any), leave the marker of an
    alert owed.

    Called before publishing by ``spray run`` and by ``spray audit`` alike: a run that ``spray audit``
    published is found up to date by the next nightly job, which then reports the owed exit 10 and
    notifies (it would otherwise never hear of that run's new clusters). The marker is written before the
    run is published and removed once exit 10 is reported, so a job stopped in between leaves it; it names
    the audit, the command (``by``) that published the run and its config hash (a hand audit with other
    settings is not the nightly job's to report).

    Parameters
    ----------
    report : AuditReport
        The run about to be published (``report.changes`` is set here).
    runs_dir : Path
        Where this audit's runs are.
    cfg : AuditConfig
        The audit config (``nightly`` holds the change rule).
    fail_on_findings : bool
        Any suspicious cluster owes the alert, not only new or grown ones.
    by : str
        The command publishing the run (``"spray run"``, ``"spray audit"``).

    Returns
    -------
    Path or None
        The marker written, if any.
    """
    from spray.runs.changes import change_rule, changes_since_previous

    ch = report.changes = changes_since_previous(report, runs_dir, change_rule(cfg.nightly))
    gated = fail_on_findings and any(f.suspicious for f in report.findings)
    if not (ch.n_new + ch.n_grown > 0 or gated):
        return None
    from spray.runs.atomic import atomic_write_bytes

    marker = pending_marker(runs_dir, report.run_id)
    # the audit in the marker: the next job tells its own owed alerts from another audit's; atomic, so that a
    # full disk leaves no empty marker for another audit's job to take as its own
    said = {"name": report.name, "dataset": report.dataset, "by": by, "config": report.hashes.get("config")}
    atomic_write_bytes(marker, json.dumps(said).encode())
    return marker


def exit_code_for(report: AuditReport, *, fail_on_findings: bool) -> int:
    """0, or 10 when there is something a person should look at.

    A fresh run gives 10 when a suspicious cluster is new or has grown since the previous run (or, with
    ``fail_on_findings``, when any cluster is suspicious). An up-to-date run was already reported when it
    was published, so it gives 0 — except with ``fail_on_findings``, where a gate must not turn green
    just because the same run is asked for twice.
    """
    if fail_on_findings and any(f.suspicious for f in report.findings):
        return EXIT_FINDINGS
    if report.up_to_date:
        return EXIT_OK
    ch = report.changes
    return EXIT_FINDINGS if ch is not None and ch.n_new + ch.n_grown > 0 else EXIT_OK


def notify(command: str, summary_path: Path, *, env: dict[str, str], timeout: float = 120.0) -> int | None:
    """Run ``command`` with the summary path appended (no shell; wrap in ``sh -c`` for pipes).

    Returns the command's exit status, or None when it could not be started or timed out. A failing
    notifier is logged, never fatal: the run itself has been published. On a timeout the command's whole
    process group is killed: a child it started (``sh -c 'sleep ...'``) would otherwise hold its output
    pipe open and keep the job, and the runs directory's lock, waiting.
    """
    try:
        argv = [*shlex.split(command), str(summary_path)]
        proc = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except (OSError, ValueError) as err:  # not found, not executable, or unbalanced quotes
        log.error("notify command %r failed: %s", command, err)
        return None
    try:
        _, err_text = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        log.error(
            "notify command %r did not finish within %g s (nightly.notify_timeout_s): killed",
            command,
            timeout,
        )
        return None
    except BaseException:
        # Stopped meanwhile (SIGTERM, Ctrl-C): the marker stays and the next job notifies, so a notifier left
        # running in its own session would send the alert twice.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        log.error("notify command %r killed: the job was stopped; the next job notifies", command)
        raise
    if proc.returncode != 0:
        log.error("notify command %r exited %d: %s", command, proc.returncode, err_text.strip()[-500:])
    else:
        log.info("notified: %s", command)
    return proc.returncode

"""``spray run``: the scheduled audit (exit codes, JSON logs, a status line; see :mod:`spray.nightly`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from spray.cli.logs import configure_run_logging
from spray.cli.options import add_audit_arguments, positive_int
from spray.cli.rank_status import (
    held_by_another_job,
    lost_ranks,
    rank_status_path,
    running_record,
    status_file_problem,
)
from spray.errors import SprayError
from spray.exit_codes import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_FINDINGS,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_TERMINATED,
)

if TYPE_CHECKING:
    from spray.records import DataChanges

log = logging.getLogger("spray.nightly")

#: What the last log line says when a run is stopped: nothing finished is lost.
_KEPT = "finished shards are kept and the next run resumes from them; nothing was published"


#: What it says when it is stopped after publishing its run, before retention and its report (the next run does them).
_STOPPED_AFTER = (
    "after publishing run {}: the run is published and kept; what the job had left to do (pointing `latest` to "
    "it, retention, reporting its exit code and notifying) is done by the next run"
)


class Terminated(BaseException):
    """SIGTERM (a scheduler stopping the job) or SIGHUP (its terminal closed) arrived: unwound like Ctrl-C, then
    exit 143; the message is the signal's name when not SIGTERM."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def _on_sighup(signum: int, frame: FrameType | None) -> None:
    raise Terminated("SIGHUP")


def _catch_sighup() -> Any:
    """Make SIGHUP (the terminal or ssh session closed) stop the job as SIGTERM does, where it is not ignored
    (``nohup``): by default it ended the job with no log line, and ``--status-file`` kept saying "running".
    Returns the handler to restore (None when none was installed)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        return None
    if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
        return None
    return signal.signal(signal.SIGHUP, _on_sighup)


def _write_status(path: str | None, status: dict[str, Any], *, stdout: bool = True) -> None:
    line = json.dumps(status, sort_keys=True)
    if stdout:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    if path:
        from spray.runs.atomic import atomic_write_bytes

        try:
            atomic_write_bytes(Path(path), (line + "\n").encode())
        except (SprayError, OSError) as err:
            log.error("cannot write the status file --status-file %s: %s", path, err)


def usage_error_status(argv: list[str]) -> None:
    """``spray run`` with arguments argparse refused (exit 2): the promised JSON status line all the same,
    also into ``--status-file`` when one can be read from ``argv`` (argparse has printed the usage)."""
    if next((a for a in argv if not a.startswith("-")), None) != "run":
        return
    path = None
    for i, a in enumerate(argv):
        if a == "--status-file" and i + 1 < len(argv):
            path = argv[i + 1]
        elif a.startswith("--status-file="):
            path = a.split("=", 1)[1]
    if path and (problem := status_file_problem(path)) is not None:
        log.error("%s", problem)
        path = None
    _write_status(
        path, {"exit_code": 2, "status": "failed", "error": "invalid command-line arguments (see stderr)"}
    )


def run_command(args: argparse.Namespace) -> int:
    """``spray run``: the scheduled audit (see the module docstring for the exit codes)."""
    configure_run_logging(args.verbose, args.log_format)
    if getattr(args, "quiet", False) and not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    t0, started = time.perf_counter(), time.time()
    status: dict[str, Any] = {"exit_code": EXIT_FAILURE, "status": "failed"}
    status_file = getattr(args, "status_file", None)
    if _refused_status_file(status_file, rank, status):
        return EXIT_CONFIG
    if (holder := held_by_another_job(rank_status_path(status_file, rank))) is not None:
        # a second job with the same file while the first runs (it is locked out next): that file is the
        # first job's; its outcome would be overwritten with "locked" and a later crash of it read as 75
        log.warning(
            "--status-file %s belongs to the running job (pid %d): not written by this one",
            status_file,
            holder,
        )
        status_file = None
    # A run killed outright (kill -9, the OOM killer) writes no final status: the file must not keep saying
    # the previous run's outcome, and a rank above 0 that vanishes is named by rank 0 from its own file.
    running = running_record(rank)
    _write_status(rank_status_path(status_file, rank), running, stdout=False)
    previous_hup = _catch_sighup()
    try:  # SIGTERM raises Terminated: spray.cli.main installs the handler for every command
        code = _run(args, status)
    except SprayError as err:
        code = err.exit_code
        status.update(exit_code=code, status="locked" if code == EXIT_LOCKED else "failed", error=str(err))
        log.error("%s", err, extra={"exit_code": code})
    except (KeyboardInterrupt, Terminated) as err:
        code = _stopped(err, status)
    except Exception as err:  # a bug: log it as one JSON record (with traceback) rather than a raw dump
        log.exception("run failed: %s: %s", type(err).__name__, err, extra={"exit_code": EXIT_FAILURE})
        status.update(exit_code=EXIT_FAILURE, status="failed", error=f"{type(err).__name__}: {err}")
        code = EXIT_FAILURE
    finally:
        shutdown_dist()
        if previous_hup is not None:
            signal.signal(signal.SIGHUP, previous_hup)
    status["seconds"] = round(time.perf_counter() - t0, 3)
    if rank == 0:
        if world > 1 and code not in (EXIT_OK, EXIT_FINDINGS):
            # the outcome first: torchrun may stop this rank while it waits for the others' records below
            _write_status(status_file, status, stdout=False)
            lost = lost_ranks(status_file, world, started)
            _name_lost_ranks(status, lost)
            # a rank that only lost its connection when the others left is no cause (a scheduler's stop races)
            causes = [x for x in lost if "lost the connection to another rank" not in x]
            if causes and code == EXIT_TERMINATED:
                # torchrun stops the other ranks with SIGTERM when one fails or vanishes: a failure (1), not a
                # scheduler's stop (143), as the same error gives in one process
                code = EXIT_FAILURE
                status.update(exit_code=code, status="failed")
        _write_status(status_file, status)
    elif status_file is None:
        pass
    elif code in (EXIT_OK, EXIT_FINDINGS, EXIT_LOCKED):
        Path(str(rank_status_path(status_file, rank))).unlink(missing_ok=True)
    else:
        # with the start record's fields: rank 0 tells this run's files from a previous run's by "started"
        _write_status(rank_status_path(status_file, rank), {**running, **status}, stdout=False)
    return code


def _stopped(err: BaseException, status: dict[str, Any]) -> int:
    """Log a stop by a signal (``err``: Terminated or KeyboardInterrupt), put it in ``status``; its exit code."""
    code, what = (
        (EXIT_TERMINATED, "terminated") if isinstance(err, Terminated) else (EXIT_INTERRUPTED, "interrupted")
    )
    published = status.get("status") == "published"
    status.update(exit_code=code, status=what)
    log.error(
        "%s (%s): %s",
        what,
        (str(err) or "SIGTERM") if code == EXIT_TERMINATED else "SIGINT",
        # The signal can come while the notify command runs, after the run was published.
        f"after publishing {status.get('run_dir')}; its notification did not complete"
        if published
        else _STOPPED_AFTER.format(status["run_dir"])
        if status.get("run_dir")
        else _KEPT,
        extra={"exit_code": code, "run_dir": status.get("run_dir")},
    )
    return code


def _refused_status_file(status_file: str | None, rank: int, status: dict[str, Any]) -> bool:
    """Whether this rank must not write ``--status-file`` (rank 0's, or its own beside it): then the refusal
    (exit 2) is logged and put on stdout, since the file is someone's (the config, an image) or a typo."""
    if status_file is None:
        return False
    problem = status_file_problem(status_file) or status_file_problem(rank_status_path(status_file, rank))
    if problem is None:
        return False
    status.update(exit_code=EXIT_CONFIG, error=problem)
    log.error("%s", problem, extra={"exit_code": EXIT_CONFIG})
    _write_status(None, status, stdout=rank == 0)
    return True


def _name_lost_ranks(status: dict[str, Any], lost: list[str]) -> None:
    """Put the ranks that failed or vanished first in a failed distributed run's ``error``, and log them."""
    known = str(status.get("error") or "")
    # a rank's failure that rank 0 gathered is named in its error already
    lost = [what for what in lost if what.split(": ", 1)[-1] not in known]
    if not lost:
        return
    said = "; ".join(lost)
    status["error"] = f"{said}; {known}" if known else said
    log.error(
        "the distributed run ended because %s (torchrun stops the other ranks when one ends)",
        said,
        extra={"exit_code": status.get("exit_code")},
    )


def _log_data_changes(d: DataChanges) -> None:
    """The ``DataChanges`` since the previous run, in one log line."""
    log.info("data since the previous run: %s", d.sentence())


def shutdown_dist() -> None:
    """Leave torchrun's process group before the interpreter exits (without it, gloo's threads were
    sometimes destroyed running: "terminate called without an active exception", the rank aborted)."""
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _run(args: argparse.Namespace, status: dict[str, Any]) -> int:
    from spray.config import load_config
    from spray.runs.publish import check_runs_dir

    # The config is checked before torch is imported: a bad config fails (exit 2) in well under a second.
    cfg = load_config(args.config)
    if args.runs_dir:
        cfg.output.runs_dir = Path(args.runs_dir).resolve()
    if args.keep_runs is not None:
        cfg.output.keep_runs = args.keep_runs
    fail_on_findings = bool(args.fail_on_findings or cfg.nightly.fail_on_findings)
    runs_dir = Path(cfg.output.runs_dir)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and check_runs_dir(runs_dir):
        from spray.runs.locking import RunLock

        # Answer "already running" (75) at once, before seconds of imports; audit() takes the lock for
        # real below (a run that starts in between is still caught there).
        with RunLock(runs_dir):
            pass
    from spray.nightly import audit_owing_alert, exit_code_for, pending_marker
    from spray.records import AuditReport

    about: list[AuditReport] = []  # the run being made: its run_dir is set once it is published

    def log_changes(report: AuditReport) -> None:
        about[:] = [report]
        _log_changes(report)

    try:
        report = audit_owing_alert(
            cfg,
            by="spray run",
            fail_on_findings=fail_on_findings,
            on_changes=log_changes,
            device=args.device,
            progress=_bars(args),
            force=args.force,
        )
    except BaseException as err:
        # failed or stopped after publishing (`latest`, retention): the status names the published run
        if published := getattr(err, "run_dir", None) or (about[0].run_dir if about else ""):
            status["run_dir"] = published
        raise
    if int(os.environ.get("RANK", "0")) != 0:
        # Rank 0 merges, publishes, notifies and reports; the other ranks are done after the batch stage.
        return EXIT_OK
    if not report.up_to_date:  # a stop before the status below still names the run just published
        status["run_dir"] = report.run_dir
    code = exit_code_for(report, fail_on_findings=fail_on_findings)
    pending = pending_marker(runs_dir, report.run_id)
    owed = _owed(runs_dir, pending, report, cfg)
    code = EXIT_FINDINGS if owed else code
    _report_status(report, code, status, cfg.flags_db_path())
    sys.stdout.flush()  # the status line is out before a notifier that may hang or be killed
    if (owed or not report.up_to_date) and code == EXIT_FINDINGS and cfg.nightly.notify_command:
        _notify(cfg.nightly.notify_command, report, code, status, cfg.nightly.notify_timeout_s)
    if pending.exists():  # only then: a read-only runs directory refuses even removing a missing file
        try:
            pending.unlink()
        except OSError as err:
            log.warning("cannot remove %s (%s): the next job will report exit 10 again", pending, err)
    return code


def _log_changes(report: Any) -> None:
    """The changes since the previous run (``report.changes``), in log lines."""
    ch = report.changes
    assert ch is not None
    if ch.data is not None:
        _log_data_changes(ch.data)
    log.info(
        "changes since %s: %d new, %d grown, %d persisting, %d resolved suspicious clusters",
        (ch.previous_run_id or "no previous run")[:16],
        ch.n_new,
        ch.n_grown,
        len(ch.persisting),
        ch.n_resolved,
        extra={"n_new": ch.n_new, "n_grown": ch.n_grown, "n_resolved": ch.n_resolved},
    )
    for c in ch.not_analysed:
        log.warning(
            "suspicious cluster %s of the previous run: class %s was not analysed in this run (too few "
            "readable samples or only zero heatmaps; see summary.json classes_skipped): it is not resolved, "
            "there is no verdict",
            c.previous_key,
            c.class_name,
        )


def _bars(args: argparse.Namespace) -> bool:
    """``--progress``, unless its bars would land inside JSON log lines in a file (a bar redraws with a
    carriage return, so the next log line began with bar text and was no JSON)."""
    if args.progress and args.log_format == "json" and not sys.stderr.isatty():
        log.warning("--progress: stderr is not a terminal, so no bars are drawn among the JSON log lines")
        return False
    return bool(args.progress)


#: The commands a person runs that publish a run owing its alert to the next nightly job.
_BY_HAND = ("spray audit", "spray demo")


def _owed(runs_dir: Path, pending: Path, report: Any, cfg: Any) -> bool:
    """Whether an exit 10 is owed: this run's own marker on a run found up to date, or the markers of this
    audit's earlier runs (:func:`_owed_earlier`); said in a warning."""
    earlier = _owed_earlier(
        runs_dir, pending, cfg.audit_name(), cfg.dataset_key(), report.hashes.get("config")
    )
    if report.up_to_date and pending.exists():
        earlier.insert(0, (report.run_id[:16], (_marker_of(pending) or {}).get("by")))
    stopped = [run for run, by in earlier if by not in _BY_HAND]
    for hand in _BY_HAND:
        if audited := [run for run, by in earlier if by == hand]:
            log.warning(
                "run %s was published by %s, whose new or grown suspicious clusters no nightly job has "
                "reported yet: reporting them now (exit 10; they are in that run's summary.json, changes)",
                ", ".join(audited),
                hand,
            )
    if stopped:
        log.warning(
            "the job that published run %s was stopped before it reported its new or grown suspicious "
            "clusters: reporting them now (exit 10; they are in that run's summary.json, changes)",
            ", ".join(stopped),
        )
    return bool(earlier)


def _marker_of(marker: Path) -> dict[str, Any] | None:
    """What an alert marker says (``name``, ``dataset``, ``by``); {} for one written before markers named
    their audit ("10"); None for one that is empty or cannot be read (a write cut short by a full disk)."""
    try:
        said = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return said if isinstance(said, dict) else {}


def _damaged_marker_of(runs_dir: Path, marker: Path) -> dict[str, Any] | None:
    """For a marker that cannot be read, the audit of its run (``name``, ``dataset``) from that run's summary
    when the run is published; None (the marker removed, with a warning) when it is not: a marker is written
    before its run is published, so its run failed, and no alert is owed."""
    from spray.runs.errors import RunReadError
    from spray.runs.publish import list_runs
    from spray.runs.reader import read_summary

    run16 = marker.name.rsplit("-", 1)[-1]
    for run in list_runs(runs_dir):
        if run.name.endswith(run16[:12]):
            try:
                s = read_summary(run)
            except RunReadError:
                continue
            if s.run_id.startswith(run16):
                return {"name": s.name, "dataset": s.dataset}
    log.warning(
        "alert marker %s is empty or damaged (a write cut short, e.g. by a full disk) and its run is not "
        "published: no alert is owed, removed",
        marker,
    )
    try:
        marker.unlink()
    except OSError as err:
        log.warning("cannot remove %s (%s): remove it by hand", marker, err)
    return None


def _owed_earlier(
    runs_dir: Path, pending: Path, name: str, dataset: str, config: str | None = None
) -> list[tuple[str, str | None]]:
    """The run ids (16 characters) of this audit's earlier runs whose exit 10 no job reported, with the
    command that published each (None when the marker does not say), their markers removed: the data changed
    since, so this job published another run. A marker's run may be gone (retention, ``keep_runs: 1``) or
    never published (stopped before); its alert is owed either way, since this run was compared with older
    data, or counts those clusters as new itself (exit 10 too). A marker ``spray audit`` left with other
    settings (``config``, the run's config hash) is an exploratory audit's: not this job's to report."""
    from spray.nightly import pending_marker

    owed = []
    for marker in sorted(runs_dir.glob(f"{pending_marker(runs_dir, '').name}*")):
        if marker == pending:
            continue
        said = _marker_of(marker)  # {} was written before markers named their audit: taken as this audit's
        if said is None and (said := _damaged_marker_of(runs_dir, marker)) is None:
            continue
        if said and (said.get("name"), said.get("dataset")) != (name, dataset):
            continue  # another audit's: its own job reports it
        if said.get("by") in _BY_HAND and config is not None and said.get("config") not in (None, config):
            continue  # a hand audit with other settings
        owed.append((marker.name.rsplit("-", 1)[-1], said.get("by")))
        try:
            marker.unlink()
        except OSError as err:
            log.warning("cannot remove %s (%s): the next job will report exit 10 again", marker, err)
    return owed


def _flag_warning(report: Any, db: Path) -> str:
    """The flags of the run's dataset in ``db`` that name other images in it than they were set on ('' if
    none): checked here too, since an up-to-date run does not audit and flags change between runs. The
    run's content hashes are the report's (read from ``samples.parquet`` for an up-to-date run; none for a
    run of layout < 5)."""
    from spray.errors import SprayError
    from spray.flags.content import run_flag_message

    if not report.content_hashes:
        return ""
    try:
        return run_flag_message(db, report.dataset, report.content_hashes, str(Path(report.run_dir)))
    except SprayError as err:  # the run is published; a damaged flag database is reported, not fatal here
        return f"the flag database could not be checked: {err}"


def _report_status(report: Any, code: int, status: dict[str, Any], flags_db: Path) -> None:
    from spray.accuracy import data_notes, recorded_accuracy, recorded_problems
    from spray.runs.layout import RunFiles

    files = RunFiles(Path(report.run_dir))
    ch = report.changes
    n_susp = sum(1 for f in report.findings if f.suspicious)
    status.update(
        exit_code=code,
        status="up_to_date" if report.up_to_date else "published",
        run_id=report.run_id,
        run_dir=report.run_dir,
        summary=str(files.summary),
        n_suspicious=n_susp,
        n_new=None if ch is None else ch.n_new,
        n_grown=None if ch is None else ch.n_grown,
        n_resolved=None if ch is None else ch.n_resolved,
    )
    if ch is not None and ch.unreadable:
        status["unreadable_runs"] = [u.run for u in ch.unreadable]
    if ch is not None and ch.not_analysed:
        # A shortcut whose class could not be analysed tonight is not "resolved": say so to the scheduler.
        status["not_analysed"] = [c.previous_key for c in ch.not_analysed]
    status["n_skipped"] = len(report.skipped)
    if ch is not None and ch.model_changed:
        status["model_changed"] = True
    if ch is not None and ch.config_changed:
        status["config_changed"] = list(ch.config_changed)
    if ch is not None and ch.data is not None:
        status["data_changes"] = asdict(ch.data)
    acc = recorded_accuracy(report.extra)
    if acc is not None:
        status["model_accuracy"] = acc.get("accuracy")
    from spray.export.source import CORRECTED_FACTORY

    corrected = report.config.get("model", {}).get("factory") == CORRECTED_FACTORY
    if problems := recorded_problems(report.extra, corrected=corrected):
        status["model_warnings"] = problems
    if notes := data_notes(report.extra):
        status["data_notes"] = notes
    if flags := _flag_warning(report, flags_db):
        status["flag_warnings"] = [flags]
    if files.report_html.exists():
        status["report"] = str(files.report_html)
    if report.up_to_date:
        log.info(
            "up to date: run %s is already published at %s; nothing recomputed",
            report.run_id[:16],
            report.run_dir,
            extra={"exit_code": code, "run_dir": report.run_dir, "up_to_date": True},
        )
        return
    log.info(
        "published %s: %d suspicious clusters (%s new, %s grown, %s resolved); exit %d",
        report.run_dir,
        n_susp,
        status["n_new"],
        status["n_grown"],
        status["n_resolved"],
        code,
        extra={"exit_code": code, "run_dir": report.run_dir, "n_suspicious": n_susp},
    )


def _notify(command: str, report: Any, code: int, status: dict[str, Any], timeout: float) -> None:
    from spray.nightly import notify

    returned = notify(
        command,
        Path(status["summary"]),
        timeout=timeout,
        env={
            "SPRAY_RUN_ID": report.run_id,
            "SPRAY_RUN_DIR": report.run_dir,
            "SPRAY_EXIT_CODE": str(code),
            "SPRAY_REPORT_HTML": status.get("report", ""),
        },
    )
    if returned != 0:
        # the run is published and its exit 10 stands; the scheduler must not take the alert for sent
        said = "could not be run or timed out" if returned is None else f"exited {returned}"
        status["notify_error"] = f"nightly.notify_command {said} (see the log): nobody was notified"


def register(subparsers: Any) -> None:
    """Add ``spray run`` to the ``spray`` command."""
    p = subparsers.add_parser(
        "run",
        help="the scheduled audit: idempotent, incremental, resumable, locked (exit 0/10/1/2/75)",
        description=(run_command.__doc__ or "")
        + " Exit codes: 0 ok (or up to date); 10 ok with new or grown suspicious clusters since the previous "
        "run (any suspicious cluster with --fail-on-findings); 1 failure; 2 config error; 75 another run "
        "holds the lock; 130 / 143 stopped by SIGINT / SIGTERM (finished shards are kept).",
    )
    add_audit_arguments(p)
    p.add_argument("--keep-runs", type=positive_int, help="override output.keep_runs (retention)")
    p.add_argument(
        "--fail-on-findings",
        action="store_true",
        help="exit 10 when any cluster is suspicious, not only new or grown ones (also nightly.fail_on_findings)",
    )
    p.add_argument(
        "--log-format",
        choices=["json", "text"],
        default="json",
        help="stderr log format (default json: one JSON object per line with run_id and stage)",
    )
    p.add_argument(
        "--progress", action="store_true", help="show progress bars (off by default for schedulers)"
    )
    p.add_argument(
        "-q", "--quiet", action="store_true", help="warnings, errors and the status line only: no INFO lines"
    )
    p.add_argument(
        "--status-file",
        help="also write the final one-line JSON status here (torchrun turns exit codes into 1; read this instead)",
    )
    p.set_defaults(func=run_command)

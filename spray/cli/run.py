"""``spray run``: the scheduled audit (exit codes, JSON logs, a status line; see :mod:`spray.nightly`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from spray.cli.logs import configure_run_logging
from spray.cli.options import add_audit_arguments, positive_int
from spray.errors import SprayError
from spray.exit_codes import EXIT_FAILURE, EXIT_FINDINGS, EXIT_LOCKED, EXIT_OK

log = logging.getLogger("spray.nightly")


def _write_status(path: str | None, status: dict[str, Any]) -> None:
    line = json.dumps(status, sort_keys=True)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    if path:
        from spray.runs.storage import atomic_write_bytes

        atomic_write_bytes(Path(path), (line + "\n").encode())


def run_command(args: argparse.Namespace) -> int:
    """``spray run``: the scheduled audit (see the module docstring for the exit codes)."""
    configure_run_logging(args.verbose, args.log_format)
    rank = int(os.environ.get("RANK", "0"))
    t0 = time.perf_counter()
    status: dict[str, Any] = {"exit_code": EXIT_FAILURE, "status": "failed"}
    try:
        code = _run(args, status)
    except SprayError as err:
        code = err.exit_code
        status.update(exit_code=code, status="locked" if code == EXIT_LOCKED else "failed", error=str(err))
        log.error("%s", err, extra={"exit_code": code})
        code_final = code
    except Exception as err:  # a bug: log it as one JSON record (with traceback) rather than a raw dump
        log.exception("run failed: %s: %s", type(err).__name__, err, extra={"exit_code": EXIT_FAILURE})
        status.update(exit_code=EXIT_FAILURE, status="failed", error=f"{type(err).__name__}: {err}")
        code_final = EXIT_FAILURE
    else:
        code_final = code
    finally:
        _shutdown_dist()
    status["seconds"] = round(time.perf_counter() - t0, 3)
    if rank == 0:
        _write_status(getattr(args, "status_file", None), status)
    return code_final


def _shutdown_dist() -> None:
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _run(args: argparse.Namespace, status: dict[str, Any]) -> int:
    from spray.config import load_config
    from spray.nightly import changes_since_previous, exit_code_for, notify

    # The config is checked before torch is imported: a bad config fails (exit 2) in well under a second.
    cfg = load_config(args.config)
    if args.runs_dir:
        cfg.output.runs_dir = Path(args.runs_dir).resolve()
    if args.keep_runs is not None:
        cfg.output.keep_runs = args.keep_runs
    fail_on_findings = bool(args.fail_on_findings or cfg.nightly.fail_on_findings)
    runs_dir = Path(cfg.output.runs_dir)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        from spray.runs.locking import RunLock

        # Answer "already running" (75) at once, before seconds of imports; audit() takes the lock for
        # real below (a run that starts in between is still caught there).
        with RunLock(runs_dir):
            pass
    from spray.audit import audit

    def before_write(report: Any) -> None:
        report.extra["changes"] = changes_since_previous(report, runs_dir)
        ch = report.extra["changes"]
        log.info(
            "changes since %s: %d new, %d grown, %d persisting, %d resolved suspicious clusters",
            (ch["previous_run_id"] or "no previous run")[:16],
            ch["n_new"],
            ch["n_grown"],
            len(ch["persisting"]),
            ch["n_resolved"],
            extra={"n_new": ch["n_new"], "n_grown": ch["n_grown"], "n_resolved": ch["n_resolved"]},
        )

    report = audit(
        cfg, device=args.device, progress=args.progress, force=args.force, before_write=before_write
    )
    if int(os.environ.get("RANK", "0")) != 0:
        # Rank 0 merges, publishes, notifies and reports; the other ranks are done after the batch stage.
        return EXIT_OK
    up_to_date = bool(report.extra.get("up_to_date"))
    summary_path = Path(report.run_dir) / "summary.json"
    summary = json.loads(summary_path.read_text())
    code = exit_code_for(summary, fail_on_findings=fail_on_findings, up_to_date=up_to_date)
    ch = summary.get("changes") or {}
    n_susp = sum(1 for f in summary.get("findings", []) if f.get("suspicious"))
    status.update(
        exit_code=code,
        status="up_to_date" if up_to_date else "published",
        run_id=report.run_id,
        run_dir=report.run_dir,
        summary=str(summary_path),
        n_suspicious=n_susp,
        n_new=ch.get("n_new"),
        n_grown=ch.get("n_grown"),
        n_resolved=ch.get("n_resolved"),
    )
    report_html = Path(report.run_dir) / "report.html"
    if report_html.exists():
        status["report"] = str(report_html)
    if up_to_date:
        log.info(
            "up to date: run %s is already published at %s; nothing recomputed",
            report.run_id[:16],
            report.run_dir,
            extra={"exit_code": code, "run_dir": report.run_dir, "up_to_date": True},
        )
        return code
    log.info(
        "published %s: %d suspicious clusters (%s new, %s grown, %s resolved); exit %d",
        report.run_dir,
        n_susp,
        ch.get("n_new"),
        ch.get("n_grown"),
        ch.get("n_resolved"),
        code,
        extra={"exit_code": code, "run_dir": report.run_dir, "n_suspicious": n_susp},
    )
    if code == EXIT_FINDINGS and cfg.nightly.notify_command:
        notify(
            cfg.nightly.notify_command,
            summary_path,
            env={
                "SPRAY_RUN_ID": report.run_id,
                "SPRAY_RUN_DIR": report.run_dir,
                "SPRAY_EXIT_CODE": str(code),
                "SPRAY_REPORT_HTML": str(report_html) if report_html.exists() else "",
            },
        )
    return code


def register(subparsers: Any) -> None:
    """Add ``spray run`` to the ``spray`` command."""
    p = subparsers.add_parser(
        "run",
        help="the scheduled audit: idempotent, incremental, resumable, locked (exit 0/10/1/2/75)",
        description=(run_command.__doc__ or "")
        + " Exit codes: 0 ok (or up to date); 10 ok with new or grown suspicious clusters since the previous "
        "run (any suspicious cluster with --fail-on-findings); 1 failure; 2 config error; 75 another run "
        "holds the lock.",
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
        "--status-file",
        help="also write the final one-line JSON status here (torchrun turns exit codes into 1; read this instead)",
    )
    p.set_defaults(func=run_command)

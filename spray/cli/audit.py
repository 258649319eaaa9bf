"""``spray audit``: run the audit and print the ranked findings."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from spray.cli.options import add_audit_arguments, load_audit_config, positive_int


def run_command(args: argparse.Namespace) -> int:
    """``spray audit``: run the audit and print the ranked findings."""
    # The config first: a bad one is reported before torch (which spray.audit imports) is loaded.
    cfg = load_audit_config(args)
    from spray.cli.run import shutdown_dist
    from spray.nightly import audit_owing_alert
    from spray.report import findings_table, report_header

    try:
        # the same comparison as the nightly job's: the run's changes section, and the alert it owes, which
        # the next `spray run` (finding this run up to date) reports with exit 10 and its notification
        report = audit_owing_alert(
            cfg,
            by="spray audit",
            device=args.device,
            progress=not args.quiet,
            force=args.force,
        )
    finally:
        shutdown_dist()
    if report.rank != 0:
        return 0  # under torchrun rank 0 merges, analyses and reports; another rank's report is empty
    sys.stdout.write(report_header(report) + "\n\n" + findings_table(report.findings, top=args.top) + "\n")
    return 0


def register(subparsers: Any) -> None:
    """Add ``spray audit``."""
    a = subparsers.add_parser(
        "audit", help="audit a model on a dataset and publish a run", description=run_command.__doc__
    )
    add_audit_arguments(a)
    a.add_argument("--top", type=positive_int, default=10, help="rows of the findings table (default 10)")
    a.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="warnings and results only: no progress bars, no INFO lines",
    )
    a.set_defaults(func=run_command)

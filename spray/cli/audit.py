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
    from spray.audit import audit
    from spray.report import findings_table, report_header

    report = audit(cfg, device=args.device, progress=not args.quiet, force=args.force)
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

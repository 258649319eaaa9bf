"""``spray flags export|list``: the flags set in the dashboard, for unlearning."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from spray.errors import ConfigError
from spray.flags import EXPORT_FORMATS, STATUSES, FlagStore, default_db_path
from spray.runs.atomic import atomic_write_bytes

log = logging.getLogger("spray.flags")


def _db_from_args(args: argparse.Namespace) -> Path:
    if args.db:
        return Path(args.db)
    if args.runs_dir:
        return default_db_path(args.runs_dir)
    raise ConfigError("Give the flag database with --db PATH (or --runs-dir DIR for DIR/flags.sqlite).")


def export_command(args: argparse.Namespace) -> int:
    """``spray flags export``: write the current flags (default: status unlearn) as CSV, JSON or Parquet."""
    db = _db_from_args(args)
    out = Path(args.output) if args.output and args.output != "-" else None
    if out is not None:
        if out.is_dir():
            raise ConfigError(
                f"-o {out} is a folder: give a file name, e.g. -o {out / ('flags.' + args.format)}."
            )
        if not out.parent.is_dir():
            raise ConfigError(
                f"The folder of -o {out} does not exist ({out.parent}): create it first or choose another path."
            )
    # Read-only: never takes the write lock, never creates or changes the database.
    store = FlagStore(db, read_only=True)
    store.check()
    status = None if args.status == "all" else args.status
    data = store.export_bytes(args.format, dataset=args.dataset, status=status)
    if out is not None:
        try:
            atomic_write_bytes(out, data)
        except OSError as err:
            raise ConfigError(f"Cannot write -o {out}: {err.strerror or err}.") from None
        log.info("wrote %s flags to %s", args.status, out)
    else:
        if args.format == "parquet" and sys.stdout.isatty():
            raise ConfigError("Parquet is binary: give -o FILE.")
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


def list_command(args: argparse.Namespace) -> int:
    """``spray flags list``: counts of current flags per dataset and status."""
    # Read-only: a reader never waits for a writer (WAL), so this answers while the dashboard writes.
    store = FlagStore(_db_from_args(args), read_only=True)
    store.check()
    for ds in store.datasets():
        counts = store.counts(ds)
        line = ", ".join(f"{s} {counts.get(s, 0)}" for s in STATUSES)
        sys.stdout.write(f"{ds}: {line}\n")
    return 0


def register(subparsers: Any) -> None:
    """Add ``spray flags export|list`` to the ``spray`` command."""
    p = subparsers.add_parser("flags", help="export or list the flags set in the dashboard")
    sub = p.add_subparsers(dest="flags_command", required=True, metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--db", help="flag database (SQLite)")
        q.add_argument("--runs-dir", help="use RUNS_DIR/flags.sqlite")

    e = sub.add_parser(
        "export", help="export current flags (for unlearning)", description=export_command.__doc__
    )
    common(e)
    e.add_argument("--format", choices=EXPORT_FORMATS, default="csv")
    e.add_argument(
        "--status", choices=[*STATUSES, "all"], default="unlearn", help="which flags (default unlearn)"
    )
    e.add_argument("--dataset", help="only this dataset key (default: all)")
    e.add_argument("-o", "--output", help="output file (default: stdout)")
    e.set_defaults(func=export_command)

    ls = sub.add_parser("list", help="counts of current flags", description=list_command.__doc__)
    common(ls)
    ls.set_defaults(func=list_command)

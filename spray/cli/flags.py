"""``spray flags set|export|list``: flags for unlearning, from the dashboard or the command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spray.errors import ConfigError
from spray.flags import EXPORT_FORMATS, STATUSES, FlagStore, default_author, default_db_path
from spray.runs.atomic import atomic_write_bytes

if TYPE_CHECKING:
    from spray.runs.reader import RunReader

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


def _run_folder(args: argparse.Namespace) -> Path:
    if args.run:
        return Path(args.run)
    if args.runs_dir:
        return Path(args.runs_dir) / "latest"
    raise ConfigError("Give the run with --run RUN_FOLDER or --runs-dir DIR (for DIR/latest).")


def _finding_key(reader: RunReader, text: str, run: Path) -> str:
    """The key of the finding ``text`` names: its key (``1/k2/c0``), or the report's class and cluster
    columns (``dog/k2/c0``), or the cluster column alone (``k2/c0``) when one class has it.

    Raises
    ------
    ConfigError
        No finding, or several, go by that name (the message lists them with their keys).
    """
    from spray.report import cluster_label

    findings = reader.summary.findings
    if any(f.key == text for f in findings):
        return text
    found = [f for f in findings if text in (cluster_label(f), f"{f.class_name}/{cluster_label(f)}")]
    if len(found) == 1:
        return found[0].key
    if found:
        named = ", ".join(f"{f.key} ({f.class_name})" for f in found[:10])
        raise ConfigError(
            f"Several findings of {run} are cluster {text!r}, one per class: {named}. Give the class too, "
            f"e.g. --finding {found[0].class_name}/{text}, or the key."
        )
    keys = [f"{f.key} ({f.class_name} {cluster_label(f)})" for f in findings[:10]]
    raise ConfigError(
        f"No finding {text!r} in {run}; the top findings are {', '.join(keys)}. Give one of these keys, or "
        "the class and cluster columns of the report (e.g. dog/k2/c0)."
    )


def set_command(args: argparse.Namespace) -> int:
    """``spray flags set``: flag a finding's members (or given samples) of a published run, as the dashboard does."""
    from spray.runs.reader import RunReader

    run = _run_folder(args)
    reader = RunReader.open(run)
    key = None
    if args.finding:
        key = _finding_key(reader, args.finding, run)
        finding = reader.finding(key)
        assert finding is not None
        ids = [str(i) for i in finding.member_ids]
        if args.with_carriers:
            members = set(ids)
            ids += [str(i) for i in finding.carrier_ids if str(i) not in members]
    else:
        ids = [i.strip() for i in (args.sample_ids or "").split(",") if i.strip()]
        if not ids:
            raise ConfigError("Give --finding KEY or --sample-ids ID,ID,... to flag.")
        known = set(reader.samples().index.astype(str))
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise ConfigError(f"{len(unknown)} sample id(s) are not in {run}, e.g. {unknown[:3]}.")
    db = Path(args.db) if args.db else default_db_path(run.parent if args.run else args.runs_dir)
    FlagStore(db).flag(
        reader.summary.dataset,
        ids,
        args.status,
        args.note,
        run_id=reader.summary.run_id,
        cluster_key=key,
        source="spray flags set",
        author=args.author if args.author is not None else default_author(),
    )
    sys.stdout.write(f"flagged {len(ids)} samples of {reader.summary.dataset} as {args.status} in {db}\n")
    return 0


def register(subparsers: Any) -> None:
    """Add ``spray flags set|export|list`` to the ``spray`` command."""
    p = subparsers.add_parser("flags", help="set, export or list flags for unlearning")
    sub = p.add_subparsers(dest="flags_command", required=True, metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--db", help="flag database (SQLite)")
        q.add_argument("--runs-dir", help="use RUNS_DIR/flags.sqlite")

    f = sub.add_parser(
        "set", help="flag a finding's members or given samples of a run", description=set_command.__doc__
    )
    common(f)
    f.add_argument("--run", help="the published run folder (default RUNS_DIR/latest)")
    f.add_argument(
        "--finding",
        help="the finding to flag (its members): its key, e.g. 6/k3/c2, or the report's class/cluster, e.g. dog/k3/c2",
    )
    f.add_argument("--with-carriers", action="store_true", help="also the finding's carriers")
    f.add_argument("--sample-ids", help="comma-separated sample ids instead of a finding")
    f.add_argument("--status", choices=STATUSES, default="unlearn", help="the flag (default unlearn)")
    f.add_argument("--note", default="", help="free text kept in the history and the export")
    f.add_argument(
        "--author", help="who decided (default: $SPRAY_AUTHOR or the OS user, as in the dashboard)"
    )
    f.set_defaults(func=set_command)

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

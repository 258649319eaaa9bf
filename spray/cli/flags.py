"""``spray flags set|export|list``: flags for unlearning, from the dashboard or the command line."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spray.cli.export_file import check_export_path, export_format
from spray.cli.flag_runs import export_left_out, run_folder, trial_checks
from spray.errors import ConfigError
from spray.exit_codes import EXIT_FAILURE, EXIT_OK
from spray.flags import EXPORT_FORMATS, STATUSES, FlagStore, default_author, default_db_path
from spray.flags.content import (
    FlagBinding,
    bind_flags,
    binding_message,
    class_changes,
    classes_of,
    describe,
    listed,
    plan_moves,
    relabel_message,
    relabelled,
)
from spray.runs.atomic import atomic_write_bytes
from spray.runs.keys import finding_key, renumbered_message, sample_ids_in

if TYPE_CHECKING:
    from spray.runs.reader import RunReader

log = logging.getLogger("spray.flags")


def _db_from_args(args: argparse.Namespace) -> Path:
    if args.db:
        return Path(args.db)
    if args.runs_dir:
        return default_db_path(args.runs_dir)
    raise ConfigError(
        "Give the flag database with --db PATH (or --flags-db PATH; --runs-dir DIR for DIR/flags.sqlite)."
    )


def export_command(args: argparse.Namespace) -> int:
    """``spray flags export``: write the current flags (default: status unlearn) as CSV, JSON or Parquet."""
    db = _db_from_args(args)
    out = Path(args.output) if args.output and args.output != "-" else None
    args.format = export_format(out, args.format)
    if out is not None:
        check_export_path(out, args.format)
    # Read-only: never takes the write lock, never creates or changes the database.
    store = FlagStore(db, read_only=True)
    store.check()
    if args.fail_if_left_out and not args.runs_dir:
        raise ConfigError(
            "--fail-if-left-out needs --runs-dir RUNS_DIR: flags are checked against its newest run to leave out "
            "those that no longer name the images they were set on."
        )
    if args.dataset is not None and args.dataset not in (known := store.datasets()):
        raise ConfigError(
            f"--dataset {args.dataset!r}: {db} holds no flags of that dataset key; "
            + (f"its keys: {', '.join(known)}." if known else "it holds no flags at all.")
        )
    if args.runs_dir:
        datasets = [args.dataset] if args.dataset is not None else store.datasets()
        leave_out = export_left_out(
            db, Path(args.runs_dir), datasets, None if args.status == "all" else args.status
        )
    else:
        leave_out = set()
        log.warning(
            "the flags are exported without checking that their sample ids still name the images they were set "
            "on (a replaced, renamed or deleted file): give --runs-dir RUNS_DIR to leave such flags out"
        )
    status = None if args.status == "all" else args.status
    data = store.export_bytes(args.format, dataset=args.dataset, status=status, leave_out=leave_out)
    if out is not None:
        try:
            atomic_write_bytes(out, data, option="-o")
        except OSError as err:
            raise ConfigError(f"Cannot write -o {out}: {err.strerror or err}.") from None
        log.info("wrote %s flags to %s", args.status, out)
    else:
        if args.format == "parquet" and sys.stdout.isatty():
            raise ConfigError("Parquet is binary: give -o FILE.")
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    # A scheduled export can ask to fail when flags it asked for were left out, rather than hand on fewer
    # flags quietly (only the left-out flags of the exported dataset and status count).
    if args.fail_if_left_out and _asked_for(store, leave_out, args.dataset, status):
        return EXIT_FAILURE
    return 0


def _asked_for(
    store: FlagStore, leave_out: set[tuple[str, str]], dataset: str | None, status: str | None
) -> int:
    """How many of the left-out flags the export's ``--dataset`` and ``--status`` would have included."""
    if not leave_out:
        return 0
    wanted = {(f.dataset, f.sample_id) for f in store.current(dataset, status)}
    return len(leave_out & wanted)


def list_command(args: argparse.Namespace) -> int:
    """``spray flags list``: counts of current flags per dataset and status."""
    # Read-only: a reader never waits for a writer (WAL), so this answers while the dashboard writes.
    db = _db_from_args(args)
    store = FlagStore(db, read_only=True)
    store.check()
    for ds in store.datasets():
        counts = store.counts(ds)
        line = ", ".join(f"{s} {counts.get(s, 0)}" for s in STATUSES)
        # flags are counted as stored; those that no longer name their images are said, not hidden
        off = len(export_left_out(db, Path(args.runs_dir), [ds], None, say=False)) if args.runs_dir else 0
        if off:
            line += (
                f" ({off} of them no longer name the images they were set on in the newest run: spray flags "
                f"check --runs-dir {shlex.quote(str(args.runs_dir))})"
            )
        sys.stdout.write(f"{ds}: {line}\n")
    return 0


def _sample_ids(
    args: argparse.Namespace, reader: RunReader, run: Path, verb: str, also: set[str] | None = None
) -> list[str]:
    """The ids of ``--sample-ids`` (comma-separated) and ``--sample-ids-file`` (one per line: ids with commas),
    each found in the run (or in ``also``) as typed, trimmed, or in Unicode's composed form
    (:func:`~spray.runs.keys.sample_id_in`)."""
    if getattr(args, "with_carriers", False):
        raise ConfigError(
            "--with-carriers adds a finding's carriers: give it with --finding, not with sample ids."
        )
    ids = [i for i in (args.sample_ids or "").split(",") if i.strip()]
    if args.sample_ids_file:
        try:
            # utf-8-sig: a file saved with a byte-order mark (Windows editors) would prefix its first id
            text = Path(args.sample_ids_file).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"--sample-ids-file {args.sample_ids_file}: cannot read it ({err}).") from err
        ids += [line for line in text.split("\n") if line.strip()]
    if not ids:
        raise ConfigError(
            f"Give --finding KEY or --sample-ids ID,ID,... (or --sample-ids-file FILE) to {verb}."
        )
    known = set(reader.sample_ids()) | (also or set())
    found = sample_ids_in(ids, known)
    unknown = [i.strip() for i, f in found.items() if f is None]
    if unknown:
        commas = any("," in k for k in known) and "," in (args.sample_ids or "")
        hint = (
            " Some of the run's ids hold a comma, which --sample-ids splits at: give them one per line in "
            "--sample-ids-file FILE."
            if commas
            else ""
        )
        raise ConfigError(f"{len(unknown)} sample id(s) are not in {run}, e.g. {unknown[:3]}.{hint}")
    stored = dict.fromkeys(f for f in found.values() if f is not None)  # once each: the count said is stored
    return list(stored)


def _author(args: argparse.Namespace) -> str:
    """``--author``, else ``$SPRAY_AUTHOR`` or the OS user (as the dashboard records it)."""
    return args.author if args.author is not None else default_author()


def _run_db(args: argparse.Namespace, run: Path) -> Path:
    """``--db``, else the project's flag database (``RUNS_DIR/flags.sqlite``; a correction's re-audit run
    holds none of its own: the project's, as ``spray correct`` reads it)."""
    return Path(args.db) if args.db else default_db_path(run.parent if args.run else args.runs_dir)


def set_command(args: argparse.Namespace) -> int:
    """``spray flags set``: flag a finding's members (or given samples) of a published run, as the dashboard does."""
    from spray.runs.reader import RunReader

    run = run_folder(args)
    reader = RunReader.open(run)
    if (limit := reader.summary.trial_limit) is not None:
        log.warning(
            "run %s is a trial on the first %s samples (data.limit): its findings group only those; the full "
            "audit's run may group them otherwise (give --run to flag on that one)",
            run.resolve().name,
            limit,
        )
    key, ids = (
        _finding_ids(args, reader, run) if args.finding else (None, _sample_ids(args, reader, run, "flag"))
    )
    db = _run_db(args, run)
    hashes = reader.content_hashes() or {}
    moved = _moved_flags(db, reader.summary.dataset, ids, key, hashes if not args.note else {}, args.status)
    FlagStore(db).flag(
        reader.summary.dataset,
        ids,
        args.status,
        args.note,
        run_id=reader.summary.run_id,
        cluster_key=key,
        source="spray flags set",
        author=_author(args),
        content_hashes={i: hashes[i] for i in ids if i in hashes},
        classes=classes_of(reader.samples(), ids),
    )
    sys.stdout.write(
        f"flagged {len(ids)} samples of {reader.summary.dataset} as {args.status} in {db} (run {run.resolve().name})\n"
        + moved
    )
    _warn_if_older(reader, run, ids)
    if key is not None and (renumbered := renumbered_message(reader, run, key)):
        log.warning("%s", renumbered)
    return 0


def _finding_ids(args: argparse.Namespace, reader: RunReader, run: Path) -> tuple[str, list[str]]:
    """``--finding``'s key and its members' ids (and its carriers' with ``--with-carriers``)."""
    if args.sample_ids or args.sample_ids_file:
        raise ConfigError("Give --finding or --sample-ids/--sample-ids-file, not both.")
    key = finding_key(reader.summary.findings, args.finding, run, "--finding", reader.summary.classes_skipped)
    finding = reader.finding(key)
    assert finding is not None
    ids = [str(i) for i in finding.member_ids]
    if args.with_carriers:
        members = set(ids)
        ids += [str(i) for i in finding.carrier_ids if str(i) not in members]
    return key, ids


def _moved_flags(
    db: Path, dataset: str, ids: list[str], key: str | None, hashes: dict[str, str], status: str
) -> str:
    """A line per finding whose flags of ``ids`` now name ``key`` instead (a sample's newest flag names one
    finding), and one for notes kept onto other content (``hashes``: the new content, when no note is given);
    empty when neither."""
    if not db.is_file():
        return ""
    wanted = set(ids)
    flags = [f for f in FlagStore(db, read_only=True).current(dataset) if f.sample_id in wanted]
    before = Counter(f.cluster_key for f in flags)
    now = key or "no finding (given sample ids)"
    # the same status without a note keeps the note, which was written about the sample's earlier content
    kept = [f.sample_id for f in flags if f.note and f.status == status and f.content_hash not in (None, hashes.get(f.sample_id, f.content_hash))]  # fmt: skip
    return "".join(
        f"  {n} of them were flagged from finding {old} before: their flags now name {now}\n"
        for old, n in sorted(before.items(), key=lambda kv: str(kv[0]))
        if old and old != key
    ) + (f"  {len(kept)} of them keep a note written when their file held other content (e.g. {kept[0]}): "
         "give --note to replace it\n" if kept else "")  # fmt: skip


def _newest_if_older(reader: RunReader, run: Path) -> Path | None:
    """The newest run of ``run``'s audit when ``run`` is not it, else None."""
    from spray.runs.publish import newer_run

    return newer_run(run, name=reader.summary.name, dataset=reader.summary.dataset)


def _warn_if_older(reader: RunReader, run: Path, ids: list[str]) -> None:
    """A WARNING when ``run`` is not the newest run of its audit: its ids and finding keys may name other
    images now, which ``spray flags check`` against the newest run tells."""
    newest = _newest_if_older(reader, run)
    if newest is not None:
        log.warning(
            "%s is not the newest run of this audit (%s is): the %d ids flagged name its images, which the data "
            "may have moved since; check them against the newest run: spray flags check --run %s",
            run, newest.name, len(ids), shlex.quote(str(newest)),
        )  # fmt: skip


def unset_command(args: argparse.Namespace) -> int:
    """``spray flags unset``: remove the current flag of given samples (the history keeps it)."""
    from spray.runs.reader import RunReader

    run = run_folder(args)
    reader = RunReader.open(run)
    db = _run_db(args, run)
    # A flag whose sample is gone from the run (a deleted file) can be dropped too.
    flagged = {f.sample_id for f in FlagStore(db).current(reader.summary.dataset)} if db.is_file() else set()
    ids = (
        _finding_ids(args, reader, run)[1]
        if args.finding
        else _sample_ids(args, reader, run, "unflag", also=flagged)
    )
    removed = [i for i in ids if i in flagged]
    if removed:
        FlagStore(db).unflag(
            reader.summary.dataset,
            removed,
            args.note,
            run_id=reader.summary.run_id,
            source="spray flags unset",
            author=_author(args),
        )
    not_flagged = (
        f" ({len(ids) - len(removed)} of the given samples had no flag)" if len(removed) < len(ids) else ""
    )
    sys.stdout.write(f"unflagged {len(removed)} samples of {reader.summary.dataset} in {db}{not_flagged}\n")
    return 0


def _binding(args: argparse.Namespace, run: Path | None = None) -> tuple[RunReader, Path, Path, FlagBinding]:
    """The current flags of the run's dataset checked against the content of ``run`` (default: the run the
    arguments name)."""
    from spray.runs.reader import RunReader

    run = run or run_folder(args, full_first=True)
    reader = RunReader.open(run)
    hashes = reader.content_hashes()
    if hashes is None:
        raise ConfigError(
            f"{run} was written before runs kept each sample's content hash (run layout "
            f"{reader.summary.layout_version}): audit again (spray audit --force, or the nightly spray run) "
            "and check against the new run."
        )
    db = _run_db(args, run)
    # no database beside the runs yet: nothing was ever flagged, which is not an error (a --db given is checked)
    none_yet = not args.db and not db.exists()
    flags = [] if none_yet else FlagStore(db, read_only=True).current(reader.summary.dataset)
    return reader, run, db, bind_flags(flags, hashes, run=run)


def check_command(args: argparse.Namespace, trial: Path | None = None) -> int:
    """``spray flags check``: do the flags of a run's dataset still name the content they were set on?
    Exit 1 when a flagged id now names other content (``spray correct`` then refuses). Without ``--run``, the
    ``data.limit`` trials newer than the dataset's newest full run are checked too (they read the files now)."""
    reader, run, db, binding = _binding(args, trial)
    counts = {k: len(binding.of_kind(k)) for k in ("moved", "replaced", "gone", "unverified")}
    unchecked = (
        f" ({binding.unchecked} of them set before flags recorded content, on a run of the same data or on one "
        "no longer here: not checked)"
        if binding.unchecked
        else ""
    )
    if binding.outside:
        unchecked += f" ({binding.outside} on samples this data.limit trial did not read: not checked)"
    unverified = (
        f", {counts['unverified']} set before flags recorded content on a run of other data (unverified)"
        if counts["unverified"]
        else ""
    )
    sys.stdout.write(
        f"{reader.summary.dataset} ({db}) against {run}: {len(binding.bound)} flags on their content{unchecked}, "
        f"{counts['moved']} moved to another id, {counts['replaced']} on ids that now name other content, "
        f"{counts['gone']} on samples no longer in the run{unverified}\n"
    )
    message = (
        binding_message(
            FlagStore(db, read_only=True),
            reader.summary.dataset,
            binding,
            reader.content_hashes() or {},
            str(run),
        )
        if db.is_file()
        else describe(binding, str(run))
    )
    if message:
        sys.stdout.write(message + "\n")
    relabel = relabel_message(relabelled(binding.bound, run, binding.of_kind("moved")))
    if relabel:
        sys.stdout.write(relabel + "\n")
    newer = args.run or trial  # a run named, or a trial being checked: no trials of its own
    trials = 0 if newer else trial_checks(run, reader.summary.dataset, lambda t: check_command(args, t))
    return EXIT_FAILURE if binding.wrong or trials else EXIT_OK


def rebind_command(args: argparse.Namespace) -> int:
    """``spray flags rebind``: move each flag whose content is now under exactly one other sample id of
    the run to that id (IDX records removed or reordered, files renamed); other flags are left alone."""
    reader, run, db, binding = _binding(args)
    _refuse_older(reader, run)
    moves, clashes, taken = plan_moves(binding)
    if moves:
        FlagStore(db).move(
            reader.summary.dataset,
            moves,
            run_id=reader.summary.run_id,
            author=_author(args),
        )
    sys.stdout.write(f"moved {len(moves)} flags of {reader.summary.dataset} to their content's ids in {db}\n")
    across = (
        class_changes(moves, reader.samples()["label"].to_dict(), reader.summary.class_names) if moves else []
    )
    if across:
        sys.stdout.write(
            f"{len(across)} of them are now on images of another class ({listed(across)}): a flag set from one "
            "class's finding may not hold in another; look at them (`spray flags list`) and unset what no longer "
            "applies\n"
        )
    if clashes:
        pairs = [
            f"{c.flag.sample_id} ({c.flag.status}) → {c.found_at[0]} "
            + (
                f"({taken[c.found_at[0]].status})"
                if c.found_at[0] in taken
                else "(also another flag's target)"
            )
            for c in clashes
        ]
        sys.stdout.write(
            f"{len(clashes)} flags not moved: their content's new id has a flag of its own, which stays, or is "
            "another moved flag's target "
            f"({listed(pairs)}); keep one decision: drop the old id's flag with `spray flags unset --run "
            f"{shlex.quote(str(run))} --sample-ids ID`, or set the new id's anew with `spray flags set`\n"
        )
    left = binding.of_kind("replaced")
    if left:
        rest = FlagBinding(changed=left)
        sys.stdout.write(describe(rest, str(run)) + "\n")
    return EXIT_FAILURE if left or clashes else EXIT_OK


def _refuse_older(reader: RunReader, run: Path) -> None:
    """Rebinding follows images to their ids in ``run``: only the newest run of its audit names the ids of
    the current data (an older one would move flags back to ids that may be gone)."""
    newest = _newest_if_older(reader, run)
    if newest is not None:
        raise ConfigError(
            f"{run} is not the newest run of this audit ({newest.name} is): rebinding to it would move flags to "
            f"the ids of older data. Rebind against the newest run: spray flags rebind --run {newest}."
        )


def register(subparsers: Any) -> None:
    """Add ``spray flags set|export|list|unset|check|rebind`` to the ``spray`` command."""
    p = subparsers.add_parser("flags", help="set, export or list flags for unlearning")
    sub = p.add_subparsers(dest="flags_command", required=True, metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        # --flags-db: the name spray dashboard, spray correct and spray export fiftyone give it
        q.add_argument("--db", "--flags-db", dest="db", metavar="PATH", help="flag database (SQLite)")
        q.add_argument("--runs-dir", help="use RUNS_DIR/flags.sqlite")

    f = sub.add_parser(
        "set", help="flag a finding's members or given samples of a run", description=set_command.__doc__
    )
    common(f)
    f.add_argument("--run", help="the published run folder (default: the newest run in RUNS_DIR)")
    _dataset_option(f)
    f.add_argument(
        "--finding",
        help="the finding to flag (its members): its key, e.g. 6/k3/c2, or the report's class/cluster, e.g. dog/k3/c2",
    )
    f.add_argument("--with-carriers", action="store_true", help="also the finding's carriers")
    f.add_argument("--sample-ids", help="comma-separated sample ids instead of a finding")
    _ids_file_option(f)
    f.add_argument("--status", choices=STATUSES, default="unlearn", help="the flag (default unlearn)")
    f.add_argument("--note", default="", help="free text kept in the history and the export")
    f.add_argument(
        "--author", help="who decided (default: $SPRAY_AUTHOR or the OS user, as in the dashboard)"
    )
    f.set_defaults(func=set_command)

    _export_parser(sub, common)

    ls = sub.add_parser("list", help="counts of current flags", description=list_command.__doc__)
    common(ls)
    ls.set_defaults(func=list_command)

    u = sub.add_parser(
        "unset",
        help="remove the flag of a finding's members or given samples",
        description=unset_command.__doc__,
    )
    _run_options(u, common)
    u.add_argument("--finding", help="unflag a finding's members: its key, e.g. 6/k3/c2, or class/kK/cC")
    u.add_argument("--with-carriers", action="store_true", help="also the finding's carriers")
    u.add_argument("--sample-ids", help="comma-separated sample ids instead of a finding")
    _ids_file_option(u)
    u.add_argument("--note", default="", help="why (kept in the history)")
    u.add_argument("--author", help="who decided (default: $SPRAY_AUTHOR or the OS user)")
    u.set_defaults(func=unset_command)

    c = sub.add_parser(
        "check", help="do flags still name the images they were set on?", description=check_command.__doc__
    )
    _run_options(c, common)
    c.set_defaults(func=check_command)

    r = sub.add_parser(
        "rebind", help="move flags to where their images are now", description=rebind_command.__doc__
    )
    _run_options(r, common)
    r.add_argument("--author", help="who moved them (default: $SPRAY_AUTHOR or the OS user)")
    r.set_defaults(func=rebind_command)


def _export_parser(sub: Any, common: Any) -> None:
    """Add ``spray flags export``."""
    e = sub.add_parser(
        "export", help="export current flags (for unlearning)", description=export_command.__doc__
    )
    common(e)
    e.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        help="csv, json or parquet (default: the ending of -o, else csv)",
    )
    e.add_argument(
        "--status", choices=[*STATUSES, "all"], default="unlearn", help="which flags (default unlearn)"
    )
    e.add_argument("--dataset", help="only this dataset key (default: all)")
    e.add_argument("-o", "--output", help="output file (default: stdout)")
    e.add_argument(
        "--fail-if-left-out",
        action="store_true",
        help="with --runs-dir: exit 1 (after writing the export) when flags were left out because they no longer "
        "name the images they were set on",
    )
    e.set_defaults(func=export_command)


def _ids_file_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sample-ids-file",
        metavar="FILE",
        help="a file of sample ids, one per line, taken exactly (commas, spaces)",
    )


def _run_options(p: argparse.ArgumentParser, common: Any) -> None:
    common(p)
    p.add_argument("--run", help="the published run folder (default: the newest run in RUNS_DIR)")
    _dataset_option(p)


def _dataset_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        help="with --runs-dir: the newest run of this dataset key (needed when the folder holds runs of several)",
    )

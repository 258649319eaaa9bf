"""``spray export virelay|fiftyone RUN -o OUT``: a run in the file format of another tool."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from typing import Any

log = logging.getLogger("spray.export")


def _run_arg(args: argparse.Namespace) -> str:
    """The run to export: the positional RUN or ``--runs-dir`` (one of them)."""
    from spray.errors import ConfigError

    if (args.run is None) == (args.runs_dir is None):
        raise ConfigError("Give the run to export: a run or runs folder, or --runs-dir DIR (one of them).")
    return str(args.run if args.run is not None else args.runs_dir)


def virelay_command(args: argparse.Namespace) -> int:
    """``spray export virelay``: write a ViRelAy project (open it with ``virelay OUT/project.yaml``)."""
    from spray.export.virelay import write_virelay_project

    project = write_virelay_project(_run_arg(args), args.output)
    sys.stdout.write(f"{project}\nOpen it with: virelay {shlex.quote(str(project))}\n")
    return 0


def fiftyone_command(args: argparse.Namespace) -> int:
    """``spray export fiftyone``: write a FiftyOne dataset folder with cluster, suspicion and flag fields."""
    from spray.export.fiftyone import write_fiftyone_dataset

    out = write_fiftyone_dataset(
        _run_arg(args),
        args.output,
        flags_db=args.flags_db,
        data_root=args.data_root,
        check_originals=not args.no_content_check,
    )
    sys.stdout.write(
        f"{out}\nOpen it with: fo.Dataset.from_dir({str(out)!r}, dataset_type=fo.types.FiftyOneDataset)\n"
    )
    return 0


def register(subparsers: Any) -> None:
    """Add ``spray export virelay|fiftyone`` to the ``spray`` command."""
    p = subparsers.add_parser("export", help="export a run for ViRelAy or FiftyOne")
    sub = p.add_subparsers(dest="export_target", required=True, metavar="TARGET")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("run", nargs="?", help="a run folder, or a runs folder (its newest run)")
        q.add_argument("--runs-dir", help="a runs folder (its newest run), as for flags and the dashboard")
        q.add_argument("-o", "--output", required=True, help="folder to create (must not exist)")

    v = sub.add_parser(
        "virelay", help="a ViRelAy project (project.yaml + HDF5)", description=virelay_command.__doc__
    )
    common(v)
    v.set_defaults(func=virelay_command)
    f = sub.add_parser("fiftyone", help="a FiftyOne dataset folder", description=fiftyone_command.__doc__)
    common(f)
    f.add_argument(
        "--flags-db",
        help="flag database (default: RUNS_DIR/flags.sqlite beside the run, when it exists; for a correction's "
        "re-audit RUNS_DIR/corrections/C/reaudit, the project's RUNS_DIR/flags.sqlite)",
    )
    f.add_argument("--data-root", help="folder the sample ids are relative to: link the original files")
    f.add_argument(
        "--no-content-check",
        action="store_true",
        help="link the original files without reading them to check they are still the audited images (faster "
        "on large data; a file replaced since the audit is then linked as if it were the explained one)",
    )
    f.set_defaults(func=fiftyone_command)

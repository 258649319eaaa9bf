"""``spray dashboard``: serve the dashboard for a runs directory."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Any

from spray.cli.options import port_number
from spray.errors import ConfigError, SprayError
from spray.flags import FlagStore, default_author
from spray.runs.publish import list_runs
from spray.serve import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    ServeOptions,
    build_command,
    check_runs_dir,
    needs_token,
    new_token,
    no_runs_message,
    supervise,
)

log = logging.getLogger("spray.serve")


def _check_port(host: str, port: int) -> None:
    """Refuse a port another process listens on, with the fix, before Streamlit starts (its own message
    comes after its start-up and names no fix)."""
    import errno
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the server does: a closed connection's TIME_WAIT is no conflict, a listener is.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"Port {port} on {host} is in use: another spray dashboard or program listens there. Stop "
                    f"it, or pass another --port (e.g. --port {port + 1})."
                ) from None
            raise ConfigError(
                f"Cannot serve on {host}:{port} ({err.strerror or err}): check --host and --port (ports below "
                "1024 need root)."
            ) from None


def _options(args: argparse.Namespace) -> ServeOptions:
    if args.no_token and args.token:
        raise ConfigError(
            "--token sets the access token and --no-token serves without one: give one of them."
        )
    runs_dir = check_runs_dir(Path(args.runs_dir))
    db = Path(args.flags_db).expanduser().resolve() if args.flags_db else None
    if db is not None and db.is_dir():
        raise ConfigError(
            f"--flags-db {args.flags_db} is a folder: give the database file, e.g. {db / 'flags.sqlite'}."
        )
    if db is not None and not db.parent.is_dir():
        raise ConfigError(
            f"The folder of --flags-db {args.flags_db} does not exist ({db.parent}): create it or fix the path."
        )
    if db is not None and db.is_file() and db.stat().st_size:  # an empty file is a new database
        try:  # refused here, not in every page: spray flags refuses such a file too
            FlagStore(db, read_only=True)
        except SprayError as err:
            raise ConfigError(f"--flags-db {args.flags_db}: {err}") from None
    data_root = Path(args.data_root).expanduser().resolve() if args.data_root else None
    if data_root is not None and not data_root.is_dir():
        raise ConfigError(
            f"--data-root {args.data_root} is not a folder: give the root your sample ids are relative to."
        )
    _check_port(args.host, args.port)
    token = args.token or os.environ.get("SPRAY_DASHBOARD_TOKEN") or None
    if args.no_token:
        token = None
    elif token is None and needs_token(args.host):
        token = new_token()  # exposed beyond this machine: never without a token unless asked for
    return ServeOptions(
        runs_dir=runs_dir,
        port=args.port,
        host=args.host,
        flags_db=db,
        read_only=args.read_only,
        author=args.author or default_author(),
        token=token,
        data_root=data_root,
    )


def run_command(args: argparse.Namespace) -> int:
    """``spray dashboard``: serve the dashboard for a runs directory (127.0.0.1 by default)."""
    if importlib.util.find_spec("streamlit") is None or importlib.util.find_spec("plotly") is None:
        raise ConfigError("The dashboard needs streamlit and plotly: pip install -e '.[dashboard]'.")
    opts = _options(args)
    if not list_runs(opts.runs_dir):
        sys.stdout.write(no_runs_message(opts.runs_dir) + "\n\n")
    argv, env = build_command(opts.runs_dir, options=opts)
    shown = "localhost" if args.host in ("127.0.0.1", "0.0.0.0") else args.host
    url = f"http://{shown}:{args.port}/" + (f"?token={opts.token}" if opts.token else "")
    mode = "read-only" if opts.read_only else f"flags by {opts.author or 'anonymous'}"
    sys.stdout.write(f"spray dashboard: {url}  (runs: {opts.runs_dir}; {mode}; Ctrl-C stops it)\n")
    sys.stdout.flush()
    if needs_token(args.host) and not opts.token:
        log.warning(
            "serving on %s without an access token: anyone who reaches the port can read runs and flag "
            "samples; put it behind a proxy that authenticates",
            args.host,
        )
    return supervise(argv, env)


def register(subparsers: Any) -> None:
    """Add ``spray dashboard`` to the ``spray`` command."""
    p = subparsers.add_parser(
        "dashboard", help="open the dashboard on a runs directory", description=run_command.__doc__
    )
    p.add_argument("--runs-dir", default="runs", help="runs directory (default ./runs); must exist")
    p.add_argument(
        "--port", type=port_number, default=DEFAULT_PORT, help=f"port, 1 to 65535 (default {DEFAULT_PORT})"
    )
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    p.add_argument("--flags-db", help="flag database (default RUNS_DIR/flags.sqlite)")
    p.add_argument(
        "--read-only", action="store_true", help="browse only: no flagging, database opened read-only"
    )
    p.add_argument(
        "--author", help="default author recorded with flags (default: $SPRAY_AUTHOR or the OS user)"
    )
    p.add_argument(
        "--token",
        help="access token every visitor must give (default: a random one when --host is not loopback; "
        "or $SPRAY_DASHBOARD_TOKEN)",
    )
    p.add_argument(
        "--no-token",
        action="store_true",
        help="no access token even beyond 127.0.0.1 (behind an authenticating proxy)",
    )
    p.add_argument(
        "--data-root", help="folder the sample ids are relative to: the sample view shows the original file"
    )
    p.set_defaults(func=run_command)

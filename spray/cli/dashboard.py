"""``spray dashboard``: serve the dashboard for a runs directory."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from spray.errors import ConfigError
from spray.runs.storage import list_runs
from spray.serve import DEFAULT_HOST, DEFAULT_PORT, build_command, no_runs_message

log = logging.getLogger("spray.serve")


def run_command(args: argparse.Namespace) -> int:
    """``spray dashboard``: serve the dashboard for a runs directory (127.0.0.1 by default)."""
    if importlib.util.find_spec("streamlit") is None or importlib.util.find_spec("plotly") is None:
        raise ConfigError("The dashboard needs streamlit and plotly: pip install -e '.[dashboard]'.")
    runs_dir = Path(args.runs_dir).resolve()
    if not list_runs(runs_dir):
        sys.stdout.write(no_runs_message(runs_dir) + "\n\n")
    argv, env = build_command(
        runs_dir,
        port=args.port,
        host=args.host,
        flags_db=Path(args.flags_db).resolve() if args.flags_db else None,
    )
    shown = "localhost" if args.host in ("127.0.0.1", "0.0.0.0") else args.host
    sys.stdout.write(f"spray dashboard: http://{shown}:{args.port}/  (runs: {runs_dir}; Ctrl-C stops it)\n")
    sys.stdout.flush()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "serving on %s: the dashboard has no authentication; put it behind a proxy that has", args.host
        )
    proc = subprocess.Popen(argv, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        return 0


def register(subparsers: Any) -> None:
    """Add ``spray dashboard`` to the ``spray`` command."""
    p = subparsers.add_parser(
        "dashboard", help="open the dashboard on a runs directory", description=run_command.__doc__
    )
    p.add_argument("--runs-dir", default="runs", help="runs directory (default ./runs)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    p.add_argument("--flags-db", help="flag database (default RUNS_DIR/flags.sqlite)")
    p.set_defaults(func=run_command)

"""``spray dashboard``: start the Streamlit dashboard on the runs directory.

The dashboard is a separate Streamlit app (``dashboard/app.py``); this module builds its command line and
environment and supervises it as a child process, so ``import spray`` never imports streamlit.

    spray dashboard --runs-dir spray-demo/runs            # http://127.0.0.1:8501
    spray dashboard --runs-dir runs --port 8600 --flags-db /srv/spray/flags.sqlite
    spray dashboard --runs-dir runs --host 0.0.0.0         # prints a URL with an access token
    spray dashboard --runs-dir runs --read-only            # browse, never flag

What travels to the app: the runs dir, flag database and data root as script arguments *and* environment
(``SPRAY_RUNS_DIR``, ``SPRAY_FLAGS_DB``, ``SPRAY_DATA_ROOT``); the read-only switch, the default author and
the access token only as environment (``SPRAY_READ_ONLY``, ``SPRAY_AUTHOR``, ``SPRAY_DASHBOARD_TOKEN``), so
the token never shows in a process list.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from spray.errors import ConfigError
from spray.export.source import correction_folder_note
from spray.flags import default_db_path

log = logging.getLogger(__name__)

DEFAULT_PORT = 8501
DEFAULT_HOST = "127.0.0.1"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Seconds the child gets to shut down after SIGTERM / SIGINT before it is killed.
STOP_GRACE_S = 10.0
# Imported by the server process at start instead of during the first visitor's first script run (0.5-0.9 s
# on a 2-core machine: Streamlit itself imports none of them): what the dashboard's pages import.
PRELOAD = (
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "plotly.graph_objects",
    "plotly.colors",
    "PIL.Image",
    "PIL.PngImagePlugin",
    "spray.imaging",
    "spray.flags",
    "spray.runs.reader",
    "spray.runs.changes",
)
# Then, before the server listens, the app's warm-up (``dashboard/warmup.py``, when the app has one) reads
# the newest run into the caches every session shares, so the first page view does not read it either.
LAUNCHER = (
    "import importlib, os, sys\n"
    "for m in {modules!r}: importlib.import_module(m)\n"
    "app_dir = os.path.dirname(os.path.abspath(sys.argv[sys.argv.index('run') + 1]))\n"
    "if os.environ.get('SPRAY_RUNS_DIR') and os.path.isfile(os.path.join(app_dir, 'warmup.py')):\n"
    "    sys.path.insert(0, app_dir)\n"
    "    importlib.import_module('warmup').start(os.environ['SPRAY_RUNS_DIR'])\n"
    "from streamlit.web.cli import main\n"
    "sys.exit(main(prog_name='streamlit'))"
)


@dataclass(frozen=True)
class ServeOptions:
    """Everything ``spray dashboard`` passes to the app.

    Attributes
    ----------
    runs_dir : Path
        Existing folder of published runs.
    port, host : int, str
        Where to listen.
    flags_db : Path, optional
        Flag database (default ``<runs_dir>/flags.sqlite``).
    read_only : bool
        Browse only: no flag forms, the database is opened read-only.
    author : str
        Default author of flags set in this dashboard (each visitor can change it for their session).
    token : str, optional
        Access token every session must present (``?token=`` or the login box); None: no token.
    data_root : Path, optional
        Folder the sample ids are relative to (image folders): the sample view shows and opens the
        original file.
    """

    runs_dir: Path
    port: int = DEFAULT_PORT
    host: str = DEFAULT_HOST
    flags_db: Path | None = None
    read_only: bool = False
    author: str = ""
    token: str | None = None
    data_root: Path | None = None


def app_path() -> Path:
    """``dashboard/app.py`` of this checkout (or ``$SPRAY_DASHBOARD_APP``)."""
    env = os.environ.get("SPRAY_DASHBOARD_APP")
    p = Path(env) if env else Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
    if not p.is_file():
        raise ConfigError(
            f"The dashboard app is not at {p}. Run spray from a source checkout (pip install -e '.[dashboard]') "
            "or set SPRAY_DASHBOARD_APP to the path of dashboard/app.py."
        )
    return p


def no_runs_message(runs_dir: Path) -> str:
    """What to do when the runs directory holds no published run yet (a correction's emptied re-audit folder:
    no demo there, :func:`spray.export.source.correction_folder_note`)."""
    note = correction_folder_note(runs_dir, "--runs-dir")
    if note is not None:
        return note
    return (
        f"No published run in {runs_dir} yet. Make one with the demo:\n"
        f"    scripts/demo            (or: spray demo --runs-dir {runs_dir})\n"
        f"or audit your own model:\n"
        f"    spray audit --config my_audit.yaml --runs-dir {runs_dir}\n"
        "The dashboard shows new runs as soon as they are published."
    )


def check_runs_dir(runs_dir: Path) -> Path:
    """The runs folder, resolved; a missing one (a typo) is refused instead of being created.

    Raises
    ------
    ConfigError
        When ``runs_dir`` does not exist, is not a folder, is one run's folder or a correction's folder.
    """
    p = Path(runs_dir).expanduser().resolve()
    if not p.exists():
        raise ConfigError(
            f"--runs-dir {runs_dir} does not exist ({p}): check the spelling, or give the folder your audits "
            "publish to (spray audit --runs-dir DIR). The dashboard creates nothing there."
        )
    if not p.is_dir():
        raise ConfigError(f"--runs-dir {runs_dir} is a file, not a folder of runs: give the folder.")
    from spray.runs.layout import REAUDIT_DIR, RunFiles

    note = correction_folder_note(p, "--runs-dir")
    if note is not None and p.name != REAUDIT_DIR:
        # a correction's folder is no runs folder: its re-audit is (an emptied one only warns, no_runs_message)
        raise ConfigError(note)
    if RunFiles(p).summary.is_file():
        # one published run (runs/latest, say): the dashboard lists the runs of the folder that holds it
        raise ConfigError(
            f"--runs-dir {runs_dir} is one run's folder ({p}), not a folder of runs: pass the folder that "
            f"holds it, --runs-dir {p.parent}."
        )
    return p


def needs_token(host: str) -> bool:
    """Whether binding to ``host`` exposes the dashboard beyond this machine."""
    return host not in LOOPBACK


def new_token() -> str:
    """A random URL-safe access token (32 bytes of entropy)."""
    return secrets.token_urlsafe(32)


def build_command(
    runs_dir: Path,
    *,
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    flags_db: Path | None = None,
    options: ServeOptions | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The ``streamlit run`` command line and environment for the dashboard.

    Parameters
    ----------
    runs_dir : Path
        Runs folder (``options.runs_dir`` wins when ``options`` is given).
    port, host, flags_db
        Shortcuts for the common options.
    options : ServeOptions, optional
        All options; when given, the other keyword arguments are ignored.

    Returns
    -------
    argv, env
        Run ``subprocess.Popen(argv, env=env)``. ``argv`` is ``streamlit run`` behind a launcher that
        imports :data:`PRELOAD` first (``python -c``) and runs the app's warm-up (the newest run read
        into the shared caches), so the first page view pays for neither.
    """
    o = options or ServeOptions(runs_dir=runs_dir, port=port, host=host, flags_db=flags_db)
    # a correction's re-audit folder holds no flags: the project's runs folder does (spray correct reads them)
    db = o.flags_db or default_db_path(o.runs_dir)
    argv = [
        sys.executable,
        "-c",
        LAUNCHER.format(modules=PRELOAD),
        "run",
        str(app_path()),
        "--server.address",
        o.host,
        "--server.port",
        str(o.port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        # Runs are immutable and the app is not edited in production: no file watcher polling the disk.
        "--server.fileWatcherType",
        "none",
        # An unexpected error shows its type only: no traceback with server paths in the browser.
        "--client.showErrorDetails",
        "type",
        # A viewer's tool bar: no "Deploy" or developer menu.
        "--client.toolbarMode",
        "minimal",
        # The pages write only through st.* calls: no "magic" rewriting of each page's syntax tree on its
        # first visit (0.05-0.3 s of a first load on 2 cores).
        "--runner.magicEnabled",
        "false",
        "--",
        "--runs-dir",
        str(o.runs_dir),
        "--flags-db",
        str(db),
    ]
    env = {**os.environ, "SPRAY_RUNS_DIR": str(o.runs_dir), "SPRAY_FLAGS_DB": str(db)}
    for name in ("SPRAY_READ_ONLY", "SPRAY_DASHBOARD_TOKEN", "SPRAY_DATA_ROOT"):
        env.pop(name, None)  # only what this call asks for
    if o.data_root is not None:
        argv += ["--data-root", str(o.data_root)]
        env["SPRAY_DATA_ROOT"] = str(o.data_root)
    if o.read_only:
        env["SPRAY_READ_ONLY"] = "1"
    if o.author:
        env["SPRAY_AUTHOR"] = o.author
    if o.token:
        env["SPRAY_DASHBOARD_TOKEN"] = o.token
    return argv, env


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to send SIGTERM when the parent dies (even by SIGKILL)."""
    # Not Linux (no libc.so.6 / prctl): the signal handlers in supervise() still cover SIGTERM and Ctrl-C.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def stop_child(proc: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> None:
    """Signal the server, wait :data:`STOP_GRACE_S` for it to exit, then kill it."""
    if proc.poll() is not None:
        return
    proc.send_signal(signum)
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        log.warning("the dashboard server did not stop within %.0f s: killing it", STOP_GRACE_S)
        proc.kill()
        proc.wait()


def supervise(argv: list[str], env: dict[str, str]) -> int:
    """Run the server as a child until it exits, or until this process gets SIGTERM / SIGHUP / Ctrl-C.

    Whatever ends this process, the child is stopped with it: the signal is passed on, the child gets
    :data:`STOP_GRACE_S` seconds, then it is killed; on Linux it also dies if this process is killed
    with SIGKILL. Returns the child's exit code, ``128 + signal`` after SIGTERM / SIGHUP, 0 after Ctrl-C.
    """

    watched = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

    def quiet() -> None:
        # Supervisors (timeout, systemd, a terminal's Ctrl-C) signal the whole process group, often more
        # than once: while stopping, further signals must not interrupt the stop itself.
        for s in watched:
            signal.signal(s, signal.SIG_IGN)

    def raise_stop(signum: int, _frame: FrameType | None) -> None:
        quiet()
        raise _Stop(signum)

    previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {
        s: signal.getsignal(s) for s in watched
    }
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, raise_stop)
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    proc = subprocess.Popen(argv, env=env, preexec_fn=preexec)  # no threads here, so preexec_fn is safe
    try:
        return proc.wait()
    except KeyboardInterrupt:
        quiet()
        log.info("stopping the dashboard (Ctrl-C)")
        stop_child(proc, signal.SIGINT)
        return 0
    except _Stop as stop:
        log.info("stopping the dashboard (%s)", signal.Signals(stop.signum).name)
        stop_child(proc, signal.SIGTERM)
        return 128 + stop.signum
    finally:
        if proc.poll() is None:  # any other way out of here: never leave the server serving the port
            stop_child(proc, signal.SIGTERM)
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

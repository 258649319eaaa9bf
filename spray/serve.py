"""``spray dashboard``: start the Streamlit dashboard on the runs directory.

The dashboard is a separate Streamlit app (``dashboard/app.py``); this module only builds its command line
and runs it as a child process, so ``import spray`` never imports streamlit.

    spray dashboard --runs-dir spray-demo/runs            # http://127.0.0.1:8501
    spray dashboard --runs-dir runs --port 8600 --flags-db /srv/spray/flags.sqlite
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from spray.errors import ConfigError
from spray.flags import default_db_path

log = logging.getLogger(__name__)

DEFAULT_PORT = 8501
DEFAULT_HOST = "127.0.0.1"
# Imported by the server process at start instead of during the first visitor's first script run (0.5-0.9 s
# on a 2-core machine: Streamlit itself imports none of them): what the dashboard's pages import.
PRELOAD = (
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "plotly.graph_objects",
    "spray.imaging",
    "spray.flags",
    "spray.runs.storage",
)
LAUNCHER = (
    "import importlib, sys\n"
    "for m in {modules!r}: importlib.import_module(m)\n"
    "from streamlit.web.cli import main\n"
    "sys.exit(main(prog_name='streamlit'))"
)


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
    """What to do when the runs directory holds no published run yet."""
    return (
        f"No published run in {runs_dir} yet. Make one with the demo:\n"
        f"    scripts/demo            (or: spray demo --runs-dir {runs_dir})\n"
        f"or audit your own model:\n"
        f"    spray audit --config my_audit.yaml --runs-dir {runs_dir}\n"
        "The dashboard shows new runs as soon as they are published."
    )


def build_command(
    runs_dir: Path, *, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST, flags_db: Path | None = None
) -> tuple[list[str], dict[str, str]]:
    """The ``streamlit run`` command line and environment for the dashboard.

    Returns
    -------
    argv, env
        Run ``subprocess.Popen(argv, env=env)``; runs dir and flag DB travel both as script arguments and
        as ``SPRAY_RUNS_DIR`` / ``SPRAY_FLAGS_DB``. ``argv`` is ``streamlit run`` behind a launcher that
        imports :data:`PRELOAD` first (``python -c``), so the first page view does not pay for it.
    """
    db = flags_db or default_db_path(runs_dir)
    argv = [
        sys.executable,
        "-c",
        LAUNCHER.format(modules=PRELOAD),
        "run",
        str(app_path()),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        # Runs are immutable and the app is not edited in production: no file watcher polling the disk.
        "--server.fileWatcherType",
        "none",
        "--",
        "--runs-dir",
        str(runs_dir),
        "--flags-db",
        str(db),
    ]
    env = {**os.environ, "SPRAY_RUNS_DIR": str(runs_dir), "SPRAY_FLAGS_DB": str(db)}
    return argv, env

"""Warm-up at server start: the newest run's files read into the dashboard's shared caches.

``spray dashboard`` calls :func:`warm` in the server process before Streamlit listens (the launcher of
:func:`spray.serve.build_command`), so the first visitor's first page does not pay for reading the run. It
fills only what the overview and the class page open with, of the newest readable run: its reader and
summary, the per-sample table, the mean-heatmap pictures of the findings the overview lists first, the
changes since the previous run (the nightly's recorded ones, else the comparison with the previous run of
the dataset, as the overview makes it), and the class page's opening map (the top finding's class at its
k, coloured by cluster). Of older runs only their summaries are read (the run picker lists them). Everything goes
through the same cached functions the pages call (``st.cache_resource``: one cache per server process,
shared by every session), so a page reads exactly what it would have read itself.

A run that cannot be read is passed over here: its page says why when someone opens it. A run published
while the server runs (the nightly job) is read the same way within :data:`WATCH_S` seconds by a
background thread of the server (:func:`start`).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from pathlib import Path

# The modules every page imports, imported here so the first script run finds them loaded.
import access  # noqa: F401
import common
import embedmap
import flagform  # noqa: F401
import samplegrid  # noqa: F401
import selection  # noqa: F401
import urlstate  # noqa: F401

from spray.errors import SprayError
from spray.imaging import DEFAULT_COLORMAP
from spray.runs.publish import list_runs

log = logging.getLogger("spray.dashboard")

# Mean-heatmap pictures made at start: as many as the overview lists by default.
OVERVIEW_ROWS = 25
# Seconds between two looks for a newly published run (one directory listing each).
WATCH_S = 60.0


def start(runs: str | Path) -> threading.Event:
    """What the server does before it listens: :func:`warm` now, then :func:`watch` in the background.

    Everything alive after the warm-up (imported modules, the warmed caches) is then moved out of the
    garbage collector's sight (``gc.freeze``): Streamlit runs a full collection after every script run,
    and walking those ~130,000 long-lived objects took 0.1-0.2 s each time, with the interpreter lock
    held, so the server could not send the page's code or pictures meanwhile. They are never garbage;
    later objects are collected as before.
    """
    _warm_safely(runs)
    _skip_repl_check()
    gc.freeze()
    return watch(runs)


def _skip_repl_check() -> None:
    """Spare the first page Streamlit's once-per-process check whether it runs in a Python REPL.

    The check (``env_util.is_repl``, before the first element is sent) walks the script thread's stack with
    ``inspect.stack``, which resolves the file of each of the ~1,500 loaded modules: 0.1-0.3 s of the first
    visitor's first page on 2 cores. A server is never a REPL; if Streamlit renames the flag, this does
    nothing and the check runs as before.
    """
    from streamlit import delta_generator

    if hasattr(delta_generator, "_use_warning_has_been_displayed"):
        delta_generator._use_warning_has_been_displayed = True


def _warm_safely(runs: str | Path) -> None:
    # A warm-up must never keep the server from starting or stop the watcher: whatever went wrong here,
    # the page that reads the same file says it to the user.
    try:
        warm(runs)
    except Exception:
        log.warning("warm-up of %s failed; pages will read the run themselves", runs, exc_info=True)


def watch(runs: str | Path, every: float = WATCH_S) -> threading.Event:
    """A daemon thread that warms each run that becomes the newest after the start; set the event to stop it."""
    stop = threading.Event()

    def loop() -> None:
        last = _newest(runs)
        while not stop.wait(every):
            now = _newest(runs)
            if now is not None and now != last:
                _warm_safely(runs)
                last = now

    threading.Thread(target=loop, name="spray-warm-up", daemon=True).start()
    return stop


def _newest(runs: str | Path) -> str | None:
    try:
        found = list_runs(runs)
    except (SprayError, OSError):
        return None
    return found[0].name if found else None


def warm(runs: str | Path) -> float:
    """Read the newest readable run of ``runs`` into the caches; the seconds it took (0 without a run)."""
    t = time.perf_counter()
    # Before the server runs, Streamlit warns that cache_data has no runtime yet: expected here.
    quiet = logging.getLogger("streamlit.runtime.caching.cache_data_api")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        for run in list_runs(runs):
            path = str(run)
            try:
                _warm_run(path)
            except (SprayError, KeyError, OSError, ValueError) as err:
                log.info("warm-up: run %s passed over (%s)", run.name, err)
                continue
            log.info("warm-up: read run %s in %.2f s", run.name, time.perf_counter() - t)
            break
    except (SprayError, OSError) as err:  # the runs folder itself: the page says what is wrong with it
        log.info("warm-up: %s", err)
    finally:
        quiet.setLevel(level)
        # The launcher's own command line is not the app's: parse the app's when the first page asks.
        common.cli_args_reset()
    return time.perf_counter() - t


def _warm_run(path: str) -> None:
    """The overview's and the class page's first reads of one run (and the cluster pages' sample index)."""
    found = common.findings(path)
    common.samples(path)
    for f in found[:OVERVIEW_ROWS]:
        common.mean_heatmap_uri(path, f.key, DEFAULT_COLORMAP)
    if common.recorded_changes(path) is None:
        runs = str(Path(path).parent)
        prev = common.previous_run(runs, Path(path).name, common.dataset_key(common.summary(path)))
        if prev is not None:
            common.changes_between(path, str(Path(runs) / prev))
    if found:
        top = found[0]
        # The cluster page reads heatmaps and thumbnails by sample id: the run's id → row index, built once.
        common.heatmaps(path, common.members(path, top.key)[:1])
        common.class_positions(path, top.class_index)
        embedmap.class_picture(path, top.class_index, top.k, embedmap.COLOURINGS[0])
        embedmap.class_map(path, top.class_index, top.k, embedmap.COLOURINGS[0], "")

"""Shared pieces of the dashboard: where runs and flags live, cached readers, URL state, widgets.

Rules this module enforces for every page:

- only published runs are opened (:func:`spray.runs.storage.list_runs`), read-only, through readers cached by
  run path (runs never change after publishing, so the path is a complete cache key);
- nothing is recomputed: clusters, labellings for every k, embeddings and scores come from the run files;
- the only thing written is the flag database, which lives outside every run folder;
- a run file that cannot be read raises :class:`RunFileError` (the app shows its message on that page
  only, never a traceback); a run whose summary.json cannot be read is listed as unreadable with its
  reason (:func:`runs_overview`) while the other runs work.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import zipfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import pandas as pd
import safetext
import streamlit as st
import urlstate

from spray import imaging
from spray.errors import SprayError
from spray.flags import default_db_path
from spray.runs.storage import RunData, list_runs

log = logging.getLogger("spray.dashboard")

DASHBOARD_DIR = Path(__file__).resolve().parent
PAGES = {
    "overview": "views/overview.py",
    "class": "views/class_view.py",
    "cluster": "views/cluster.py",
    "sample": "views/sample.py",
    "flags": "views/flags.py",
}
HOW_TO_MAKE_A_RUN = (
    "No published run yet in `{runs}`. Make one with the demo (`scripts/demo`, or "
    "`spray demo --runs-dir {runs}`), or audit your own model: `spray audit --config my_audit.yaml "
    "--runs-dir {runs}`. Published runs appear here on the next page load."
)


# ---------------------------------------------------------------------------------------------------------
# Locations


@functools.cache
def _cli_args() -> argparse.Namespace:
    # `streamlit run app.py -- --runs-dir X --flags-db Y` passes these to the script's sys.argv.
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--runs-dir")
    p.add_argument("--flags-db")
    p.add_argument("--data-root")
    args, _ = p.parse_known_args(sys.argv[1:])
    return args


def runs_dir() -> Path:
    """Runs directory: ``--runs-dir`` after ``--``, else ``$SPRAY_RUNS_DIR``, else ``./runs``."""
    return Path(_cli_args().runs_dir or os.environ.get("SPRAY_RUNS_DIR") or "runs").resolve()


def flags_db_path() -> Path:
    """Flag database: ``--flags-db``, ``$SPRAY_FLAGS_DB``, else ``<runs_dir>/flags.sqlite``."""
    p = _cli_args().flags_db or os.environ.get("SPRAY_FLAGS_DB")
    return Path(p).resolve() if p else default_db_path(runs_dir())


def data_root() -> Path | None:
    """Folder the sample ids are relative to (``--data-root`` / ``$SPRAY_DATA_ROOT``), if given."""
    p = _cli_args().data_root or os.environ.get("SPRAY_DATA_ROOT")
    return Path(p).resolve() if p else None


# ---------------------------------------------------------------------------------------------------------
# Run files that cannot be read


class RunFileError(SprayError):
    """A file of a published run cannot be read (missing, truncated, not what spray writes)."""

    def __init__(self, run: str, file: str, reason: str) -> None:
        self.run, self.file, self.reason = run, file, reason
        super().__init__(
            f"Run {run}: {file} cannot be read ({reason}). This view needs it; the run's other views may "
            "still work. Re-run the audit to rewrite the run (published runs are never repaired in place)."
        )


# Errors numpy, pyarrow and json raise on missing, truncated or foreign files (ArrowInvalid is a ValueError).
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _reason(err: BaseException, run_path: str) -> str:
    """The error without server paths (a browser shows it)."""
    if isinstance(err, FileNotFoundError):
        return "the file is missing"
    text = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    text = text.replace(str(Path(run_path).resolve()), "<run>").replace(run_path, "<run>")
    return f"{type(err).__name__}: {text}"[:300]


def reading(file: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Turn a reader's failure into :class:`RunFileError` naming ``file`` (its first argument is the run path)."""

    def wrap(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(fn)
        def inner(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return fn(*args, **kwargs)
            except _READ_ERRORS as err:
                path = str(args[0])
                name = file.format(*args[1:]) if "{" in file else file
                raise RunFileError(Path(path).name, name, _reason(err, path)) from None

        return inner

    return wrap


# ---------------------------------------------------------------------------------------------------------
# Cached readers (keyed by run path; published runs are immutable)


@st.cache_data(ttl=5, show_spinner=False)
def published_runs(runs: str) -> list[str]:
    """Run folder names, newest first (re-listed every few seconds so new nightly runs appear)."""
    # list_runs also yields the `latest` symlink (a directory with a summary): show each run once.
    return [p.name for p in list_runs(runs) if not p.is_symlink()]


def runs_overview(runs: str) -> tuple[list[str], dict[str, str]]:
    """``(readable run names newest first, {unreadable run name: reason})``: one bad run hides no other."""
    good, bad = [], {}
    for name in published_runs(runs):
        try:
            run_data(str(Path(runs) / name))
        except RunFileError as err:
            bad[name] = f"{err.file}: {err.reason}"
            continue
        good.append(name)
    return good, bad


@st.cache_resource(show_spinner=False, max_entries=8)
def _run_data(path: str) -> RunData:
    data = RunData.open(path)
    s = data.summary
    if not isinstance(s, dict) or not isinstance(s.get("findings", []), list):
        raise ValueError("not a spray summary (no list of findings)")
    if not isinstance(s.get("classes", []), list):
        raise ValueError("not a spray summary (no list of classes)")
    return data


@reading("summary.json")
def run_data(path: str) -> RunData:
    """The parsed summary of a run."""
    return _run_data(path)


@reading("samples.parquet")
@st.cache_resource(show_spinner=False, max_entries=8)
def samples(path: str) -> pd.DataFrame:
    """samples.parquet (shared between sessions: treat as read-only)."""
    return run_data(path).samples()


@reading("samples.parquet")
@st.cache_resource(show_spinner=False, max_entries=8)
def sample_index(path: str) -> pd.Index:
    """``sample_id`` → row position, as an index (vectorised look-ups of many ids)."""
    return pd.Index(samples(path)["sample_id"].astype(str))


def rows_of(path: str, sample_ids: list[str]) -> tuple[np.ndarray, list[str]]:
    """Rows of these samples in this run, and the ids the run does not have."""
    pos = sample_index(path).get_indexer(pd.Index([str(s) for s in sample_ids]))
    missing = [s for s, p in zip(sample_ids, pos, strict=True) if p < 0]
    return pos[pos >= 0].astype(np.int64), missing


@reading("heatmaps.npy")
@st.cache_resource(show_spinner=False, max_entries=8)
def heatmaps(path: str) -> np.ndarray:
    """heatmaps.npy, memory-mapped."""
    h = run_data(path).heatmaps()
    if h.ndim != 3 or len(h) != len(samples(path)):
        raise ValueError(
            f"shape {h.shape} does not match the {len(samples(path))} samples of samples.parquet"
        )
    return h


@reading("thumbs.npy")
@st.cache_resource(show_spinner=False, max_entries=8)
def thumbs(path: str) -> np.ndarray | None:
    """thumbs.npy, memory-mapped, or None."""
    return run_data(path).thumbs()


@reading("relevance_full.npy")
@st.cache_resource(show_spinner=False, max_entries=8)
def full_relevance(path: str) -> np.ndarray | None:
    """relevance_full.npy ``(N, C, H, W)`` float16, memory-mapped, when the run kept full-resolution maps."""
    p = Path(path) / "relevance_full.npy"
    return np.load(p, mmap_mode="r") if p.exists() else None


def original_file(sample_id: str) -> Path | None:
    """The sample's original image under ``--data-root`` (image folders: the id is the relative path).

    None without a data root, or when the id leads outside the root (``..``, absolute ids) or to no file.
    """
    root = data_root()
    if root is None:
        return None
    p = (root / sample_id).resolve()
    if not p.is_relative_to(root) or not p.is_file():
        return None
    return p


@reading("classes/{0}.npz")
@st.cache_resource(show_spinner=False, max_entries=64)
def class_arrays(path: str, class_index: int) -> dict[str, np.ndarray]:
    """classes/<c>.npz of a run."""
    arr = run_data(path).class_arrays(class_index)
    for name in ("rows", "embedding", "eigenvalues"):
        if name not in arr:
            raise KeyError(f"it has no {name!r} array")
    return arr


def available_ks(arrays: dict[str, np.ndarray]) -> list[int]:
    """The k of every stored labelling (``labels_k<k>``), ascending."""
    return sorted(int(k[len("labels_k") :]) for k in arrays if k.startswith("labels_k"))


def class_entry(path: str, class_index: int) -> dict[str, Any]:
    """The summary entry of one class."""
    for c in run_data(path).summary.get("classes", []):
        if int(c["class_index"]) == int(class_index):
            return c
    raise KeyError(class_index)


def findings(path: str) -> list[dict[str, Any]]:
    """Ranked findings of a run (all classes, most suspicious first)."""
    return run_data(path).summary.get("findings", [])


def finding_by_key(path: str, key: str) -> dict[str, Any] | None:
    """The finding with cluster key ``"<class>/k<k>/c<id>"``, if the run scored it."""
    return next((f for f in findings(path) if f["key"] == key), None)


def parse_cluster_key(key: str) -> tuple[int, int, int]:
    """``"6/k5/c4"`` → ``(6, 5, 4)``; ValueError when ``key`` is not of that form."""
    parts = str(key).split("/")
    if len(parts) != 3 or not parts[1].startswith("k") or not parts[2].startswith("c"):
        raise ValueError(f"{key!r} is not a cluster key (class/k<k>/c<cluster>, e.g. 6/k5/c4)")
    return int(parts[0]), int(parts[1][1:]), int(parts[2][1:])


def cluster_exists(path: str, key: str) -> bool:
    """Whether the run has this cluster: its class was analysed, its k is stored and the id occurs at that k."""
    try:
        c, k, cid = parse_cluster_key(key)
    except ValueError:
        return False
    if c not in {int(e["class_index"]) for e in run_data(path).summary.get("classes", [])}:
        return False
    lab = class_arrays(path, c).get(f"labels_k{k}")
    return lab is not None and bool(np.any(lab == cid))


def cluster_rows(path: str, key: str) -> np.ndarray:
    """Global row indices (into samples.parquet) of a cluster, for any stored k."""
    c, k, cid = parse_cluster_key(key)
    arr = class_arrays(path, c)
    lab = arr.get(f"labels_k{k}")
    if lab is None:
        return np.zeros(0, np.int64)
    return arr["rows"][lab == cid].astype(np.int64)


def mean_heatmap(path: str, key: str | None, rows: np.ndarray) -> np.ndarray:
    """The stored mean heatmap of a scored cluster, else the mean of normalised member maps (display only)."""
    if key is not None:
        c, _, _ = parse_cluster_key(key)
        arr = class_arrays(path, c)
        keys = arr["cluster_keys"].tolist()
        if key in keys:
            return arr["mean_heatmaps"][keys.index(key)]
    if len(rows) == 0:
        h = heatmaps(path)
        return np.zeros(h.shape[1:], np.float32)
    h = np.asarray(heatmaps(path)[np.sort(rows)], dtype=np.float32)
    h /= np.maximum(np.abs(h).sum(axis=(1, 2), keepdims=True), 1e-12)
    return h.mean(0)


@st.cache_data(show_spinner=False, max_entries=2048)
def mean_heatmap_uri(path: str, key: str, cmap: str, size: int = 56) -> str:
    """PNG data URI of a cluster's mean heatmap (for table image columns)."""
    c, _, _ = parse_cluster_key(key)
    stored = class_arrays(path, c)["cluster_keys"].tolist()
    # A scored cluster's mean is stored: no need to find its members first.
    mh = mean_heatmap(path, key, np.zeros(0, np.int64) if key in stored else cluster_rows(path, key))
    return imaging.png_data_uri(imaging.resize_nearest(imaging.colorize(mh, cmap), size))


def run_label(name: str, summary: dict[str, Any] | None = None) -> str:
    """``2026-11-22 10:12 UTC · 0a1b2c3d4e5f · demo (6,000 samples)``."""
    stamp, _, rid = name.partition("-")
    try:
        t = datetime.strptime(stamp[:15], "%Y%m%dT%H%M%S").strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        t = stamp
    extra = ""
    if summary is not None:
        extra = f" · {summary.get('name', '')} ({summary.get('n_samples', '?'):,} samples)"
    return f"{t} · {rid}{extra}"


def dataset_key(summary: dict[str, Any]) -> str:
    """The key flags are stored under (summary["dataset"]; older runs fall back to the run name)."""
    return str(summary.get("dataset") or summary.get("name") or "unknown")


# ---------------------------------------------------------------------------------------------------------
# Changes since the previous run


def previous_run(runs: str, run_name: str, dataset: str) -> str | None:
    """The newest run older than ``run_name`` of the same dataset."""
    names = published_runs(runs)
    if run_name not in names:
        return None
    for older in names[names.index(run_name) + 1 :]:
        try:
            if dataset_key(run_data(str(Path(runs) / older)).summary) == dataset:
                return older
        except (RunFileError, json.JSONDecodeError):
            continue
    return None


@st.cache_data(show_spinner=False, max_entries=32)
def compare_runs(path: str, prev_path: str, min_jaccard: float = 0.3, grow: float = 0.2) -> pd.DataFrame:
    """Match each finding to the previous run's clusters of the same class by member-id overlap.

    Returns one row per finding with ``change`` in ``new`` (no cluster of the previous run shares
    ``min_jaccard`` of its members), ``grown`` (size up by more than ``grow``), ``shrunk`` or ``same``,
    plus ``gone`` rows for previous suspicious clusters that match nothing now.
    """
    cur, prev = findings(path), findings(prev_path)
    by_class: dict[int, list[tuple[dict[str, Any], set[str]]]] = {}
    for f in prev:
        by_class.setdefault(int(f["class_index"]), []).append((f, set(f["member_ids"])))
    matched_prev: set[str] = set()
    rows = []
    for f in cur:
        members = set(f["member_ids"])
        best, best_j = None, 0.0
        for g, gm in by_class.get(int(f["class_index"]), []):
            inter = len(members & gm)
            j = inter / max(1, len(members | gm))
            if j > best_j:
                best, best_j = g, j
        if best is None or best_j < min_jaccard:
            change, prev_size, prev_key = "new", None, None
        else:
            matched_prev.add(best["key"])
            prev_size, prev_key = int(best["size"]), best["key"]
            ratio = f["size"] / max(1, prev_size)
            change = "grown" if ratio > 1 + grow else "shrunk" if ratio < 1 - grow else "same"
        rows.append(
            {
                "key": f["key"],
                "class_name": f["class_name"],
                "change": change,
                "size": int(f["size"]),
                "previous_size": prev_size,
                "jaccard": round(best_j, 3),
                "previous_key": prev_key,
                "score": float(f["score"]),
                "suspicious": bool(f["suspicious"]),
            }
        )
    for g in prev:
        if g["suspicious"] and g["key"] not in matched_prev:
            rows.append(
                {
                    "key": g["key"],
                    "class_name": g["class_name"],
                    "change": "gone",
                    "size": 0,
                    "previous_size": int(g["size"]),
                    "jaccard": 0.0,
                    "previous_key": g["key"],
                    "score": float(g["score"]),
                    "suspicious": True,
                }
            )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------
# Which run


def current_run() -> tuple[str, str] | None:
    """``(runs_dir, run folder name)`` of the picked run (the sidebar picker sets it), or None.

    A run named in the URL that is not there, or cannot be read, stops the page with "not found" /
    the reason (never silently another run).
    """
    runs = str(runs_dir())
    good, bad = runs_overview(runs)
    r = urlstate.nav().get("run")
    if r and r in good:
        return runs, r
    if r and r in bad:
        urlstate.nav().pop("run", None)
        st.error(
            f"Run {safetext.code(r)} cannot be read: {safetext.md(bad[r])}. Pick another run in the sidebar."
        )
        st.stop()
    if r:
        urlstate.nav().pop("run", None)
        not_found(
            f"run {safetext.code(r)}", f"there is no published run of that name in {safetext.code(runs)}"
        )
    return (runs, good[0]) if good else None


def require_run() -> tuple[str, dict[str, Any]]:
    """Path and summary of the current run; stops the page with instructions when there is none."""
    cur = current_run()
    if cur is None:
        st.info(HOW_TO_MAKE_A_RUN.format(runs=runs_dir()))
        st.stop()
    path = str(Path(cur[0]) / cur[1])
    return path, run_data(path).summary


def not_found(what: str, why: str) -> None:
    """Stop the page: a link that does not resolve says so instead of showing something else."""
    st.error(f"**Not found**: {what} — {why}.")
    st.page_link(PAGES["overview"], label="Back to the overview", icon=":material/leaderboard:")
    st.stop()

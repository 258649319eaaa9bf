"""Shared pieces of the dashboard: where runs and flags live, cached readers, URL state, widgets.

Rules this module enforces for every page:

- only published runs are opened (:func:`spray.runs.storage.list_runs`), read-only, through readers cached by
  run path (runs never change after publishing, so the path is a complete cache key);
- nothing is recomputed: clusters, labellings for every k, embeddings and scores come from the run files;
- the only thing written is the flag database, which lives outside every run folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from spray import imaging
from spray.flags import STATUSES, FlagStore, default_db_path
from spray.runs.storage import RunData, list_runs

log = logging.getLogger("spray.dashboard")

PAGE_SIZE = 100
DASHBOARD_DIR = Path(__file__).resolve().parent
PAGES = {
    "overview": "views/overview.py",
    "class": "views/class_view.py",
    "cluster": "views/cluster.py",
    "flags": "views/flags.py",
    "corrections": "views/corrections.py",
}
HOW_TO_MAKE_A_RUN = (
    "No published run yet in `{runs}`. Make one with the demo (`scripts/demo`, or "
    "`spray demo --runs-dir {runs}`), or audit your own model: `spray audit --config my_audit.yaml "
    "--runs-dir {runs}`. Published runs appear here on the next page load."
)


# ---------------------------------------------------------------------------------------------------------
# Locations


def _cli_args() -> argparse.Namespace:
    # `streamlit run app.py -- --runs-dir X --flags-db Y` passes these to the script's sys.argv.
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--runs-dir")
    p.add_argument("--flags-db")
    args, _ = p.parse_known_args(sys.argv[1:])
    return args


def runs_dir() -> Path:
    """Runs directory: ``--runs-dir`` after ``--``, else ``$SPRAY_RUNS_DIR``, else ``./runs``."""
    return Path(_cli_args().runs_dir or os.environ.get("SPRAY_RUNS_DIR") or "runs").resolve()


def flags_db_path() -> Path:
    """Flag database: ``--flags-db``, ``$SPRAY_FLAGS_DB``, else ``<runs_dir>/flags.sqlite``."""
    p = _cli_args().flags_db or os.environ.get("SPRAY_FLAGS_DB")
    return Path(p).resolve() if p else default_db_path(runs_dir())


@st.cache_resource(show_spinner=False)
def flag_store(path: str) -> FlagStore:
    """One store object per database (it opens a connection per call, so sessions can share it)."""
    return FlagStore(path)


def store() -> FlagStore:
    """The flag store of this dashboard."""
    return flag_store(str(flags_db_path()))


# ---------------------------------------------------------------------------------------------------------
# Cached readers (keyed by run path; published runs are immutable)


@st.cache_data(ttl=5, show_spinner=False)
def published_runs(runs: str) -> list[str]:
    """Run folder names, newest first (re-listed every few seconds so new nightly runs appear)."""
    # list_runs also yields the `latest` symlink (a directory with a summary): show each run once.
    return [p.name for p in list_runs(runs) if not p.is_symlink()]


@st.cache_resource(show_spinner=False, max_entries=8)
def run_data(path: str) -> RunData:
    """The parsed summary of a run."""
    return RunData.open(path)


@st.cache_resource(show_spinner=False, max_entries=8)
def samples(path: str) -> pd.DataFrame:
    """samples.parquet (shared between sessions: treat as read-only)."""
    return run_data(path).samples()


@st.cache_resource(show_spinner=False, max_entries=8)
def heatmaps(path: str) -> np.ndarray:
    """heatmaps.npy, memory-mapped."""
    return run_data(path).heatmaps()


@st.cache_resource(show_spinner=False, max_entries=8)
def thumbs(path: str) -> np.ndarray | None:
    """thumbs.npy, memory-mapped, or None."""
    return run_data(path).thumbs()


@st.cache_resource(show_spinner=False, max_entries=64)
def class_arrays(path: str, class_index: int) -> dict[str, np.ndarray]:
    """classes/<c>.npz of a run."""
    return run_data(path).class_arrays(class_index)


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
    """``"6/k5/c4"`` → ``(6, 5, 4)``."""
    c, k, cid = key.split("/")
    return int(c), int(k[1:]), int(cid[1:])


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
    mh = mean_heatmap(path, key, cluster_rows(path, key))
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
        except (OSError, json.JSONDecodeError):
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
# URL state
#
# The canonical view state lives in session state (it survives page switches, which drop query
# parameters). Each page mirrors its part into st.query_params so the URL addresses the view, and a URL
# value the session has not seen yet (a pasted link, a page_link's query_params) wins over the state.


def nav() -> dict[str, str]:
    """The session's view state (``run``, ``cls``, ``k``, ``cluster``, ``page``, ...)."""
    return st.session_state.setdefault("_nav", {})


def pull_url(names: Sequence[str]) -> dict[str, str]:
    """Take values from the URL that this session has not applied yet."""
    state = nav()
    seen = st.session_state.setdefault("_nav_seen", {})
    for name in names:
        v = st.query_params.get(name)
        if v is not None and seen.get(name) != v:
            state[name] = v
            seen[name] = v
    return state


def push_url(**values: Any) -> None:
    """Make the URL show exactly these view values (None drops a key)."""
    state = nav()
    seen = st.session_state.setdefault("_nav_seen", {})
    want = {k: str(v) for k, v in values.items() if v is not None}
    for k, v in want.items():
        state[k] = v
        seen[k] = v
    if dict(st.query_params) != want:
        st.query_params.from_dict(want)


def nav_select(
    label: str,
    options: Sequence[Any],
    name: str,
    *,
    default: Any = None,
    format_func: Callable[[Any], str] = str,
    container: Any = None,
    **kwargs: Any,
) -> Any:
    """A selectbox whose value is the view state ``name`` (and so the URL parameter ``name``)."""
    if not options:
        return None
    state = nav()
    as_str = [str(o) for o in options]
    cur = state.get(name)
    if cur not in as_str:
        cur = str(default) if default is not None and str(default) in as_str else as_str[0]
        state[name] = cur
    wkey = f"w_{name}"
    st.session_state[wkey] = options[as_str.index(cur)]

    def changed() -> None:
        state[name] = str(st.session_state[wkey])

    box = container if container is not None else st
    return box.selectbox(label, options, key=wkey, format_func=format_func, on_change=changed, **kwargs)


def current_run() -> tuple[str, str] | None:
    """``(runs_dir, run folder name)`` of the picked run (the sidebar picker sets it), or None."""
    r = nav().get("run")
    runs = str(runs_dir())
    if r and r in published_runs(runs):
        return runs, r
    names = published_runs(runs)
    return (runs, names[0]) if names else None


def require_run() -> tuple[str, dict[str, Any]]:
    """Path and summary of the current run; stops the page with instructions when there is none."""
    cur = current_run()
    if cur is None:
        st.info(HOW_TO_MAKE_A_RUN.format(runs=runs_dir()))
        st.stop()
    path = str(Path(cur[0]) / cur[1])
    return path, run_data(path).summary


# ---------------------------------------------------------------------------------------------------------
# Selections


def selection_positions(event: Any, traces: Sequence[np.ndarray]) -> list[int]:
    """Positions selected in a map drawn as several traces, from a plotly selection event (dict-style).

    ``traces[c]`` holds the positions (into the class arrays) of trace ``c``'s points, in plot order, so
    a selected point ``(curve_number c, point_index i)`` is ``traces[c][i]``. Curves beyond ``traces``
    (a colour-bar trace) and out-of-range indices (a stale selection) are ignored. With one trace, the
    event's ``point_indices`` serve when the per-point list is absent.
    """
    if not event:
        return []
    try:
        sel = event["selection"]
    except (KeyError, TypeError):
        return []
    points = sel.get("points") if hasattr(sel, "get") else None
    out: set[int] = set()
    if points:
        for p in points:
            c = int(p.get("curve_number", 0) or 0)
            idx = p.get("point_index", p.get("point_number"))
            if idx is None or not 0 <= c < len(traces) or not 0 <= int(idx) < len(traces[c]):
                continue
            out.add(int(traces[c][int(idx)]))
    elif len(traces) == 1:
        n = len(traces[0])
        out = {int(traces[0][i]) for i in (int(i) for i in (sel.get("point_indices") or [])) if 0 <= i < n}
    return sorted(out)


def decode_customdata(value: Any) -> str | None:
    """customdata may come back as ``[id]``, ``{'0': id}`` or ``id``."""
    if isinstance(value, dict):
        value = value.get("0", next(iter(value.values()), None))
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    return None if value is None else str(value)


def set_selection(run: str, rows: Sequence[int], source: str) -> None:
    """Remember a selection (global rows of one run) for the Cluster / selection page."""
    st.session_state["selection"] = {"run": run, "rows": [int(r) for r in rows], "source": source}


def get_selection(run: str) -> dict[str, Any] | None:
    """The remembered selection if it belongs to this run."""
    sel = st.session_state.get("selection")
    return sel if sel and sel.get("run") == run and sel.get("rows") else None


# ---------------------------------------------------------------------------------------------------------
# Widgets


def flag_controls(
    *,
    dataset: str,
    sample_ids: Sequence[str],
    run_id: str,
    cluster_key: str | None,
    source: str,
    key: str,
    reset_keys: Sequence[str] = (),
) -> None:
    """Flag / unflag the given samples with a status and a note (one action = one transaction).

    After saving, the page reruns so every table on it shows the new state; ``reset_keys`` (e.g. a table
    selection whose row positions the change would invalidate) are cleared first.
    """
    n = len(sample_ids)
    with st.form(key=f"flagform_{key}", border=True):
        st.markdown(f"**Flag {n:,} samples** ({source})")
        c1, c2 = st.columns([1, 2])
        status = c1.radio("Status", [*STATUSES, "unflag"], horizontal=False, key=f"flag_status_{key}")
        note = c2.text_area(
            "Note", key=f"flag_note_{key}", height=90, placeholder="why (kept in the history)"
        )
        submitted = st.form_submit_button("Apply", type="primary", disabled=n == 0)
    if submitted and n:
        s = store()
        if status == "unflag":
            s.unflag(dataset, sample_ids, note, run_id=run_id, source=source)
        else:
            s.flag(dataset, sample_ids, status, note, run_id=run_id, cluster_key=cluster_key, source=source)
        st.session_state["_last_flag"] = f"{status}: {n:,} samples ({source})"
        for k in reset_keys:
            st.session_state.pop(k, None)
        st.rerun()
    if st.session_state.get("_last_flag"):
        st.success(f"Saved — {st.session_state['_last_flag']}")


def render_grid(
    path: str,
    rows: np.ndarray,
    *,
    mode: str,
    cmap: str,
    page: int,
    page_size: int = PAGE_SIZE,
    width: int = 96,
) -> pd.DataFrame:
    """Show one page of samples as a single ``st.image(list)`` call; return that page's table."""
    rows = np.asarray(rows, dtype=np.int64)
    lo = (page - 1) * page_size
    page_rows = rows[lo : lo + page_size]
    if len(page_rows) == 0:
        st.caption("No samples.")
        return pd.DataFrame()
    order = np.argsort(page_rows)  # memory-mapped reads in ascending order, then back to display order
    sorted_rows = page_rows[order]
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    heat = np.asarray(heatmaps(path)[sorted_rows])[inv]
    th = thumbs(path)
    imgs = None if th is None else np.asarray(th[sorted_rows])[inv]
    size = max(width, imgs.shape[1] if imgs is not None else 0)
    pics = imaging.render(mode, heat, imgs, cmap, size=size)
    table = samples(path).iloc[page_rows]
    captions = [
        f"{sid} · {ln}→{pn} {conf:.2f}"
        for sid, ln, pn, conf in zip(
            table["sample_id"],
            table["label_name"],
            table["prediction_name"],
            table["confidence"],
            strict=True,
        )
    ]
    st.image(list(pics), caption=captions, width=width)
    return table


def grid_controls(key: str) -> tuple[str, str]:
    """View mode and colour-map pickers for a sample grid."""
    c1, c2 = st.columns([2, 1])
    mode = c1.segmented_control(
        "Show", ["overlay", "heatmap", "input"], default="overlay", key=f"{key}_mode", required=True
    )
    cmap = c2.selectbox(
        "Colour map",
        list(imaging.COLORMAPS),
        index=list(imaging.COLORMAPS).index(imaging.DEFAULT_COLORMAP),
        key=f"{key}_cmap",
    )
    return str(mode or "overlay"), str(cmap)


def page_picker(n_rows: int, key: str, page_size: int = PAGE_SIZE) -> int:
    """Pagination over ``n_rows`` (page number mirrored in the view state ``page``)."""
    n_pages = max(1, -(-n_rows // page_size))
    state = nav()
    try:
        cur = min(max(1, int(state.get("page", 1))), n_pages)
    except ValueError:
        cur = 1
    wkey = f"{key}_page"

    def changed() -> None:
        state["page"] = str(st.session_state[wkey])

    if n_pages > 1:
        # First render: the URL's page is the default; later: the view state drives the widget.
        if wkey in st.session_state:
            st.session_state[wkey] = cur
            st.pagination(n_pages, key=wkey, on_change=changed, max_visible_pages=9)
        else:
            st.pagination(n_pages, default=cur, key=wkey, on_change=changed, max_visible_pages=9)
    state["page"] = str(cur)
    return cur


def member_table(table: pd.DataFrame, flags: dict[str, str], key: str) -> list[int]:
    """The page's samples as a table (click rows for details); returns the selected table positions."""
    if table.empty:
        return []
    view = table[["sample_id", "label_name", "prediction_name", "confidence", "score"]].copy()
    view.insert(1, "flag", [flags.get(s, "") for s in view["sample_id"]])
    ev = st.dataframe(
        view,
        hide_index=True,
        on_select="rerun",
        selection_mode="multi-row",
        key=key,
        height=260,
        column_config={
            "confidence": st.column_config.ProgressColumn("confidence", min_value=0.0, max_value=1.0)
        },
    )
    try:
        return list(ev["selection"]["rows"])  # type: ignore[index]
    except (KeyError, TypeError):
        return []

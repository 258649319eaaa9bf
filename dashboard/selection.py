"""Selections: what a map event selected, and the selection a session (or a link) carries.

A box or lasso on the class map selects every point of the class inside it, decided here from the
event's geometry (``selection.box`` / ``selection.lasso``, in data coordinates) and the class's own
coordinates, not only the points the browser drew: a big map draws a sample of its points over a
picture of all of them, and a selection still takes all. Clicked points come from the event's
``points``. A selection is kept as sample ids (they go into the URL, see :func:`urlstate.encode_ids`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import streamlit as st


def _selection(event: Any) -> Any:
    if not event:
        return None
    try:
        return event["selection"]
    except (KeyError, TypeError):
        return None


def selection_positions(event: Any, traces: Sequence[np.ndarray]) -> list[int]:
    """Positions of the points clicked or drawn-and-selected in a map of several traces (dict-style event).

    ``traces[c]`` holds the positions (into the class arrays) of trace ``c``'s points, in plot order, so
    a selected point ``(curve_number c, point_index i)`` is ``traces[c][i]``. Curves beyond ``traces``
    (a colour-bar or highlight trace) and out-of-range indices (a stale selection) are ignored. With one
    trace, the event's ``point_indices`` serve when the per-point list is absent.
    """
    sel = _selection(event)
    if sel is None:
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


def in_polygon(xy: np.ndarray, px: Sequence[float], py: Sequence[float]) -> np.ndarray:
    """Which of the points ``xy`` ``(n, 2)`` lie inside the polygon ``(px, py)`` (even-odd rule), ``(n,)`` bool."""
    x, y = np.asarray(xy[:, 0], dtype=np.float64), np.asarray(xy[:, 1], dtype=np.float64)
    vx, vy = np.asarray(px, dtype=np.float64), np.asarray(py, dtype=np.float64)
    inside = np.zeros(len(x), bool)
    if len(vx) < 3:
        return inside
    # Only points within the polygon's bounding box need the edge test.
    cand = np.flatnonzero((x >= vx.min()) & (x <= vx.max()) & (y >= vy.min()) & (y <= vy.max()))
    cx, cy = x[cand], y[cand]
    hit = np.zeros(len(cand), bool)
    for i in range(len(vx)):
        x1, y1, x2, y2 = vx[i - 1], vy[i - 1], vx[i], vy[i]
        if y1 == y2:
            continue
        crosses = (y1 > cy) != (y2 > cy)
        at = x1 + (cy - y1) * (x2 - x1) / (y2 - y1)
        hit ^= crosses & (cx < at)
    inside[cand] = hit
    return inside


def geometry_positions(event: Any, xy: np.ndarray) -> np.ndarray:
    """Positions of the points ``xy`` (in the figure's data coordinates) inside the event's boxes and lassos."""
    sel = _selection(event)
    inside = np.zeros(len(xy), bool)
    if sel is None or not hasattr(sel, "get"):
        return np.flatnonzero(inside)
    for box in sel.get("box") or []:
        bx, by = sorted(map(float, box.get("x", [])[:2])), sorted(map(float, box.get("y", [])[:2]))
        if len(bx) == 2 and len(by) == 2:
            inside |= (xy[:, 0] >= bx[0]) & (xy[:, 0] <= bx[1]) & (xy[:, 1] >= by[0]) & (xy[:, 1] <= by[1])
    for lasso in sel.get("lasso") or []:
        inside |= in_polygon(xy, lasso.get("x", []), lasso.get("y", []))
    return np.flatnonzero(inside)


def event_positions(event: Any, traces: Sequence[np.ndarray], xy: np.ndarray) -> list[int]:
    """Everything an event selected: points inside its boxes and lassos, plus the points clicked."""
    geo = geometry_positions(event, xy)
    return sorted(set(geo.tolist()) | set(selection_positions(event, traces)))


def set_selection(run: str, sample_ids: Sequence[str], source: str) -> None:
    """Remember a selection (sample ids of one run) for the Cluster / selection page."""
    st.session_state["selection"] = {"run": run, "sample_ids": [str(s) for s in sample_ids], "source": source}


def get_selection(run: str) -> dict[str, Any] | None:
    """The remembered selection if it belongs to this run."""
    sel = st.session_state.get("selection")
    return sel if sel and sel.get("run") == run and sel.get("sample_ids") else None

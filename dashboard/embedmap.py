"""The 2-D map of one class: figure, legend, and the coordinates a selection is decided on.

Two regimes (see docs/dashboard.md, Performance):

- up to :data:`BIG_MAP` points: one WebGL trace with per-point colours and the sample id as hover text;
- above: a picture of **all** points (rendered here with numpy into a PNG, placed under the axes) plus
  a stratified sample of at most :data:`SAMPLE_POINTS` points as one trace per colour group (hover,
  click). A box or lasso still selects every point inside it: :mod:`selection` decides from the event's
  geometry and :attr:`ClassMap.xy`. Coordinates are quantised to 0..65535 and sent as plain lists.

The class page's first paint is :func:`class_picture` (every point as one PNG, no plotly in the browser);
the figure is built only when the user switches to the interactive map.

A selection that did not come from the chart itself (a link, a filter) is drawn as the figure's
``layout.selections`` from its stored geometry, so a reloaded page shows the same lasso.
"""

from __future__ import annotations

import base64
import io
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common
import numpy as np
import plotly.colors as pc
import plotly.graph_objects as go
import safetext
import selection
import streamlit as st
from PIL import Image

from spray.records import score_text

PALETTE = pc.qualitative.Dark24
BIG_MAP = 20_000  # points; above this: picture of all points + a drawn sample
SAMPLE_POINTS = 6_000  # drawn points of a big map
MIN_PER_GROUP = 150  # every colour group keeps at least this many drawn points (or all it has)
PICTURE_PX = 900  # edge of the picture of a big map
N_BINS = 32  # colour groups of a continuous colouring on a big map
QMAX = 65535  # quantised coordinate range of a big map
COLOURINGS = ("cluster", "label", "prediction", "confidence", "suspicion")


@dataclass
class ClassMap:
    """A class map, built once per view and shared between sessions (never modify it).

    Attributes
    ----------
    figure : go.Figure
    trace_positions : list[np.ndarray]
        Per data trace, the positions (into the class arrays) of its points in plot order.
    xy : np.ndarray
        ``(n, 2)`` coordinates of every point of the class in the figure's data space.
    legend : dict[str, str]
        Colour group name → colour (categorical colourings).
    big : bool
        Drawn as picture + sample.
    """

    figure: go.Figure
    trace_positions: list[np.ndarray]
    xy: np.ndarray
    legend: dict[str, str]
    big: bool


# ---------------------------------------------------------------------------------------------------------
# Selection geometry in the URL


def encode_geometry(event: Any) -> str | None:
    """The boxes and lassos of a chart event as a compact URL value (None when it has none)."""
    try:
        sel = event["selection"]
    except (KeyError, TypeError):
        return None
    shapes = [{"t": "b", "x": b.get("x", [])[:2], "y": b.get("y", [])[:2]} for b in sel.get("box") or []]
    shapes += [{"t": "l", "x": s.get("x", []), "y": s.get("y", [])} for s in sel.get("lasso") or []]
    if not shapes:
        return None
    for s in shapes:
        s["x"] = [round(float(v), 4) for v in s["x"]]
        s["y"] = [round(float(v), 4) for v in s["y"]]
    raw = zlib.compress(json.dumps(shapes, separators=(",", ":")).encode(), 9)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_geometry(text: str) -> list[dict[str, Any]]:
    """Shapes of :func:`encode_geometry`; an unreadable value gives none (the ids still select)."""
    try:
        raw = zlib.decompress(base64.urlsafe_b64decode((text + "=" * (-len(text) % 4)).encode()))
        shapes = json.loads(raw)
        return [s for s in shapes if s.get("t") in ("b", "l") and len(s["x"]) == len(s["y"]) >= 2]
    except (ValueError, zlib.error, TypeError, KeyError, AttributeError):
        return []


def as_event(shapes: list[dict[str, Any]]) -> dict[str, Any]:
    """Stored shapes as a selection event (for :func:`selection.geometry_positions`)."""
    return {
        "selection": {
            "box": [{"x": s["x"], "y": s["y"]} for s in shapes if s["t"] == "b"],
            "lasso": [{"x": s["x"], "y": s["y"]} for s in shapes if s["t"] == "l"],
        }
    }


def _layout_selections(shapes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for s in shapes:
        if s["t"] == "b":
            out.append(
                dict(type="rect", xref="x", yref="y", x0=s["x"][0], x1=s["x"][1], y0=s["y"][0], y1=s["y"][1])
            )
        else:
            path = "M" + "L".join(f"{x},{y}" for x, y in zip(s["x"], s["y"], strict=True)) + "Z"
            out.append(dict(type="path", xref="x", yref="y", path=path))
    return out


# ---------------------------------------------------------------------------------------------------------
# Colours


def _groups(
    path: str, cls: int, k: int, color_by: str
) -> tuple[np.ndarray, dict[int, str], tuple[np.ndarray, str] | None]:
    """Per point a group code (categorical) or value (continuous), group names, and the continuous scale."""
    data = common.class_data(path, cls)
    sub = common.samples(path).loc[data.sample_ids]
    labels_k = data.labellings[k]
    scores = {f.cluster_id: f.score for f in common.map_findings(path, cls) if f.k == k}
    if color_by == "cluster":
        # The hot-spot labelling (k = 0) marks the samples in no hot-spot group -1.
        sizes = common.cluster_sizes(labels_k, minlength=int(labels_k.max(initial=-1)) + 1)
        names = {
            int(c): f"c{c} (n={sizes[c]:,}{f', score {score_text(scores[c])}' if c in scores else ''})"
            for c in np.unique(labels_k)
            if c >= 0
        }
        if (labels_k < 0).any():
            names[-1] = f"in no hot-spot group (n={int((labels_k < 0).sum()):,})"
        return labels_k, names, None
    if color_by in ("label", "prediction"):
        codes = sub[color_by].to_numpy()
        col_names = sub[f"{color_by}_name"].to_numpy()
        return codes, {int(c): str(col_names[np.argmax(codes == c)]) for c in np.unique(codes)}, None
    if color_by == "suspicion":
        # the per-sample suspicion of samples.parquet (every k, carriers, graded likeness), as the Sample page
        # and the suspicion sort read it: a cluster's score at this k differed for nearly every point
        vals = np.nan_to_num(sub["score"].to_numpy(dtype=np.float32), nan=0.0)
    else:
        vals = sub["confidence"].to_numpy(dtype=np.float32)
    return vals, {}, (vals, "Viridis" if color_by == "confidence" else "Reds")


def _colour_bar_trace(vmin: float, vmax: float, scale: str, title: str) -> dict[str, Any]:
    # An empty trace after the data traces (their curve numbers stay 0..n-1) that only shows the scale.
    return dict(
        type="scattergl",
        x=[None],
        y=[None],
        mode="markers",
        hoverinfo="skip",
        showlegend=False,
        marker=dict(
            color=[vmin, vmax],
            colorscale=scale,
            cmin=vmin,
            cmax=vmax,
            showscale=True,
            colorbar=dict(title=title, thickness=12),
        ),
    )


# ---------------------------------------------------------------------------------------------------------
# Big maps: picture + sample


def _picture(xy: np.ndarray, colours: np.ndarray, dot: int = 2) -> str:
    """PNG data URI of all points (``xy`` in 0..QMAX, ``colours`` ``(n, 3)`` uint8), ``dot``×``dot`` px each."""
    px = PICTURE_PX
    img = np.zeros((px, px, 4), np.uint8)
    col = np.clip((xy[:, 0] * (px - dot) // QMAX).astype(np.int64), 0, px - dot)
    row = np.clip(((QMAX - xy[:, 1]) * (px - dot) // QMAX).astype(np.int64), 0, px - dot)
    for dy in range(dot):
        for dx in range(dot):
            img[row + dy, col + dx, :3] = colours
            img[row + dy, col + dx, 3] = 200
    buf = io.BytesIO()
    Image.fromarray(img, "RGBA").save(buf, format="PNG", compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _sample(groups: list[np.ndarray], budget: int, seed: int) -> list[np.ndarray]:
    """Drawn points per group: at least MIN_PER_GROUP (or all), the rest in proportion, seeded."""
    rng = np.random.default_rng(seed)
    total = sum(len(g) for g in groups)
    out = []
    for g in groups:
        want = max(min(len(g), MIN_PER_GROUP), round(budget * len(g) / max(1, total)))
        out.append(np.sort(rng.choice(g, size=min(want, len(g)), replace=False)) if want < len(g) else g)
    return out


def _hex(colour: str) -> tuple[int, int, int]:
    c = pc.unlabel_rgb(colour) if colour.startswith("rgb") else pc.hex_to_rgb(colour)
    return int(c[0]), int(c[1]), int(c[2])


def _layout(path: str, cls: int, k: int, color_by: str) -> dict[str, Any]:
    return dict(
        height=560,
        dragmode="lasso",
        # What Streamlit sets for a selectable chart anyway: set here, its first render changes nothing.
        clickmode="event",
        hovermode="closest",
        # Constant for this view: Streamlit re-renders the figure once after mounting with new (equal) data
        # arrays; a datarevision tells plotly they are unchanged, so no second calc.
        datarevision=f"{Path(path).name}/{cls}/{k}/{color_by}",
        margin=dict(l=10, r=10, t=10, b=10),
        xaxis=dict(showticklabels=False, title=None),
        yaxis=dict(showticklabels=False, title=None, scaleanchor="x"),
    )


def _small_map(
    emb: np.ndarray, ids: np.ndarray, codes: np.ndarray, names: dict[int, str], continuous: Any, color_by: str
) -> list[Any]:
    """One WebGL trace with per-point colours and the sample id on hover."""
    marker: dict[str, Any] = {"size": 6, "opacity": 0.8}
    if continuous is None:
        # A stepped colour scale on 0..n-1: value i lands in the middle of step i.
        uniq = sorted(names)
        steps = len(uniq)
        scale = [[v, PALETTE[i % len(PALETTE)]] for i in range(steps) for v in (i / steps, (i + 1) / steps)]
        marker.update(
            color=np.searchsorted(np.asarray(uniq), codes).astype(np.int32),
            colorscale=scale,
            cmin=-0.5,
            cmax=steps - 0.5,
        )
    else:
        marker.update(
            color=continuous[0],
            colorscale=continuous[1],
            showscale=True,
            colorbar=dict(title=color_by, thickness=12),
        )
    # Plotly reads tags in hover text: ids from data are HTML-escaped.
    shown = np.array([safetext.html_text(i) for i in ids], dtype=object)
    return [
        go.Scattergl(
            x=emb[:, 0], y=emb[:, 1], mode="markers", marker=marker, customdata=shown,
            hovertemplate="sample %{customdata}<extra></extra>", showlegend=False,
        )
    ]  # fmt: skip


def _legend(names: dict[int, str]) -> dict[str, str]:
    """Colour of each categorical group, in the order of its code."""
    return {names[u]: PALETTE[i % len(PALETTE)] for i, u in enumerate(sorted(names))}


def _quantised(emb: np.ndarray) -> np.ndarray:
    """``(n, 2)`` embedding scaled to 0..QMAX and rounded (the picture's and the big map's coordinates): one
    scale for both axes, the shorter one centred, so that the picture keeps the map's proportions (scaled
    apart, a class 2.6× taller than wide was drawn square)."""
    lo, hi = emb.min(axis=0), emb.max(axis=0)
    extent = float((hi - lo).max())
    scale = extent if extent > 0 else 1.0
    return np.round((emb - (lo + hi) / 2) / scale * QMAX + QMAX / 2)


def _map_xy(emb: np.ndarray) -> np.ndarray:
    """``(n, 2)`` coordinates of the points as the map draws them: the embedding itself, or for a big map
    (above :data:`BIG_MAP` points) quantised (:func:`_quantised`)."""
    return emb if len(emb) <= BIG_MAP else _quantised(emb)


def _point_colours(n: int, groups: list[tuple[str, str, np.ndarray]]) -> np.ndarray:
    """``(n, 3)`` uint8 colour of every point from its group."""
    colours = np.zeros((n, 3), np.uint8)
    for _, colour, members in groups:
        colours[members] = _hex(colour)
    return colours


def _big_groups(
    codes: np.ndarray, names: dict[int, str], legend: dict[str, str], continuous: Any, color_by: str
) -> list[tuple[str, str, np.ndarray]]:
    """Colour groups (name, colour, positions): the categories, or 32 bins of a continuous colouring."""
    if continuous is None:
        return [(names[u], legend[names[u]], np.flatnonzero(codes == u)) for u in sorted(names)]
    vals, scale_name = continuous
    vmin, vmax = float(np.nanmin(vals)), float(np.nanmax(vals))
    width = (vmax - vmin) or 1.0
    b = np.clip(((np.nan_to_num(vals, nan=vmin) - vmin) / width * N_BINS).astype(np.int64), 0, N_BINS - 1)
    cols = pc.sample_colorscale(scale_name, [(i + 0.5) / N_BINS for i in range(N_BINS)])
    groups = []
    for i in range(N_BINS):
        members = np.flatnonzero(b == i)
        if len(members):
            a, z = vmin + width * i / N_BINS, vmin + width * (i + 1) / N_BINS
            groups.append((f"{color_by} {a:.2f}–{z:.2f}", cols[i], members))
    return groups


def _big_map(
    xy: np.ndarray, ids: np.ndarray, groups: list[tuple[str, str, np.ndarray]], seed: int
) -> tuple[list[Any], list[np.ndarray], str]:
    """Traces of a stratified sample of each group, their positions, and the picture of all points."""
    colours = _point_colours(len(xy), groups)
    drawn = _sample([g[2] for g in groups], SAMPLE_POINTS, seed=seed)
    marker = {"size": 4, "opacity": 0.9}
    # Plain dicts, not validated: plotly's validation of long lists costs more than building them.
    traces: list[Any] = [
        dict(
            type="scattergl", x=xy[d, 0].astype(int).tolist(), y=xy[d, 1].astype(int).tolist(), mode="markers",
            name=safetext.html_text(name), marker=dict(marker, color=colour),
            customdata=[safetext.html_text(i) for i in ids[d]],
            hovertemplate=f"sample %{{customdata}} · {safetext.html_text(name)}<extra></extra>", showlegend=False,
        )
        for (name, colour, _), d in zip(groups, drawn, strict=True)
    ]  # fmt: skip
    return traces, drawn, _picture(xy, colours)


@st.cache_resource(show_spinner=False, max_entries=16)
def class_map(path: str, cls: int, k: int, color_by: str, geometry: str = "") -> ClassMap:
    """The map of one class at ``k`` coloured by ``color_by`` (cached per view and drawn selection)."""
    data = common.class_data(path, cls)
    emb = np.asarray(data.embedding, dtype=np.float64)
    ids = np.asarray(data.sample_ids, dtype=object)
    codes, names, continuous = _groups(path, cls, k, color_by)
    big = len(emb) > BIG_MAP
    legend = _legend(names)
    layout = _layout(path, cls, k, color_by)
    xy = _map_xy(emb)
    if not big:
        traces = _small_map(emb, ids, codes, names, continuous, color_by)
        positions = [np.arange(len(emb))]
    else:
        groups = _big_groups(codes, names, legend, continuous, color_by)
        traces, positions, picture = _big_map(xy, ids, groups, seed=cls * 1000 + k)
        if continuous is not None:
            vals = continuous[0]
            traces.append(
                _colour_bar_trace(float(np.nanmin(vals)), float(np.nanmax(vals)), continuous[1], color_by)
            )
        pad = 0.02 * QMAX
        layout["images"] = [
            dict(
                source=picture,
                xref="x",
                yref="y",
                x=0,
                y=QMAX,
                sizex=QMAX,
                sizey=QMAX,
                sizing="stretch",
                layer="below",
            )
        ]
        layout["xaxis"].update(range=[-pad, QMAX + pad], showgrid=False, zeroline=False)
        layout["yaxis"].update(range=[-pad, QMAX + pad], showgrid=False, zeroline=False)
    if geometry:
        layout["selections"] = _layout_selections(decode_geometry(geometry))
    fig = go.Figure(traces, _validate=not big)
    fig.update_layout(**layout)
    return ClassMap(fig, positions, xy, legend, big)


def geometry_fits(path: str, cls: int, geometry: str, sample_ids: Sequence[str]) -> bool:
    """Whether the shapes ``geometry`` enclose, on this run's map of class ``cls``, only samples of the
    selection ``sample_ids`` (and some): a shape drawn on another run's map encloses other points, and drawn
    here it would show a lasso around samples that are not the selected ones."""
    shapes = decode_geometry(geometry)
    if not shapes:
        return True
    data = common.class_data(path, cls)
    xy = _map_xy(np.asarray(data.embedding, dtype=np.float64))
    inside = {str(data.sample_ids[i]) for i in selection.geometry_positions(as_event(shapes), xy)}
    return bool(inside) and inside <= set(map(str, sample_ids))


@dataclass
class MapPicture:
    """The static map of one class (no plotly): a PNG of every point, its legend or its colour scale.

    Attributes
    ----------
    uri : str
        PNG data URI, :data:`PICTURE_PX` square, every point of the class.
    legend : dict[str, str]
        Colour group name → colour (categorical colourings).
    scale : tuple[float, float, list[str]] | None
        Minimum, maximum and colours (low → high) of a continuous colouring.
    """

    uri: str
    legend: dict[str, str]
    scale: tuple[float, float, list[str]] | None


@st.cache_resource(show_spinner=False, max_entries=16)
def class_picture(path: str, cls: int, k: int, color_by: str) -> MapPicture:
    """Every point of the class at ``k`` coloured by ``color_by`` as one picture (the page's first paint)."""
    data = common.class_data(path, cls)
    emb = np.asarray(data.embedding, dtype=np.float64)
    codes, names, continuous = _groups(path, cls, k, color_by)
    legend = _legend(names)
    xy = _quantised(emb)
    colours = _point_colours(len(xy), _big_groups(codes, names, legend, continuous, color_by))
    # Fewer points, bigger dots: a small class stays readable at the page's width.
    dot = 2 if len(xy) > BIG_MAP else 4 if len(xy) > 2_000 else 6
    scale = None
    if continuous is not None:
        vals = continuous[0]
        steps = pc.sample_colorscale(continuous[1], [i / 8 for i in range(9)])
        scale = (float(np.nanmin(vals)), float(np.nanmax(vals)), steps)
    return MapPicture(_picture(xy, colours, dot), legend if continuous is None else {}, scale)


def picture_html(p: MapPicture) -> str:
    """The static map as HTML: the picture (square, the page's width up to 560 px) and a continuous scale."""
    parts = [
        f'<img data-map="picture" src="{p.uri}" alt="every point of the class" '
        'style="width:100%;max-width:560px;aspect-ratio:1;border:1px solid rgba(49,51,63,0.2)">'
    ]
    if p.scale is not None:
        lo, hi, steps = p.scale
        gradient = ", ".join(steps)
        parts.append(
            f'<div style="max-width:560px;font-size:0.8rem"><div style="height:10px;background:linear-gradient('
            f'to right, {gradient})"></div><span>{lo:.2f}</span><span style="float:right">{hi:.2f}</span></div>'
        )
    return "".join(parts)

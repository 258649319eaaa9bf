"""Class: eigenvalue spectrum, the 2-D WebGL map of one class (per-group traces when big), selections → grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import common
import numpy as np
import plotly.colors as pc
import plotly.graph_objects as go
import streamlit as st

path, summary = common.require_run()
run = Path(path).name
dataset = common.dataset_key(summary)
classes = summary.get("classes", [])
if not classes:
    st.info("This run analysed no class (all were below analysis.min_class_size).")
    st.stop()

st.title("Class")
by_index = {int(c["class_index"]): c for c in classes}
top_cls = int(summary["findings"][0]["class_index"]) if summary.get("findings") else next(iter(by_index))
c1, c2, c3 = st.columns([2, 1, 3])
cls = int(
    common.nav_select(
        "Class",
        list(by_index),
        "cls",
        default=top_cls,
        format_func=lambda c: f"{c} · {by_index[c]['class_name']} (n={by_index[c]['n']:,})",
        container=c1,
    )
)
entry = by_index[cls]
arr = common.class_arrays(path, cls)
ks = common.available_ks(arr)
chosen_k = int(entry["chosen_k"])
k = int(
    common.nav_select(
        "k (clusters)",
        ks,
        "k",
        default=chosen_k,
        container=c2,
        format_func=lambda v: f"{v}{' (chosen)' if v == chosen_k else ''}",
    )
)
color_by = str(
    common.nav_select(
        "Colour by", ["cluster", "label", "prediction", "confidence", "suspicion"], "color", container=c3
    )
)
common.push_url(run=run, cls=cls, k=k, color=color_by)

# --- spectrum -------------------------------------------------------------------------------------------
ev = np.asarray(arr["eigenvalues"], dtype=float)
spec = go.Figure(go.Scatter(x=np.arange(1, len(ev) + 1), y=ev, mode="lines+markers", name="eigenvalue"))
spec.add_vline(
    x=chosen_k + 0.5, line_dash="dash", line_color="#d62728", annotation_text=f"chosen k={chosen_k}"
)
if k != chosen_k:
    spec.add_vline(x=k + 0.5, line_dash="dot", line_color="#7f7f7f", annotation_text=f"k={k}")
spec.update_layout(
    height=240, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="index", yaxis_title="eigenvalue"
)
st.caption(
    f"Eigenvalues of the normalised kNN affinity (descending). A gap after the k-th value suggests k groups. "
    f"Eigengap alone suggests k={entry.get('eigengap_k')}; chosen k={chosen_k}. Embedding: {entry.get('embedding_method')}."
)
st.plotly_chart(spec, key="spectrum", config={"displayModeBar": False})

# --- embedding ------------------------------------------------------------------------------------------
palette = pc.qualitative.Dark24
BIG_MAP = 20_000  # points; above this the map is drawn as one trace per colour group
N_BINS = 32  # colour groups of a continuous colouring on a big map


def categorical(codes: np.ndarray, names: dict[int, str]) -> tuple[np.ndarray, list]:
    """Map integer categories to a stepped colour scale on 0..n-1 (one trace, per-point colours)."""
    uniq = sorted(names)
    vals = np.searchsorted(np.asarray(uniq), codes).astype(np.int32)
    n = max(1, len(uniq))
    scale = []
    for i in range(n):
        col = palette[i % len(palette)]
        scale += [[i / n, col], [(i + 1) / n, col]]
    return vals, scale


@st.cache_resource(show_spinner=False, max_entries=16)
def embedding_map(
    path: str, cls: int, k: int, color_by: str
) -> tuple[go.Figure, list[np.ndarray], dict[str, str]]:
    """The map figure, the class-array positions of each trace's points, and the legend (cached per view:
    building a 100k-point figure takes ~0.2 s; shared between sessions, so never modified)."""
    entry = common.class_entry(path, cls)
    chosen_k = int(entry["chosen_k"])
    arr = common.class_arrays(path, cls)
    table = common.samples(path)
    rows = arr["rows"].astype(np.int64)
    emb = arr["embedding"]
    sub = table.iloc[rows]
    labels_k = arr[f"labels_k{k}"]
    scores = {int(f["cluster_id"]): float(f["score"]) for f in entry.get("clusters", []) if int(f["k"]) == k}
    legend: dict[str, str] = {}
    n_points = len(rows)
    # Large maps draw one WebGL trace per colour group (see docs/dashboard.md, Performance): plotly's per-point
    # colour conversion (colour scale → CSS string → RGBA, ~10 µs a point) was the largest single cost of the
    # first draw, and it runs again on every redraw. Small maps keep one trace with per-point colours and ids.
    big = n_points > BIG_MAP
    colour_codes: np.ndarray  # per point: group code (categorical) or value (continuous)
    group_names: dict[int, str] = {}
    continuous: tuple[np.ndarray, str] | None = None
    if color_by == "cluster":
        sizes = np.bincount(labels_k)
        group_names = {
            int(c): f"c{c} (n={sizes[c]:,}{f', score {scores[c]:.2f}' if c in scores else ''})"
            for c in np.unique(labels_k)
        }
        colour_codes = labels_k
    elif color_by in ("label", "prediction"):
        colour_codes = sub[color_by].to_numpy()
        col_names = sub[f"{color_by}_name"].to_numpy()
        group_names = {int(c): str(col_names[np.argmax(colour_codes == c)]) for c in np.unique(colour_codes)}
    else:
        col = "confidence" if color_by == "confidence" else "score"
        if color_by == "suspicion" and k != chosen_k:
            # Scores exist only for the chosen k's clusters: colour each point by its cluster's score at k.
            vals = np.array([scores.get(int(c), 0.0) for c in labels_k], dtype=np.float32)
        else:
            vals = sub[col].to_numpy(dtype=np.float32)
        continuous = (vals, "Viridis" if col == "confidence" else "Reds")
        colour_codes = vals

    if group_names:
        uniq = sorted(group_names)
        legend = {group_names[u]: palette[i % len(palette)] for i, u in enumerate(uniq)}

    marker: dict = {"size": 3 if n_points > 50_000 else 4 if big else 6, "opacity": 0.8}
    if big:
        # Coordinates quantised to 0..65535 (invisible at any sensible zoom) and sent as plain JSON lists:
        # Streamlit round-trips the figure through JSON.stringify once after the first draw, which turns a
        # typed array that plotly has decoded into a 100k-key object and forces a full second calc.
        lo, hi = emb.min(axis=0), emb.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        xy = np.round((emb - lo) / span * 65535).astype(np.int64)
        groups: list[tuple[str, str, np.ndarray]] = []
        if continuous is None:
            for u in uniq:
                groups.append((group_names[u], legend[group_names[u]], np.flatnonzero(colour_codes == u)))
        else:
            vals, scale = continuous
            vmin, vmax = float(np.nanmin(vals)), float(np.nanmax(vals))
            width = (vmax - vmin) or 1.0
            b = np.clip(
                ((np.nan_to_num(vals, nan=vmin) - vmin) / width * N_BINS).astype(np.int64), 0, N_BINS - 1
            )
            cols = pc.sample_colorscale(scale, [(i + 0.5) / N_BINS for i in range(N_BINS)])
            for i in range(N_BINS):
                members = np.flatnonzero(b == i)
                if len(members):
                    a, z = vmin + width * i / N_BINS, vmin + width * (i + 1) / N_BINS
                    groups.append((f"{color_by} {a:.2f}–{z:.2f}", cols[i], members))
        trace_positions = [g[2] for g in groups]
        # Plain dicts, not validated: plotly's validation of 200k list items alone took ~0.7 s.
        traces: list[Any] = [
            dict(
                type="scattergl",
                x=xy[members, 0].tolist(),
                y=xy[members, 1].tolist(),
                mode="markers",
                name=name,
                marker=dict(marker, color=colour),
                hovertemplate=f"{name} · point %{{pointNumber}}<extra></extra>",
                showlegend=False,
            )
            for name, colour, members in groups
        ]
        if continuous is not None:
            # The colour bar: an empty trace after the data traces (curve numbers of the data stay 0..n-1).
            traces.append(
                go.Scattergl(
                    x=[None],
                    y=[None],
                    mode="markers",
                    marker=dict(
                        color=[vmin, vmax],
                        colorscale=continuous[1],
                        cmin=vmin,
                        cmax=vmax,
                        showscale=True,
                        colorbar=dict(title=color_by, thickness=12),
                    ),
                    hoverinfo="skip",
                    showlegend=False,
                )
            )
    else:
        if continuous is None:
            vals_c, scale_c = categorical(colour_codes, group_names)
            marker.update(color=vals_c, colorscale=scale_c, cmin=-0.5, cmax=len(group_names) - 0.5)
        else:
            marker.update(
                color=continuous[0],
                colorscale=continuous[1],
                showscale=True,
                colorbar=dict(title=color_by, thickness=12),
            )
        trace_positions = [np.arange(n_points)]
        traces = [
            go.Scattergl(
                x=emb[:, 0],
                y=emb[:, 1],
                mode="markers",
                marker=marker,
                customdata=sub["sample_id"].to_numpy(),
                hovertemplate="id %{customdata}<extra></extra>",
                showlegend=False,
            )
        ]
    fig = go.Figure(traces, _validate=not big)
    fig.update_layout(
        height=560,
        dragmode="select",
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
    return fig, trace_positions, legend


table = common.samples(path)
rows = arr["rows"].astype(np.int64)
labels_k = arr[f"labels_k{k}"]


fig, trace_positions, legend = embedding_map(path, cls, k, color_by)
left, right = st.columns([3, 1])
with left:
    event = st.plotly_chart(
        fig,
        key=f"embedding_{cls}",
        on_select="rerun",
        selection_mode=("points", "box", "lasso"),
        config={"scrollZoom": True, "displaylogo": False},
    )
with right:
    if legend:
        st.markdown("**Colours**")
        st.markdown(
            "\n".join(f"<span style='color:{c}'>■</span> {n}  " for n, c in list(legend.items())[:30]),
            unsafe_allow_html=True,
        )
    st.markdown("**Clusters at chosen k**")
    for f in entry.get("clusters", [])[:10]:
        st.page_link(
            common.PAGES["cluster"],
            label=f"c{f['cluster_id']} · score {f['score']:.2f} · n={f['size']:,}"
            + (" ⚠" if f["suspicious"] else ""),
            query_params={"run": run, "cluster": f["key"]},
        )

# --- selection → grid -----------------------------------------------------------------------------------
picked = common.selection_positions(event, trace_positions)
if not picked:
    st.caption("Drag a box or lasso on the map (or click points) to select samples.")
    st.stop()
sel_rows = rows[np.asarray(picked, dtype=np.int64)]
common.set_selection(run, sel_rows.tolist(), f"class {cls} selection")
st.subheader(f"Selection: {len(sel_rows):,} samples")
sel_clusters = np.bincount(labels_k[picked], minlength=k)
st.caption(f"By cluster (k={k}): " + ", ".join(f"c{c}: {n}" for c, n in enumerate(sel_clusters) if n))
st.page_link(
    common.PAGES["cluster"],
    label="Open the selection on its own page",
    query_params={"run": run, "view": "selection"},
    icon=":material/grid_view:",
)
sel_ids = table["sample_id"].to_numpy()[sel_rows].tolist()
common.flag_controls(
    dataset=dataset,
    sample_ids=sel_ids,
    run_id=summary.get("run_id", ""),
    cluster_key=None,
    source=f"class {cls} selection",
    key="class_sel",
)
mode, cmap = common.grid_controls("class_grid")
page = common.page_picker(len(sel_rows), "class_grid")
common.render_grid(path, sel_rows, mode=mode, cmap=cmap, page=page)

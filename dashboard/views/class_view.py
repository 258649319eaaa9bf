"""Class: eigenvalue spectrum, the 2-D map of one class (one WebGL trace), selections → sample grid."""

from __future__ import annotations

from pathlib import Path

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
table = common.samples(path)
rows = arr["rows"].astype(np.int64)
emb = arr["embedding"]
sub = table.iloc[rows]
labels_k = arr[f"labels_k{k}"]
scores = {int(f["cluster_id"]): float(f["score"]) for f in entry.get("clusters", []) if int(f["k"]) == k}
palette = pc.qualitative.Dark24


def categorical(codes: np.ndarray, names: dict[int, str]) -> tuple[np.ndarray, list, dict]:
    """Map integer categories to a stepped colour scale on 0..n-1 (one trace, compact numeric colours)."""
    uniq = sorted(names)
    pos = {u: i for i, u in enumerate(uniq)}
    vals = np.searchsorted(np.asarray(uniq), codes).astype(np.int32)
    n = max(1, len(uniq))
    scale = []
    for i in range(n):
        col = palette[i % len(palette)]
        scale += [[i / n, col], [(i + 1) / n, col]]
    return vals, scale, {names[u]: palette[pos[u] % len(palette)] for u in uniq}


legend: dict[str, str] = {}
marker: dict = {"size": 4 if len(rows) > 20000 else 6, "opacity": 0.8}
if color_by == "cluster":
    sizes = np.bincount(labels_k)
    names = {
        int(c): f"c{c} (n={sizes[c]:,}{f', score {scores[c]:.2f}' if c in scores else ''})"
        for c in np.unique(labels_k)
    }
    vals, scale, legend = categorical(labels_k, names)
    marker.update(color=vals, colorscale=scale, cmin=-0.5, cmax=len(names) - 0.5)
elif color_by in ("label", "prediction"):
    codes = sub[color_by].to_numpy()
    col_names = sub[f"{color_by}_name"].to_numpy()
    names = {int(c): str(col_names[np.argmax(codes == c)]) for c in np.unique(codes)}
    vals, scale, legend = categorical(codes, names)
    marker.update(color=vals, colorscale=scale, cmin=-0.5, cmax=len(names) - 0.5)
else:
    col = "confidence" if color_by == "confidence" else "score"
    if color_by == "suspicion" and k != chosen_k:
        # Scores exist only for the chosen k's clusters: colour each point by its cluster's score at k.
        vals = np.array([scores.get(int(c), 0.0) for c in labels_k], dtype=np.float32)
    else:
        vals = sub[col].to_numpy(dtype=np.float32)
    marker.update(
        color=vals,
        colorscale="Viridis" if col == "confidence" else "Reds",
        showscale=True,
        colorbar=dict(title=color_by, thickness=12),
    )

# Large maps are sent compactly: the figure JSON is what the browser waits for. Coordinates are
# quantised to uint16 (1/65535 of the range: invisible), categorical colours go as uint8, and sample ids
# (strings) only travel for small maps; the selection is decoded from point indices either way.
big = len(rows) > 20000
if big:
    lo, hi = emb.min(axis=0), emb.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    xy = np.round((emb - lo) / span * 65535).astype(np.uint16)
    if color_by in ("cluster", "label", "prediction") and int(np.max(marker["color"])) < 256:
        marker["color"] = np.asarray(marker["color"], dtype=np.uint8)
    trace = go.Scattergl(
        x=xy[:, 0],
        y=xy[:, 1],
        mode="markers",
        marker=marker,
        hovertemplate="point %{pointNumber}<extra></extra>",
        showlegend=False,
    )
else:
    trace = go.Scattergl(
        x=emb[:, 0],
        y=emb[:, 1],
        mode="markers",
        marker=marker,
        customdata=sub["sample_id"].to_numpy(),
        hovertemplate="id %{customdata}<extra></extra>",
        showlegend=False,
    )
fig = go.Figure(trace)
fig.update_layout(
    height=560,
    dragmode="select",
    margin=dict(l=10, r=10, t=10, b=10),
    xaxis=dict(showticklabels=False, title=None),
    yaxis=dict(showticklabels=False, title=None, scaleanchor="x"),
)
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
picked = common.selection_rows(event, len(rows))
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

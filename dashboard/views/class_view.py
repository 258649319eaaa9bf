"""Class: eigenvalue spectrum, the 2-D map of one class at any stored k, selections → grid and flags.

Opens at the k of the class's top-ranked finding (the clusters the run scored), any stored k one click
away; legend, cluster list and spectrum marks all follow the k shown. A selection (lasso, box, click, or
"select by": misclassified, low confidence, flagged, carriers) is kept in the URL as sample ids, with the
drawn shape, so a reload or a shared link shows the same selection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import common
import embedmap
import flagform
import numpy as np
import safetext
import samplegrid
import selection
import spectrum
import streamlit as st
import urlstate

from spray.records import score_text, skipped_size
from spray.runs.keys import HOTSPOT_K

path, summary = common.require_run()
run = Path(path).name
dataset = common.dataset_key(summary)
classes = summary.classes
if not classes:
    st.info(
        "This run analysed no class (each had fewer than analysis.min_class_size samples, or only zero heatmaps: "
        "see summary.json classes_skipped)."
    )
    st.stop()
state = urlstate.nav()
by_index = {c.class_index: c for c in classes}
found = common.findings(path)

if "cls" in state and (not state["cls"].lstrip("-").isdigit() or int(state["cls"]) not in by_index):
    bad = state.pop("cls")
    unanalysed = next((c for c in summary.classes_skipped if str(c.class_index) == bad.strip()), None)
    common.not_found(
        f"class {safetext.code(bad)}",
        f"run {safetext.code(run)} did not analyse class {safetext.md(unanalysed.class_name)} "
        f"({safetext.md(skipped_size(unanalysed.n, unanalysed.reason))})"
        if unanalysed is not None
        else f"run {safetext.code(run)} analysed the classes {', '.join(map(str, sorted(by_index)))}",
    )


def top_k(cls: int) -> int | None:
    """The k of the class's top-ranked finding on the map (pixel space or both; a concept-only finding
    numbers a concept-space labelling, not the map's), if any."""
    own = common.map_findings(path, cls)
    return min(own, key=lambda f: f.rank).k if own else None


def reset_view() -> None:
    """A new class: its own k, no selection from the old one."""
    for name in ("k", "sel", "geo", "spage"):
        state.pop(name, None)
    st.session_state.pop("_map_geo", None)


st.title("Class")
top_cls = found[0].class_index if found else next(iter(by_index))
c1, c2, c3 = st.columns([2, 1, 3])
cls = int(
    urlstate.nav_select(
        "Class",
        list(by_index),
        "cls",
        default=top_cls,
        format_func=lambda c: safetext.plain(f"{c} · {by_index[c].class_name} (n={by_index[c].n:,})"),
        container=c1,
        then=reset_view,
    )
)
entry = by_index[cls]
data = common.class_data(path, cls)
ks = common.available_ks(data)
chosen_k = entry.chosen_k
best_k = top_k(cls)
if "k" in state and (not state["k"].isdigit() or int(state["k"]) not in ks):
    bad = state.pop("k")
    common.not_found(
        f"k={safetext.code(bad)} of class {cls}",
        f"this class has labellings for k = {', '.join(map(str, ks))}",
    )


def k_label(v: int) -> str:
    tags = [t for t, kk in (("top finding", best_k), ("chosen", chosen_k)) if kk == v]
    tags = ["hot-spot groups", *tags] if v == HOTSPOT_K else tags
    return f"{v}{' (' + ', '.join(tags) + ')' if tags else ''}"


k = int(
    urlstate.nav_select(
        "k (clusters)", ks, "k", default=best_k if best_k in ks else chosen_k, container=c2, format_func=k_label,

    )
)  # fmt: skip
color_by = str(urlstate.nav_select("Colour by", list(embedmap.COLOURINGS), "color", container=c3))

# --- spectrum -------------------------------------------------------------------------------------------
ev = np.asarray(data.eigenvalues, dtype=float)
marks: dict[int, list[str]] = {}
for v, tag in ((chosen_k, "chosen"), (best_k, "top finding"), (k, "shown")):
    if v is not None and v != HOTSPOT_K:  # the hot-spot groups are no k of the spectrum
        marks.setdefault(v, []).append(tag)
st.caption(
    "Eigenvalues of the normalised kNN affinity (descending). A gap after the k-th value suggests k groups. "
    f"Eigengap alone suggests k={entry.eigengap_k}; chosen k={chosen_k}"
    + (
        "; the class's top finding is a hot-spot group (k=0: no k-means labelling)"
        if best_k == HOTSPOT_K
        else f"; the class's top finding was scored at k={best_k}"
        if best_k is not None
        else ""
    )
    + f". Embedding: {safetext.md(entry.embedding_method)}."
)
st.html(spectrum.html(ev, marks))  # static: the first paint needs no plotly

# --- selection from the URL (ids + drawn shape) ----------------------------------------------------------
class_ids = data.sample_ids
position = common.class_positions(path, cls)
view_key = f"{run}/{cls}/{k}/{color_by}"
map_geo = st.session_state.setdefault("_map_geo", {})
# The shape drawn into the figure stays what it was when this view was first shown in this session, so the
# chart keeps its identity (and the user's new lasso) while the selection changes.
if view_key not in map_geo and state.get("geo") and state.get("sel"):
    try:
        linked = urlstate.decode_ids(state["sel"])
    except ValueError:
        linked = []
    if not embedmap.geometry_fits(path, cls, state["geo"], linked):
        # a link's shape from another run's map: drawn here it would enclose other samples than the selected
        state["geo"] = ""
        st.caption(
            "This link's lasso or box was drawn on another map (another run's or class's): it is not drawn here. "
            "The selection keeps its samples by id."
        )
geometry = map_geo.setdefault(view_key, state.get("geo", ""))
# The first paint shows the picture of every point (no plotly code to fetch); the interactive map (lasso,
# box, click, hover) is one click away, and opens by itself for a link with a drawn shape.
interactive = bool(
    urlstate.nav_widget(
        st.toggle, "Select on the map (lasso, box, click)", "draw", default=bool(state.get("geo")),
        parse=urlstate.parse_bool, help="Loads the interactive map; the picture shows every point as well.",
    )
)  # fmt: skip
cmap_view = embedmap.class_map(path, cls, k, color_by, geometry) if interactive else None
picture = None if interactive else embedmap.class_picture(path, cls, k, color_by)
legend = cmap_view.legend if cmap_view is not None else picture.legend if picture is not None else {}

left, right = st.columns([3, 1])
event = None
with left:
    if cmap_view is not None:
        # a new key per "Select by": the chart then starts without the box or lasso it showed before
        gen = st.session_state.get("_chart_gen", 0)
        event = st.plotly_chart(
            cmap_view.figure,
            key=f"embedding_{cls}" + (f"_{gen}" if gen else ""),
            on_select="rerun",
            selection_mode=("points", "box", "lasso"),
            # The mode bar always shown: box and lasso are visible, not only on hover.
            config={"scrollZoom": True, "displaylogo": False, "displayModeBar": True},
        )
    elif picture is not None:
        st.html(embedmap.picture_html(picture))
with right:
    if legend:
        st.markdown("**Colours**")
        st.html(
            "<div style='font-size:0.85rem;line-height:1.5'>"
            + "".join(
                f"<div><span style='color:{c}'>■</span> {safetext.html_text(n)}</div>"
                for n, c in list(legend.items())[:40]
            )
            + "</div>"
        )
    scored = sorted((f for f in common.map_findings(path, cls) if f.k == k), key=lambda f: -f.score)
    st.markdown(f"**Clusters at k={k}**" + ("" if scored else " (none scored at this k)"))
    sizes = common.cluster_sizes(data.labellings[k])
    listed = {f.cluster_id for f in scored}
    for f in scored:
        st.page_link(
            common.PAGES["cluster"],
            label=f"c{f.cluster_id} · score {score_text(f.score)} · n={f.size:,}"
            + (" ⚠" if f.suspicious else ""),
            query_params={"run": run, "cluster": f.key},
        )
    for cid in np.flatnonzero(sizes):
        if int(cid) not in listed:
            st.page_link(
                common.PAGES["cluster"],
                label=f"c{cid} · unscored · n={int(sizes[cid]):,}",
                query_params={"run": run, "cluster": f"{cls}/k{k}/c{cid}"},
            )


def _signature(ev: Any) -> str:
    try:
        sel = ev["selection"]
        return repr(
            (sel.get("point_indices"), sel.get("box"), sel.get("lasso"), len(sel.get("points") or []))
        )
    except (KeyError, TypeError):
        return ""


# --- what is selected -----------------------------------------------------------------------------------
sig = _signature(event)
last_sig = st.session_state.get(f"_sig_{view_key}", "")
if cmap_view is None:
    # No chart, no event: the selection stays as it is (and a chart shown again starts empty).
    last_sig = sig = st.session_state[f"_sig_{view_key}"] = ""
chart_picked = (
    selection.event_positions(event, cmap_view.trace_positions, cmap_view.xy) if sig and cmap_view else []
)
if sig != last_sig:
    st.session_state[f"_sig_{view_key}"] = sig
    if chart_picked:
        state["sel"] = urlstate.encode_ids([class_ids[i] for i in chart_picked])
        state["geo"] = embedmap.encode_geometry(event) or ""
        state.pop("spage", None)
        st.session_state["_sel_source"] = f"class {cls} selection"
    elif last_sig:
        for name in ("sel", "geo"):  # the user cleared the selection on the chart
            state.pop(name, None)

st.markdown("**Select by**")
carriers = [c for f in scored for c in f.carrier_ids]
b = st.columns(4)
choices = {
    "misclassified": ("misclassified", []),
    "low confidence": ("low confidence", []),
    "flagged": ("flagged", []),
    "carriers": ("carriers", carriers),
}
for i, (name, (filt, extra)) in enumerate(choices.items()):
    if b[i].button(name, key=f"selby_{name}", disabled=name == "carriers" and not extra, width="stretch"):
        ids = samplegrid.apply_filters(
            path,
            class_ids,
            [filt],
            conf=samplegrid.LOW_CONFIDENCE,
            flagged=flagform.status_of(dataset),
            carrier_ids=extra,
        )
        state["sel"], state["geo"] = urlstate.encode_ids(ids), ""
        state.pop("spage", None)
        st.session_state["_sel_source"] = f"class {cls}: {name}"
        # the map drew the previous box and its points as selected while the form named these samples
        map_geo[view_key] = ""
        st.session_state["_chart_gen"] = st.session_state.get("_chart_gen", 0) + 1
        st.session_state[f"_sig_{view_key}"] = ""
        if cmap_view is not None:
            st.rerun()

sel_ids: list[str] = []
if state.get("sel"):
    try:
        sel_ids = urlstate.decode_ids(state["sel"])
    except ValueError as err:
        st.warning(f"{safetext.md(str(err)[:1].upper() + str(err)[1:])}; select again on the map.")
        state.pop("sel", None)
outside = [s for s in sel_ids if s not in position]
if outside:
    st.warning(
        f"{len(outside):,} sample ids of this selection are not in class {cls} of this run "
        "(a link from another run?); they are left out."
    )
sel_ids = [s for s in sel_ids if s in position]


def draw_param() -> int | None:
    """``draw`` in the URL only where it differs from what the link would open with."""
    return None if interactive == bool(state.get("geo")) else int(interactive)


def push() -> None:
    """The URL of this view: class, k, colouring and the selection with its grid's settings."""
    has = bool(sel_ids)
    urlstate.push_url(
        run=run, cls=cls, k=k, color=color_by, draw=draw_param(), sel=state.get("sel") if has else None,
        geo=(state.get("geo") or None) if has else None, spage=state.get("spage") if has else None,
        mode=state.get("mode") if has else None, cmap=state.get("cmap") if has else None,
    )  # fmt: skip


push()
if not sel_ids:
    st.caption(
        "Drag a box or lasso on the map (tools at its top right), click points, or select by a filter above."
        if interactive
        else "Turn on “Select on the map” to draw a box or lasso or click points, or select by a filter above."
    )
    st.stop()

# --- selection → grid and flags -------------------------------------------------------------------------
source = str(st.session_state.get("_sel_source", f"class {cls} selection"))
selection.set_selection(run, sel_ids, source)
st.subheader(f"Selection: {len(sel_ids):,} samples")
pos = np.fromiter((position[s] for s in sel_ids), dtype=np.int64, count=len(sel_ids))
picked = data.labellings[k][pos]
by_cluster = common.cluster_sizes(picked, minlength=k)
in_no_group = int((picked < 0).sum())  # the hot-spot labelling (k = 0): in no group
st.caption(
    f"By cluster (k={k}): "
    + ", ".join(
        [f"c{c}: {n}" for c, n in enumerate(by_cluster) if n]
        + ([f"in no group: {in_no_group}"] if in_no_group else [])
    )
)
st.page_link(
    common.PAGES["cluster"],
    label="Open the selection on its own page",
    query_params={"run": run, "view": "selection", "sel": state["sel"]},
    icon=":material/grid_view:",
)
flagform.flag_controls(
    dataset=dataset, sample_ids=sel_ids, run_id=summary.run_id, cluster_key=None, source=source,
    key="class_sel",
)  # fmt: skip
mode, cmap = samplegrid.grid_controls("class_grid", has_thumbs=common.has_thumbs(path))
samplegrid.colour_bar(cmap)
page = samplegrid.page_picker(len(sel_ids), "class_grid", name="spage")
push()
samplegrid.render_grid(path, sel_ids, mode=mode, cmap=cmap, page=page)

"""Cluster / selection: the mean heatmap, the full evidence and a paged, filterable grid of every member.

A cluster is addressed by its key (``6/k5/c4``, any stored k) and a selection by its sample ids
(``view=selection&sel=...``); a key the run does not have says "not found" and why. Order, filters, grid
mode, colour map and page are in the URL, so one link always shows the same samples.
"""

from __future__ import annotations

from pathlib import Path

import common
import conceptview
import correctionnote
import flagform
import htmltable
import numpy as np
import pandas as pd
import safetext
import samplegrid
import selection
import streamlit as st
import urlstate

from spray import imaging
from spray.errors import ConfigError
from spray.records import score_text
from spray.runs.keys import HOTSPOT_K, finding_key
from spray.runs.reader import key_space
from spray.runs.summary import FindingSummary

path, summary = common.require_run()
run = Path(path).name
dataset = common.dataset_key(summary)
found = common.findings(path)
by_key = {f.key: f for f in found}
state = urlstate.nav()
tab = common.samples(path)
SEL = "selection"


def _where(f: FindingSummary) -> str:
    """Which labelling a finding is a cluster of, in words (concept space and hot spots named)."""
    if f.space == "concept":
        return f"cluster {f.cluster_id} of the concept-space k={f.k} labelling"
    if f.k == HOTSPOT_K:
        return f"hot-spot group {f.cluster_id}"
    return f"cluster {f.cluster_id} of k={f.k}"


def why_not(key: str) -> str:
    """Why the run has no cluster ``key``."""
    try:
        c, k, cid = common.parse_cluster_key(key)
    except ValueError as err:
        return str(err)
    analysed = {e.class_index for e in summary.classes}
    if c not in analysed:
        return f"class {c} was not analysed in this run (analysed: {', '.join(map(str, sorted(analysed)))})"
    data = common.class_data(path, c)
    if key_space(key) == "concept":
        cks = sorted(data.concept_labellings)
        if k not in cks:
            return f"class {c} has concept-space labellings for k = {', '.join(map(str, cks)) or 'none'}, not k={k}"
        return f"at k={k} class {c} has the concept clusters c0–c{int(data.concept_labellings[k].max())}, not c{cid}"
    ks = common.available_ks(data)
    if k not in ks:
        spots = f" ({HOTSPOT_K}: its hot-spot groups)" if HOTSPOT_K in ks else ""
        return f"class {c} has labellings for k = {', '.join(map(str, ks))}{spots}, not k={k}"
    present = sorted({int(x) for x in data.labellings[k] if x >= 0})  # hot-spot groups: -1 is no group
    what = "hot-spot groups" if k == HOTSPOT_K else f"clusters at k={k}"
    return f"class {c} has the {what} {', '.join(f'c{i}' for i in present) or 'none'}, not c{cid}"


# --- what to show: a cluster key or a selection ---------------------------------------------------------
if "cluster" in urlstate.fresh() and "view" not in urlstate.fresh():
    # A followed link to a cluster (this page's links carry one of cluster= or view=selection, never both).
    state.pop("view", None)
sel_ids: list[str] = []
if state.get("view") == SEL:
    if state.get("sel"):
        try:
            sel_ids = urlstate.decode_ids(state["sel"])
        except ValueError as err:
            common.not_found("the selection of this link", safetext.md(err))
    elif (remembered := selection.get_selection(run)) is not None:
        sel_ids = remembered["sample_ids"]
        state["sel"] = urlstate.encode_ids(sel_ids)
    if not sel_ids:
        state.pop("view", None)
        common.not_found("a selection", "this link carries none: select samples on the Class page first")
elif state.get("cluster") and not common.cluster_exists(path, state["cluster"]):
    bad = state.pop("cluster")
    try:  # the report's class and cluster columns (Shirt/k3/c2), as spray flags set --finding takes them
        common.parse_cluster_key(bad)
        named = None
    except ValueError:
        try:
            named = finding_key(summary.findings, bad, Path(path), "cluster=", summary.classes_skipped)
        except ConfigError:
            named = None
    if named is not None:
        state["cluster"] = named
    else:
        common.not_found(f"cluster {safetext.code(bad)}", safetext.md(why_not(bad)))

remembered = selection.get_selection(run)
options = [f.key for f in found]
if state.get("cluster") and state["cluster"] not in options:
    options.append(state["cluster"])  # an unscored cluster of another k, addressed by its key
if sel_ids or remembered is not None:
    options = [SEL, *options]
if not options:
    st.info("This run has no clusters and there is no selection: select samples on the Class page.")
    st.stop()
default = SEL if state.get("view") == SEL else state.get("cluster", options[0])
source_of_sel = str(
    st.session_state.get("_sel_source") or (remembered or {}).get("source") or "linked selection"
)


def label(o: str) -> str:
    if o == SEL:
        return safetext.plain(
            f"Selection ({len(sel_ids or (remembered or {}).get('sample_ids', [])):,} samples, {source_of_sel})"
        )
    f = by_key.get(o)
    if f is None:
        return f"{o} (unscored)"
    return safetext.plain(
        f"#{f.rank} · {f.class_name} · c{f.cluster_id} (k={f.k}) · score {score_text(f.score)} · n={f.size:,}"
    )


def _warn_renamed(key: str, ids: list[str]) -> None:
    """After a switch of runs: say when ``key`` named another group in the run switched from (keys are per
    run: an outside check flagged 24 samples under a name whose 23 in the other run shared 4 with them)."""
    old = st.session_state.pop("switched_from_run", None)
    old_path = str(Path(path).parent / str(old)) if old else None
    if old_path is None or old == run or not common.cluster_exists(old_path, key):
        return
    before = set(common.members(old_path, key))
    shared = len(before & set(ids))
    if shared < 0.9 * max(len(before), len(ids)):
        st.warning(
            f"In run {safetext.code(str(old)[:24])}, {safetext.code(key)} was another group: {len(before):,} samples, "
            f"{shared:,} of them among these {len(ids):,}. A cluster's key is its class, k and number in one run; "
            "open this run's findings (Overview) to find that group here."
        )


def switched() -> None:
    for name in ("page", "filter"):
        state.pop(name, None)
    if state["target"] == SEL:
        state["view"] = SEL
    else:
        state["cluster"] = state["target"]
        state.pop("view", None)


st.title("Cluster / selection")
# What the link or the last choice in the box addresses (``view``/``cluster``), not the box's remembered value:
# a link followed after another cluster was open showed that one again.
state["target"] = default
target = urlstate.nav_select("Cluster", options, "target", default=default, format_func=label, then=switched)
key: str | None
finding: FindingSummary | None
if target == SEL:
    if not sel_ids and remembered is not None:
        sel_ids = remembered["sample_ids"]
        state["sel"] = urlstate.encode_ids(sel_ids)
    ids, missing = common.known(path, sel_ids)
    if missing:
        st.warning(f"{len(missing):,} sample ids of this selection are not in this run; they are left out.")
    key, finding, source = None, None, source_of_sel
    state.pop("cluster", None)
    state["view"] = SEL
else:
    key, finding, source = target, by_key.get(target), f"cluster {target}"
    ids = common.members(path, key)
    state["cluster"] = key
    state.pop("view", None)
    _warn_renamed(key, ids)
flags = flagform.status_of(dataset, ids)

# --- summary, evidence, flag form -----------------------------------------------------------------------
left, right = st.columns([1, 3])
with left:
    # One colour map per page: the grid's picker (below) also colours the mean heatmap.
    cmap = str(state.get("cmap") if state.get("cmap") in imaging.COLORMAPS else imaging.DEFAULT_COLORMAP)
    mh = common.mean_heatmap(path, key, ids)
    # A data URI: the picture comes with the page, no file request queued behind the page's code.
    st.image(
        imaging.png_data_uri(imaging.resize_nearest(imaging.colorize(mh, cmap), 224)),
        caption="mean heatmap (normalised members)",
    )
with right:
    if finding is not None:
        st.markdown(
            f"**{safetext.md(finding.class_name)}**, {_where(finding)} — "
            f"score **{score_text(finding.score)}**{' (suspicious)' if finding.suspicious else ''}, "
            f"{finding.size:,} samples ({100 * finding.fraction:.1f} % of the class)"
        )
        if conceptview.is_concept(finding):
            st.markdown(conceptview.describe(finding))
        st.markdown("\n".join(f"- {safetext.md(line)}" for line in finding.evidence))
        carriers = [str(c) for c in finding.carrier_ids]
        # Samples outside the cluster that repeat its stamp: open them as a selection to see and flag.
        if carriers and st.button(f"Show the {len(carriers):,} carriers as a selection", key="cl_carriers"):
            selection.set_selection(run, carriers, f"carriers of {target}")
            st.session_state["_sel_source"] = f"carriers of {target}"
            state.update(view=SEL, target=SEL, sel=urlstate.encode_ids(carriers))
            switched()
            st.rerun()
        with st.expander("Signals"):
            # A static table: the data grid's code is not needed for one row of numbers.
            st.html(
                htmltable.render(
                    list(finding.signals),
                    [htmltable.Row([htmltable.number(v, "{:.4g}") for v in finding.signals.values()])],
                    "signals",
                )
            )
    else:
        st.markdown(f"**{len(ids):,} samples** ({safetext.md(source)})")
    sub = tab.loc[ids]
    st.caption(
        "Labels: "
        + ", ".join(f"{safetext.md(n)} {c}" for n, c in sub["label_name"].value_counts().head(5).items())
        + " · predictions: "
        + ", ".join(f"{safetext.md(n)} {c}" for n, c in sub["prediction_name"].value_counts().head(5).items())
        + f" · flags: {flagform.status_text(flags.values()) or 'none'}"
    )
    flagform.flag_controls(
        dataset=dataset,
        sample_ids=ids,
        run_id=summary.run_id,
        cluster_key=key,
        source=source,
        key="cluster",
    )
    correctionnote.show(dataset, ids, run, summary.run_id)

# --- members: filter, order, grid, table ----------------------------------------------------------------
grid_ids, maps_of = list(ids), None
if finding is not None and conceptview.is_concept(finding):
    grid_ids, maps_of = conceptview.member_maps(path, finding, ids)
st.subheader(f"Members ({len(ids):,})")
if len(grid_ids) < len(ids):
    st.caption(
        f"The grid shows the {len(grid_ids):,} members with a stored concept-conditional heatmap (those with the "
        "highest share in the finding's channels); its filters and pages act on them. The *plain* heatmaps show "
        "every member."
    )
carrier_ids = [str(c) for c in finding.carrier_ids] if finding is not None else []
filters, conf = samplegrid.filter_controls("cl", carriers=bool(carrier_ids))
c1, c2 = st.columns([3, 1])
with c1:
    mode, grid_cmap = samplegrid.grid_controls("cl_grid", has_thumbs=common.has_thumbs(path))
order = urlstate.nav_widget(
    c2.selectbox,
    "Order",
    "sort",
    default="row",
    valid=lambda v: v in samplegrid.SORTS,
    options=list(samplegrid.SORTS),
)
shown = samplegrid.apply_filters(path, grid_ids, filters, conf=conf, flagged=flags, carrier_ids=carrier_ids)
if filters:
    st.caption(
        f"{len(shown):,} of {len(grid_ids):,} members pass the filter ({safetext.md(', '.join(filters))})."
    )
shown = samplegrid.sort_ids(path, shown, str(order))
samplegrid.colour_bar(grid_cmap)
page = samplegrid.page_picker(len(shown), "cl_grid")
urlstate.push_url(
    run=run,
    **({"view": SEL, "sel": state.get("sel")} if key is None else {"cluster": key}),
    page=page if page > 1 else None,
    mode=state.get("mode") if state.get("mode") != "overlay" else None,
    cmap=state.get("cmap") if state.get("cmap") != imaging.DEFAULT_COLORMAP else None,
    sort=state.get("sort") if state.get("sort") != "row" else None,
    filter=state.get("filter") or None,
    conf=state.get("conf") if filters and "low confidence" in filters else None,
    heat=state.get("heat") if state.get("heat") not in (None, conceptview.SOURCES[0]) else None,
    table=1 if state.get("table") == "1" else None,
)
page_table = samplegrid.render_grid(path, shown, mode=mode, cmap=grid_cmap, page=page, maps_of=maps_of)
# The table is asked for, not opened with the page: its data-grid code (~1.3 MB, ~30 modules) held the first
# paint of the whole page back until it had loaded.
picks = samplegrid.Picks([], [], [])
if urlstate.nav_widget(
    st.toggle, "Pick samples of this page in a table", "table", default=False, parse=urlstate.parse_bool
):
    st.caption("Click a row to see that sample here (select several rows to flag only those).")
    picks = samplegrid.member_table(page_table, flags, key="cl_members")
    samplegrid.say_picks_changed("cl_members", picks)
if picks.sample_ids:
    row_of = {str(s): i for i, s in enumerate(page_table["sample_id"])}
    chosen = page_table.iloc[[row_of[s] for s in picks.sample_ids]]
    one = chosen.iloc[0]
    one_id = str(one["sample_id"])
    heat = np.asarray(common.heatmaps(path, [one_id]) if maps_of is None else maps_of[one_id][None])
    imgs = common.thumbs(path, [str(one["sample_id"])])
    big = imaging.render(mode, heat, imgs, grid_cmap, size=224)[0]
    d1, d2 = st.columns([1, 2])
    d1.image(big, caption=safetext.plain(f"sample {one['sample_id']}"))
    d2.markdown(
        f"**sample id** {safetext.code(one['sample_id'])}  \n**label** {safetext.md(one['label_name'])}  \n"
        f"**prediction** {safetext.md(one['prediction_name'])} ({float(one['confidence']):.3f})  \n"
        f"**flag** {safetext.md(flags.get(str(one['sample_id']), '—'))}"
    )
    d2.page_link(
        common.PAGES["sample"],
        label="Open this sample at full size",
        query_params={"run": run, "sample": str(one["sample_id"])},
        icon=":material/open_in_full:",
    )
    reader = flagform.reader()
    hist = [] if reader is None else reader.history(dataset, str(one["sample_id"]), limit=20)
    if hist:
        d2.dataframe(
            pd.DataFrame([(h.created_at, h.status, h.author, h.note, h.source) for h in hist],
                         columns=["when", "status", "author", "note", "source"]),
            hide_index=True,
        )  # fmt: skip
    with d2:
        flagform.flag_controls(
            dataset=dataset,
            sample_ids=chosen["sample_id"].astype(str).tolist(),
            run_id=summary.run_id,
            cluster_key=key,
            source=f"{source}, picked rows",
            key="cluster_rows",
            reset_keys=["cl_members"],
        )
else:
    flagform.saved_note("cluster_rows")

if finding is not None and conceptview.is_concept(finding):
    conceptview.references(path, summary, finding, grid_cmap)

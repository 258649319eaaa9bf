"""Cluster / selection: the mean heatmap and a paged grid of every member, with flagging."""

from __future__ import annotations

from pathlib import Path

import common
import numpy as np
import pandas as pd
import streamlit as st

from spray import imaging

path, summary = common.require_run()
run = Path(path).name
dataset = common.dataset_key(summary)
found = common.findings(path)
state = common.nav()
selection = common.get_selection(run)

# What to show: a cluster key ("6/k5/c4", any stored k) or the current selection.
SEL = "selection"
options = [f["key"] for f in found]
if state.get("cluster") and state["cluster"] not in options:
    try:
        c, k, cid = common.parse_cluster_key(state["cluster"])
        if len(common.cluster_rows(path, state["cluster"])):
            options.append(state["cluster"])
    except (ValueError, KeyError, FileNotFoundError):
        pass
if selection is not None:
    options = [SEL, *options]
if not options:
    st.info("This run has no clusters and there is no selection: select samples on the Class page.")
    st.stop()
by_key = {f["key"]: f for f in found}
default = SEL if state.get("view") == SEL and selection is not None else state.get("cluster", options[0])


def label(o: str) -> str:
    if o == SEL:
        return f"Current selection ({len(selection['rows']):,} samples, {selection['source']})"  # type: ignore[index]
    f = by_key.get(o)
    if f is None:
        return f"{o} (unscored)"
    return f"#{f.get('rank', '?')} · {f['class_name']} · c{f['cluster_id']} (k={f['k']}) · score {f['score']:.2f} · n={f['size']:,}"


st.title("Cluster / selection")
target = common.nav_select("Cluster", options, "target", default=default, format_func=label)
if target == SEL:
    assert selection is not None
    rows = np.asarray(selection["rows"], dtype=np.int64)
    key, finding, source = None, None, selection["source"]
    state.pop("cluster", None)
    state["view"] = SEL
else:
    key, finding, source = target, by_key.get(target), f"cluster {target}"
    rows = common.cluster_rows(path, key)
    state["cluster"] = key
    state.pop("view", None)

tab = common.samples(path)
ids = tab["sample_id"].to_numpy()[rows].tolist()
flags = common.store().status_of(dataset, ids)

left, right = st.columns([1, 3])
with left:
    # One colour map per page: the grid's picker (below) also colours the mean heatmap.
    cmap = str(st.session_state.get("cl_grid_cmap", imaging.DEFAULT_COLORMAP))
    mh = common.mean_heatmap(path, key, rows)
    st.image(
        imaging.resize_nearest(imaging.colorize(mh, cmap), 224), caption="mean heatmap (normalised members)"
    )
with right:
    if finding is not None:
        st.markdown(
            f"**{finding['class_name']}**, cluster {finding['cluster_id']} of k={finding['k']} — "
            f"score **{finding['score']:.2f}**{' (suspicious)' if finding['suspicious'] else ''}, "
            f"{finding['size']:,} samples ({100 * finding['fraction']:.1f} % of the class)"
        )
        for line in finding["evidence"]:
            st.markdown(f"- {line}")
        carriers = finding.get("carrier_ids", [])
        # Samples outside the cluster that repeat its stamp: open them as a selection to see and flag.
        if carriers and st.button(f"Show the {len(carriers):,} carriers as a selection", key="cl_carriers"):
            row_of = {sid: i for i, sid in enumerate(tab["sample_id"].to_numpy())}
            common.set_selection(run, [row_of[c] for c in carriers if c in row_of], f"carriers of {target}")
            state["view"] = state["target"] = SEL
            st.rerun()
        with st.expander("Signals"):
            st.dataframe(pd.DataFrame([finding["signals"]]), hide_index=True)
    else:
        st.markdown(f"**{len(rows):,} samples** ({source})")
    sub = tab.iloc[rows]
    st.caption(
        "Labels: "
        + ", ".join(f"{n} {c}" for n, c in sub["label_name"].value_counts().head(5).items())
        + " · predictions: "
        + ", ".join(f"{n} {c}" for n, c in sub["prediction_name"].value_counts().head(5).items())
        + f" · flagged: {len(flags):,}"
    )
    common.flag_controls(
        dataset=dataset,
        sample_ids=ids,
        run_id=summary.get("run_id", ""),
        cluster_key=key,
        source=source,
        key="cluster",
    )

st.subheader(f"Members ({len(rows):,})")
c1, c2 = st.columns([3, 1])
with c1:
    mode, grid_cmap = common.grid_controls("cl_grid")
sort = c2.selectbox("Order", ["row", "confidence ↑", "confidence ↓"], key="cl_sort")
if sort != "row":
    conf = tab["confidence"].to_numpy()[rows]
    rows = rows[np.argsort(conf if sort == "confidence ↑" else -conf, kind="stable")]
page = common.page_picker(len(rows), "cl_grid")
common.push_url(
    run=run, **({"view": SEL} if key is None else {"cluster": key}), page=page if page > 1 else None
)
page_table = common.render_grid(path, rows, mode=mode, cmap=grid_cmap, page=page)
st.caption("Rows of this page (select rows to flag only those, or to see one sample large):")
picked = common.member_table(page_table, flags, key="cl_members")
if picked:
    chosen = page_table.iloc[picked]
    one = chosen.iloc[0]
    r = int(one["row"])
    th = common.thumbs(path)
    heat = np.asarray(common.heatmaps(path)[r : r + 1])
    imgs = None if th is None else np.asarray(th[r : r + 1])
    big = imaging.render(mode, heat, imgs, grid_cmap, size=224)[0]
    d1, d2 = st.columns([1, 2])
    d1.image(big, caption=f"sample {one['sample_id']}")
    d2.markdown(
        f"**sample id** `{one['sample_id']}`  \n**label** {one['label_name']}  \n"
        f"**prediction** {one['prediction_name']} ({one['confidence']:.3f})  \n**flag** {flags.get(one['sample_id'], '—')}"
    )
    hist = common.store().history(dataset, str(one["sample_id"]), limit=20)
    if hist:
        d2.dataframe(pd.DataFrame(hist)[["created_at", "status", "note", "source"]], hide_index=True)
    with d2:
        common.flag_controls(
            dataset=dataset,
            sample_ids=chosen["sample_id"].tolist(),
            run_id=summary.get("run_id", ""),
            cluster_key=key,
            source=f"{source}, picked rows",
            key="cluster_rows",
        )

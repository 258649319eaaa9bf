"""Flags: every current flag with its history, unflagging, and export for unlearning."""

from __future__ import annotations

from pathlib import Path

import common
import pandas as pd
import streamlit as st

from spray.flags import EXPORT_FORMATS, MIME_TYPES, STATUSES, frame_to_bytes

st.title("Flags")
store = common.store()
cur = common.current_run()
run_dataset = None
if cur is not None:
    run_dataset = common.dataset_key(common.run_data(str(Path(cur[0]) / cur[1])).summary)
datasets = sorted(set(store.datasets()) | ({run_dataset} if run_dataset else set()))
if not datasets:
    st.info("No flags yet. Flag a cluster or a selection on the Cluster or Class page.")
    st.stop()
dataset = common.nav_select("Dataset", datasets, "dataset", default=run_dataset)
common.push_url(**({"run": cur[1]} if cur else {}), dataset=dataset)
st.caption(
    f"Flags are keyed by (dataset, sample id), so they carry over to every run of `{dataset}`. Database: `{store.path}`"
)

counts = store.counts(dataset)
m = st.columns(len(STATUSES))
for i, s in enumerate(STATUSES):
    m[i].metric(s, f"{counts.get(s, 0):,}")

status_filter = st.segmented_control(
    "Show", ["all", *STATUSES], default="all", key="fl_status", required=True
)
rows = store.current(dataset, None if status_filter == "all" else status_filter)
current = pd.DataFrame(
    rows, columns=["sample_id", "status", "note", "cluster_key", "run_id", "source", "flagged_at"]
)
st.subheader(f"Current flags ({len(current):,})")
ev = st.dataframe(
    current, hide_index=True, on_select="rerun", selection_mode="multi-row", key="fl_current", height=320
)
picked = list(ev["selection"]["rows"]) if ev and ev["selection"] else []
if picked:
    chosen = current.iloc[picked]["sample_id"].tolist()
    common.flag_controls(
        dataset=dataset,
        sample_ids=chosen,
        run_id=cur[1] if cur else "",
        cluster_key=None,
        source="flags page",
        key="flags_page",
        reset_keys=["fl_current"],
    )

st.subheader("Export for unlearning")
ex_status = st.selectbox("Which flags", [*STATUSES, "all"], key="fl_export_status")
frame = store.export_frame(dataset, None if ex_status == "all" else ex_status)
st.caption(
    f"{len(frame):,} samples. Same output as `spray flags export --db {store.path} --format csv --status {ex_status}`."
)
cols = st.columns(len(EXPORT_FORMATS))
safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in dataset)
for i, fmt in enumerate(EXPORT_FORMATS):
    cols[i].download_button(
        f"Download {fmt.upper()}",
        data=frame_to_bytes(frame, fmt),
        file_name=f"spray-flags-{safe}-{ex_status}.{fmt}",
        mime=MIME_TYPES[fmt],
        key=f"fl_dl_{fmt}",
        on_click="ignore",
    )

st.subheader("History")
actions = pd.DataFrame(store.actions(dataset, limit=500))
if not actions.empty:
    st.dataframe(
        actions[["created_at", "status", "n_samples", "note", "cluster_key", "source", "run_id"]],
        hide_index=True,
        key="fl_actions",
    )
with st.expander("Every event (newest 2,000)"):
    st.dataframe(pd.DataFrame(store.history(dataset, limit=2000)), hide_index=True, key="fl_events")

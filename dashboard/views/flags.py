"""Flags: every current flag with its author and history, unflagging, and export for unlearning."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import common
import flagform
import pandas as pd
import safetext
import samplegrid
import streamlit as st
import urlstate

from spray.errors import SprayError
from spray.flags import EXPORT_FORMATS, MIME_TYPES, STATUSES, frame_to_bytes

st.title("Flags")
cur = common.current_run()
store = flagform.reader()
run_dataset, run_id = None, ""
if cur is not None:
    run_summary = common.summary(str(Path(cur[0]) / cur[1]))
    run_dataset, run_id = common.dataset_key(run_summary), run_summary.run_id
datasets = sorted(set(store.datasets() if store else []) | ({run_dataset} if run_dataset else set()))
if not datasets:
    st.info("No flags yet. Flag a cluster or a selection on the Cluster or Class page.")
    st.stop()
state = urlstate.nav()
if state.get("dataset") and state["dataset"] not in datasets:
    bad = state.pop("dataset")
    common.not_found(f"dataset {safetext.code(bad)}", "no flags and no run of that dataset here")
dataset = urlstate.nav_select("Dataset", datasets, "dataset", default=run_dataset, format_func=safetext.plain)
status_filter = urlstate.nav_widget(
    st.segmented_control, "Show", "status", default="all", valid=lambda v: v in ("all", *STATUSES),
    options=["all", *STATUSES], required=True,
)  # fmt: skip
urlstate.push_url(
    **({"run": cur[1]} if cur else {}),
    dataset=dataset,
    status=status_filter if status_filter != "all" else None,
)
st.caption(
    f"Flags are keyed by (dataset, sample id), so they carry over to every run of {safetext.code(dataset)}. "
    f"Database: {safetext.code(flagform.db_label())}"
)


def metrics() -> None:
    """Counts per status (the sidebar's counts are re-read every few seconds)."""
    try:
        counts = flagform.counts(dataset)
    except SprayError as err:  # say it here, above the tables
        st.error(safetext.md(str(err)))
        return
    m = st.columns(len(STATUSES))
    for i, s in enumerate(STATUSES):
        m[i].metric(s, f"{counts.get(s, 0):,}")


metrics()
if cur is not None and dataset == run_dataset:  # the export below would name these ids as they are
    flagform.content_warning(dataset, str(Path(cur[0]) / cur[1]))
rows = [] if store is None else store.current(dataset, None if status_filter == "all" else status_filter)
cols = ["sample_id", "status", "author", "note", "cluster_key", "run_id", "source", "flagged_at"]
current = pd.DataFrame([{c: asdict(r)[c] for c in cols} for r in rows], columns=cols)
st.subheader(f"Current flags ({len(current):,})")
picks = samplegrid.picked_rows(
    "fl_current",
    current["sample_id"].astype(str).tolist(),
    lambda widget: st.dataframe(
        current, hide_index=True, on_select="rerun", selection_mode="multi-row", key=widget, height=320
    ),
)
samplegrid.say_picks_changed("fl_current", picks)
if picks.sample_ids:
    flagform.flag_controls(
        dataset=dataset,
        sample_ids=picks.sample_ids,
        # the run's id (not its folder): flagform records each flag's image and class from the run of that id
        run_id=run_id if dataset == run_dataset else "",
        cluster_key=None,
        source="flags page",
        key="flags_page",
        reset_keys=["fl_current"],
    )
else:
    flagform.saved_note("flags_page")

st.subheader("Export for unlearning")
ex_status = st.selectbox("Which flags", [*STATUSES, "all"], key="fl_export_status")
if store is None:
    st.caption("Nothing to export yet.")
    st.stop()
# Flags whose ids now name other images (a replaced or renamed file) never reach an unlearning job.
checked = cur is not None and dataset == run_dataset  # against this dataset's run on the page
skip = flagform.left_out(dataset, str(Path(cur[0]) / cur[1])) if cur is not None and checked else set()
frame = store.export_frame(dataset, None if ex_status == "all" else ex_status, leave_out=skip)
# Only the left-out flags of the status exported count: the others were never in this download.
exported = {(dataset, f.sample_id) for f in store.current(dataset, None if ex_status == "all" else ex_status)}
n_out, n_others = len(skip & exported), len(skip - exported)
source = "--runs-dir RUNS" if checked else "--db DB"
st.caption(
    f"{len(frame):,} samples. Same output as `spray flags export {source} --format csv --status {ex_status}` "
    "(CSV cells that a spreadsheet would run as formulas start with `'`; JSON and Parquet keep every value)."
    + (
        f" **{n_out:,} flags are left out:** they no longer name the images they were set on (see "
        "**Flags on other images** above)."
        if n_out
        else ""
    )
    + (
        f" {n_others:,} flags of other statuses (not in this export) no longer name their images either."
        if n_others
        else ""
    )
)
cols_dl = st.columns(len(EXPORT_FORMATS))
safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in dataset)
for i, fmt in enumerate(EXPORT_FORMATS):
    cols_dl[i].download_button(
        f"Download {fmt.upper()}",
        data=frame_to_bytes(frame, fmt),
        file_name=f"spray-flags-{safe}-{ex_status}.{fmt}",
        mime=MIME_TYPES[fmt],
        key=f"fl_dl_{fmt}",
        on_click="ignore",
    )

st.subheader("History")
actions = store.actions(dataset, limit=500)
if actions:
    st.dataframe(
        pd.DataFrame([asdict(a) for a in actions])[
            ["created_at", "status", "n_samples", "author", "note", "cluster_key", "source", "run_id"]
        ],
        hide_index=True,
        key="fl_actions",
    )
with st.expander("Every event (newest 2,000)"):
    st.dataframe(
        pd.DataFrame([asdict(e) for e in store.history(dataset, limit=2000)]),
        hide_index=True,
        key="fl_events",
    )

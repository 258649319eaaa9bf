"""Overview: the ranked suspicious clusters of a run across all classes, and what changed since the last run."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import common
import flagform
import pandas as pd
import safetext
import streamlit as st
import urlstate

from spray.errors import SprayError
from spray.imaging import COLORMAPS, DEFAULT_COLORMAP

st.title("Suspicious clusters")
cur = common.current_run()
if cur is None:
    st.info(common.HOW_TO_MAKE_A_RUN.format(runs=common.runs_dir()))
    st.stop()
runs, run = cur
path = str(Path(runs) / run)
summary = common.run_data(path).summary
dataset = common.dataset_key(summary)
found = common.findings(path)


def metrics() -> None:
    """The run's figures (the sidebar's flag counts are the live ones)."""
    m = st.columns(5)
    m[0].metric("Samples", f"{summary.get('n_samples', 0):,}")
    m[1].metric("Classes analysed", len(summary.get("classes", [])))
    m[2].metric("Clusters scored", len(found))
    m[3].metric("Suspicious", sum(bool(f["suspicious"]) for f in found))
    try:
        flagged_now = f"{flagform.counts(dataset).get('unlearn', 0):,}"
    except SprayError as err:  # the flag database cannot be read: say so here, the figures still show
        flagged_now = "?"
        st.error(safetext.md(str(err)))
    m[4].metric("Flagged (unlearn)", flagged_now)


metrics()
st.caption(
    f"Run {safetext.code(summary.get('run_id', '')[:12])} of dataset {safetext.code(dataset)} · "
    f"{safetext.md(common.run_label(run))}"
)

c1, c2, c3 = st.columns([1, 1, 2])
only_susp = urlstate.nav_widget(
    c1.toggle, "Suspicious only", "susp", default=False, parse=urlstate.parse_bool
)
top = urlstate.nav_widget(
    c2.number_input, "Show top", "top", default=min(25, max(5, len(found))), parse=int,
    valid=lambda v: 5 <= v <= max(5, len(found)), min_value=5, max_value=max(5, len(found)), step=5,
)  # fmt: skip
cmap = urlstate.nav_widget(
    c3.selectbox, "Heatmap colours", "cmap", default=DEFAULT_COLORMAP, valid=lambda v: v in COLORMAPS,
    options=list(COLORMAPS),
)  # fmt: skip
urlstate.push_url(
    run=run, susp=int(only_susp) or None, top=top, cmap=cmap if cmap != DEFAULT_COLORMAP else None
)

flagged = flagform.status_of(dataset)
shown = [f for f in found if f["suspicious"] or not only_susp][: int(top)]
unreadable: dict[str, str] = {}


def thumbnail(key: str) -> str | None:
    """The mean heatmap of a finding; a class whose files cannot be read loses its picture, not the page."""
    try:
        return common.mean_heatmap_uri(path, key, cmap)
    except common.RunFileError as err:
        unreadable.setdefault(err.file, err.reason)
        return None


table = pd.DataFrame(
    {
        "rank": [f.get("rank", i + 1) for i, f in enumerate(shown)],
        "heatmap": [thumbnail(f["key"]) for f in shown],
        "score": [f["score"] for f in shown],
        "class": [safetext.plain(f"{f['class_index']} · {f['class_name']}") for f in shown],
        "size": [f["size"] for f in shown],
        "share": [f["fraction"] for f in shown],
        "suspicious": [bool(f["suspicious"]) for f in shown],
        "flagged": [sum(1 for s in f["member_ids"] if s in flagged) for f in shown],
        "evidence": [safetext.plain(" ▸ ".join(f["evidence"]), limit=2000) for f in shown],
        "open": ["cluster?" + urlencode({"run": run, "cluster": f["key"]}) for f in shown],
        "key": [f["key"] for f in shown],
    }
)
for file, reason in unreadable.items():
    st.warning(
        f"Run {safetext.code(run)}: {safetext.code(file)} cannot be read ({safetext.md(reason)}); its findings are listed without their mean heatmap."
    )
st.caption("Click any cell of a row to open that cluster (the `open ↗` link opens it in a new tab).")
ev = st.dataframe(
    table,
    hide_index=True,
    on_select="rerun",
    selection_mode="single-cell",
    key="ov_findings",
    row_height=60,
    height=min(60 * len(table) + 40, 700),
    column_config={
        "heatmap": st.column_config.ImageColumn("mean heatmap", width="small"),
        "score": st.column_config.NumberColumn("score", format="%.2f"),
        "share": st.column_config.ProgressColumn(
            "share of class", min_value=0.0, max_value=1.0, format="percent"
        ),
        "evidence": st.column_config.TextColumn("evidence (all lines)", width="large"),
        "open": st.column_config.LinkColumn("link", display_text="open ↗"),
        "key": st.column_config.TextColumn("cluster key"),
    },
)
picked: list[int] = []
if ev and ev["selection"]:
    picked = list(ev["selection"].get("rows", [])) + [int(c[0]) for c in ev["selection"].get("cells", [])]
if picked and 0 <= picked[0] < len(table):
    key = table["key"].iloc[picked[0]]
    st.switch_page(common.PAGES["cluster"], query_params={"run": run, "cluster": key})

if shown:
    st.subheader("Evidence in full")
    # The first three findings in full, as one element (the table's evidence column holds every line of
    # every finding; one Markdown block keeps the first paint light).
    blocks = []
    for i, f in enumerate(shown[:3]):
        head = (
            f"**#{f.get('rank', i + 1)} · {safetext.md(f['class_name'])} · {safetext.code(f['key'])}** · "
            f"score {float(f['score']):.2f}{' · suspicious' if f['suspicious'] else ''} · {int(f['size']):,} samples"
        )
        lines = "\n".join(f"  - {safetext.md(line)}" for line in f["evidence"]) or "  - no evidence recorded"
        blocks.append(f"- {head}\n{lines}")
    st.markdown("\n".join(blocks))

st.subheader("Since the previous run")
if isinstance(summary.get("changes"), dict) and summary["changes"]:
    # Written by the nightly job: show what it recorded.
    for name, items in summary["changes"].items():
        if isinstance(items, list) and items:
            st.markdown(f"**{safetext.md(name)}** ({len(items)})")
            st.dataframe(pd.DataFrame(items), hide_index=True, key=f"ov_changes_{name}")
        elif not isinstance(items, list):
            st.caption(f"{safetext.md(name)}: {safetext.md(items)}")
else:
    prev = common.previous_run(runs, run, dataset)
    if prev is None:
        st.caption("No earlier run of this dataset to compare with.")
    else:
        diff = common.compare_runs(path, str(Path(runs) / prev))
        st.caption(
            f"Compared with {safetext.md(common.run_label(prev))}: clusters matched within each class by member "
            "overlap (Jaccard ≥ 0.3); grown = more than 20 % larger."
        )
        interesting = (
            diff[(diff["change"] != "same") & (diff["suspicious"] | diff["change"].isin(["new", "grown"]))]
            if not diff.empty
            else diff
        )
        if interesting.empty:
            st.success("No new or grown clusters.")
        else:
            st.dataframe(
                interesting.sort_values("score", ascending=False),
                hide_index=True,
                key="ov_changes",
                column_config={"score": st.column_config.NumberColumn(format="%.2f")},
            )

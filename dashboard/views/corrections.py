"""Corrections: what ``spray correct`` did about the picked run's flagged finding, before and after."""

from __future__ import annotations

from pathlib import Path

import common
import pandas as pd
import safetext
import streamlit as st

from spray.correct.html import render_correction_html
from spray.correct.record import settings_text
from spray.correct.run import corrections_for

st.title("Corrections")
path, summary = common.require_run()
run_id = summary.run_id
found = corrections_for(common.runs_dir(), run_id)
if not found and (found := corrections_for(common.runs_dir(), dataset=summary.dataset)):
    # made from an earlier run of the dataset, which retention (output.keep_runs) may have removed since
    st.caption(
        f"No correction of run {safetext.code(run_id[:12])} itself; these were made from earlier runs of the same "
        "dataset (their source runs may have been removed by retention since)."
    )
if not found:
    st.info(
        f"No correction of run {safetext.code(run_id[:12])} yet. Flag the finding's samples for unlearning (Cluster or "
        "Class page), then run `spray correct --config <the audit config>` (`--method pclarc`, `rrclarc` or "
        "`retrain`); published corrections of this run appear here on the next page load."
    )
    st.stop()


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


rows = []
for c in found:
    r, b, a, v = c.record, c.record.evaluation.before, c.record.evaluation.after, c.record.verdict
    rows.append(
        {
            "correction": c.folder.name,
            "method": r.method,
            "layer": r.direction.layer,
            "settings": settings_text(r.method, r.parameters),
            "class": r.group.class_name,
            "flagged": r.group.n_flagged,
            "flip rate": f"{_pct(b.flip_rate)} → {_pct(a.flip_rate)}",
            "relevance share": f"{_pct(b.relevance_share)} → {_pct(a.relevance_share)}",
            "clean accuracy": f"{_pct(b.clean_accuracy)} → {_pct(a.clean_accuracy)}",
            # test data and a held-out part of the audited data are not the same measurement
            "evaluated on": f"{r.evaluation.split} ({r.evaluation.n_clean:,})",
            "on its class": f"{_pct(b.class_accuracy)} → {_pct(a.class_accuracy)}",
            "re-audit": "not run (--no-reaudit)" if r.reaudit is None else r.reaudit.outcome,
        }
    )
st.caption(f"{len(found)} correction(s), newest first.")
st.dataframe(pd.DataFrame(rows), hide_index=True)
names = [c.folder.name for c in found]
picked = st.selectbox("Before and after", names, key="corr_pick")
chosen = found[names.index(picked)]
st.html(render_correction_html(chosen.record, chosen.folder))
reaudit = Path(chosen.folder) / "reaudit"
st.caption(
    f"Folder: {safetext.code(chosen.folder)}. Its re-audit is a run of its own: "
    f"{safetext.code(f'spray dashboard --runs-dir {reaudit}', limit=None)}."
)

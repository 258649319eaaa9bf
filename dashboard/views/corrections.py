"""Corrections: what ``spray correct`` did about a flagged finding of the picked run's dataset, before and after."""

from __future__ import annotations

from pathlib import Path

import common
import correctionnote
import pandas as pd
import safetext
import streamlit as st

from spray.correct.html import render_correction_html
from spray.correct.record import settings_text

st.title("Corrections")
path, summary = common.require_run()
run_id = summary.run_id
unreadable: list[tuple[Path, str]] = []
# every correction of the dataset: one made from another run (older, newer, or removed by retention) is
# still about this dataset's model, and hiding it made published corrections unreachable
found = correctionnote.dataset_corrections(summary.dataset, unreadable)
found.sort(key=lambda c: c.record.source_run_id != run_id)  # this run's first, each part newest first
for folder, reason in unreadable:
    st.warning(
        f"Correction folder {safetext.code(folder.name)} has a `correction.json` that cannot be read ({safetext.plain(reason)}): "
        "it is not listed. Remove the folder (to keep the correction, publish it again first: `spray correct` "
        "with its config)."
    )
if not found:
    st.info(
        f"No correction of dataset {safetext.code(summary.dataset)} yet. Flag the finding's samples for unlearning (Cluster or "
        "Class page), then run `spray correct --config <the audit config>` (`--method pclarc`, `rrclarc` or "
        "`retrain`); published corrections appear here on the next page load."
    )
    st.stop()


current = {cid: c.folder for cid, c in correctionnote.newest_of_each(found).items()}
rows = []
for c in found:
    r, b, a = c.record, c.record.evaluation.before, c.record.evaluation.after
    newer = current[r.correction_id]
    warnings = r.warnings()
    rows.append(
        {
            "correction": c.folder.name,
            "method": r.method,
            "re-audit": correctionnote.reaudit_text(c),
            "warnings": f"{len(warnings)}: {warnings[0][:80]}…" if warnings else "–",
            "source run": r.source_run_id[:12] + (" (this run)" if r.source_run_id == run_id else ""),
            "replaced by": "–" if newer == c.folder else f"{newer.name} (published again)",
            "layer": r.direction.layer,
            "settings": settings_text(r.method, r.parameters)
            + (" (region term not run)" if r.region_term_skipped() else ""),
            "class": r.group.class_name,
            "flagged": r.group.n_flagged,
            "flip rate": f"{correctionnote.pct(b.flip_rate)} → {correctionnote.pct(a.flip_rate)}",
            "relevance share": f"{correctionnote.pct(b.relevance_share)} → {correctionnote.pct(a.relevance_share)}",
            "clean accuracy": f"{correctionnote.pct(b.clean_accuracy)} → {correctionnote.pct(a.clean_accuracy)}",
            # test data and a held-out part of the audited data are not the same measurement
            "evaluated on": f"{r.evaluation.split} ({r.evaluation.n_clean:,})",
            "on its class": f"{correctionnote.pct(b.class_accuracy)} → {correctionnote.pct(a.class_accuracy)}",
        }
    )
mine = sum(c.record.source_run_id == run_id for c in found)
others = sorted({c.record.source_run_id[:12] for c in found if c.record.source_run_id != run_id})
st.caption(
    f"{mine} correction(s) of run {safetext.code(run_id[:12])}"
    + (
        f"; {len(found) - mine} made from other runs of dataset {safetext.code(summary.dataset)} "
        f"({', '.join(safetext.code(o) for o in others)}; a source run may have been removed by retention since)"
        if len(found) > mine
        else ""
    )
    + ". This run's first, newest first; the warnings column counts what each record's checks say is wrong."
)
st.dataframe(pd.DataFrame(rows), hide_index=True)
names = [c.folder.name for c in found]
picked = st.selectbox("Before and after", names, key="corr_pick")
chosen = found[names.index(picked)]
st.html(render_correction_html(chosen.record, chosen.folder))
reaudit = Path(chosen.folder) / "reaudit"
if reaudit.is_dir():
    st.caption(
        f"Folder: {safetext.code(chosen.folder)}. Its re-audit is a run of its own: "
        f"{safetext.code(f'spray dashboard --runs-dir {reaudit}', limit=None)}."
    )
else:
    st.caption(f"Folder: {safetext.code(chosen.folder)}. It has no re-audit folder.")

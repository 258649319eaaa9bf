"""spray's dashboard: ``streamlit run dashboard/app.py -- --runs-dir RUNS`` (or ``spray dashboard``).

Pages (``st.navigation`` with file pages, so ``AppTest.switch_page`` can reach each one):

- Overview: run picker, ranked suspicious clusters across all classes, changes since the previous run;
- Class: eigenvalue spectrum, 2-D WebGL map (one trace, or one per colour group above 20k points) with
  lasso / box selection, any stored k;
- Cluster / selection: mean heatmap, paged grid of every member (input, heatmap, overlay);
- Flags: current flags with history, unflag, export for unlearning (CSV, JSON, Parquet);
- Corrections: the picked run's published corrections (``spray correct``), before and after.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Streamlit puts the script's folder on sys.path when serving, AppTest does not: make `common` importable.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import common  # noqa: E402
import streamlit as st  # noqa: E402

st.set_page_config(page_title="spray", page_icon=":material/search:", layout="wide")

pages = [
    st.Page(
        common.PAGES["overview"],
        title="Overview",
        icon=":material/leaderboard:",
        url_path="overview",
        default=True,
    ),
    st.Page(common.PAGES["class"], title="Class", icon=":material/scatter_plot:", url_path="class"),
    st.Page(
        common.PAGES["cluster"], title="Cluster / selection", icon=":material/grid_view:", url_path="cluster"
    ),
    st.Page(common.PAGES["flags"], title="Flags", icon=":material/flag:", url_path="flags"),
    st.Page(
        common.PAGES["corrections"], title="Corrections", icon=":material/healing:", url_path="corrections"
    ),
]
page = st.navigation(pages)

# The run picker is shared by every page (newest first); its value is the URL parameter `run`.
state = common.pull_url(["run", "cls", "k", "cluster", "page", "color", "view"])
runs = str(common.runs_dir())
names = common.published_runs(runs)
with st.sidebar:
    st.markdown("### spray")
    if names:
        common.nav_select(
            "Run (newest first)",
            names,
            "run",
            format_func=lambda n: common.run_label(n, common.run_data(str(Path(runs) / n)).summary),
        )
    else:
        st.caption(f"No runs in `{runs}` yet.")
    st.caption(f"Runs: `{runs}`  \nFlags: `{common.flags_db_path()}`")

page.run()

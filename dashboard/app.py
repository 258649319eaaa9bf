"""spray's dashboard: ``streamlit run dashboard/app.py -- --runs-dir RUNS`` (or ``spray dashboard``).

Pages (``st.navigation`` with file pages, so ``AppTest.switch_page`` can reach each one):

- Overview: run picker, ranked suspicious clusters across all classes, changes since the previous run;
- Class: eigenvalue spectrum, 2-D map (a picture of every point first; the WebGL map with lasso / box
  selection behind "Select on the map"), any stored k;
- Cluster / selection: mean heatmap, evidence, paged grid of every member (input, heatmap, overlay);
- Sample: one sample at full size (input, heatmap, overlay, original file), its clusters and history;
- Flags: current flags with history, unflag, export for unlearning (CSV, JSON, Parquet);
- Corrections: the published corrections of the picked run's dataset (``spray correct``), before and after.

Every page: the access token first (when the server has one), the sidebar (run picker, unreadable runs with
their reason, sample search, author, live flag counts), and errors of run files or of the flag database as
a message on that page, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Streamlit puts the script's folder on sys.path when serving, AppTest does not: make `common` importable.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import access  # noqa: E402
import common  # noqa: E402
import flagform  # noqa: E402
import safetext  # noqa: E402
import streamlit as st  # noqa: E402
import urlstate  # noqa: E402

from spray.errors import SprayError  # noqa: E402

URL_KEYS = (
    "run", "cls", "k", "cluster", "page", "color", "view", "sel", "geo", "mode", "cmap", "sort", "filter",
    "conf", "sample", "dataset", "susp", "top", "status", "draw", "table", "heat",
)  # fmt: skip

# A local image: a :material/...: page icon is fetched from fonts.gstatic.com, which an offline or
# privacy-bound site must not do.
st.set_page_config(page_title="spray", page_icon=common.page_icon(), layout="wide")
access.require_access()

pages = [
    st.Page(common.PAGES["overview"], title="Overview", icon=":material/leaderboard:", url_path="overview", default=True),
    st.Page(common.PAGES["class"], title="Class", icon=":material/scatter_plot:", url_path="class"),
    st.Page(common.PAGES["cluster"], title="Cluster / selection", icon=":material/grid_view:", url_path="cluster"),
    st.Page(common.PAGES["sample"], title="Sample", icon=":material/image:", url_path="sample"),
    st.Page(common.PAGES["flags"], title="Flags", icon=":material/flag:", url_path="flags"),
    st.Page(common.PAGES["corrections"], title="Corrections", icon=":material/healing:", url_path="corrections"),
]  # fmt: skip
page = st.navigation(pages)
state = urlstate.pull_url(URL_KEYS)
runs_path = common.runs_dir()
runs = str(runs_path)
if not runs_path.is_dir():
    # Never create it (a typo would leave a folder and a flag database behind).
    st.error(
        f"The runs folder {safetext.code(runs)} does not exist. Start the dashboard with the folder your "
        "audits publish to: `spray dashboard --runs-dir DIR`."
    )
    st.stop()
good, bad = common.runs_overview(runs)


def _label(name: str) -> str:
    return safetext.plain(common.run_label(name, common.summary(str(Path(runs) / name))))


def _sidebar() -> None:
    st.markdown("### spray")
    requested = state.get("run")
    if good and requested and requested not in good:
        # A link to a run that is not there: the page says "not found"; never silently pick another one.
        picked = st.selectbox("Run (newest first)", good, index=None, format_func=_label, key="w_run_other")
        if picked:
            state["run"] = picked
            st.rerun()
    elif good:
        before = state.get("run")

        def switched() -> None:
            # the cluster page warns when a key it shows means another group in the run switched to
            st.session_state["switched_from_run"] = before

        urlstate.nav_select("Run (newest first)", good, "run", format_func=_label, then=switched)
    else:
        st.caption(f"No runs in {safetext.code(runs)} yet.")
    if bad:
        with st.expander(f"{len(bad)} unreadable run{'s' if len(bad) > 1 else ''}", expanded=False):
            for name, why in bad.items():
                st.caption(f"{safetext.code(name)}: {safetext.md(why)}")
    with st.form("search", border=False):
        # The example is the id's form: a file's path under data.path, or an index / a factory's own id.
        sid = st.text_input("Find a sample id", key="search_id", placeholder="e.g. 1234 or cat/001.png")
        if st.form_submit_button("Find", icon=":material/search:") and sid.strip():
            st.switch_page(common.PAGES["sample"], query_params={"run": state.get("run", ""), "sample": sid})
    access.author_box()
    cur = state.get("run") if state.get("run") in good else (good[0] if good else None)
    if cur:
        dataset = common.dataset_key(common.summary(str(Path(runs) / cur)))
        try:
            flagform.mark_shown(dataset)
        except SprayError as err:  # the page says it too, in full
            st.error(safetext.md(str(err)))
        else:
            flagform.live_counts(dataset)
    st.caption(f"Runs: {safetext.code(runs)}  \nFlags: {safetext.code(flagform.db_label())}")


try:
    with st.sidebar:
        _sidebar()
    page.run()
except SprayError as err:
    # A run file or the flag database cannot be read: say which and how to fix it, on this page only.
    st.error(safetext.md(str(err)))

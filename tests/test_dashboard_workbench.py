"""The dashboard as an auditor's workbench (issue 19), under Streamlit's AppTest on runs from spray's writer:
the class page opens at the k of the top finding, every view's state (selection included) is in the URL,
search, filters, the sample view, flag authors and conflicts, the access token, big maps.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")
pytest.importorskip("plotly")
from streamlit.testing.v1 import AppTest

from spray.flags import FlagStore
from tests.dashboard_fixtures import make_synthetic_run
from tests.dashboard_runinfo import findings, top_finding
from tests.dashboard_tables import follow_row_link, html_grid, html_table

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
DATASET = "synthetic-fashion"
SIZES = [40, 40, 40, 40, 40, 40, 300, 40, 40, 40]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose class 6 was *chosen* at k=2 while its findings were scored at k=5 (as real runs do)."""
    d = tmp_path_factory.mktemp("runs")
    run = make_synthetic_run(d, class_sizes=SIZES, seed=11, dataset=DATASET, planted_fraction=0.2)
    s = json.loads((run / "summary.json").read_text())
    for c in s["classes"]:
        if c["class_index"] == 6:
            c["chosen_k"] = 2
    (run / "summary.json").write_text(json.dumps(s))
    return run


@pytest.fixture
def env(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPRAY_RUNS_DIR", str(run_dir.parent))
    monkeypatch.setenv("SPRAY_FLAGS_DB", str(tmp_path / "flags.sqlite"))
    monkeypatch.setenv("SPRAY_AUTHOR", "server-user")
    for name in ("SPRAY_READ_ONLY", "SPRAY_DASHBOARD_TOKEN", "SPRAY_DATA_ROOT"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "flags.sqlite"


@pytest.fixture(autouse=True)
def _fresh_log_handlers() -> Iterator[None]:
    yield
    logging.getLogger().handlers[:] = []


def open_page(name: str = "views/overview.py", **query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    ok(at.run())
    if name != "views/overview.py":
        ok(at.switch_page(name).run())
    return at


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
    parts += [e.value for e in at.error] + [w.value for w in at.warning] + [s.value for s in at.success]
    text = "\n".join(map(str, parts))
    return re.sub(r"\\(.)", r"\1", re.sub(r"(`+) (.*?) \1", r"\2", text))


def charts(at: AppTest) -> list[dict[str, Any]]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


# ---------------------------------------------------------------------------------------------------------
# Class page: the right k, consistent legends, readable spectrum


def test_class_page_opens_at_the_k_of_the_top_finding_with_matching_legend_and_list(
    env: Path, run_dir: Path
) -> None:
    top = top_finding(run_dir)
    assert top.class_index == 6 and top.k == 5
    at = open_page("views/class_view.py", cls="6")
    assert at.query_params["k"] == "5" and at.selectbox(key="w_k").value == 5
    assert at.selectbox(key="w_k").format_func(5) == "5 (top finding)"
    assert at.selectbox(key="w_k").format_func(2) == "2 (chosen)"
    # Legend and cluster list describe the k shown: five clusters, with the scored ones' scores.
    legend = "\n".join(str(h.proto.body) for h in at.get("html"))
    assert len(re.findall(r"> c\d+ \(n=", legend)) == 5
    links = [p.proto.label for p in at.get("page_link")]
    assert any(label.startswith(f"c{top.cluster_id} · score") for label in links)
    assert all(
        "/k5/" in p.proto.query_string or "k5" in str(p.proto)
        for p in at.get("page_link")
        if "score" in p.proto.label
    )
    # Spectrum: one labelled line per distinct k, labels at different heights.
    notes = spectrum_labels(at)
    assert set(notes) == {"k=2: chosen", "k=5: top finding, shown"}
    assert len(set(notes.values())) == len(notes)
    # Another k: legend and list follow it, the marks too.
    ok(at.selectbox(key="w_k").select(3).run())
    legend = "\n".join(str(h.proto.body) for h in at.get("html"))
    assert len(re.findall(r"> c\d+ \(n=", legend)) == 3
    assert "Clusters at k=3" in shown(at)
    assert set(spectrum_labels(at)) == {"k=2: chosen", "k=3: shown", "k=5: top finding"}


def spectrum_labels(at: AppTest) -> dict[str, str]:
    """The static spectrum's k labels → their heights."""
    tag = next(h.proto.body for h in at.get("html") if 'data-chart="spectrum"' in h.proto.body)
    body = base64.b64decode(re.search(r'src="data:image/svg\+xml;base64,([^"]+)"', tag)[1]).decode()  # type: ignore[index]
    return {
        html.unescape(t): y
        for y, t in re.findall(r'<text data-k="\d+" x="[^"]+" y="([^"]+)"[^>]*>([^<]+)<', body)
    }


def test_the_first_paint_is_a_picture_and_the_interactive_map_is_one_switch_away(env: Path) -> None:
    at = open_page("views/class_view.py", cls="6")
    assert not at.get("plotly_chart")  # no plotly code before the first paint
    pic = next(h.proto.body for h in at.get("html") if 'data-map="picture"' in h.proto.body)
    assert 'src="data:image/png;base64,' in pic
    assert len(re.findall(r"> c\d+ \(n=", "\n".join(str(h.proto.body) for h in at.get("html")))) == 5
    ok(at.toggle(key="w_draw").set_value(True).run())
    assert at.query_params["draw"] == "1" and len(at.get("plotly_chart")) == 1
    ok(at.toggle(key="w_draw").set_value(False).run())
    assert "draw" not in at.query_params and not at.get("plotly_chart")
    # A continuous colouring: its scale under the picture.
    ok(at.selectbox(key="w_color").select("confidence").run())
    pic = next(h.proto.body for h in at.get("html") if 'data-map="picture"' in h.proto.body)
    assert "linear-gradient" in pic


def test_the_lasso_tool_is_always_visible(env: Path) -> None:
    at = open_page("views/class_view.py", cls="6", draw="1")
    config = json.loads(at.get("plotly_chart")[0].proto.config)
    assert config["displayModeBar"] is True
    assert charts(at)[0]["layout"]["dragmode"] == "lasso"


# ---------------------------------------------------------------------------------------------------------
# Selections in the URL


def _lasso_event(at: AppTest, run: Path) -> dict[str, Any]:
    """A lasso around the planted blob (the fixture puts it at (8, 8), far from the other groups)."""
    return {
        "selection": {
            "points": [],
            "point_indices": [],
            "box": [],
            "lasso": [{"x": [5.5, 11.0, 11.0, 5.5], "y": [5.5, 5.5, 11.0, 11.0]}],
        }
    }


def test_a_lasso_selection_is_in_the_url_and_a_reload_shows_it_again(env: Path, run_dir: Path) -> None:
    top = top_finding(run_dir)
    at = open_page("views/class_view.py", cls="6", draw="1")
    at.session_state["embedding_6"] = _lasso_event(at, run_dir)
    ok(at.run())
    assert any(f"Selection: {top.size:,} samples" in s.value for s in at.subheader)
    query = dict(at.query_params)
    assert query["sel"] and query["geo"] and query["cls"] == "6" and query["k"] == "5"
    # A new browser with that URL: same selection, the lasso drawn on the map, same grid.
    again = open_page("views/class_view.py", **query)
    assert any(f"Selection: {top.size:,} samples" in s.value for s in again.subheader)
    shapes = charts(again)[0]["layout"]["selections"]  # a drawn shape opens the interactive map
    assert len(shapes) == 1 and shapes[0]["type"] == "path"
    assert dict(again.query_params) == query
    # The selection's own page, by URL.
    sel_page = open_page("views/cluster.py", view="selection", sel=query["sel"])
    assert sel_page.subheader[0].value == f"Members ({top.size})"


def test_a_lasso_from_another_map_is_not_drawn_around_other_samples(env: Path, run_dir: Path) -> None:
    """An outside check: a lasso link opened on a newer run drew the old lasso at the old map's coordinates,
    around points that were not the selected ones (the selected ids sat elsewhere)."""
    import embedmap

    at = open_page("views/class_view.py", cls="6", draw="1")
    at.session_state["embedding_6"] = _lasso_event(at, run_dir)
    ok(at.run())
    query = dict(at.query_params)
    elsewhere = _lasso_event(at, run_dir)
    elsewhere["selection"]["lasso"] = [{"x": [-40.0, -20.0, -20.0, -40.0], "y": [-40.0, -40.0, 40.0, 40.0]}]
    moved = {**query, "geo": embedmap.encode_geometry(elsewhere) or ""}
    again = open_page("views/class_view.py", **moved)
    assert "was drawn on another map" in shown(again)
    assert not [c for c in charts(again) if c["layout"].get("selections")]
    assert any(f"Selection: {top_finding(run_dir).size:,} samples" in s.value for s in again.subheader)
    # the link's own shape still fits its map: drawn, and no note
    assert "was drawn on another map" not in shown(open_page("views/class_view.py", **query))


def test_select_by_filter_on_the_class_page(env: Path, run_dir: Path) -> None:
    at = open_page("views/class_view.py", cls="6")
    at.button(key="selby_misclassified").click()
    ok(at.run())
    t = pd.read_parquet(run_dir / "samples.parquet")
    expected = int(((t["label"] == 6) & (t["label"] != t["prediction"])).sum())
    assert any(f"Selection: {expected:,} samples" in s.value for s in at.subheader)
    carriers = [f for f in findings(run_dir) if f.class_index == 6 and f.k == 5 and f.carrier_ids]
    assert carriers
    at.button(key="selby_carriers").click()
    ok(at.run())
    assert any(f"Selection: {len(carriers[0].carrier_ids):,} samples" in s.value for s in at.subheader)


def test_select_by_clears_the_shape_drawn_on_the_map(env: Path, run_dir: Path) -> None:
    """An outside check: after a box on the map, "Select by: misclassified" switched the selection and the flag
    form to the misclassified samples while the map still drew the box and its points as selected."""
    at = open_page("views/class_view.py", cls="6", draw="1")
    at.session_state["embedding_6"] = _lasso_event(at, run_dir)
    ok(at.run())
    assert "geo" in at.query_params and at.get("plotly_chart")[0].proto.id.endswith("embedding_6")
    at.button(key="selby_misclassified").click()
    ok(at.run())
    t = pd.read_parquet(run_dir / "samples.parquet")
    expected = int(((t["label"] == 6) & (t["label"] != t["prediction"])).sum())
    assert any(f"Selection: {expected:,} samples" in s.value for s in at.subheader)
    # a chart of a new identity (the browser's drawn box and selected points go with the old one), no shape
    assert at.get("plotly_chart")[0].proto.id.endswith("embedding_6_1")
    assert not [c for c in charts(at) if c["layout"].get("selections")] and "geo" not in at.query_params


def test_a_link_from_another_run_says_which_ids_are_missing(env: Path) -> None:
    import urlstate

    at = open_page("views/class_view.py", cls="6", sel=urlstate.encode_ids(["999999", "0"]))
    assert "not in class 6" in shown(at)


# ---------------------------------------------------------------------------------------------------------
# Cluster page: order, mode, colour map, filters, page in the URL


def test_cluster_page_view_state_is_in_the_url_and_restored(env: Path, run_dir: Path) -> None:
    top = top_finding(run_dir)
    query = {
        "cluster": top.key,
        "sort": "confidence ↓",
        "mode": "heatmap",
        "cmap": "coldnhot",
        "filter": "misclassified",
    }
    at = open_page("views/cluster.py", **query)
    assert at.selectbox(key="w_sort").value == "confidence ↓"
    assert at.segmented_control(key="w_mode").value == "heatmap"
    assert at.selectbox(key="w_cmap").value == "coldnhot"
    assert at.multiselect(key="w_filter").value == ["misclassified"]
    for k, v in query.items():
        assert at.query_params[k] == v
    t = pd.read_parquet(run_dir / "samples.parquet").set_index("sample_id").loc[top.member_ids]
    n_mis = int((t["label"] != t["prediction"]).sum())
    assert f"{n_mis:,} of {top.size:,} members pass the filter" in shown(at)
    # The grid shows them most confident first.
    captions = [g["caption"] for g in html_grid(at)]
    conf = [float(c.rsplit(" ", 1)[1]) for c in captions]
    assert conf == sorted(conf, reverse=True) and len(conf) == n_mis
    # Filters combine; the low-confidence threshold is in the URL too.
    ok(at.multiselect(key="w_filter").select("low confidence").run())
    assert at.query_params["filter"] == "misclassified,low confidence" and at.query_params["conf"] == "0.5"


# ---------------------------------------------------------------------------------------------------------
# Search and the sample view


def test_search_from_the_sidebar_opens_the_sample_at_full_size(env: Path, run_dir: Path) -> None:
    top = top_finding(run_dir)
    sid = top.member_ids[0]
    at = open_page("views/flags.py")
    at.sidebar.text_input(key="search_id").input(sid)
    at.sidebar.button[0].click()  # the search form's button
    ok(at.run())
    assert at.query_params["sample"] == sid and at.title[0].value == "Sample"
    links = [p.proto.label for p in at.get("page_link")]
    assert any(label.startswith(top.key) and "score" in label for label in links)
    big = [img for el in at.get("image") for img in el.proto.imgs]
    assert len(big) >= 3  # input, heatmap, overlay (plus the colour bar)
    # this run's data are not an image folder: no original file to offer, so no --data-root hint (found in an
    # outside check: it was shown for every dataset)
    assert "--data-root" not in shown(at)


def test_the_sample_view_shows_the_original_file_under_the_data_root(
    env: Path, run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    root = tmp_path / "data"
    root.mkdir()
    Image.fromarray(np.full((64, 48, 3), 200, np.uint8)).save(root / "5", format="PNG")
    monkeypatch.setenv("SPRAY_DATA_ROOT", str(root))
    at = open_page("views/sample.py", sample="5")
    assert str(root / "5") in shown(at) and "original, 48×64 px" in "\n".join(
        i.caption for el in at.get("image") for i in el.proto.imgs
    )
    # An id that climbs out of the data root is not followed.
    at = open_page("views/sample.py", sample="../../etc/passwd")
    assert "Not found" in shown(at)
    # A symlink the data's owner put in the folder is (an image store shared by several folders).
    store = tmp_path / "store"
    store.mkdir()
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(store / "img.png")
    (root / "5").unlink()
    (root / "5").symlink_to(store / "img.png")
    at = open_page("views/sample.py", sample="5")
    assert "original, 30×20 px" in "\n".join(i.caption for el in at.get("image") for i in el.proto.imgs)
    # A file above Pillow's own size limit (which the audit reads at reduced scale) is said, not a crash.
    (root / "5").unlink()
    Image.new("L", (14000, 13000)).save(root / "5", format="JPEG")
    at = open_page("views/sample.py", sample="5")
    assert not at.exception, [e.value for e in at.exception]
    # (this run did not resize, so the audit would have skipped it: the page says why, as the audit would)
    assert "cannot be shown" in shown(at) and "max_image_pixels" in shown(at)


def test_an_original_file_changed_after_the_audit_is_said_and_not_overlaid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under --data-root the file is found by its id; replaced after the audit, it is no longer the image the
    run explained, so the page says so instead of drawing the run's relevance over it."""
    from PIL import Image

    from spray.audit import audit
    from tests.runs.builders import tiny_config

    cfg = tiny_config(tmp_path)
    audit(cfg, progress=False)
    monkeypatch.setenv("SPRAY_RUNS_DIR", str(cfg.output.runs_dir))
    monkeypatch.setenv("SPRAY_FLAGS_DB", str(tmp_path / "flags.sqlite"))
    monkeypatch.setenv("SPRAY_DATA_ROOT", str(tmp_path / "imgs"))
    for name in ("SPRAY_READ_ONLY", "SPRAY_DASHBOARD_TOKEN"):
        monkeypatch.delenv(name, raising=False)

    def captions(at: AppTest) -> list[str]:
        return [i.caption for el in at.get("image") for i in el.proto.imgs]

    at = open_page("views/sample.py", sample="cat/003.png")
    assert "relevance over the original" in captions(at) and "changed after the audit" not in shown(at)
    Image.fromarray(np.full((40, 30, 3), 255, np.uint8)).save(tmp_path / "imgs" / "cat" / "003.png")
    at = open_page("views/sample.py", sample="cat/003.png")
    assert "changed after the audit" in shown(at)
    assert "relevance over the original" not in captions(
        at
    ) and "original, 30×40 px as decoded for the audit (not resized)" in captions(at)


# ---------------------------------------------------------------------------------------------------------
# Flags: author, conflicts, confirmation


def test_flags_record_the_author_typed_in_the_sidebar(env: Path) -> None:
    at = open_page("views/sample.py", sample="3")
    assert at.sidebar.text_input(key="_author").value == "server-user"
    at.sidebar.text_input(key="_author").input("ana")
    ok(at.run())
    at.radio(key="flag_status_sample").set_value("investigate")
    at.text_area(key="flag_note_sample").input("odd")
    at.form_submit_button(key="FormSubmitter:flagform_sample-Apply").click()
    ok(at.run())
    [flag] = FlagStore(env).current(DATASET)
    assert (flag.sample_id, flag.status, flag.author, flag.source) == (
        "3",
        "investigate",
        "ana",
        "sample page",
    )
    assert "investigate" in shown(at)


def test_a_decision_that_came_in_meanwhile_is_shown_and_not_overwritten(env: Path) -> None:
    at = open_page("views/sample.py", sample="3")
    FlagStore(env).flag(DATASET, ["3"], "ok", "checked by hand", author="bo")  # another session, meanwhile
    at.radio(key="flag_status_sample").set_value("unlearn")
    at.form_submit_button(key="FormSubmitter:flagform_sample-Apply").click()
    ok(at.run())
    assert "Another decision came in meanwhile" in shown(at)
    conflicts = next(
        d.value
        for d in at.dataframe
        if "when" in d.value.columns
        and "status" in d.value.columns
        and len(d.value) == 1
        and d.value["note"].iloc[0] == "checked by hand"
        and "sample_id" in d.value.columns
    )
    assert list(conflicts["author"]) == ["bo"] and list(conflicts["status"]) == ["ok"]
    assert FlagStore(env).status_of(DATASET, ["3"]) == {"3": "ok"}
    at.button(key="override_sample").click()
    ok(at.run())
    [flag] = FlagStore(env).current(DATASET)
    assert (flag.status, flag.author) == ("unlearn", "server-user")


def test_a_rerun_of_the_stale_page_does_not_count_as_seeing_the_other_decision(env: Path) -> None:
    """An outside check: a tab open since before another tab's decision reran (its user typed a name in the
    sidebar), and its Apply then overwrote that decision with no prompt. Two saves of one's own in a row
    are no conflict."""
    at = open_page("views/sample.py", sample="3")
    FlagStore(env).flag(DATASET, ["3"], "unlearn", "shortcut", author="ana")  # the other tab, meanwhile
    at.sidebar.text_input(key="_author").input("bo")
    ok(at.run())  # the rerun shows the new flag, but nobody chose to look at it
    at.radio(key="flag_status_sample").set_value("ok")
    at.form_submit_button(key="FormSubmitter:flagform_sample-Apply").click()
    ok(at.run())
    assert "Another decision came in meanwhile" in shown(at)
    assert FlagStore(env).status_of(DATASET, ["3"]) == {"3": "unlearn"}
    at.button(key="cancel_sample").click()  # the other decision was shown: the next save is the user's call
    ok(at.run())
    at.radio(key="flag_status_sample").set_value("investigate")
    at.form_submit_button(key="FormSubmitter:flagform_sample-Apply").click()
    ok(at.run())
    assert FlagStore(env).status_of(DATASET, ["3"]) == {"3": "investigate"}
    at.radio(key="flag_status_sample").set_value("ok")
    at.form_submit_button(key="FormSubmitter:flagform_sample-Apply").click()
    ok(at.run())
    assert "Another decision came in meanwhile" not in shown(at)
    assert FlagStore(env).status_of(DATASET, ["3"]) == {"3": "ok"}


def test_the_users_own_decision_in_another_form_is_no_conflict(env: Path, run_dir: Path) -> None:
    """A review finding: after saving picked rows of a cluster, the cluster-wide form showed the user's own
    decision as one that "came in meanwhile"."""
    top = top_finding(run_dir)
    at = open_page("views/cluster.py", cluster=top.key, table="1")
    at.session_state["cl_members-0"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    ok(at.run())
    at.radio(key="flag_status_cluster_rows").set_value("investigate")
    at.form_submit_button(key="FormSubmitter:flagform_cluster_rows-Apply").click()
    ok(at.run())
    assert len(FlagStore(env).current(DATASET, "investigate")) == 1
    at.radio(key="flag_status_cluster").set_value("ok")
    at.form_submit_button(key="FormSubmitter:flagform_cluster-Apply").click()
    ok(at.run())
    at.button(key="confirm_cluster").click()
    ok(at.run())
    assert "Another decision came in meanwhile" not in shown(at)
    assert len(FlagStore(env).current(DATASET, "ok")) == top.size
    # another writer's decision still blocks
    FlagStore(env).flag(DATASET, [html_grid(at)[0]["sample_id"]], "unlearn", author="bo")
    at.radio(key="flag_status_cluster").set_value("investigate")
    at.form_submit_button(key="FormSubmitter:flagform_cluster-Apply").click()
    ok(at.run())
    at.button(key="confirm_cluster").click()
    ok(at.run())
    assert "Another decision came in meanwhile" in shown(at)


def test_a_decision_that_came_in_before_a_confirmation_is_shown_too(env: Path, run_dir: Path) -> None:
    """An outside check: with over 20 samples (a confirmation first), "Yes" hit the conflict, left the
    confirmation on the page, and its second click overrode the other decision, never shown."""
    finding = top_finding(run_dir)
    at = open_page("views/cluster.py", cluster=finding.key)
    at.radio(key="flag_status_cluster").set_value("unlearn")
    at.form_submit_button(key="FormSubmitter:flagform_cluster-Apply").click()
    ok(at.run())
    assert "Set **unlearn** on" in shown(at)
    some = html_grid(at)[0]["sample_id"]
    FlagStore(env).flag(DATASET, [some], "ok", "checked by hand", author="bo")  # another writer, meanwhile
    at.button(key="confirm_cluster").click()
    ok(at.run())
    assert "Another decision came in meanwhile" in shown(at)
    assert FlagStore(env).status_of(DATASET, [some]) == {some: "ok"}
    assert not any(b.key == "confirm_cluster" for b in at.button)  # only "Apply anyway" and "Cancel"
    at.button(key="override_cluster").click()
    ok(at.run())
    assert FlagStore(env).status_of(DATASET, [some]) == {some: "unlearn"}


def test_many_samples_need_a_confirmation_and_cancel_writes_nothing(env: Path, run_dir: Path) -> None:
    at = open_page("views/cluster.py", cluster=top_finding(run_dir).key)
    at.radio(key="flag_status_cluster").set_value("unlearn")
    at.form_submit_button(key="FormSubmitter:flagform_cluster-Apply").click()
    ok(at.run())
    assert "Set **unlearn** on" in shown(at)
    at.button(key="cancel_cluster").click()
    ok(at.run())
    assert not env.exists()
    assert "Set **unlearn** on" not in shown(at)


def test_no_decision_is_preselected(env: Path) -> None:
    at = open_page("views/sample.py", sample="3")
    assert at.radio(key="flag_status_sample").value is None
    at.form_submit_button(key="FormSubmitter:flagform_sample-Apply").click()
    ok(at.run())
    assert "Choose a decision" in shown(at) and not env.exists()


def test_live_counts_in_the_sidebar(env: Path) -> None:
    FlagStore(env).flag(DATASET, ["1", "2"], "unlearn")
    at = open_page()
    assert "unlearn 2" in "\n".join(str(c.value) for c in at.sidebar.caption)


# ---------------------------------------------------------------------------------------------------------
# Access


def test_an_access_token_guards_every_page(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPRAY_DASHBOARD_TOKEN", "s3cret-token")
    at = open_page()
    assert [t.value for t in at.title] == ["spray"] and not at.dataframe  # nothing of the runs
    at.text_input(key="login_token").input("wrong")
    at.button[0].click()
    ok(at.run())
    assert "not the access token" in shown(at) and not at.dataframe
    at.text_input(key="login_token").input("s3cret-token")
    at.text_input(key="login_name").input("carla")
    at.button[0].click()
    ok(at.run())
    assert at.title[0].value == "Suspicious clusters"
    assert at.sidebar.text_input(key="_author").value == "carla"
    # In the URL it works too, and the first page drops it from the URL.
    at = open_page(token="s3cret-token")
    assert at.title[0].value == "Suspicious clusters" and "token" not in at.query_params


# ---------------------------------------------------------------------------------------------------------
# Overview


def test_overview_cell_click_opens_the_cluster_and_the_full_evidence_is_there(
    env: Path, run_dir: Path
) -> None:
    top = top_finding(run_dir)
    at = open_page()
    text = shown(at)
    for line in top.evidence:
        assert line in text
    row = html_table(at, "findings")[0]
    assert row["evidence (all lines)"] == " ▸ ".join(top.evidence)
    follow_row_link(at, row["_href"])
    assert at.title[0].value == "Cluster / selection" and at.query_params["cluster"] == top.key


# ---------------------------------------------------------------------------------------------------------
# Big maps: a picture of all points, a drawn sample, selections take every point inside


def test_a_big_map_draws_a_picture_and_a_sample_and_a_box_selects_every_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import embedmap

    d = tmp_path / "runs"
    run = make_synthetic_run(
        d, class_sizes=[24_000, 50], planted_class=0, planted_fraction=0.05, seed=3, k_max=4
    )
    monkeypatch.setenv("SPRAY_RUNS_DIR", str(d))
    monkeypatch.setenv("SPRAY_FLAGS_DB", str(tmp_path / "flags.sqlite"))
    at = open_page("views/class_view.py", cls="0", draw="1")
    fig = charts(at)[0]
    assert fig["layout"]["images"][0]["source"].startswith("data:image/png;base64,")
    drawn = sum(len(t["x"]) for t in fig["data"] if t.get("x") and t["x"][0] is not None)
    assert drawn <= embedmap.SAMPLE_POINTS + 1000
    top = top_finding(run)
    arrays = np.load(run / "classes" / "0.npz")
    ids = pd.read_parquet(run / "samples.parquet")["sample_id"].to_numpy()[arrays["rows"]]
    members = np.isin(ids, top.member_ids)
    emb = arrays["embedding"].astype(np.float64)
    lo, hi = emb.min(0), emb.max(0)  # one scale for both axes, the shorter one centred
    q = (emb - (lo + hi) / 2) / (hi - lo).max() * embedmap.QMAX + embedmap.QMAX / 2
    box = {
        "x": [q[members, 0].min() - 1, q[members, 0].max() + 1],
        "y": [q[members, 1].min() - 1, q[members, 1].max() + 1],
    }
    at.session_state["embedding_0"] = {
        "selection": {"points": [], "point_indices": [], "box": [box], "lasso": []}
    }
    ok(at.run())
    assert any(f"Selection: {int(members.sum()):,} samples" in s.value for s in at.subheader)


def test_a_cluster_named_by_the_reports_class_and_cluster_columns_opens(env: Path, run_dir: Path) -> None:
    """The CLI and the README take Shirt/k3/c2; the dashboard's links did not (found in an outside check)."""
    from spray.report import cluster_label

    top = top_finding(run_dir)
    at = open_page("views/cluster.py", cluster=f"{top.class_name}/{cluster_label(top)}")
    assert at.query_params["cluster"] == top.key and "Not found" not in shown(at)
    at = open_page("views/cluster.py", cluster="NoSuchClass/k3/c2")
    assert "Not found" in shown(at) and "not a cluster key" in shown(at)


def test_a_view_value_the_page_cannot_show_is_said_not_dropped(env: Path, run_dir: Path) -> None:
    """Found in an outside check: top=200, page=99, sort=bogus fell back to the defaults without a word."""
    at = open_page("views/overview.py", top="7")  # the choices go in steps of 5
    assert "This link's top='7' cannot be shown here; showing top='25' instead" in shown(at)
    at = open_page("views/cluster.py", cluster=top_finding(run_dir).key, sort="bogus")
    assert "This link's sort='bogus' cannot be shown here" in shown(at)
    at = open_page("views/overview.py")
    assert "cannot be shown here" not in shown(at)


def test_the_overview_names_the_classes_not_analysed(tmp_path: Path) -> None:
    """summary.json listed them; no page said which classes were left out, or why."""
    from spray.records import ZERO_HEATMAPS, ClassSkipped
    from tests.dashboard_fixtures import pointed_at
    from tests.runs.builders import make_report, write_published

    report, stage = make_report()
    report.classes_skipped = [ClassSkipped(3, "dead", 40, ZERO_HEATMAPS), ClassSkipped(4, "tiny", 1)]
    write_published(tmp_path / "runs", report, stage)
    with pointed_at(tmp_path / "runs", tmp_path / "flags.sqlite"):
        at = open_page("views/overview.py")
        said = shown(at)
        # an outside check: the class page of a class left out said only which classes were analysed
        page = shown(open_page("views/class_view.py", cls="4"))
    assert "Not analysed: dead (40 samples: every heatmap is zero" in said
    assert "tiny (1 sample: fewer than analysis.min_class_size samples)" in said
    assert "did not analyse class tiny (1 sample: fewer than analysis.min_class_size samples)" in page


def test_a_decision_made_as_the_run_was_removed_is_said_unsaved_with_its_note(
    env: Path, run_dir: Path
) -> None:
    """An outside check: a decision applied on a page whose run retention had just removed gave the "not found"
    page, and the decision and its note were gone without a word."""
    at = open_page("views/sample.py", sample="3")
    at.radio(key="flag_status_sample").set_value("unlearn")
    at.text_area(key="flag_note_sample").input("tag in the corner")
    at.query_params["run"] = "20000101T000000000000Z-removedrun00"  # removed before the Apply reached it
    at.form_submit_button(key="FormSubmitter:flagform_sample-Apply").click()
    ok(at.run())
    said = shown(at)
    assert "Not found" in said and "Nothing was saved" in said and "tag in the corner" in said
    assert not env.exists() or not FlagStore(env).current(DATASET)
    # a decision that was saved, then the run removed: no "Nothing was saved" (a review finding)
    at = open_page("views/sample.py", sample="3")
    at.radio(key="flag_status_sample").set_value("unlearn")
    at.form_submit_button(key="FormSubmitter:flagform_sample-Apply").click()
    ok(at.run())
    assert FlagStore(env).status_of(DATASET, ["3"]) == {"3": "unlearn"}
    at.query_params["run"] = "20000101T000000000000Z-removedrun00"
    ok(at.run())
    assert "Not found" in shown(at) and "Nothing was saved" not in shown(at)


def test_a_link_to_a_removed_run_stays_not_found_on_every_rerun(env: Path, run_dir: Path) -> None:
    """After retention removed the run of an open page, the next click showed the newest run's cluster of
    the same key (other images) and its flag form saved the decision there."""
    top = top_finding(run_dir)
    at = open_page("views/cluster.py", cluster=top.key)
    at.query_params["run"] = "20000101T000000000000Z-removedrun00"
    ok(at.run())
    assert "Not found" in shown(at)
    ok(at.run())  # any later interaction reruns the page
    assert "Not found" in shown(at) and at.query_params["run"] == "20000101T000000000000Z-removedrun00"
    assert not [r for r in at.radio if str(r.key).startswith("flag_status")]  # no flag form on it
    # an outside check: every page, the overview link too, stayed there; a button opens the newest on purpose
    at.button(key="open_newest_run").click()
    ok(at.run())
    assert "Not found" not in shown(at) and at.query_params["run"] == run_dir.name

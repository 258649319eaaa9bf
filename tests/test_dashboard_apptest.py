"""Every dashboard page under Streamlit's AppTest, on runs written by spray's own run writer."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

pytest.importorskip("streamlit")
pytest.importorskip("plotly")
from streamlit.testing.v1 import AppTest

from spray.flags import FlagStore
from tests.dashboard_fixtures import make_synthetic_run, pointed_at
from tests.dashboard_tables import follow_row_link, html_grid, html_table, html_tables

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
DATASET = "synthetic-fashion"
# Class 6 holds 800 samples, 120 of them planted: the planted cluster needs two grid pages.
SIZES = [40, 40, 40, 40, 40, 40, 800, 40, 40, 40]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("runs")
    old = make_synthetic_run(d, class_sizes=SIZES, planted_fraction=0.08, seed=1, dataset=DATASET)
    new = make_synthetic_run(d, class_sizes=SIZES, planted_fraction=0.15, seed=2, dataset=DATASET)
    return d, old, new


@pytest.fixture
def env(runs: tuple[Path, Path, Path], tmp_path: Path) -> Iterator[Path]:
    """Point the app at the runs and at a fresh flag database."""
    with pointed_at(runs[0], tmp_path / "flags.sqlite"):
        yield tmp_path / "flags.sqlite"


def app(**query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    return at


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    """Every text element, with Markdown escapes removed (what the browser shows)."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
    parts += [e.value for e in at.error] + [w.value for w in at.warning] + [s.value for s in at.success]
    text = re.sub(r"(`+) (.*?) \1", r"\2", "\n".join(map(str, parts)))
    return re.sub(r"\\(.)", r"\1", text)


def test_without_runs_the_app_says_how_to_make_one(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    os.environ["SPRAY_RUNS_DIR"] = str(tmp_path / "empty")
    os.environ["SPRAY_FLAGS_DB"] = str(tmp_path / "f.sqlite")
    try:
        at = ok(app())
        at.run()
        assert "scripts/demo" in at.info[0].value and "spray audit" in at.info[0].value
        at.switch_page("views/class_view.py").run()
        assert "scripts/demo" in ok(at).info[0].value
    finally:
        os.environ.pop("SPRAY_RUNS_DIR")
        os.environ.pop("SPRAY_FLAGS_DB")


def test_overview_ranks_clusters_and_reports_changes(env: Path, runs: tuple[Path, Path, Path]) -> None:
    at = app()
    ok(at.run())
    assert at.query_params["run"] == runs[2].name  # newest first, and in the URL
    assert at.sidebar.selectbox[0].value == runs[2].name
    strip = next(b for b in html_tables(at) if "data-figure" in b)
    metrics = dict(re.findall(r'data-figure="([^"]+)">.*?2.25rem[^>]*>([^<]*)<', strip))
    assert metrics["Samples"] == f"{sum(SIZES):,}" and metrics["Suspicious"] == "1"
    table = html_table(at, "findings")
    assert table[0]["class"] == "6 · Shirt" and table[0]["mean heatmap"].startswith("data:image/png")
    scores = [float(r["score"]) for r in table]
    assert scores == sorted(scores, reverse=True)
    assert table[0]["_href"].startswith("cluster?run=") and table[0]["link"] == "open ↗"
    changes = html_table(at, "changes")
    assert {"new", "grown", "resolved"} & {r["change"] for r in changes}
    # The run picker: the older run, through the URL.
    at2 = ok(app(run=runs[1].name).run())
    assert at2.sidebar.selectbox[0].value == runs[1].name
    assert "No earlier run" in texts(at2)
    # "Suspicious only" and "Show top" from the URL (selectboxes: no extra widget code on the first paint).
    at3 = ok(app(susp="1", top="5").run())
    assert at3.selectbox(key="w_susp").value is True and at3.selectbox(key="w_top").value == 5
    assert all(r["suspicious"] == "yes" for r in html_table(at3, "findings"))
    assert at3.query_params["susp"] == "1" and at3.query_params["top"] == "5"


def test_overview_uses_the_nightly_changes_section_when_present(env: Path, tmp_path: Path) -> None:
    d = tmp_path / "r"
    p = make_synthetic_run(d, seed=3, dataset=DATASET)
    import json

    from spray.records import ChangeRule, ChangeSet, ClusterChange
    from spray.runs.writer import changes_entry

    s = json.loads((p / "summary.json").read_text())
    recorded = ChangeSet(
        "ab" * 32,
        "abc",
        [ClusterChange("6/k5/c4", 6, "Shirt", size=9)],
        [],
        [],
        [],
        1,
        ChangeRule(0.3, 0.8, 0.2),
    )
    s["changes"] = changes_entry(recorded)
    (p / "summary.json").write_text(json.dumps(s))
    os.environ["SPRAY_RUNS_DIR"] = str(d)
    at = ok(app().run())
    assert "Recorded when the run was published (compared with abc)" in texts(at)
    assert "nightly job" not in texts(at)  # spray audit records changes too (an outside check)
    assert [r["key"] for r in html_table(at, "changes")] == ["6/k5/c4"]


@pytest.mark.parametrize("near_chance", [True, False])
def test_overview_shows_the_models_accuracy_and_warns_near_chance(
    env: Path, tmp_path: Path, near_chance: bool
) -> None:
    import json

    d = tmp_path / "r"
    p = make_synthetic_run(d, seed=4, dataset=DATASET)
    s = json.loads((p / "summary.json").read_text())
    acc = 0.1 if near_chance else 0.93
    s.setdefault("extra", {})["model_accuracy"] = {
        "accuracy": acc, "majority_share": 0.1, "n_samples": 600, "near_chance": near_chance,
    }  # fmt: skip
    (p / "summary.json").write_text(json.dumps(s))
    os.environ["SPRAY_RUNS_DIR"] = str(d)
    at = ok(app().run())
    warned = "The model gives the true label for only 10% of the 600 audited images" in texts(at)
    assert warned == near_chance
    assert "Model accuracy" in str(at.get("html")[0].proto) and f"{acc:.1%}" in str(at.get("html")[0].proto)


def test_overview_row_click_opens_the_cluster(env: Path) -> None:
    """Every row links its cluster (a click on any cell follows it in the app: the browser test clicks)."""
    at = ok(app().run())
    table = html_table(at, "findings")
    run = at.query_params["run"]
    assert all(r["_href"] == "cluster?" + urlencode({"run": run, "cluster": r["cluster key"]}) for r in table)
    follow_row_link(at, table[0]["_href"])
    assert at.query_params["cluster"] == "6/k5/c4"
    assert at.title[0].value == "Cluster / selection"


def test_class_page_colours_switch_k_and_selection_feeds_grid_and_flags(
    env: Path, runs: tuple[Path, Path, Path]
) -> None:
    at = ok(app(cls="6", draw="1").run().switch_page("views/class_view.py").run())
    assert at.query_params["cls"] == "6" and at.query_params["k"] == "5" and at.query_params["draw"] == "1"
    assert at.selectbox(key="w_k").value == 5
    for colour in ("label", "prediction", "confidence", "suspicion", "cluster"):
        ok(at.selectbox(key="w_color").select(colour).run())
    ok(at.selectbox(key="w_k").select(3).run())
    assert at.query_params["k"] == "3"
    # A lasso selection arrives as the chart's event (read dict-style by the app).
    picked = list(range(0, 250, 2))
    at.session_state["embedding_6"] = {
        "selection": {
            "points": [{"curve_number": 0, "point_index": i, "customdata": {"0": str(i)}} for i in picked],
            "point_indices": picked,
            "box": [],
            "lasso": [],
        }
    }
    ok(at.run())
    assert any(f"Selection: {len(picked):,} samples" in s.value for s in at.subheader)
    # The colour bar (an image), then the grid: one static grid of ≤ 100 pictures per page.
    assert len(at.get("image")) == 1 and len(html_grid(at)) == 100
    # Flag the selection.
    at.radio(key="flag_status_class_sel").set_value("investigate")
    at.text_area(key="flag_note_class_sel").input("odd blob")
    at.form_submit_button[0].click()  # the form's submit button
    ok(at.run())
    # 125 samples: more than CONFIRM_ABOVE, so nothing is written before the confirmation.
    assert FlagStore(env).current(DATASET) == []
    at.button(key="confirm_class_sel").click()
    ok(at.run())
    cur = FlagStore(env).current(DATASET)
    assert len(cur) == len(picked) and {r.status for r in cur} == {"investigate"}
    assert {r.note for r in cur} == {"odd blob"}
    from spray.runs.reader import RunReader

    shown = RunReader.open(runs[2]).content_hashes() or {}
    assert all(r.content_hash == shown[r.sample_id] for r in cur)  # bound to the images flagged
    classes = RunReader.open(runs[2]).samples()["label_name"]
    assert all(r.class_name == classes[r.sample_id] for r in cur)  # and to the class they were shown in
    # The selection is remembered for the Cluster / selection page.
    at.switch_page("views/cluster.py").run()
    ok(at)
    assert (
        at.selectbox(key="w_target").value == "selection"
        or "selection" in at.selectbox(key="w_target").options[0]
    )


def test_cluster_page_pages_members_and_flags_the_cluster(env: Path) -> None:
    at = ok(app(cluster="6/k5/c4").run().switch_page("views/cluster.py").run())
    assert at.title[0].value == "Cluster / selection"
    members = int(at.subheader[0].value.split("(")[1].rstrip(")"))
    assert members > 100
    grid = html_grid(at)
    assert len(grid) == 100  # page 1 of 2
    # Every picture is the sample's own PNG and opens that sample's view.
    assert all(g["src"].startswith("data:image/png;base64,") for g in grid)
    assert grid[0]["href"] == f"sample?run={at.query_params['run']}&sample={grid[0]['sample_id']}"
    assert grid[0]["caption"].startswith(f"{grid[0]['sample_id']} · ")
    # The mean heatmap and the colour bar come with the page (data URIs), not as files to fetch.
    assert all(i.url.startswith("data:image/png") for el in at.get("image") for i in el.proto.imgs)
    assert "4×4 region at the top left" in texts(at)
    # Page 2 via the pager.
    at.session_state["cl_grid_page"] = 2
    at.session_state["_nav"]["page"] = "2"
    ok(at.run())
    assert len(html_grid(at)) == members - 100
    assert at.query_params["page"] == "2"
    for mode in ("heatmap", "input"):
        ok(at.segmented_control(key="w_mode").set_value(mode).run())
    ok(at.selectbox(key="w_cmap").select("coldnhot").run())
    # Flag the whole cluster as unlearn: no decision is preselected, and 120 samples need a confirmation.
    assert at.radio(key="flag_status_cluster").value is None
    at.radio(key="flag_status_cluster").set_value("unlearn")
    at.text_area(key="flag_note_cluster").input("corner stamp")
    at.form_submit_button[0].click()
    ok(at.run())
    assert FlagStore(env).current(DATASET) == []
    at.button(key="confirm_cluster").click()
    ok(at.run())
    cur = FlagStore(env).current(DATASET, "unlearn")
    assert len(cur) == members and {r.cluster_key for r in cur} == {"6/k5/c4"}
    # The page's table is asked for (not loaded with the page); clicking a row shows that sample.
    assert not at.dataframe
    ok(at.toggle(key="w_table").set_value(True).run())
    assert at.query_params["table"] == "1" and len(at.dataframe) == 1
    at.session_state["cl_members-0"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    ok(at.run())
    assert "**sample id**" in texts(at) and "**prediction**" in texts(at)
    assert any(link.label == "Open this sample at full size" for link in at.get("page_link"))
    # The finding's carriers (samples outside the cluster with its stamp) open as a selection.
    at.session_state["cl_grid_page"] = 1
    at.button(key="cl_carriers").click()
    ok(at.run())
    assert at.subheader[0].value == "Members (7)"
    assert "carriers of 6/k5/c4" in at.selectbox(key="w_target").format_func(
        at.selectbox(key="w_target").value
    )


def test_unscored_cluster_of_another_k_is_addressable(env: Path) -> None:
    at = ok(app(cluster="6/k2/c0").run().switch_page("views/cluster.py").run())
    assert "unscored" in at.selectbox(key="w_target").format_func(at.selectbox(key="w_target").value)


def test_flags_page_lists_unflags_and_exports(env: Path) -> None:
    store = FlagStore(env)
    store.flag(DATASET, ["1", "2", "3"], "unlearn", "stamp", cluster_key="6/k5/c4")
    store.flag(DATASET, ["4"], "ok")
    at = ok(app().run().switch_page("views/flags.py").run())
    assert {m.label: m.value for m in at.metric} == {"unlearn": "3", "investigate": "0", "ok": "1"}
    assert len(at.dataframe[0].value) == 4
    assert len(at.get("download_button")) == 3
    at.session_state["fl_current-0"] = {"selection": {"rows": [0, 1], "columns": [], "cells": []}}
    ok(at.run())
    at.radio(key="flag_status_flags_page").set_value("unflag")
    at.form_submit_button[0].click()
    ok(at.run())
    assert len(store.current(DATASET)) == 2
    assert len(store.history(DATASET)) == 6  # unflagging appends, never deletes
    assert len(at.dataframe[0].value) == 2
    # an outside check: the form goes with its cleared rows, and its "Saved" line went with it
    assert "Saved — unflag: 2 samples (flags page)" in texts(at)
    # an outside check: the browser kept ticks on the rows that now hold other samples; the table is drawn
    # under a new widget key after a save, which starts without them
    assert at.session_state["_gen_fl_current"] == 1 and "fl_current-0" not in at.session_state


def test_spray_never_imports_streamlit() -> None:
    code = (
        "import sys, spray, spray.cli, spray.flags, spray.serve, spray.imaging, spray.runs.reader, spray.export\n"
        "spray.cli.build_parser()\n"
        "assert 'streamlit' not in sys.modules and 'plotly' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dashboard_command_binds_localhost_and_passes_the_runs_dir(tmp_path: Path) -> None:
    import argparse

    from spray import serve
    from spray.cli import dashboard

    sub = argparse.ArgumentParser().add_subparsers()
    dashboard.register(sub)
    args = sub.choices["dashboard"].parse_args(["--runs-dir", str(tmp_path)])
    assert (args.host, args.port, args.func) == ("127.0.0.1", 8501, dashboard.run_command)
    argv, env = serve.build_command(tmp_path, port=8600)
    assert argv[argv.index("--server.address") + 1] == "127.0.0.1"
    assert argv[argv.index("--server.port") + 1] == "8600"
    assert Path(argv[argv.index("run") + 1]) == Path(APP)
    assert env["SPRAY_RUNS_DIR"] == str(tmp_path) and env["SPRAY_FLAGS_DB"] == str(tmp_path / "flags.sqlite")
    msg = serve.no_runs_message(tmp_path)
    assert "scripts/demo" in msg and "spray audit --config" in msg
    # a port another program listens on is named with the fix, before Streamlit starts (outside check)
    import socket

    from spray.errors import ConfigError

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = sub.choices["dashboard"].parse_args(["--runs-dir", str(tmp_path), "--port", str(port)])
        with pytest.raises(ConfigError, match=f"Port {port} on 127.0.0.1 is in use.*--port {port + 1}"):
            dashboard._options(taken)
    assert dashboard._options(taken).port == port  # free again once it is closed
    nowhere = sub.choices["dashboard"].parse_args(["--runs-dir", str(tmp_path), "--host", "192.0.2.1"])
    with pytest.raises(ConfigError, match=r"Cannot serve on 192\.0\.2\.1:8501"):  # not this machine's address
        dashboard._options(nowhere)


def test_colour_by_suspicion_is_each_samples_suspicion(
    env: Path, runs: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outside check: the map coloured each point by its cluster's score at the k shown, which differed from
    the sample's suspicion (the Sample page's, the suspicion sort's) for 96-100 % of the points."""
    import numpy as np
    import pandas as pd

    sys.path.insert(0, str(Path(APP).parent))
    import common
    import embedmap

    path, cls = str(runs[2]), 1
    table = pd.read_parquet(runs[2] / "samples.parquet").set_index("sample_id")
    # the fixture's suspicions are 0: give every sample its own
    table["score"] = np.random.default_rng(0).random(len(table)).astype(np.float32)
    monkeypatch.setattr(common, "samples", lambda p: table)
    data = common.class_data(path, cls)
    vals, names, scale = embedmap._groups(path, cls, int(next(iter(data.labellings))), "suspicion")
    assert scale is not None and not names
    assert np.allclose(vals, table.loc[data.sample_ids, "score"].to_numpy())


def test_selection_positions_decodes_points_of_several_traces() -> None:
    import numpy as np

    sys.path.insert(0, str(Path(APP).parent))
    import selection

    traces = [np.array([5, 1, 9]), np.array([0, 7])]
    event = {
        "selection": {
            "points": [
                {"curve_number": 0, "point_index": 2},
                {"curve_number": 1, "point_index": 0},
                {"curve_number": 1, "point_index": 5},  # stale: out of range
                {"curve_number": 2, "point_index": 0},  # the colour-bar trace
            ],
            "point_indices": [2, 0],
        }
    }
    assert selection.selection_positions(event, traces) == [0, 9]
    # One trace: point_indices serve when the per-point list is absent.
    assert selection.selection_positions({"selection": {"point_indices": [0, 2, 3]}}, [np.arange(3)]) == [
        0,
        2,
    ]
    assert selection.selection_positions({"selection": {"point_indices": [0]}}, traces) == []
    assert selection.selection_positions(None, traces) == []


def test_flag_counts_say_each_status_an_ok_is_no_unlearning(env: Path, runs: tuple[Path, Path, Path]) -> None:
    from spray.runs.reader import RunReader

    top = RunReader.open(runs[2]).findings()[0]
    ids = [str(s) for s in top.member_ids]
    hashes = RunReader.open(runs[2]).content_hashes()
    FlagStore(env).flag(DATASET, ids[:3], "ok", content_hashes={s: hashes[s] for s in ids[:3]})
    FlagStore(env).flag(DATASET, ids[3:5], "unlearn", content_hashes={s: hashes[s] for s in ids[3:5]})
    # an outside check: both read "flagged 5" while the headline counted 2 for unlearning
    row = html_table(ok(app(run=runs[2].name).run()), "findings")[0]
    assert row["_key"] == top.key and row["flags"] == "2 unlearn · 3 ok"
    at = ok(app(run=runs[2].name, cluster=top.key).run().switch_page("views/cluster.py").run())
    assert "flags: 2 unlearn · 3 ok" in texts(at)


def test_the_sample_page_says_which_finding_gave_its_suspicion(
    env: Path, runs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """An outside check: a page showed "suspicion 0.0391" beside clusters scoring at most 0.0002, with nothing
    saying where it came from (a graded likeness to a flagged stamp)."""
    import pandas as pd

    from spray.runs.reader import RunReader

    reader = RunReader.open(runs[2])
    top = reader.findings()[0]
    member = str(top.member_ids[0])
    table = pd.read_parquet(runs[2] / "samples.parquet").set_index("sample_id")
    best: dict[str, float] = {}  # each sample's highest cluster score, as a member or a carrier
    for f in reader.findings():
        for s in map(str, [*f.member_ids, *f.carrier_ids]):
            best[s] = max(best.get(s, 0.0), f.score)
    other = next(
        s
        for s in table.index
        if table.loc[s, "label"] == top.class_index and best.get(s, 0) < top.score * 0.2
    )
    # the fixture's scores are 0: as the analysis gives them, a member's with its tie-break, and a graded one
    # (a review: stored as float32, a member with no share in the region, or a carrier, is a hair under it)
    table.loc[member, "score"] = top.score - 5e-7
    table.loc[other, "score"] = top.score * 0.3
    # a second outside check: a suspicion 100× its finding's score, all tie-break, read as the score alone
    tied = str(top.member_ids[1])
    table.loc[tied, "score"] = top.score + 0.004
    copy = tmp_path / "graded-runs" / runs[2].name  # a runs folder of its own: the fixture's stays as it is
    shutil.copytree(runs[2], copy)
    table.reset_index().to_parquet(copy / "samples.parquet")
    with pointed_at(copy.parent, tmp_path / "graded-flags.sqlite"):
        at = ok(app(run=copy.name, sample=member).run().switch_page("views/sample.py").run())
        assert f"Its suspicion is that of a member of {top.key}" in texts(at) and "plus" not in texts(at)
        at = ok(app(run=copy.name, sample=tied).run().switch_page("views/sample.py").run())
        assert f"Its suspicion is that of a member of {top.key}" in texts(at)
        assert "plus 0.004 for its own share of relevance" in texts(at)
        at = ok(app(run=copy.name, sample=other).run().switch_page("views/sample.py").run())
        assert f"from its likeness to the stamp of {top.key}" in texts(at) and "× 0.30" in texts(at)


def test_flags_record_their_content_and_the_overview_warns_when_an_id_names_other_images(
    env: Path, runs: tuple[Path, Path, Path]
) -> None:
    from spray.runs.reader import RunReader

    old, new = (RunReader.open(p) for p in runs[1:])
    old_hashes, new_hashes = old.content_hashes(), new.content_hashes()
    assert old_hashes and new_hashes
    ids = [s for s in old.sample_ids()[:3] if old_hashes[s] != new_hashes.get(s)]
    assert len(ids) == 3, "the two fixture runs should hold other images under the same ids"
    at = ok(app(run=runs[2].name).run())
    assert "Flags on other images" not in texts(at)
    # Flagged on the old run (its images), shown on the new run: the same ids hold other images.
    FlagStore(env).flag(DATASET, ids, "unlearn", content_hashes={s: old_hashes[s] for s in ids})
    at = ok(app(run=runs[2].name).run())
    warned = texts(at)
    assert "Flags on other images" in warned and "3 flagged sample ids now name other content" in warned
    # the Flags page, whose export hands the ids to unlearning, says it too, and leaves them out of the
    # download as `spray flags export --runs-dir` does (an outside check: the download held them)
    page = ok(at.switch_page("views/flags.py").run())
    assert "Flags on other images" in texts(page) and "3 flags are left out" in texts(page)
    assert "0 samples. Same output as `spray flags export --runs-dir RUNS" in texts(page)
    # A flag set on the new run's page records the new run's content, which clears the warning.
    at.switch_page("views/sample.py")
    at.query_params["sample"] = ids[0]
    ok(at.run())
    # the sample's own page says its flag was set on another image
    assert "This flag was set on another image" in texts(at)
    at.radio(key="flag_status_sample").set_value("unlearn")
    at.form_submit_button[0].click()
    ok(at.run())
    got = {f.sample_id: f.content_hash for f in FlagStore(env).current(DATASET)}
    assert got[ids[0]] == new_hashes[ids[0]]
    assert "This flag was set on another image" not in texts(at)
    assert "2 flagged sample ids" in texts(ok(app(run=runs[2].name).run()))
    # On the older run the flag set on the new content names another image too, but the advice is to open
    # the newest run: rebinding to an older run's ids would move flags to older data.
    older = texts(ok(app(run=runs[1].name).run()))
    assert "which is not the newest of its audit" in older and "spray flags rebind" not in older


def test_the_sample_page_says_why_a_sample_has_no_original_file(
    env: Path, runs: tuple[Path, Path, Path]
) -> None:
    """An outside check: for samples that are not files (IDX, factory) the "Original file" heading stood alone."""
    from spray.runs.reader import RunReader

    sid = RunReader.open(runs[2]).sample_ids()[0]
    at = ok(app(run=runs[2].name, sample=sid).switch_page("views/sample.py").run())
    shown = texts(at)
    assert "Original file" in shown
    assert "are not files. The input above is the image as the audit read it." in shown


def test_a_second_cluster_link_opens_its_own_cluster(env: Path) -> None:
    """An outside check: after one cluster had been opened, every later link to the cluster page (overview
    row, class page list, "open the selection") showed the first cluster again, with its flag form."""
    at = ok(app().run())
    table = html_table(at, "findings")
    first, second = table[0], next(r for r in table[1:] if r["cluster key"] != table[0]["cluster key"])
    follow_row_link(at, first["_href"])
    assert at.query_params["cluster"] == first["cluster key"]
    ok(at.switch_page("views/overview.py").run())
    follow_row_link(at, second["_href"])
    assert at.query_params["cluster"] == second["cluster key"]
    assert at.selectbox(key="w_target").value == second["cluster key"]
    members = int(at.subheader[0].value.split("(")[1].rstrip(")"))
    assert members == int(str(second["size"]).replace(",", ""))
    # A selection's link after a cluster: the selection; then a cluster's link again: that cluster.
    run = at.query_params["run"]
    follow_row_link(at, "cluster?" + urlencode({"run": run, "view": "selection", "sel": "i" + _ids("1,2,3")}))
    assert at.selectbox(key="w_target").value == "selection" and at.subheader[0].value == "Members (3)"
    follow_row_link(at, second["_href"])  # the cluster open before the selection: its link still counts
    assert at.selectbox(key="w_target").value == second["cluster key"]
    follow_row_link(at, first["_href"])
    assert at.selectbox(key="w_target").value == first["cluster key"]
    # Choosing another cluster in the page's own select box still works.
    ok(at.selectbox(key="w_target").select(second["cluster key"]).run())
    assert at.query_params["cluster"] == second["cluster key"]


def _ids(text: str) -> str:
    """The body of an encoded id list (urlstate.encode_ids) of the ids in ``text``."""
    import base64
    import zlib

    nums = [int(s) for s in text.split(",")]
    deltas = ",".join(str(b - a) for a, b in zip([0, *nums[:-1]], nums, strict=True))
    return base64.urlsafe_b64encode(zlib.compress(deltas.encode(), 9)).decode().rstrip("=")


def test_switching_runs_on_a_cluster_page_says_when_its_key_is_another_group(
    runs: tuple[Path, Path, Path], env: Path
) -> None:
    """An outside check: on a cluster page, picking the newer run kept cluster=6/k6/c4 and showed that run's
    cluster of the name (24 samples, 4 of them the 23 shown before), its flag form ready, with no word."""
    from spray.runs.reader import RunReader

    old, new = RunReader.open(runs[1]), RunReader.open(runs[2])
    new_keys = {f.key: set(map(str, f.member_ids)) for f in new.findings()}
    key = next(
        f.key for f in old.findings()
        if f.key in new_keys and len(set(map(str, f.member_ids)) & new_keys[f.key]) < 0.5 * f.size
    )  # fmt: skip
    at = app(run=runs[1].name)
    at.switch_page("views/cluster.py")
    at.query_params["cluster"] = key
    ok(at.run())
    assert "was another group" not in texts(at)
    at.selectbox(key="w_run").set_value(runs[2].name)
    ok(at.run())
    assert f"{key} was another group" in texts(at)


def test_a_cluster_number_that_is_not_there_is_answered_with_those_that_are(
    runs: tuple[Path, Path, Path], env: Path
) -> None:
    """An outside check: the hot-spot labelling (k=0, groups numbered from 1, -1 for none) read "has the
    clusters c0-c2, not c0"; the numbers present are named now."""
    import numpy as np

    from spray.runs.reader import RunReader

    reader = RunReader.open(runs[2])
    top = reader.findings()[0]
    labels = reader.class_data(top.class_index).labellings[top.k]
    present = sorted({int(x) for x in labels if x >= 0})
    at = app(run=runs[2].name)
    at.switch_page("views/cluster.py")
    at.query_params["cluster"] = f"{top.class_index}/k{top.k}/c99"
    ok(at.run())
    want = f"has the clusters at k={top.k} {', '.join(f'c{i}' for i in present)}, not c99"
    assert want in texts(at), texts(at)
    assert np.issubdtype(labels.dtype, np.integer)


def test_a_links_page_that_is_not_there_is_said(runs: tuple[Path, Path, Path], env: Path) -> None:
    """An outside check: page=99 showed page 1 without a word, which docs/dashboard.md says a link gets."""
    from spray.runs.reader import RunReader

    top = RunReader.open(runs[2]).findings()[0]
    at = app(run=runs[2].name)
    at.switch_page("views/cluster.py")
    at.query_params["cluster"] = top.key
    at.query_params["page"] = "99"
    ok(at.run())
    assert "This link's page='99' cannot be shown here" in texts(at)


def test_flags_left_under_an_old_dataset_key_are_pointed_at(env: Path, runs: tuple[Path, Path, Path]) -> None:
    """An outside check: after data.name changed, the newest run showed "unlearn 0" with no hint that the
    flags sat under the old key (the nightly job said it; the dashboard looked as if they were lost)."""
    from spray.runs.reader import RunReader

    run = RunReader.open(runs[2])
    hashes = run.content_hashes() or {}
    ids = run.sample_ids()[:4]
    FlagStore(env).flag("old-name", ids, "unlearn", content_hashes={s: hashes[s] for s in ids})
    warned = texts(ok(app(run=runs[2].name).run()))
    assert "Flags under another dataset key" in warned and "4 of 4 under 'old-name'" in warned
    FlagStore(env).flag(DATASET, ids[:1], "ok")  # the dataset has flags of its own: nothing to point at
    assert "Flags under another dataset key" not in texts(ok(app(run=runs[2].name).run()))


def test_flags_set_on_a_run_of_other_weights_are_said(tmp_path: Path) -> None:
    """An outside check: flags set on a run of an earlier checkpoint were shown on the new model's run as if
    set on it (only spray correct warned)."""
    import json

    from spray.runs.reader import RunReader

    old = make_synthetic_run(tmp_path, class_sizes=SIZES, seed=1, dataset=DATASET)
    new = make_synthetic_run(tmp_path, class_sizes=SIZES, seed=2, dataset=DATASET)
    summary = json.loads((old / "summary.json").read_text())
    summary["hashes"]["model"] = "an-earlier-checkpoint"
    (old / "summary.json").write_text(json.dumps(summary))
    old_id, new_id = (RunReader.open(p).summary.run_id for p in (old, new))
    db = tmp_path / "flags.sqlite"
    FlagStore(db).flag(DATASET, ["1", "2", "3"], "unlearn", run_id=old_id)
    FlagStore(db).flag(DATASET, ["4"], "unlearn", run_id=new_id)
    with pointed_at(tmp_path, db):
        said = texts(ok(app(run=new.name).run()))
    assert (
        "Flags from other weights" in said
        and "3 of the 4 flags" in said
        and f"3 on run {old_id[:12]}" in said
    )
    with pointed_at(tmp_path, db):  # on the old run, the flag of the new run is the other one
        assert "1 of the 4 flags" in texts(ok(app(run=old.name).run()))
    # an outside check: after an upgrade that changed the fingerprint scheme the note went silent
    summary["hashes"]["model_hash_version"] = "1"
    (old / "summary.json").write_text(json.dumps(summary))
    import streamlit as st

    st.cache_resource.clear()  # the dashboard keeps a run's reader: a published run never changes
    with pointed_at(tmp_path, db):
        said = texts(ok(app(run=new.name).run()))
    assert "Flags from runs of another spray version" in said and "3 of the 4 flags" in said
    assert "cannot be told" in said and "Flags from other weights" not in said


def test_a_renamed_images_page_points_at_the_flag_under_its_former_id(
    env: Path, runs: tuple[Path, Path, Path]
) -> None:
    """An outside check: before spray flags rebind, a renamed file's Sample page said "Current flag: none"
    with no hint that its flag waited under the old id."""
    from spray.runs.reader import RunReader

    run = RunReader.open(runs[2])
    hashes = run.content_hashes() or {}
    sid = run.sample_ids()[5]
    FlagStore(env).flag(DATASET, ["old/name.png"], "unlearn", content_hashes={"old/name.png": hashes[sid]})
    at = app(run=runs[2].name)
    at.query_params["sample"] = sid
    at.switch_page("views/sample.py")
    said = texts(ok(at.run()))
    assert "waits under its former id old/name.png" in said and "spray flags rebind" in said
    # on the older run the flag's id may be the image's newer name: no advice to rebind (a review finding)
    older = RunReader.open(runs[1])
    old_sid = older.sample_ids()[5]
    old_hash = (older.content_hashes() or {})[old_sid]
    FlagStore(env).flag(DATASET, ["newer/name.png"], "unlearn", content_hashes={"newer/name.png": old_hash})
    at = app(run=runs[1].name)
    at.query_params["sample"] = old_sid
    at.switch_page("views/sample.py")
    assert "waits under its former id" not in texts(ok(at.run()))


def test_a_flag_database_in_a_folder_this_user_cannot_write_is_browsed(
    env: Path, runs: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outside check: on a runs folder mounted read-only (an archive), every page showed only "Cannot open
    the flag database ... writable" and no finding, since the pages read the flags through a writer."""
    import os

    from spray.runs.reader import RunReader

    top = RunReader.open(runs[2]).findings()[0]
    ids = [str(s) for s in top.member_ids][:2]
    hashes = RunReader.open(runs[2]).content_hashes()
    FlagStore(env).flag(DATASET, ids, "unlearn", content_hashes={s: hashes[s] for s in ids})
    before = sorted(p.name for p in env.parent.iterdir())
    folder = str(env.parent.resolve())
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **kw: m != os.W_OK and real(p, m, **kw) if str(p) == folder else real(p, m, **kw))  # fmt: skip
    at = ok(app(run=runs[2].name, cluster=top.key).run().switch_page("views/cluster.py").run())
    assert not at.error, [e.value for e in at.error]
    assert "flags: 2 unlearn" in texts(at) and "Flagging is off: this user cannot write" in texts(at)
    assert not [r for r in at.radio if str(r.key).startswith("flag_status")]  # no flag form to fail on submit
    assert sorted(p.name for p in env.parent.iterdir()) == before  # read as it is: no journal files made

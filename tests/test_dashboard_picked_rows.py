"""Rows picked in a dashboard table act on the samples the user picked, whatever other sessions changed
meanwhile; a flag set from the Flags page records its image."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

from spray.flags import FlagStore
from spray.runs.reader import RunReader
from tests.dashboard_fixtures import make_synthetic_run, pointed_at

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
DATASET = "synthetic-fashion"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_run(tmp_path_factory.mktemp("runs"), seed=1, dataset=DATASET)


@pytest.fixture
def db(run: Path, tmp_path: Path) -> Iterator[Path]:
    with pointed_at(run.parent, tmp_path / "flags.sqlite"):
        yield tmp_path / "flags.sqlite"


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def widget(at: AppTest, key: str) -> str:
    """The widget key table ``key`` is drawn under now (a new one after each save)."""
    gen = f"_gen_{key}"
    return f"{key}-{at.session_state.get(gen, 0)}"


def pick(at: AppTest, key: str, rows: list[int]) -> AppTest:
    """Tick table rows, as a click in the browser does."""
    at.session_state[widget(at, key)] = {"selection": {"rows": rows, "columns": [], "cells": []}}
    return ok(at.run())


def apply(at: AppTest, form: str, decision: str) -> AppTest:
    at.radio(key=f"flag_status_{form}").set_value(decision)
    at.button(key=f"FormSubmitter:flagform_{form}-Apply").click()
    return ok(at.run())


def flags_page(run: Path) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = run.name
    return ok(ok(at.run()).switch_page("views/flags.py").run())


def shown(at: AppTest) -> list[str]:
    return [str(s) for s in at.dataframe[0].value["sample_id"]]


def test_the_flags_page_applies_to_the_rows_picked_when_another_session_unflags_a_row_above(
    db: Path, run: Path
) -> None:
    store = FlagStore(db)
    for sid in ["4", "3", "2", "1"]:  # newest first: the table lists 1, 2, 3, 4
        store.flag(DATASET, [sid], "investigate")
    at = flags_page(run)
    assert shown(at) == ["1", "2", "3", "4"]
    pick(at, "fl_current", [1, 2])  # 2 and 3
    store.unflag(DATASET, ["1"], "another session")  # the rows below move up
    at = apply(at, "flags_page", "ok")
    assert store.status_of(DATASET) == {"2": "ok", "3": "ok", "4": "investigate"}


def test_the_flags_page_applies_nothing_when_a_picked_row_left_the_table(db: Path, run: Path) -> None:
    store = FlagStore(db)
    for sid in ["4", "3", "2", "1"]:
        store.flag(DATASET, [sid], "investigate")
    at = flags_page(run)
    pick(at, "fl_current", [0, 1])  # 1 and 2
    store.unflag(DATASET, ["1"], "another session")
    at = apply(at, "flags_page", "ok")
    assert store.status_of(DATASET) == {"2": "investigate", "3": "investigate", "4": "investigate"}
    warned = " ".join(w.value for w in at.warning)
    assert (
        "The table changed while rows were picked" in warned
        and "no decision was applied to any picked sample" in warned
    )
    # the sample still in the table stays picked, on its new row, and a second Apply acts on it alone
    assert at.session_state[widget(at, "fl_current")]["selection"]["rows"] == [0]
    at = apply(at, "flags_page", "ok")
    assert store.status_of(DATASET) == {"2": "ok", "3": "investigate", "4": "investigate"}


def test_a_flag_set_on_the_flags_page_records_the_image_and_class_it_names(db: Path, run: Path) -> None:
    reader = RunReader.open(run)
    hashes = reader.content_hashes()
    assert hashes
    store = FlagStore(db)
    store.flag(DATASET, ["5"], "investigate", content_hashes=hashes)
    at = flags_page(run)
    pick(at, "fl_current", [0])
    apply(at, "flags_page", "unlearn")
    (flag,) = store.current(DATASET)
    assert (flag.status, flag.content_hash) == ("unlearn", hashes["5"])
    assert flag.class_name == reader.samples()["label_name"]["5"]
    assert flag.run_id == reader.summary.run_id


def cluster_table(run: Path) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in {"run": run.name, "cluster": "6/k5/c0", "filter": "not flagged", "table": "1"}.items():
        at.query_params[k] = v
    at = ok(ok(at.run()).switch_page("views/cluster.py").run())
    assert len(at.dataframe) == 1 and len(shown(at)) >= 4
    return at


def test_the_cluster_table_applies_to_the_rows_picked_when_another_session_flags_a_row_above(
    db: Path, run: Path
) -> None:
    store = FlagStore(db)
    at = cluster_table(run)
    ids = shown(at)
    pick(at, "cl_members", [1, 2])
    store.flag(DATASET, [ids[0]], "investigate", "another session")  # leaves the "not flagged" table
    apply(at, "cluster_rows", "unlearn")
    assert store.status_of(DATASET) == {ids[0]: "investigate", ids[1]: "unlearn", ids[2]: "unlearn"}


def test_the_cluster_table_applies_nothing_when_another_session_flags_a_picked_row(
    db: Path, run: Path
) -> None:
    store = FlagStore(db)
    at = cluster_table(run)
    ids = shown(at)
    pick(at, "cl_members", [0, 1])
    store.flag(DATASET, [ids[0]], "investigate", "another session")
    at = apply(at, "cluster_rows", "unlearn")
    assert store.status_of(DATASET) == {ids[0]: "investigate"}
    assert any("The table changed while rows were picked" in w.value for w in at.warning)
    assert shown(at)[0] == ids[1] and at.session_state[widget(at, "cl_members")]["selection"]["rows"] == [0]

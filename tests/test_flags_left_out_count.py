"""An export of one status counts the left-out flags of that status, not of every status (`spray flags export
--status` and the dashboard's Flags page)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from spray.flags import FlagStore
from tests.dashboard_fixtures import make_synthetic_run, pointed_at
from tests.faults.cli import run_main

DATASET = "synthetic-fashion"
APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs folder whose flag database holds 4 unlearn and 3 investigate flags set on other images than the
    run holds under their ids, and 2 unlearn flags on the run's own images."""
    runs = tmp_path_factory.mktemp("runs")
    make_synthetic_run(runs, seed=1, dataset=DATASET)
    store = FlagStore(runs / "flags.sqlite")
    replaced = {str(i): f"another-image-{i}" for i in range(7)}
    store.flag(DATASET, ["0", "1", "2", "3"], "unlearn", content_hashes=replaced)
    store.flag(DATASET, ["4", "5", "6"], "investigate", content_hashes=replaced)
    store.flag(DATASET, ["10", "11"], "unlearn")
    return runs


def test_spray_flags_export_counts_the_left_out_flags_of_the_status_exported(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "unlearn.csv"
    res = run_main(
        ["flags", "export", "--runs-dir", str(runs), "--status", "unlearn", "-o", str(out)], capsys
    )
    assert res.code == 0 and "left out of the export: 4 flags" in res.output
    assert "3 flags of other statuses (not in this export)" in res.output
    assert "4, 5, 6" not in res.output  # the flags of other statuses are counted, not described
    assert sorted(line.split(",")[1] for line in out.read_text().splitlines()[1:]) == ["10", "11"]
    res = run_main(["flags", "export", "--runs-dir", str(runs), "--status", "ok", "-o", str(out)], capsys)
    assert res.code == 0 and "left out of the export" not in res.output
    assert "7 flags of other statuses (not in this export)" in res.output
    res = run_main(["flags", "export", "--runs-dir", str(runs), "--status", "all", "-o", str(out)], capsys)
    assert "left out of the export: 7 flags" in res.output and "other statuses" not in res.output


@pytest.fixture
def dashboard(runs: Path) -> Iterator[None]:
    with pointed_at(runs, runs / "flags.sqlite"):
        yield


@pytest.mark.usefixtures("dashboard")
def test_the_flags_page_counts_the_left_out_flags_of_the_status_exported() -> None:
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60).run()
    at = at.switch_page("views/flags.py").run()
    assert not at.exception
    assert at.selectbox(key="fl_export_status").value == "unlearn"
    said = " ".join(c.value for c in at.caption)
    assert "2 samples." in said and "**4 flags are left out:**" in said
    assert "3 flags of other statuses (not in this export)" in said
    at = at.selectbox(key="fl_export_status").select("investigate").run()
    said = " ".join(c.value for c in at.caption)
    assert "0 samples." in said and "**3 flags are left out:**" in said
    assert "4 flags of other statuses (not in this export)" in said

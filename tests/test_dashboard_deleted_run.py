"""A run folder removed while its overview is open: the next rerun says "not found". An outside check moved a
run's folder away and changed "Show top" two seconds later: the overview kept showing the deleted run (the run
listing is cached for a few seconds, its files for good) while the other pages said "Not found"."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

from tests.dashboard_fixtures import make_synthetic_run, pointed_at

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    d = tmp_path / "runs"
    old = make_synthetic_run(d, seed=11)
    new = make_synthetic_run(d, seed=12)
    with pointed_at(d, tmp_path / "flags.sqlite"):
        yield old, new


def test_a_run_deleted_while_its_overview_is_open_is_not_found_on_the_next_rerun(
    runs: tuple[Path, Path],
) -> None:
    _, new = runs
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception and at.query_params["run"] == new.name
    shutil.rmtree(new)
    at.run()  # well within the listing's few cached seconds
    assert not at.exception
    shown = "\n".join(str(e.value) for e in at.error)
    assert "Not found" in shown and new.name in shown
    assert not [t for t in at.get("html") if "findings" in str(t.proto)]  # the deleted run's table is gone

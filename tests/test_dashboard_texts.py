"""Dashboard texts under Streamlit's AppTest: the sample-id example, skipped samples on the overview, and
the count of a saved flag."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

from spray.records import SkippedSample
from tests.dashboard_fixtures import make_synthetic_run, pointed_at

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
SIZES = [30, 30, 30]
SKIPPED = [SkippedSample(f"cat/{i:03d}.png", f"corrupt image: broken data stream {i}") for i in range(5)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("runs")
    clean = make_synthetic_run(d, class_sizes=SIZES, planted_class=1, seed=1, dataset="clean")
    broken = make_synthetic_run(
        d, class_sizes=SIZES, planted_class=1, seed=2, dataset="broken", skipped=SKIPPED
    )
    return d, clean, broken


@pytest.fixture
def env(runs: tuple[Path, Path, Path], tmp_path: Path) -> Iterator[None]:
    with pointed_at(runs[0], tmp_path / "flags.sqlite"):
        yield


def _run(**query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _shown(elements: Iterable[Any]) -> str:
    """The elements' Markdown as the browser shows it (escapes removed)."""
    return re.sub(r"\\(.)", r"\1", "\n".join(str(e.value) for e in elements))


def _warnings(at: AppTest) -> str:
    return _shown(at.warning)


def test_the_sample_id_example_is_relative_to_data_path(runs: tuple[Path, Path, Path], env: None) -> None:
    box = _run(run=runs[1].name).text_input(key="search_id")
    assert box.proto.placeholder == "e.g. 1234 or cat/001.png"  # an image folder's id: no train/ prefix


def test_the_overview_names_the_skipped_samples(runs: tuple[Path, Path, Path], env: None) -> None:
    warned = _warnings(_run(run=runs[2].name))
    # not "unreadable samples": hidden files and non-images are among them (an outside check)
    assert "5 entries of the data left out (not audited)" in warned
    assert "cat/000.png" in warned and "broken data stream 2" in warned and "cat/003.png" not in warned
    assert "and 2 more" in warned and "summary.json" in warned
    assert "left out (not audited)" not in _warnings(_run(run=runs[1].name))


def test_a_saved_single_flag_says_sample(runs: tuple[Path, Path, Path], env: None) -> None:
    at = _run(run=runs[1].name)
    at.switch_page("views/sample.py")
    at.query_params["sample"] = "0"
    at.run()
    at.radio(key="flag_status_sample").set_value("investigate")
    at.form_submit_button[0].click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Saved — investigate: 1 sample (sample page)" in _shown(at.success)

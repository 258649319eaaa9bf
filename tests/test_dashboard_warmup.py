"""The dashboard's warm-up: the newest run is in the shared caches before the first page asks for it."""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("streamlit")
from streamlit import delta_generator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "dashboard"))
import common
import embedmap
import warmup

from spray.imaging import DEFAULT_COLORMAP
from spray.runs.reader import RunReader
from tests.dashboard_fixtures import make_synthetic_run


def _no_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, any read of a run file fails the test."""

    def refuse(*_a: Any, **_k: Any) -> None:
        raise AssertionError("a run file was read after the warm-up")

    for name in ("__init__", "class_data", "samples", "mean_heatmap", "heatmaps", "members", "changes"):
        monkeypatch.setattr(RunReader, name, refuse)


def _first_reads(path: str) -> None:
    """What the overview and the class page read first (each served from a cache, or it fails)."""
    found = common.findings(path)
    assert found
    common.samples(path)
    for f in found[: warmup.OVERVIEW_ROWS]:
        assert common.mean_heatmap_uri(path, f.key, DEFAULT_COLORMAP).startswith("data:image/png")
    pic = embedmap.class_picture(path, found[0].class_index, found[0].k, embedmap.COLOURINGS[0])
    assert pic.uri.startswith("data:image/png")
    m = embedmap.class_map(path, found[0].class_index, found[0].k, embedmap.COLOURINGS[0], "")
    assert len(m.xy) == common.class_entry(path, found[0].class_index).n


def test_warm_reads_what_the_first_pages_read_of_the_newest_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    old = make_synthetic_run(runs, class_sizes=[40, 40, 40], planted_class=1, run_id="old", seed=1)
    new = make_synthetic_run(runs, class_sizes=[40, 40, 40], planted_class=1, run_id="new", seed=2)
    assert warmup.warm(runs) > 0
    _no_reading(monkeypatch)
    _first_reads(str(new))
    # Of older runs only what the overview needs (summaries, the change comparison), not their tables.
    assert common.summary(str(old)).name
    with pytest.raises(AssertionError, match="after the warm-up"):
        common.samples(str(old))


def test_warm_passes_over_what_it_cannot_read(tmp_path: Path) -> None:
    assert warmup.warm(tmp_path / "missing") >= 0
    runs = tmp_path / "runs"
    good = make_synthetic_run(runs, class_sizes=[40, 40], planted_class=0, run_id="good", seed=3)
    bad = make_synthetic_run(runs, class_sizes=[40, 40], planted_class=0, run_id="bad", seed=4)
    (bad / "summary.json").write_text("{ damaged")
    warmup.warm(runs)  # the newest run is damaged: the one before it is read, nothing raises
    assert common.findings(str(good))


def test_start_survives_any_warm_up_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_runs: Any) -> float:
        raise RuntimeError("boom")

    monkeypatch.setattr(warmup, "warm", broken)
    try:
        stop = warmup.start(tmp_path)  # the server would start anyway
        stop.set()
        # What is alive after the warm-up is out of the collector's sight (Streamlit collects after every
        # script run), and the first page is spared Streamlit's REPL check.
        assert gc.get_freeze_count() > 0
        assert delta_generator._use_warning_has_been_displayed
    finally:
        gc.unfreeze()  # this test process goes on collecting as before


def test_watch_warms_a_run_published_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    make_synthetic_run(runs, class_sizes=[40, 40], planted_class=0, run_id="first", seed=5)
    done: list[float] = []
    real = warmup.warm
    monkeypatch.setattr(warmup, "warm", lambda r: done.append(real(r)) or done[-1])
    stop = warmup.watch(runs, every=0.05)
    try:
        time.sleep(0.2)
        assert not done  # nothing new: no warm-up
        later = make_synthetic_run(runs, class_sizes=[40, 40], planted_class=0, run_id="later", seed=6)
        deadline = time.monotonic() + 30
        while not done and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
    assert len(done) == 1
    _no_reading(monkeypatch)
    _first_reads(str(later))

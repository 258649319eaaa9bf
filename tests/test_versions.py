"""Versions that mean something: an upgrade recomputes exactly what its version says changed."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import spray
from spray import versions
from spray.audit import audit
from spray.data.decoding import DECODER_VERSION
from spray.runs.layout import LAYOUT_VERSION, paste_db_file
from spray.runs.reader import RunReader
from tests.runs.builders import tiny_config


def test_versions_are_recorded_and_the_package_version_is_not_in_the_run_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_config(tmp_path)
    first = audit(cfg, progress=False)
    s = RunReader.open(first.run_dir).summary
    assert s.versions == {
        "spray": spray.__version__,
        "lrp": versions.LRP_VERSION,
        "analysis": versions.ANALYSIS_VERSION,
        "layout": LAYOUT_VERSION,
    }
    assert (
        s.hashes["code"]
        == versions.code_version()
        == (
            f"lrp{versions.LRP_VERSION}-analysis{versions.ANALYSIS_VERSION}-layout{LAYOUT_VERSION}"
            f"-decoder{DECODER_VERSION}"
        )
    )
    # A release that changes neither heatmaps nor findings: still up to date.
    monkeypatch.setattr(spray, "__version__", "9.9.9")
    assert audit(cfg, progress=False).up_to_date
    # an outside check: a decoder fix (other pixels) kept the run made from the old pixels as up to date
    import spray.data.decoding as decoding

    monkeypatch.setattr(decoding, "DECODER_VERSION", decoding.DECODER_VERSION + 1)
    assert not audit(cfg, progress=False).up_to_date


def _pastes(caplog: pytest.LogCaptureFixture) -> tuple[int, int]:
    """``(computed, cached)`` pasted images of the last audit, from its log record."""
    rec = [r for r in caplog.records if hasattr(r, "n_paste_computed")][-1]
    return rec.n_paste_computed, rec.n_paste_cached  # type: ignore[attr-defined]


def test_an_analysis_change_reanalyses_without_lrp_and_an_lrp_change_recomputes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tiny_config(tmp_path)
    caplog.set_level(logging.INFO, logger="spray")
    first = audit(cfg, progress=False)
    assert first.timings["n_computed"] == 20
    cache = Path(cfg.output.runs_dir) / ".cache" / first.cache
    assert (cache / paste_db_file(versions.PASTE_VERSION)).exists()
    computed, _ = _pastes(caplog)
    assert computed > 0

    monkeypatch.setattr(versions, "ANALYSIS_VERSION", versions.ANALYSIS_VERSION + 1)
    second = audit(cfg, progress=False)
    assert not second.up_to_date and second.run_id != first.run_id
    # Same cache directory, every heatmap from it; pastes made the same way (PASTE_VERSION) are all cached.
    assert second.cache == first.cache
    assert (second.timings["n_computed"], second.timings["n_cached"]) == (0, 20)
    assert _pastes(caplog) == (0, computed)
    assert RunReader.open(second.run_dir).summary.versions["analysis"] == versions.ANALYSIS_VERSION

    # pastes made otherwise: a new prediction cache, the old one removed
    monkeypatch.setattr(versions, "ANALYSIS_VERSION", versions.ANALYSIS_VERSION + 1)
    monkeypatch.setattr(versions, "PASTE_VERSION", versions.PASTE_VERSION + 1)
    audit(cfg, progress=False)
    assert _pastes(caplog) == (computed, 0)
    assert not (cache / paste_db_file(versions.PASTE_VERSION - 1)).exists()
    assert (cache / paste_db_file(versions.PASTE_VERSION)).exists()

    monkeypatch.setattr(versions, "LRP_VERSION", versions.LRP_VERSION + 1)
    third = audit(cfg, progress=False)
    assert third.run_id not in (first.run_id, second.run_id) and third.cache != first.cache
    assert (third.timings["n_computed"], third.timings["n_cached"]) == (20, 0)

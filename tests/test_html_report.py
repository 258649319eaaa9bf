"""report.html says what the run holds: the classes it did not analyse and why, and what its member tiles
show when the run kept no thumbnails."""

from __future__ import annotations

from pathlib import Path

from spray.html_report import render_html_report
from spray.records import ZERO_HEATMAPS, ClassSkipped
from tests.runs.builders import make_report, write_published


def test_report_names_classes_not_analysed_and_tiles_without_thumbnails(tmp_path: Path) -> None:
    report, stage = make_report()
    report.classes_skipped = [ClassSkipped(3, "dead", 40, ZERO_HEATMAPS)]
    run = write_published(tmp_path / "runs", report, stage)
    page = render_html_report(run)
    assert f"not analysed: dead (40 samples: {ZERO_HEATMAPS})".replace("'", "&#x27;") in page
    assert "relevance overlaid" in page
    (run / "thumbs.npy").unlink()  # as a run with batch.thumbnails: false has none
    page = render_html_report(run)
    assert "the run kept no thumbnails" in page and "relevance overlaid" not in page

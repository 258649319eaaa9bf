"""spray/report.py: the lines ``spray audit`` prints."""

from __future__ import annotations

from spray.records import ClassSkipped
from spray.report import report_header
from tests.runs.builders import make_report


def test_the_header_counts_samples_and_names_the_classes_left_out() -> None:
    """An outside check: "5 classes analysed in 9.1 s, 0 skipped" counted samples while five classes were left
    out, and the printed lines named none of them."""
    report, _ = make_report()
    report.classes_skipped = [ClassSkipped(i, f"tiny{i}", i, "fewer than analysis.min_class_size (20) samples")
                              for i in range(1, 6)]  # fmt: skip
    header = report_header(report)
    assert "(5 not analysed: tiny1, tiny2, tiny3, ...; why: summary.json, classes_skipped)" in header
    assert f"{len(report.skipped)} samples skipped" in header
    report.classes_skipped = []
    assert "not analysed" not in report_header(report)


def test_a_skipped_class_s_size_reads_as_words() -> None:
    from spray.records import NO_SAMPLES, skipped_size

    assert skipped_size(0, NO_SAMPLES) == "no samples"  # not "0 samples: no samples"
    assert skipped_size(1, "fewer than x") == "1 sample: fewer than x"
    assert skipped_size(1200, "fewer than x") == "1,200 samples: fewer than x"

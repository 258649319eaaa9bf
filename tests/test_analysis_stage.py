"""The analysis stage's choice of classes: too small ones and ones whose every heatmap is zero are skipped,
said, and recorded with their reason (a run read back keeps it)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from spray.analysis_shards import AnalysisInputs
from spray.analysis_stage import _classes_to_analyze, _zero_classes
from spray.config import config_from_dict
from spray.records import TOO_FEW_SAMPLES, ZERO_HEATMAPS


def _cfg():  # type: ignore[no-untyped-def]
    raw = {"model": {"factory": "m:f"}, "data": {"kind": "idx", "images": "x", "labels": "y"}}
    return config_from_dict(raw, check_files=False)


def test_a_class_whose_every_heatmap_is_zero_is_skipped_with_its_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """k-means split such a class by index ties and its evidence described the split as structure."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 30)
    relevance = rng.random((90, 4, 4)).astype(np.float16)
    relevance[labels == 1] = 0  # a dead logit: nothing depends on the input
    relevance[np.flatnonzero(labels == 2)[0]] = 0  # one zero map in a live class is no reason
    inputs = AnalysisInputs([str(i) for i in range(90)], [""] * 90, labels, labels, relevance)
    zero = _zero_classes(inputs, labels)
    assert zero == {1} and _zero_classes(None, labels) == set()
    with caplog.at_level(logging.WARNING):
        todo, skipped = _classes_to_analyze(_cfg(), ["a", "b", "c"], labels, zero)
    assert todo == {0: 30, 2: 30}
    assert [(s.class_name, s.n, s.reason) for s in skipped] == [("b", 30, ZERO_HEATMAPS)]
    assert "every one of its 30 heatmaps is zero" in caplog.text
    _, skipped = _classes_to_analyze(_cfg(), ["a", "b", "c"], labels[:62], set())
    assert [(s.class_name, s.reason) for s in skipped] == [("c", TOO_FEW_SAMPLES)]


def test_a_run_whose_every_class_is_all_zero_says_so(caplog: pytest.LogCaptureFixture) -> None:
    labels = np.repeat(np.arange(2), 30)
    inputs = AnalysisInputs([str(i) for i in range(60)], [""] * 60, labels, labels, np.zeros((60, 4, 4)))
    with caplog.at_level(logging.WARNING):
        todo, _ = _classes_to_analyze(_cfg(), ["a", "b"], labels, _zero_classes(inputs, labels))
    assert not todo and "every class's heatmaps are all zero" in caplog.text
    assert "min_class_size" not in caplog.text


def test_the_reason_survives_the_summary(tmp_path: Path) -> None:
    from spray.records import ClassSkipped
    from spray.runs.reader import read_report
    from tests.runs.builders import make_report, write_published

    report, stage = make_report()
    report.classes_skipped = [ClassSkipped(1, "b", 30, ZERO_HEATMAPS)]
    run = write_published(tmp_path / "runs", report, stage)
    assert read_report(run).classes_skipped == [ClassSkipped(1, "b", 30, ZERO_HEATMAPS)]

"""Copies of one image under two labels (:mod:`spray.label_conflicts`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from spray.label_conflicts import find_label_conflicts, problems


def test_only_contents_under_several_labels_are_conflicts(caplog: pytest.LogCaptureFixture) -> None:
    ids = ["a/1", "a/2", "b/9", "b/3", "a/4", "b/4"]
    labels = np.array([0, 0, 1, 1, 0, 1])
    hashes = ["x", "x", "y", "z", "z", "w"]  # x twice in one class: a duplicate, no conflict
    with caplog.at_level("WARNING"):
        found = find_label_conflicts(ids, labels, hashes)
    assert found is not None and (found.n_groups, found.n_samples) == (1, 2)
    assert found.examples == [["a/4", "b/3"]]
    assert "2 images are copies of 1 contents filed under more than one label (e.g. a/4 = b/3)" in caplog.text
    assert find_label_conflicts(ids, labels, ["x", "x", "y", "z", "v", "w"]) is None
    assert find_label_conflicts(ids, labels, []) is None  # hashes not one per sample: nothing to say
    assert problems({"n_groups": 0}) == []


def test_an_audit_records_and_reports_a_copy_in_another_class(tmp_path: Path) -> None:
    """An outside check filed a copy and a symlink of other classes' images under a class: both pairs had
    one content hash in samples.parquet, and nothing in the log, summary.json or report.html said so."""
    from spray.accuracy import recorded_problems
    from spray.audit import audit
    from tests.runs.builders import tiny_config

    cfg = tiny_config(tmp_path)
    cat = sorted((tmp_path / "imgs" / "cat").iterdir())
    shutil.copy(cat[0], tmp_path / "imgs" / "dog" / "copy_of_cat.png")
    report = audit(cfg, progress=False)
    extra = json.loads((Path(report.run_dir) / "summary.json").read_text())["extra"]
    assert extra["label_conflicts"]["n_groups"] == 1
    assert extra["label_conflicts"]["examples"] == [sorted([f"cat/{cat[0].name}", "dog/copy_of_cat.png"])]
    assert any("filed under more than one label" in p for p in recorded_problems(extra))

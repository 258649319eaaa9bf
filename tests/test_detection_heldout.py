"""The held-out detection protocol: its split is fixed and disjoint, and its metrics read a run right."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "detection_heldout.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_detection_heldout", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_detection_heldout"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_the_splits_share_no_family_and_no_dataset_target(bench) -> None:
    tune, report = bench.SPLITS["tuning"], bench.SPLITS["reporting"]
    assert not set(tune.families) & set(report.families)
    pairs = lambda s: {(d.name, t) for d in s.datasets for t in d.targets}  # noqa: E731
    assert not pairs(tune) & pairs(report)
    assert {d.name for d in report.datasets} - {d.name for d in tune.datasets}, "a dataset never tuned on"
    assert not set(tune.clean_seeds) & set(report.clean_seeds)
    for split in (tune, report):
        cells = bench.cells(split)
        clean = [c for c in cells if c.family == "none"]
        assert len(clean) >= 20 and len(split.seeds) >= 3 and len(split.datasets) >= 2
        assert len({c.name for c in cells}) == len(cells)


def test_evaluate_reads_findings_flags_and_scores(bench, tmp_path: Path) -> None:
    cell = bench.Cell("tuning", "digits", "blob", 0.1, 7, 0)
    planted = ["1", "2", "3", "4"]
    finding = {"key": "7/k3/c1", "class_index": 7, "class_name": "7", "size": 5, "score": 0.5, "suspicious": True,
               "member_ids": ["1", "2", "3", "4", "9"], "carrier_ids": [], "evidence": ["e"], "signals": {}}  # fmt: skip
    other = dict(finding, key="2/k2/c0", class_index=2, class_name="2", score=0.1, member_ids=["20", "21"])
    summary = {"findings": [finding, other], "classes": [{"clusters": [finding, other]}]}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    ids = [str(i) for i in range(30)]
    score = [1.0 if i in planted else 0.0 for i in ids]
    pd.DataFrame({"sample_id": ids, "score": score}).to_parquet(tmp_path / "samples.parquet")
    row = bench.evaluate(cell, {"planted_ids": planted}, tmp_path)
    assert row["hit1"] and row["flagged"] and row["auroc"] == 1.0
    assert abs(row["top_f1"] - 2 * 0.8 * 1.0 / 1.8) < 1e-9
    assert row["other_alarms"] == ["2:5"] and row["false_alarm"]

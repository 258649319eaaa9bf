"""The quick cell of the planted-Clever-Hans benchmark (trains a small CNN: minutes on CPU)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "detection.py"


@pytest.mark.slow
def test_quick_cell_finds_the_planted_cluster(tmp_path: Path) -> None:
    detection_dir = Path("/usr/share/datasets/fashion-mnist")
    if not detection_dir.exists():
        pytest.skip("Fashion-MNIST missing: apt-get install -y dataset-fashion-mnist")
    spec = importlib.util.spec_from_file_location("bench_detection", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_detection"] = mod
    spec.loader.exec_module(mod)
    out = tmp_path / "quick.jsonl"
    mod.main(["--quick", "--out", str(out)])

    row = json.loads(out.read_text().splitlines()[0])
    assert row["gated"], f"the quick model ignores the artifact: {row}"
    assert row["hit1"], row["top"]
    assert row["f1"] >= 0.7, row
    assert row["auroc_cls"] >= 0.9, row

"""The quick cell of the planted-Clever-Hans benchmark (trains a small CNN: minutes on CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import load_benchmark


@pytest.mark.slow
def test_quick_cell_finds_the_planted_cluster(tmp_path: Path) -> None:
    detection_dir = Path("/usr/share/datasets/fashion-mnist")
    if not detection_dir.exists():
        pytest.skip("Fashion-MNIST missing: apt-get install -y dataset-fashion-mnist")
    mod = load_benchmark("detection")
    out = tmp_path / "quick.jsonl"
    mod.main(["--quick", "--out", str(out)])

    row = json.loads(out.read_text().splitlines()[0])
    assert row["gated"], f"the quick model ignores the artifact: {row}"
    assert row["hit1"], row["top"]
    assert row["f1"] >= 0.7, row
    assert row["auroc_cls"] >= 0.9, row

"""Concept relevance through the batch stage, the cache and the run folder (``concepts.npy``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spray.runs.cache import ShardCache, compact_concepts
from spray.runs.errors import RunReadError
from spray.runs.layout import RunFiles
from spray.runs.reader import RunReader
from tests.runs.builders import make_report, tiny_config, write_published
from tests.runs.test_cache import _batch
from tests.runs.test_layout_doc import _documented


def test_concepts_round_trip_through_run_and_cache(tmp_path: Path) -> None:
    report, stage = make_report()
    n = len(stage.batch)
    stage.batch.concepts = np.random.default_rng(0).standard_normal((n, 5)).astype(np.float32)
    report.extra["concept_layer"] = "features"
    run = write_published(tmp_path / "runs", report, stage)
    reader = RunReader(run)
    ids = list(reversed(stage.batch.sample_ids[:4]))
    got = reader.concepts(ids)
    assert got is not None and got.dtype == np.float16
    np.testing.assert_array_equal(got, stage.batch.concepts[[3, 2, 1, 0]].astype(np.float16))
    assert reader.summary.extra["concept_layer"] == "features"
    assert _documented({"concepts.npy", "concepts", "concept_layer"}) == []

    cache = ShardCache(tmp_path / "cache", by_label=False)
    batch = _batch(["x", "y"])
    batch.concepts = np.arange(6, dtype=np.float32).reshape(2, 3)
    cache.write(0, batch, None, None)
    back, _ = ShardCache(tmp_path / "cache", by_label=False).gather(
        ["y", "x"], ["h-y", "h-x"], np.array([1, 0])
    )
    assert back.concepts is not None
    np.testing.assert_array_equal(back.concepts, batch.concepts[::-1])
    assert compact_concepts(np.array([[1.0, 7e4]])).dtype == np.float32  # beyond float16: kept exact
    assert compact_concepts(np.array([[1.0, -3.5]])).dtype == np.float16
    # a shard of the same directory without concepts cannot be mixed in silently
    cache.write(2, _batch(["z"]), None, None)
    with pytest.raises(RunReadError, match="concept relevance"):
        ShardCache(tmp_path / "cache", by_label=False).gather(["x", "z"], ["h-x", "h-z"], np.array([0, 0]))


def test_run_without_concepts_reads_none(tmp_path: Path) -> None:
    report, stage = make_report()
    run = write_published(tmp_path / "runs", report, stage)
    assert not RunFiles(run).concepts.exists()
    assert RunReader(run).concepts() is None


@pytest.mark.parametrize("layer", ["auto", "features.3", "none"])
def test_audit_stores_the_concepts_of_the_same_pass(tmp_path: Path, layer: str) -> None:
    from spray.audit import audit
    from spray.lab.cnn import small_cnn
    from spray.lrp import Explainer

    cfg = tiny_config(tmp_path, lrp={"concept_layer": layer})
    report = audit(cfg, progress=False)
    reader = RunReader(report.run_dir)
    concepts = reader.concepts()
    summary = json.loads(RunFiles(Path(report.run_dir)).summary.read_text())
    if layer == "none":
        assert concepts is None and summary["extra"]["concept_layer"] is None
        return
    resolved = "features" if layer == "auto" else layer
    assert summary["extra"]["concept_layer"] == resolved
    assert concepts is not None and concepts.shape == (reader.summary.n_samples, 8 if layer == "auto" else 4)
    # every sample has its own vector (the library's values are checked against zennit-crp)
    assert Explainer(small_cnn(3, 2, 4), concept_layer=layer).concept_layer == resolved
    assert bool(np.isfinite(concepts).all()) and bool((np.abs(concepts).sum(1) > 0).all())
    assert len({row.tobytes() for row in np.asarray(concepts)}) == len(concepts)

"""docs/run_layout.md names every file, key, array and column the writer emits (and the layout version)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spray.attribution import _ShardState
from spray.runs.cache import ShardCache
from spray.runs.layout import LAYOUT_VERSION, RunFiles
from tests.runs.builders import make_report, write_published
from tests.runs.test_cache import _batch

DOC = Path(__file__).resolve().parents[2] / "docs" / "run_layout.md"


def _keys(obj: Any) -> set[str]:
    """Every key of a JSON document, at any depth (``k_scores``' per-k keys and ``config`` are values)."""
    out: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.add(k)
            if k not in ("k_scores", "config", "signals", "extra", "timings"):
                out |= _keys(v)
    elif isinstance(obj, list):
        for v in obj:
            out |= _keys(v)
    return out


def _documented(names: set[str]) -> list[str]:
    text = DOC.read_text()
    return sorted(
        n for n in names if f"`{n}`" not in text and not re.search(rf"`[^`]*\b{re.escape(n)}\b[^`]*`", text)
    )


def test_every_emitted_name_is_documented(tmp_path: Path) -> None:
    import json

    report, stage = make_report()
    stage.full_relevance = np.zeros((len(stage.batch), 1, 4, 4), np.float16)
    run = write_published(tmp_path / "runs", report, stage)
    files = RunFiles(run)
    names: set[str] = set()
    for p in run.rglob("*"):
        if p.is_file():
            rel = str(p.relative_to(run))
            names.add(re.sub(r"^classes/\d+\.npz$", "classes/<c>.npz", rel))
    summary = json.loads(files.summary.read_text())
    names |= _keys(summary)
    names |= set(summary["timings"])
    names |= set(summary["config"])
    with np.load(files.class_file(1)) as z:
        names |= {re.sub(r"^(concept_)?labels_k\d+$", r"\1labels_k<k>", k) for k in z.files}
    names |= set(pd.read_parquet(files.samples).columns)
    cache = ShardCache(tmp_path / "cache", by_label=False)
    shard = cache.write(0, _batch(["x"]), np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 1, 4, 4)))
    with np.load(shard) as z:
        names |= set(z.files)
    names |= set(_ShardState(0).manifest())
    assert _documented(names) == []
    assert f"(version {LAYOUT_VERSION})" in DOC.read_text().splitlines()[0]


def test_the_readme_names_the_current_layout() -> None:
    readme = DOC.parents[1] / "README.md"
    headings = [ln for ln in readme.read_text().splitlines() if ln.startswith("#") and "layout" in ln.lower()]
    assert headings and all(f"(version {LAYOUT_VERSION})" in h for h in headings if "version" in h), headings


def test_documented_arrays_have_the_written_dtype_and_shape(tmp_path: Path) -> None:
    """Each ``.npy`` row of the table: its dtype, its rank, and every fixed size (a grey model's thumbnails
    have one channel, not three)."""
    report, stage = make_report()
    n = len(stage.batch)
    stage.thumbs = np.zeros((n, 8, 8, 1), np.uint8)  # a 1-channel model
    stage.full_relevance = np.zeros((n, 1, 4, 4), np.float16)
    run = write_published(tmp_path / "runs", report, stage)
    rows = re.findall(r"^\| `(\w+\.npy)` \| (\w+)[^|]*\| \(([^)]*)\) \|", DOC.read_text(), re.M)
    assert {name for name, _, _ in rows} >= {"heatmaps.npy", "thumbs.npy", "relevance_full.npy"}
    for name, dtype, shape in rows:
        if not (run / name).is_file():
            continue
        arr = np.load(run / name, mmap_mode="r")
        dims = [d.strip() for d in shape.split(",")]
        assert arr.dtype == np.dtype(dtype) and arr.ndim == len(dims), (name, arr.dtype, arr.shape, shape)
        assert all(int(d) == s for d, s in zip(dims, arr.shape, strict=True) if d.isdigit()), (name, shape)

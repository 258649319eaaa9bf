"""docs/run_layout.md names every file, key, array and column the writer emits (and the layout version), and
its tables hold every signal, ``extra``, ``model_accuracy`` and ``timings`` key of a real audit and every
config section."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from spray.accuracy import ModelAccuracy
from spray.analysis.concept_test import _PIXEL_ONLY
from spray.analysis.scoring.intervention import InterventionTest, Removal
from spray.attribution import _ShardState
from spray.config import AuditConfig
from spray.conservation import Conservation
from spray.heatmap_contrast import HeatmapContrast
from spray.label_conflicts import LabelConflicts
from spray.runs.cache import ShardCache
from spray.runs.layout import LAYOUT_VERSION, RunFiles
from tests.runs.builders import make_report, tiny_config, write_published
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


def _table(heading: str) -> set[str]:
    """The backticked names in the first column of the first table after the line that starts with
    ``heading``."""
    lines = DOC.read_text().splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith(heading)), None)
    assert start is not None, f"no line starting with {heading!r} in {DOC.name}"
    names: set[str] = set()
    for ln in lines[start + 1 :]:
        if ln.startswith("|"):
            names |= set(re.findall(r"`([^`]+)`", ln.split("|")[1]))
        elif names:
            break
    return names


def _row(key: str) -> str:
    """The summary.json table's row of ``key``."""
    row = next((ln for ln in DOC.read_text().splitlines() if ln.startswith(f"| `{key}` |")), None)
    assert row is not None, key
    return row


#: The appearance gates at 0: the leading appraised candidates are run through the model, so the run's pixel
#: findings hold paste and removal results (its concept-only findings hold their hot-pixel and colour tests).
_GATES_OPEN = {
    "flag_min_appearance": 0.0,
    "flag_min_relative_appearance": 0.0,
    "flag_min_relative_appearance_two_routes": 0.0,
}


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The summary.json of a real audit of the tiny image folder (seed 2: both classes get paste targets, and it
    holds pixel, concept and two-space findings; seed 1 lost its concept-only one when resizes became Pillow's)."""
    from spray.audit import run_audit

    cfg = tiny_config(tmp_path_factory.mktemp("layout_doc"), scoring=_GATES_OPEN)
    cfg.seed = 2
    run_audit(cfg)
    summary: dict[str, Any] = json.loads((Path(cfg.output.runs_dir) / "latest" / "summary.json").read_text())
    return summary


def _signals_the_code_can_write() -> set[str]:
    """Signals written only in some runs, from the code that writes them: every key of
    :meth:`InterventionTest.signals` (paste skipped, a paste without its null arm, both arms with logits,
    the removal), their ``colour_`` forms (:mod:`spray.analysis.concept_test`), and the keys set one by one
    (``flip_ratio`` and ``carriers`` in ``scoring/findings.py``, ``hotspot_separation`` in
    ``scoring/candidates.py``)."""
    tests = [
        InterventionTest(0.5, False),
        InterventionTest(0.5, False, flip_rate=0.25),
        InterventionTest(
            0.5, True, flip_rate=0.5, flip_null=0.25, removal=Removal(1.0, 0.5, 0.01, 0.9, 0.3),
            paste_gain=1.0, paste_gain_null=0.5,
        ),
    ]  # fmt: skip
    names = {k for t in tests for k in t.signals()}
    colour = {f"colour_{k}" for k in names if k not in (*_PIXEL_ONLY, "test_region_cells")}
    return names | colour | {"flip_ratio", "carriers", "hotspot_separation"}


def test_every_signal_is_in_the_signals_table(audited: dict[str, Any]) -> None:
    written = {k for f in audited["findings"] for k in f["signals"]}
    # the run holds each kind of finding and the results of every test (else this test checks less)
    assert {f["space"] for f in audited["findings"]} == {"pixel", "concept", "both"}
    tests = {
        "flip_rate",
        "flip_ratio",
        "paste_gain_p",
        "removal_drop",
        "colour_removal_drop",
        "concept_tested",
    }
    assert tests <= written, sorted(tests - written)
    table = _table("**`findings[].signals`**")
    assert sorted(written - table) == []
    assert sorted(_signals_the_code_can_write() - table) == []


def test_every_extra_timings_and_accuracy_key_is_documented(audited: dict[str, Any]) -> None:
    extra = _table("**`extra`**")
    records = {
        "model_accuracy": ModelAccuracy,
        "heatmap_contrast": HeatmapContrast,
        "conservation": Conservation,
        "label_conflicts": LabelConflicts,
    }
    written = set(audited["extra"]) | set(records)
    written |= {f"{k}.{f.name}" for k, cls in records.items() for f in dataclasses.fields(cls)}
    written |= {f"{k}.{f}" for k, v in audited["extra"].items() if isinstance(v, dict) for f in v}
    assert sorted(written - extra) == []
    assert sorted(set(audited["timings"]) - _table("**`timings`**")) == []


def test_every_config_section_is_named() -> None:
    sections = set(AuditConfig.model_fields)
    row = _row("config")
    assert sorted(s for s in sections if f"`{s}`" not in row) == []
    readme = (DOC.parents[1] / "README.md").read_text()
    listed = re.search(r"Sections: (.*?); then", readme, re.S)
    assert listed is not None
    assert sorted(s for s in sections if f"`{s}`" not in listed.group(1)) == []

"""Exactly one module reads a run: outside ``spray/runs/reader.py`` no product code (``spray/``,
``dashboard/``) loads a run's files or spells their names; row positions stay inside ``spray/runs``."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUN_FILES = {"summary.json", "samples.parquet", "heatmaps.npy", "thumbs.npy", "relevance_full.npy"}
LOADERS = {
    "load",
    "read_parquet",
    "read_table",
    "loads",
}  # np.load, pd.read_parquet, pq.read_table, json.loads
LAYOUT_NAMES = {"SUMMARY", "SAMPLES", "HEATMAPS", "THUMBS", "FULL_RELEVANCE", "CLASSES_DIR"}


def _product_modules() -> list[Path]:
    return sorted(p for d in ("spray", "dashboard") for p in (REPO / d).rglob("*.py"))


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _offences(path: Path) -> list[str]:
    rel = str(path.relative_to(REPO))
    tree = ast.parse(path.read_text())
    docs = _docstrings(tree)
    in_runs = rel.startswith("spray/runs/")
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            v = node.value
            if (v in RUN_FILES or v.endswith(".npz")) and rel != "spray/runs/layout.py":
                out.append(f"{rel}:{node.lineno} spells the run file {v!r}")
        if isinstance(node, ast.ImportFrom) and node.module == "spray.runs.layout" and not in_runs:
            bad = {a.name for a in node.names} & LAYOUT_NAMES
            if bad:
                out.append(f"{rel}:{node.lineno} imports {sorted(bad)}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in LOADERS:
            owner = ast.unparse(node.func.value)
            is_array_load = node.func.attr != "loads" and owner in ("np", "numpy", "pd", "pandas", "pq")
            is_json = node.func.attr == "loads" and owner == "json"
            if is_array_load and rel not in ("spray/runs/reader.py", "spray/runs/cache.py"):
                out.append(f"{rel}:{node.lineno} calls {owner}.{node.func.attr}")
            if is_json and in_runs and rel != "spray/runs/reader.py":
                out.append(f"{rel}:{node.lineno} parses JSON inside spray/runs outside the reader")
    return out


def test_only_the_reader_reads_a_run() -> None:
    offences = [o for p in _product_modules() for o in _offences(p)]
    assert offences == []


def test_the_checker_sees_a_read() -> None:
    tmp = REPO / "spray" / "_probe_reader_check.py"
    tmp.write_text('import json, numpy as np\nh = np.load(p / "heatmaps.npy")\ns = json.loads("{}")\n')
    try:
        assert len(_offences(tmp)) == 2
    finally:
        tmp.unlink()

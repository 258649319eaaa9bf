"""The house rules that a reader can check mechanically: one concept per module, short functions, layers.

A product module over 600 lines holds more than one concept, and a function over 80 lines more than one
step; both are split rather than allowed to grow. ``spray`` never imports streamlit (the dashboard is a
thin shell over it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = sorted([*(ROOT / "spray").rglob("*.py"), *(ROOT / "dashboard").rglob("*.py")])
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def _rel(path: Path, root: Path = ROOT) -> str:
    return str(path.relative_to(root))


def test_product_modules_exist() -> None:
    # Guards the checks below against passing vacuously after a move.
    assert len(PRODUCT) > 50
    assert (ROOT / "spray" / "lrp").is_dir() and (ROOT / "spray" / "analysis").is_dir()


def test_no_module_over_600_lines() -> None:
    long = {_rel(p): n for p in PRODUCT if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"split these modules by concept (over {MAX_MODULE_LINES} lines): {long}"


def _long_functions(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = (node.end_lineno or node.lineno) - start + 1
            if length > MAX_FUNCTION_LINES:
                out.append(f"{_rel(path, root)}:{node.lineno} {node.name} ({length} lines)")
    return out


def test_no_function_over_80_lines() -> None:
    long = [entry for p in PRODUCT for entry in _long_functions(p)]
    assert not long, "split these functions into named steps:\n" + "\n".join(long)


@pytest.mark.parametrize("path", [p for p in PRODUCT if p.is_relative_to(ROOT / "spray")], ids=_rel)
def test_spray_never_imports_streamlit(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        assert not any(n.split(".")[0] == "streamlit" for n in names), f"{_rel(path)} imports streamlit"


def test_long_function_detector_counts_decorators(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES - 1))
    (tmp_path / "ok.py").write_text(f"def f():\n{body}\n")
    (tmp_path / "long.py").write_text(
        f"class C:\n    @staticmethod\n    def g():\n    {body.replace(chr(10), chr(10) + '    ')}\n"
    )
    assert _long_functions(tmp_path / "ok.py", tmp_path) == []
    assert _long_functions(tmp_path / "long.py", tmp_path) == [
        f"long.py:3 g ({MAX_FUNCTION_LINES + 1} lines)"
    ]

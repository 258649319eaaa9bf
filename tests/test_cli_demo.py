"""``spray demo``'s folders (the demo itself runs in tests/test_audit.py and the browser test)."""

from __future__ import annotations

from pathlib import Path

from spray.cli import build_parser
from spray.cli.demo import demo_folders


def test_the_demo_runs_go_into_its_work_folder_unless_asked_elsewhere(tmp_path: Path) -> None:
    """Found in two outside checks: --work-dir alone still published into ./spray-demo/runs."""
    parse = build_parser().parse_args
    work = tmp_path / "w"
    assert demo_folders(parse(["demo", "--work-dir", str(work)])) == (work, work / "runs")
    _, runs = demo_folders(parse(["demo", "--work-dir", str(work), "--runs-dir", str(tmp_path / "r")]))
    assert runs == tmp_path / "r"
    assert demo_folders(parse(["demo"]))[1] == Path("spray-demo/runs").resolve()  # the README's default

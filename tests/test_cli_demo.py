"""``spray demo``'s folders (the demo itself runs in tests/test_audit.py and the browser test)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from spray.cli import build_parser
from spray.cli.demo import demo_folders
from spray.exit_codes import EXIT_FINDINGS
from tests.faults.cli import assert_clean_failure, run_main


def test_the_demo_runs_go_into_its_work_folder_unless_asked_elsewhere(tmp_path: Path) -> None:
    """Found in two outside checks: --work-dir alone still published into ./spray-demo/runs."""
    parse = build_parser().parse_args
    work = tmp_path / "w"
    assert demo_folders(parse(["demo", "--work-dir", str(work)])) == (work, work / "runs")
    _, runs = demo_folders(parse(["demo", "--work-dir", str(work), "--runs-dir", str(tmp_path / "r")]))
    assert runs == tmp_path / "r"
    assert demo_folders(parse(["demo"]))[1] == Path("spray-demo/runs").resolve()  # the README's default


def test_a_work_dir_that_is_a_file_or_cannot_be_written_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check: --work-dir naming a file gave FileExistsError, an unwritable one PermissionError."""
    (tmp_path / "plain").write_text("x")
    res = run_main(["demo", "--work-dir", str(tmp_path / "plain")], capsys)
    assert_clean_failure(res, 2, str(tmp_path / "plain"), "is a file")
    res = run_main(["demo", "--work-dir", str(tmp_path / "plain" / "under")], capsys)
    assert_clean_failure(res, 2, "plain/under", "cannot write there", "a folder you can write to")
    assert (tmp_path / "plain").read_text() == "x"


def test_every_demo_option_says_what_it_does() -> None:
    """An outside check: --device and --top had no help text."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    demo = sub.choices["demo"]
    silent = [a.dest for a in demo._actions if not a.help]
    assert silent == [], silent


@pytest.mark.slow
def test_the_demos_finding_is_owed_to_the_next_nightly_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check: after spray demo, spray run --config demo.yaml exited 0 with n_new null, although the
    run had a suspicious finding no alert had reported (spray audit leaves that alert; the demo did not)."""
    work = tmp_path / "demo"
    argv = ["demo", "--work-dir", str(work), "--per-class", "120", "--epochs", "3", "-q", "--strict"]
    assert run_main(argv, capsys).code == 0
    res = run_main(["run", "--config", str(work / "demo.yaml"), "--log-format", "text"], capsys)
    status = json.loads(res.stdout.strip().splitlines()[-1])
    assert res.code == EXIT_FINDINGS and status["status"] == "up_to_date", res.output
    assert status["n_new"] == 1 and "published by spray demo" in res.stderr
    res = run_main(["run", "--config", str(work / "demo.yaml")], capsys)
    assert res.code == 0  # reported once


def test_a_reused_demo_publishes_where_runs_dir_now_says(tmp_path: Path) -> None:
    """A review: a prepared demo was reused with the runs folder of its first preparation, so a later
    ``--runs-dir`` was ignored while the printed commands pointed at it."""
    from spray.config import load_config
    from spray.lab.demo import prepare_demo

    work = tmp_path / "w"
    first = load_config(prepare_demo(work, tmp_path / "a", per_class=8, epochs=1, progress=False))
    assert Path(first.output.runs_dir) == (tmp_path / "a").resolve()
    again = load_config(prepare_demo(work, tmp_path / "b", per_class=8, epochs=1, progress=False))
    assert Path(again.output.runs_dir) == (tmp_path / "b").resolve()

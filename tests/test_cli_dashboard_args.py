"""``spray dashboard``'s arguments: found in an outside check, where ``--port 99999`` or ``-1`` ended in an
OverflowError traceback and ``--runs-dir runs/latest`` (one run, not the folder of runs) started the
dashboard and suggested publishing a demo into that run's folder."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.faults.cli import assert_clean_failure, run_main
from tests.runs.builders import make_report, write_published


@pytest.mark.parametrize("port", ["99999", "-1", "0", "http"])
def test_a_port_outside_1_to_65535_is_refused_by_the_parser(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], port: str
) -> None:
    res = run_main(["dashboard", "--runs-dir", str(tmp_path), f"--port={port}"], capsys)
    assert_clean_failure(res, 2, "--port", "1 to 65535")


def test_a_run_folder_given_as_runs_dir_names_its_parent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    run_dir = write_published(runs, *make_report(n_per_class=6))
    with socket.socket() as busy:  # a port in use: a dashboard that took the folder stops there, not serving
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        for given in (runs / "latest", run_dir):
            res = run_main(["dashboard", "--runs-dir", str(given), "--port", port], capsys)
            assert_clean_failure(res, 2, "one run's folder", f"--runs-dir {runs}")
            assert "spray demo --runs-dir" not in res.output


def test_conflicting_or_unreadable_options_are_refused_before_serving(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check: --token abc --no-token served without a token (the token dropped unsaid), and a text
    file given as --flags-db started the dashboard, where spray flags refuses it."""
    res = run_main(["dashboard", "--runs-dir", str(tmp_path), "--token", "abc", "--no-token"], capsys)
    assert_clean_failure(res, 2, "--token", "--no-token", "give one of them")
    text = tmp_path / "t.sqlite"
    text.write_text("not a database\n" * 50)
    res = run_main(["dashboard", "--runs-dir", str(tmp_path), "--flags-db", str(text)], capsys)
    assert_clean_failure(res, 2, f"--flags-db {text}", "not a SQLite file")
    # an empty file is a new database, as spray flags takes it (a review finding): on to the next check
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        res = run_main(
            ["dashboard", "--runs-dir", str(tmp_path), "--flags-db", str(empty), "--port", port], capsys
        )
    assert_clean_failure(res, 2, f"Port {port}")

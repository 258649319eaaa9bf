"""``-v`` after the command: found in an outside check, where ``spray run -v`` was refused ("unrecognized
arguments: -v") with no hint that it belonged before the command."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from spray.cli import build_parser
from tests.faults.cli import assert_clean_failure, run_main


def _parsers(
    parser: argparse.ArgumentParser, name: str = "spray"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield f"{name} {sub_name}", sub
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_command_and_action_takes_verbose() -> None:
    found = dict(_parsers(build_parser()))
    assert {"spray run", "spray init", "spray flags set", "spray export virelay"} <= set(found)
    missing = [name for name, p in found.items() if "-v" not in p._option_string_actions]
    assert missing == [], missing


@pytest.mark.parametrize("where", ["before", "after", "none"])
def test_verbose_before_or_after_the_command_turns_debug_logging_on(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "missing.yaml")
    argv = {
        "before": ["-v", "audit", "--config", missing],
        "after": ["audit", "--config", missing, "-v"],
        "none": ["audit", "--config", missing],
    }[where]
    assert build_parser().parse_args(argv).verbose is (where != "none")
    res = run_main(argv, capsys)
    assert_clean_failure(res, 2, "missing.yaml", "does not exist")  # the config's error, not a usage error
    assert (logging.getLogger().level == logging.DEBUG) is (where != "none")


def test_spray_run_v_reaches_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = run_main(["run", "--config", str(tmp_path / "missing.yaml"), "-v", "--log-format", "text"], capsys)
    assert_clean_failure(res, 2, "missing.yaml")
    assert "unrecognized arguments" not in res.output


def test_an_abbreviated_option_is_refused_not_completed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check: ``spray flags export --run X`` was completed to ``--runs-dir X`` (argparse takes a unique
    prefix) and failed with 'No flag database at X/flags.sqlite', naming an option the user never gave."""
    res = run_main(["flags", "export", "--run", str(tmp_path)], capsys)
    assert res.code == 2 and "unrecognized arguments: --run" in res.output
    assert all(not p.allow_abbrev for _, p in _parsers(build_parser()))

"""Argument types of the CLI: a wrong value is answered with what to give instead, exit 2."""

from __future__ import annotations

import pytest

from tests.faults.cli import assert_clean_failure, run_main


def test_a_class_name_given_to_correct_class_says_where_its_index_is(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An outside check: spray correct named classes as "Shirt (class 2)", and --class Shirt got argparse's
    bare "invalid int value"."""
    res = run_main(["correct", "--config", "missing.yaml", "--class", "Shirt"], capsys)
    assert_clean_failure(res, 2, "'Shirt' is no class index", "'Shirt (class 6)' is 6")
    res = run_main(["correct", "--config", "missing.yaml", "--class", "-1"], capsys)
    assert_clean_failure(res, 2, "a class index is 0 or more")

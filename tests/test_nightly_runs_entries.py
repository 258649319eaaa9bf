"""Entries of a runs folder of the wrong type (an outside check): ``.lock`` a folder, ``.staging`` or
``.cache`` a file gave raw IsADirectoryError / FileExistsError / NotADirectoryError (exit 1), one only after
a whole batch stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from spray.exit_codes import EXIT_CONFIG
from tests.faults.cli import assert_clean_failure
from tests.faults.test_nightly_faults import _config, _run, _status


@pytest.mark.parametrize(
    ("entry", "folder"), [(".lock", True), (".staging", False), (".cache", False), (".cache/work", False)]
)
def test_an_entry_of_the_wrong_type_is_refused_before_any_work_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], entry: str, folder: bool
) -> None:
    cfg = _config(tmp_path)
    path = tmp_path / "runs" / entry
    path.parent.mkdir(parents=True)
    if folder:
        path.mkdir()
    else:
        path.write_text("x")
    res = _run(capsys, cfg)
    assert_clean_failure(res, EXIT_CONFIG, repr(str(path)), "Move it out of the runs folder")
    assert _status(res)["exit_code"] == EXIT_CONFIG and "batch stage" not in res.output
    assert path.is_dir() == folder  # nothing of the person's was removed

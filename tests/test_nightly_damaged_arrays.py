"""A published run whose heatmaps.npy or thumbs.npy is truncated (an outside check): taken as "up to date"
every night (exit 0) while every reader failed on it; a damaged samples.parquet was refused already."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spray.exit_codes import EXIT_FAILURE
from spray.runs.publish import list_runs
from tests.faults.cli import assert_clean_failure
from tests.faults.test_nightly_faults import _config, _run, _status


@pytest.mark.parametrize("name", ["heatmaps.npy", "thumbs.npy"])
def test_a_truncated_array_of_the_published_run_is_not_up_to_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    cfg = _config(tmp_path)
    _run(capsys, cfg)
    (run,) = list_runs(tmp_path / "runs")
    assert (run / name).is_file()
    os.truncate(run / name, 200)
    res = _run(capsys, cfg)
    assert_clean_failure(
        res, EXIT_FAILURE, str(run / name), "damaged or truncated", "cannot be reused", "--force"
    )
    assert (
        f"{run / name}: {run / name}" not in res.output
    )  # the file named once (an outside check: it was twice)
    res = _run(capsys, cfg, "--force")
    assert _status(res)["status"] == "published" and list_runs(tmp_path / "runs")[1] == run

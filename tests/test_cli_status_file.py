"""``spray run --status-file``: it replaces only an earlier status record or an empty file, never someone's
file (found in an outside check: the config and a dataset image were overwritten with the JSON status, and a
missing folder was created)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spray.exit_codes import EXIT_CONFIG
from tests.faults.cli import assert_clean_failure, run_main


def _last_line(stdout: str) -> dict[str, object]:
    return dict(json.loads(stdout.strip().splitlines()[-1]))


def test_the_config_or_an_image_given_as_status_file_is_refused_and_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "audit.yaml"
    config.write_text("name: mine\n# my own notes\n")
    image = tmp_path / "cat.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    for victim in (config, image):
        before = victim.read_bytes()
        res = run_main(["run", "--config", str(config), "--status-file", str(victim)], capsys)
        assert_clean_failure(res, EXIT_CONFIG, str(victim), "not a spray status record")
        assert victim.read_bytes() == before
        assert _last_line(res.stdout)["exit_code"] == EXIT_CONFIG  # the scheduler still reads its line


def test_a_missing_folder_is_refused_not_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = tmp_path / "nonexistent" / "dir" / "status.json"
    res = run_main(["run", "--config", str(tmp_path / "x.yaml"), "--status-file", str(where)], capsys)
    assert_clean_failure(res, EXIT_CONFIG, str(where.parent), "does not exist")
    assert not (tmp_path / "nonexistent").exists()
    # argparse's own refusal writes no file there either
    res = run_main(["run", "--config", "x.yaml", "--keep-runs", "0", "--status-file", str(where)], capsys)
    assert res.code == EXIT_CONFIG and _last_line(res.stdout)["exit_code"] == EXIT_CONFIG
    assert not (tmp_path / "nonexistent").exists()


@pytest.mark.parametrize("earlier", ['{"exit_code": 0, "status": "published", "run_id": "r"}\n', ""])
def test_an_earlier_status_record_or_an_empty_file_is_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], earlier: str
) -> None:
    status = tmp_path / "status.json"
    status.write_text(earlier)  # "": the torchrun wrapper's mktemp
    res = run_main(["run", "--config", str(tmp_path / "missing.yaml"), "--status-file", str(status)], capsys)
    assert res.code == EXIT_CONFIG  # the missing config, not the status file
    said = json.loads(status.read_text())
    assert said == _last_line(res.stdout) and "missing.yaml" in str(said["error"])

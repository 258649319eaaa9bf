"""The run writer: a correction's re-audit records the paths of the folder it is published to."""

from __future__ import annotations

import json
import os
from pathlib import Path

from spray.runs.writer import rebase_recorded_paths


def test_recorded_paths_move_with_the_folder_also_when_it_was_named_through_a_symlink(tmp_path: Path) -> None:
    """A review: the config records resolved paths, so a work folder named through a symlink was not found
    and the re-audit kept pointing into the deleted work folder."""
    real = tmp_path / "real"
    (real / "out" / "reaudit" / "20261206T000000000000Z-aaaaaaaaaaaa").mkdir(parents=True)
    os.symlink(real, tmp_path / "link")
    out, final = tmp_path / "link" / "out", tmp_path / "link" / "published"
    doc = {
        "run_id": "r",
        "config": {
            "model": {"checkpoint": str(real / "out" / "model.pt")},
            "output": {"runs_dir": str(real / "out" / "reaudit")},
            "data": {"path": "/data/imgs", "class_names": [str(real / "outside")]},
        },
    }
    summary = real / "out" / "reaudit" / "20261206T000000000000Z-aaaaaaaaaaaa" / "summary.json"
    summary.write_text(json.dumps(doc))
    assert rebase_recorded_paths(out / "reaudit", out, final) == 1
    config = json.loads(summary.read_text())["config"]
    assert config["model"]["checkpoint"] == str(real / "published" / "model.pt")
    assert config["output"]["runs_dir"] == str(real / "published" / "reaudit")
    assert config["data"] == doc["config"]["data"]  # other paths, and a name that only starts alike, stay
    assert json.loads(summary.read_text())["run_id"] == "r"
    assert rebase_recorded_paths(out / "reaudit", out, final) == 0  # nothing left to move

"""Image folders whose classes spray cannot tell, through ``spray init`` and ``spray audit``.

An image folder's labels are its class folders' positions in name order (torchvision's ImageFolder). Images
lying directly in the root have no class; a single class folder is label 0, right only for a model with one
output. Each case stops with what spray expects and how to get there, never with a schema error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from spray.data.folder import list_image_folder
from tests.faults.cli import assert_clean_failure, run_main
from tests.helpers import make_image_folder


def _flat(root: Path, n: int = 4) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((28, 28, 3), 40 * i, np.uint8)).save(root / f"{i}.png")
    return root


def _audit_cfg(tmp_path: Path, data: Path, num_classes: int) -> Path:
    raw: dict[str, Any] = {
        "name": "classes",
        "model": {
            "factory": "spray.lab.cnn:small_cnn",
            "factory_kwargs": {"in_channels": 3, "num_classes": num_classes, "width": 4},
        },
        "data": {"kind": "image_folder", "path": str(data)},
        "output": {"runs_dir": str(tmp_path / "runs")},
    }
    p = tmp_path / f"audit{num_classes}.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _not_a_schema_error(output: str) -> None:
    assert "Invalid config" not in output and "Input should be" not in output, output


def test_images_directly_in_the_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flat = _flat(tmp_path / "flat")
    out = tmp_path / "spray.yaml"
    res = run_main(
        ["init", "--data", str(flat), "--model", "spray.lab.cnn:small_cnn", "-o", str(out)], capsys
    )
    assert_clean_failure(res, 1, "--data", "no class subfolders", "its 4 image files lie directly in it")
    assert "one folder per class" in res.stderr and "root/<class>/<image>" in res.stderr
    assert not out.exists()
    res = run_main(["audit", "--config", str(_audit_cfg(tmp_path, flat, 2)), "-q"], capsys)
    assert_clean_failure(res, 1, "data.path", "no class subfolders", "one folder per class")


@pytest.mark.parametrize("model", ["spray.lab.cnn:small_cnn", "resnet18"])
def test_init_refuses_a_single_class_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str
) -> None:
    one = make_image_folder(tmp_path / "one", n_per_class=3, classes=("cat",), size=28)
    out = tmp_path / "spray.yaml"
    res = run_main(["init", "--data", str(one), "--model", model, "-o", str(out)], capsys)
    assert_clean_failure(res, 1, "single class folder ('cat')", "a folder for every class", "--num-classes 1")
    _not_a_schema_error(res.output)
    assert not out.exists()


def test_init_one_class_for_a_torchvision_architecture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = make_image_folder(tmp_path / "one", n_per_class=3, classes=("cat",), size=28)
    argv = [
        "init",
        "--data",
        str(one),
        "--model",
        "resnet18",
        "--num-classes",
        "1",
        "-o",
        str(tmp_path / "x.yaml"),
    ]
    res = run_main(argv, capsys)
    assert_clean_failure(res, 2, "--model 'resnet18'", "at least 2", "--num-classes")
    _not_a_schema_error(res.output)


def test_audit_of_a_single_class_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = make_image_folder(tmp_path / "one", n_per_class=3, classes=("cat",), size=28)
    # A model of 10 outputs: the folder would be label 0 whichever class it is.
    res = run_main(["audit", "--config", str(_audit_cfg(tmp_path, one, 10)), "-q"], capsys)
    assert_clean_failure(res, 1, "single class folder", "model's class 0", "a folder for every class")
    # A model of one output (one logit): label 0 is its only output, the audit runs.
    res = run_main(["audit", "--config", str(_audit_cfg(tmp_path, one, 1)), "-q"], capsys)
    assert res.code == 0, res.output
    assert "3 samples" in res.stdout


def test_a_loose_image_beside_class_folders_is_listed_as_skipped(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs", n_per_class=2, size=8)
    Image.new("RGB", (8, 8)).save(root / "stray.png")
    (root / "notes.txt").write_text("not an image, not listed")
    listing = list_image_folder(root)
    assert listing.classes == ["cat", "dog"] and "stray.png" not in listing.sample_ids
    reasons = {s.sample_id: s.reason for s in listing.skipped}
    assert set(reasons) == {"stray.png"} and "not in a class folder" in reasons["stray.png"]

"""The file ``spray init`` writes (spray.init_output) and the IDX labels file given as ``--data``: found in an
outside check, where a rerun of init threw away the edits it had asked for, and an unwritable folder, a
folder or a symbolic link as ``-o`` gave a traceback or a wrong file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from spray.data import write_idx
from tests.faults.cli import assert_clean_failure, run_main
from tests.helpers import make_image_folder


def test_a_failed_config_the_user_edited_is_not_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from spray.lab.cnn import small_cnn

    make_image_folder(tmp_path / "train", n_per_class=2, size=28)
    torch.save(small_cnn(in_channels=3, num_classes=5).state_dict(), tmp_path / "five.pt")
    out = tmp_path / "t7.yaml"
    argv = ["init", "--data", str(tmp_path / "train"), "--model", "spray.lab.cnn:small_cnn", "-o", str(out)]
    argv += ["--checkpoint", str(tmp_path / "five.pt")]
    assert_clean_failure(run_main(argv, capsys), 1, "kept, marked as failed", f"edit {out}")
    edited = out.read_text().replace("num_classes: 2", "num_classes: 5")  # as the message invites
    assert edited != out.read_text()
    out.write_text(edited)
    assert_clean_failure(run_main(argv, capsys), 2, "t7.yaml", "was edited", "--force")
    assert out.read_text() == edited
    assert run_main([*argv, "--no-check", "--force"], capsys).code == 0  # --force still overwrites
    assert "FAILED" not in out.read_text()


def test_a_failed_config_marked_by_the_previous_release_is_still_init_s_to_overwrite(tmp_path: Path) -> None:
    """A review: the previous release's marker line had no digest, and the file it promised to overwrite was
    refused as 'edited'."""
    from spray.init_output import LEGACY_FAILED_CHECK, refuse_output

    out = tmp_path / "old.yaml"
    out.write_text(LEGACY_FAILED_CHECK + "\nname: audit\n")
    refuse_output(out, force=False)  # no error: init may overwrite it


def test_an_unwritable_place_a_folder_or_a_link_as_output_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_image_folder(tmp_path / "train", n_per_class=2, size=28)
    argv = ["init", "--data", str(tmp_path / "train"), "--no-check", "--force", "-o"]
    (tmp_path / "plain").write_text("x")
    res = run_main([*argv, str(tmp_path / "plain" / "x.yaml")], capsys)  # a folder that cannot be made
    assert_clean_failure(res, 2, "cannot write", "plain/x.yaml", "a folder you can write to")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert_clean_failure(run_main([*argv, str(locked / "x.yaml")], capsys), 2, "Permission denied")
    realdir = tmp_path / "realdir"
    realdir.mkdir()
    assert_clean_failure(run_main([*argv, str(realdir)], capsys), 2, "is a folder", "realdir/spray.yaml")
    assert list(tmp_path.glob(".realdir*")) == [] and realdir.is_dir()
    (tmp_path / "elsewhere").mkdir()
    target = tmp_path / "elsewhere" / "real.yaml"
    target.write_text("name: mine\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(target)
    assert_clean_failure(run_main([*argv, str(link)], capsys), 2, "symbolic link", str(target))
    assert link.is_symlink() and target.read_text() == "name: mine\n"


def test_the_idx_labels_file_given_as_data_is_called_that(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, labels = tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "train-labels-idx1-ubyte.gz"
    write_idx(labels, np.arange(40, dtype=np.uint8) % 4)
    out = str(tmp_path / "c.yaml")
    res = run_main(["init", "--data", str(labels), "-o", out], capsys)
    assert_clean_failure(res, 2, "IDX labels file", "--labels")
    assert "looks like an IDX images file" not in res.output
    write_idx(images, np.zeros((40, 28, 28), dtype=np.uint8))
    res = run_main(["init", "--data", str(labels), "-o", out], capsys)
    assert_clean_failure(res, 2, "IDX labels file", f"--data {str(images)!r}")

"""A file that is no checkpoint at all, given as ``model.checkpoint``: found in an outside check, where a PNG
was said to contain "pickled Python objects" with the advice to set ``model.allow_pickle: true``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spray.errors import ModelError
from spray.models import build_model
from tests.runs.builders import tiny_config


@pytest.mark.parametrize(
    ("name", "says"),
    [("cat.png", "is a PNG image"), ("cat.jpg", "is a JPEG image"), ("blob.bin", "probably no PyTorch")],
)
def test_a_file_that_is_no_checkpoint_is_called_that(tmp_path: Path, name: str, says: str) -> None:
    path = tmp_path / name
    if name == "blob.bin":  # a binary file of no known kind: torch.load decides, its refusal is worded
        path.write_bytes(bytes(range(7, 207)) * 3)
    else:
        Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(path)
    cfg = tiny_config(tmp_path, model={"checkpoint": str(path)})
    with pytest.raises(ModelError) as err:
        build_model(cfg.model)
    message = str(err.value)
    assert says in message and name in message and "model.checkpoint" in message
    assert "allow_pickle" not in message and "pickled Python objects" not in message


def test_a_checkpoint_in_an_old_pickle_protocol_is_not_called_no_checkpoint_without_the_way_out(
    tmp_path: Path,
) -> None:
    """A review: ``torch.save(..., pickle_protocol=0)`` without the zip format starts with a text integer, and was
    called 'probably no PyTorch checkpoint' with no word of model.allow_pickle, which loads it."""
    import torch

    path = tmp_path / "old.pt"
    torch.save({"w": torch.zeros(1)}, path, _use_new_zipfile_serialization=False, pickle_protocol=0)
    cfg = tiny_config(tmp_path, model={"checkpoint": str(path)})
    with pytest.raises(ModelError, match=r"contains pickled Python objects.*model\.allow_pickle: true"):
        build_model(cfg.model)

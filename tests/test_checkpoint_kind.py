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

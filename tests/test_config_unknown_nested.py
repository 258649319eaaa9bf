"""An unknown key inside an optional section (correction.test_data, a DataConfig or None) is matched against
that section's keys, not its parent's."""

from pathlib import Path

import pytest

from spray.config import config_from_dict
from spray.errors import ConfigError


def test_a_typo_under_correction_test_data_suggests_the_data_key(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    raw = {
        "model": {"architecture": "resnet18", "num_classes": 3},
        "data": {"kind": "image_folder", "path": "imgs"},
        "correction": {"test_data": {"kind": "image_folder", "pth": "imgs"}},
    }
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw, base_dir=tmp_path)
    msg = str(e.value)
    assert "correction.test_data.pth: unknown key. Did you mean 'path'?" in msg
    assert "Valid keys here: kind, path, images" in msg

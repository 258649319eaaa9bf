"""A string setting given YAML's unquoted no/yes/on/off (read as booleans) says to quote it."""

from pathlib import Path

import pytest

from spray.config import load_config
from spray.errors import ConfigError


def test_class_names_read_as_booleans_say_to_quote_them(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    p = tmp_path / "c.yaml"
    p.write_text(
        "model: {architecture: resnet18, num_classes: 3}\n"
        "data: {kind: image_folder, path: imgs, class_names: [no, yes, on]}\n"
    )
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert (
        "data.class_names.0: Input should be a valid string (got False); YAML reads an unquoted no, off"
        in msg
    )
    assert (
        "data.class_names.1: Input should be a valid string (got True); YAML reads an unquoted yes, on" in msg
    )
    assert "quote it (e.g. 'no')" in msg

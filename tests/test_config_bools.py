"""A YAML true/false is never taken for a number: not where a Literal of words or numbers sits beside the
number, and not inside a mapping of numbers."""

from pathlib import Path

import pytest

from spray.config import config_from_dict
from spray.errors import ConfigError
from tests.helpers import minimal_config, set_key


@pytest.mark.parametrize(
    ("path", "value", "said"),
    [
        (("lrp", "target"), True, "target must not be the YAML boolean true.*'label', 'pred'"),
        (("lrp", "target"), False, "target must not be the YAML boolean false"),
        (("data", "transform", "channels"), True, "channels must be a number, not the YAML boolean true"),
        (
            ("lrp", "composite_kwargs"),
            {"epsilon": True},
            "composite_kwargs must hold numbers, not the YAML boolean true",
        ),
    ],
)
def test_a_yaml_boolean_beside_a_literal_or_in_a_mapping_is_refused(
    tmp_path: Path, path: tuple[str, ...], value: object, said: str
) -> None:
    raw = minimal_config(tmp_path)
    set_key(raw, path, value)
    with pytest.raises(ConfigError, match=said):
        config_from_dict(raw, base_dir=tmp_path)


def test_the_numbers_and_words_themselves_still_load(tmp_path: Path) -> None:
    raw = minimal_config(tmp_path)
    raw["lrp"] = {"target": 1, "composite_kwargs": {"epsilon": 1e-3}}
    raw["data"]["transform"] = {"channels": 1}
    cfg = config_from_dict(raw, base_dir=tmp_path)
    assert cfg.lrp.target == 1 and cfg.lrp.composite_kwargs == {"epsilon": 1e-3}
    assert cfg.data.transform.channels == 1
    raw["lrp"] = {"target": "pred"}
    assert config_from_dict(raw, base_dir=tmp_path).lrp.target == "pred"

"""model.num_classes is checked against the model's outputs: a factory is not given it, so a config that set
it to another count ran and recorded the wrong one."""

from pathlib import Path

import pytest

from spray.config import config_from_dict
from spray.errors import ConfigError


def _cfg(tmp_path: Path, model: dict) -> object:
    (tmp_path / "imgs").mkdir(exist_ok=True)
    raw = {"model": model, "data": {"kind": "image_folder", "path": "imgs"}}
    return config_from_dict(raw, base_dir=tmp_path)


def test_a_factory_config_whose_num_classes_is_not_the_models_is_refused(tmp_path: Path) -> None:
    cfg = _cfg(
        tmp_path,
        {"factory": "spray.lab.cnn:small_cnn", "factory_kwargs": {"num_classes": 3}, "num_classes": 5},
    )
    with pytest.raises(
        ConfigError, match=r"model\.num_classes is 5 but the model has 3 outputs.*factory_kwargs"
    ):
        cfg.check_class_count(3, 3)  # type: ignore[attr-defined]


def test_an_architecture_whose_kwargs_override_num_classes_is_refused(tmp_path: Path) -> None:
    cfg = _cfg(
        tmp_path, {"architecture": "resnet18", "num_classes": 5, "architecture_kwargs": {"num_classes": 3}}
    )
    with pytest.raises(
        ConfigError, match=r"num_classes is 5 but the model has 3 outputs.*architecture_kwargs"
    ):
        cfg.check_class_count(3, 3)  # type: ignore[attr-defined]


def test_a_matching_or_absent_num_classes_passes(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, {"factory": "spray.lab.cnn:small_cnn", "num_classes": 3})
    cfg.check_class_count(3, 3)  # type: ignore[attr-defined]
    cfg = _cfg(tmp_path, {"factory": "spray.lab.cnn:small_cnn"})
    cfg.check_class_count(3, 3)  # type: ignore[attr-defined]

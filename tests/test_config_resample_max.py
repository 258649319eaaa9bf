"""analysis.k_choice.resample_max at or below k_max made scikit-learn refuse a refit ("n_samples=10 should be
>= n_clusters=11") in the middle of the analysis; the config is refused when it loads."""

from pathlib import Path

import pytest

from spray.config import config_from_dict
from spray.errors import ConfigError


def _raw(tmp_path: Path, analysis: dict) -> dict:
    (tmp_path / "imgs").mkdir(exist_ok=True)
    return {
        "model": {"architecture": "resnet18", "num_classes": 3},
        "data": {"kind": "image_folder", "path": "imgs"},
        "analysis": analysis,
    }


def test_resample_max_not_above_k_max_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"resample_max \(10\) must be greater than k_max \(12\).*13 or more"
    ):
        config_from_dict(_raw(tmp_path, {"k_choice": {"resample_max": 10}}), base_dir=tmp_path)


def test_resample_max_above_k_max_loads(tmp_path: Path) -> None:
    raw = _raw(tmp_path, {"k_max": 8, "n_eigenvectors": 9, "k_choice": {"resample_max": 10}})
    assert config_from_dict(raw, base_dir=tmp_path).analysis.k_choice.resample_max == 10

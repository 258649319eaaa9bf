"""Scoring's region lists and alignment rounds are refused out of range, with the accepted values, instead
of being clamped or dropped while the run goes on."""

from pathlib import Path

import pytest

from spray.config import config_from_dict
from spray.errors import ConfigError
from tests.helpers import minimal_config


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("frame_widths", [-1], r"frame widths .* at least 1; got -1"),
        ("frame_widths", [0], r"frame widths .* at least 1; got 0"),
        ("frame_widths", [1, 1000], r"1000-cell frame covers the whole 32x32 .*batch\.grid.*below 16"),
        ("frame_widths", [16], r"16-cell frame covers the whole 32x32"),
        ("window_fractions", [0], r"window fractions must lie in \(0, 1\].*got 0"),
        ("window_fractions", [-0.1], r"window fractions must lie in \(0, 1\].*got -0\.1"),
        ("window_fractions", [0.125, 2.0], r"window fractions must lie in \(0, 1\].*got 2\.0"),
        ("align_rounds", 1_000_000, r"align_rounds.*less than or equal to 10"),
    ],
)
def test_out_of_range_is_refused(tmp_path: Path, key: str, value: object, said: str) -> None:
    raw = minimal_config(tmp_path)
    raw["scoring"] = {key: value}
    with pytest.raises(ConfigError, match=said):
        config_from_dict(raw, base_dir=tmp_path)


def test_in_range_loads(tmp_path: Path) -> None:
    raw = minimal_config(tmp_path)
    raw["scoring"] = {"frame_widths": [1, 15], "window_fractions": [0.1, 1.0], "align_rounds": 10}
    cfg = config_from_dict(raw, base_dir=tmp_path)
    assert cfg.scoring.frame_widths == (1, 15) and cfg.scoring.window_fractions == (0.1, 1.0)
    raw["batch"] = {"grid": 64}
    raw["scoring"] = {"frame_widths": [31]}
    assert config_from_dict(raw, base_dir=tmp_path).scoring.frame_widths == (31,)

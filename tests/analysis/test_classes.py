"""spray.analysis.classes called as a library: the shapes it takes and what it says about maps without
signal (from an outside check of the Python API, where each raised a raw reshape or index error, or ran on)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from spray.analysis.classes import analyze_class
from spray.analysis.concepts import analyze_concepts
from spray.config import config_from_dict
from spray.errors import DataError


def _cfg():  # type: ignore[no-untyped-def]
    raw = {"model": {"factory": "m:f"}, "data": {"kind": "idx", "images": "x", "labels": "y"},
           "analysis": {"embedding": "spectral"}, "scoring": {"intervention": False}}  # fmt: skip
    return config_from_dict(raw, check_files=False)


IDS = [f"s{i}" for i in range(40)]


def test_maps_with_channels_are_refused_with_the_pooling_to_use() -> None:
    maps = np.random.default_rng(0).random((40, 3, 8, 8), dtype=np.float32)
    with pytest.raises(DataError, match=r"give \(n, h, w\) maps.*relevance.sum\(1\)"):
        analyze_class(0, "c", IDS, maps, _cfg())
    with pytest.raises(DataError, match=r"\(n, h, w\) for the 39 sample ids, got shape \(40, 8, 8\)"):
        analyze_class(0, "c", IDS[:39], maps.sum(1), _cfg())


def test_concepts_of_another_count_are_refused() -> None:
    concepts = np.random.default_rng(0).random((39, 16), dtype=np.float32)
    with pytest.raises(
        DataError, match=r"concepts must be \(n, C\) for the 40 sample ids, got shape \(39, 16\)"
    ):
        analyze_concepts(0, "c", IDS, concepts, _cfg())
    maps = np.random.default_rng(1).random((40, 8, 8), dtype=np.float32)
    with pytest.raises(DataError, match="concepts must be"):
        analyze_class(0, "c", IDS, maps, _cfg(), concepts=concepts)


def test_identical_maps_are_said_to_carry_no_signal(caplog: pytest.LogCaptureFixture) -> None:
    one = np.random.default_rng(0).random((8, 8), dtype=np.float32)
    with caplog.at_level(logging.WARNING):
        analyze_class(0, "c", IDS, np.tile(one, (40, 1, 1)), _cfg())
    assert "its 40 maps are all the same after normalisation" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        analyze_class(0, "c", IDS, np.random.default_rng(2).random((40, 8, 8), dtype=np.float32), _cfg())
    assert "all the same" not in caplog.text

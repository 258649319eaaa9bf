"""spray.heatmap_contrast: flat heatmaps (a composite that does not suit the model) are said aloud."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from spray.accuracy import recorded_problems
from spray.heatmap_contrast import FLAT_CV, heatmap_contrast


def _maps(n: int, spread: float, seed: int = 0) -> np.ndarray:
    """``(n, 8, 8)`` maps: a uniform floor plus a hot spot of relative height ``spread``."""
    rng = np.random.default_rng(seed)
    maps = np.ones((n, 8, 8)) + 0.01 * rng.standard_normal((n, 8, 8))
    ys, xs = rng.integers(0, 8, n), rng.integers(0, 8, n)
    maps[np.arange(n), ys, xs] += spread
    return maps


def test_flat_maps_are_flagged_and_warned(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="spray.heatmap_contrast"):
        got = heatmap_contrast(_maps(40, 0.5))
    assert got is not None and got.flat and got.median_cv < FLAT_CV and got.n_samples == 40
    assert "nearly flat" in caplog.text and "EpsilonGammaBox" in caplog.text


def test_maps_with_a_hot_spot_pass(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="spray.heatmap_contrast"):
        got = heatmap_contrast(-_maps(40, 20.0))  # signed relevance counts by its size
    assert got is not None and not got.flat and got.median_cv > 1.0
    assert caplog.text == ""


def test_few_or_empty_maps_say_nothing() -> None:
    few = heatmap_contrast(_maps(5, 0.0))
    assert few is not None and few.median_cv < FLAT_CV and not few.flat  # too few samples to judge
    assert heatmap_contrast(np.zeros((30, 8, 8))) is None
    assert heatmap_contrast(np.zeros((0, 8, 8))) is None


def test_a_recorded_flat_check_reaches_every_output_through_recorded_problems() -> None:
    flat = {"median_cv": 0.1, "n_samples": 480, "flat": True}
    (sentence,) = recorded_problems({"heatmap_contrast": flat})
    assert "10 % of their mean" in sentence and "480 maps" in sentence
    assert recorded_problems({"heatmap_contrast": {**flat, "flat": False}}) == []
    assert recorded_problems({}) == [] and recorded_problems(None) == []


def test_the_advice_names_another_composite_and_attention_rules_for_a_transformer() -> None:
    """An outside check: a DeiT's flat maps under EpsilonGammaBox were told to try EpsilonGammaBox, and a hybrid
    ViT's low share under AttnLRP was told to compare AttnLRP; a transformer needs the attention rules."""
    from spray.conservation import problems as share_problems
    from spray.heatmap_contrast import composite_advice, problems

    def said(composite: str | None, transformer: bool | None) -> str:
        rec = {
            "median_cv": 0.2,
            "n_samples": 40,
            "flat": True,
            "composite": composite,
            "transformer": transformer,
        }
        return problems(rec)[0]

    assert "try lrp.composite: EpsilonAlpha2Beta1Flat" in said("EpsilonGammaBox", False)
    assert "EpsilonGammaBox (or EpsilonAlpha2Beta1Flat)" in said("EpsilonPlusFlat", False)
    assert "try lrp.composite: AttnLRP" in said("EpsilonGammaBox", True)
    assert "compare lrp.composite: CPLRP" in said("AttnLRP", True)
    assert "EpsilonGammaBox" in said(None, None)  # a run recorded before: the old advice
    for composite in ("EpsilonPlusFlat", "EpsilonGammaBox", "AttnLRP", "CPLRP"):
        for transformer in (False, True):
            assert f"lrp.composite: {composite}" not in composite_advice(composite, transformer)
    low = {"median_share": 0.086, "low_share": 0.05, "high_share": 0.1, "n_samples": 32, "low": True}
    text = share_problems(low | {"composite": "AttnLRP", "transformer": True})[0]
    assert "compare lrp.composite: CPLRP" in text and "z+" not in text

"""The paired accuracy change and its interval, against numpy on the per-image differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spray.correct.evaluate import CleanChanges
from spray.correct.record import Verdict


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_interval_is_the_paired_normal_interval(seed: int) -> None:
    rng = np.random.default_rng(seed)
    before = rng.random(2000) < 0.88
    after = np.where(rng.random(2000) < 0.05, ~before, before)  # 5 % of the images change answer
    changes = CleanChanges(n=2000, gained=int((after & ~before).sum()), lost=int((before & ~after).sum()))
    d = after.astype(float) - before.astype(float)
    half = 1.96 * d.std() / math.sqrt(len(d))
    low, high = changes.interval()
    assert low == pytest.approx(d.mean() - half) and high == pytest.approx(d.mean() + half)


def test_no_changed_image_means_no_uncertainty_and_no_sample_means_none() -> None:
    assert CleanChanges(n=100, gained=0, lost=0).interval() == (0.0, 0.0)
    assert all(math.isnan(x) for x in CleanChanges(n=0, gained=0, lost=0).interval())


def test_verdict_text_with_and_without_the_interval() -> None:
    v = Verdict(0.9, 0.8, -0.0132, True, [-0.021, -0.0054])
    assert v.accuracy_text() == "-1.32 points (95 % interval -2.10 to -0.54)"
    # a record written before the interval was kept reads back without it
    assert Verdict(0.9, 0.8, 0.005, None).accuracy_text() == "+0.50 points"

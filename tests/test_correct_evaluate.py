"""The paired accuracy change and its interval, against numpy on the per-image differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

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


class _Detector(torch.nn.Module):
    """Class 1 when a bright 3×3 patch is at the top right (``anywhere``: at any corner), else class 0."""

    def __init__(self, anywhere: bool) -> None:
        super().__init__()
        self.anywhere = anywhere

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        corners = [x[:, 0, :3, -3:]] + (
            [x[:, 0, -3:, :3], x[:, 0, :3, :3], x[:, 0, -3:, -3:]] if self.anywhere else []
        )
        hit = torch.stack([c.mean((1, 2)) > 0.9 for c in corners]).any(0).float()
        return torch.stack([1 - hit, hit], 1)


def test_the_stamp_is_also_pasted_at_the_opposite_place() -> None:
    """An outside check: P-ClArC of a text watermark in a random corner, flagged at one corner, reported the
    flip rate 100 → 5 % while the word at the other corners still flipped every image."""
    from spray.correct.evaluate import _paste_scores, opposite_shift

    mask = np.zeros((12, 12), bool)
    mask[0:3, 9:12] = True  # top right
    assert opposite_shift(mask) == (9, -9)  # to the bottom left
    centred = np.zeros((12, 12), bool)
    centred[4:8, 4:8] = True
    assert opposite_shift(centred) is None and opposite_shift(np.zeros((5, 5), bool)) is None
    targets, donors = torch.zeros(8, 1, 12, 12), torch.ones(4, 1, 12, 12)
    labels = np.zeros(8, dtype=np.int64)
    null = torch.zeros(4, 1, 12, 12)
    cpu = torch.device("cpu")
    _, flip, flip_null, moved = _paste_scores(_Detector(True), targets, labels, donors, null, mask, 1, cpu, 4)
    assert (flip, flip_null, moved) == (1.0, 0.0, 1.0)
    _, flip, _, moved = _paste_scores(_Detector(False), targets, labels, donors, null, mask, 1, cpu, 4)
    assert (flip, moved) == (1.0, 0.0)  # a model that reads one place only: nothing there
    assert _paste_scores(_Detector(True), targets, labels, donors, null, centred, 1, cpu, 4)[3] is None


def test_a_shortcut_left_at_the_other_places_is_warned_of() -> None:
    from types import SimpleNamespace

    from spray.correct.record import CorrectionRecord

    def rec(after_moved: float | None, pooling: str = "none") -> object:
        before = SimpleNamespace(flip_rate=1.0, flip_null=0.0, flip_moved=1.0)
        after = SimpleNamespace(flip_rate=0.05, flip_null=0.0, flip_moved=after_moved)
        ev = SimpleNamespace(before=before, after=after)
        return SimpleNamespace(
            evaluation=ev, group=SimpleNamespace(class_name="circle"), method="pclarc",
            direction=SimpleNamespace(pooling=pooling, candidates={"none": 0.9, "max": 0.95}), parameters={},
        )  # fmt: skip

    text = CorrectionRecord.moved_warning(rec(1.0))  # type: ignore[arg-type]
    assert "still turns 100 % of the images into circle (in place: 5 %, 100 % before)" in text
    # an outside check: every carrier was flagged already, and a position-free direction is what helped
    assert "--with-carriers, unless they are flagged already" in text and "correction.pooling: max" in text
    assert "correction.pooling: max" not in CorrectionRecord.moved_warning(rec(1.0, "max"))  # type: ignore[arg-type]
    assert CorrectionRecord.moved_warning(rec(0.2)) == ""  # type: ignore[arg-type]
    assert CorrectionRecord.moved_warning(rec(None)) == ""  # type: ignore[arg-type]

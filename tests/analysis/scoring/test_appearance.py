"""Appearance: a repeated stamp against a varying object part."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spray.analysis.scoring.appearance import Donors, appearance, grid_appearance, grid_cells, uniform_region
from spray.analysis.scoring.evidence import evidence
from spray.analysis.scoring.geometry import Region
from spray.analysis.scoring.intervention import InterventionTest
from spray.analysis.scoring.signals import Candidate
from spray.config import ScoringConfig
from tests.analysis.scoring.cases import NAME, Case, score


def test_grid_cells_average_pool_to_the_grid() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    g = grid_cells(x, 2, 2)
    assert g.shape == (1, 2, 2, 1)
    np.testing.assert_allclose(g[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])


def test_appearance_tells_a_repeated_stamp_from_a_varying_part() -> None:
    rng = np.random.default_rng(0)
    n = 40
    rest = torch.from_numpy(rng.random((n, 1, 16, 16)).astype(np.float32))
    mask = np.zeros((n, 8, 8), dtype=bool)
    mask[:, :2, :2] = True  # top-left 2×2 cells = 4×4 pixels
    stamped = torch.from_numpy(rng.random((n, 1, 16, 16)).astype(np.float32))
    stamped[:, :, :4, :4] = 1.0  # the same pixels in every member
    assert appearance(stamped, mask, rest, mask) > 0.95
    varied = torch.from_numpy(rng.random((n, 1, 16, 16)).astype(np.float32))
    assert appearance(varied, mask, rest, mask) < 0.2
    # A moving stamp: each member's own window (aligned by its corner) holds the same pixels.
    moving = torch.from_numpy(rng.random((n, 1, 16, 16)).astype(np.float32))
    own = np.zeros((n, 8, 8), dtype=bool)
    for i in range(n):
        r, c = rng.integers(0, 7, size=2)
        moving[i, :, 2 * r : 2 * r + 4, 2 * c : 2 * c + 4] = 1.0
        own[i, r : r + 2, c : c + 2] = True
    assert appearance(moving, own, rest, mask) > 0.95
    # Nothing to tell apart: a region that is the same in every image.
    flat = torch.zeros(n, 1, 16, 16)
    assert appearance(flat, mask, flat, mask) == 0.0


def test_appearance_weights_the_cells_the_model_uses() -> None:
    """Half the window repeats, half varies: the weights decide which half counts."""
    rng = np.random.default_rng(1)
    n = 40
    x_in = torch.from_numpy(rng.random((n, 1, 8, 8)).astype(np.float32))
    x_in[:, :, :, :4] = 1.0  # left half identical in every member
    x_out = torch.from_numpy(rng.random((n, 1, 8, 8)).astype(np.float32))
    mask = np.ones((n, 2, 2), dtype=bool)  # the whole 2×2 grid: cells (0,0) (0,1) (1,0) (1,1)
    left = np.array([1.0, 0.0, 1.0, 0.0])
    assert appearance(x_in, mask, x_out, mask, weights=left) > 0.95
    assert appearance(x_in, mask, x_out, mask, weights=1.0 - left) < 0.3


def test_trimming_keeps_a_few_members_without_the_stamp_from_hiding_it() -> None:
    """An identical stamp in 18 of 20 members (a cluster is rarely pure): with every member the two
    outliers dominate the spread; leaving out the 10 % farthest from the median finds the stamp."""
    rng = np.random.default_rng(0)
    stamp = np.ones((20, 4, 1))  # 4 region cells, one channel
    stamp[18:] = rng.random((2, 4, 1))  # two members without it
    others = rng.random((30, 4, 1)) * 0.3  # the class's own pixels there: dark and varied
    mask_in = np.ones((20, 2, 2), bool)
    mask_out = np.ones((30, 2, 2), bool)
    g_in, g_out = stamp.reshape(20, 2, 2, 1), others.reshape(30, 2, 2, 1)
    every = grid_appearance(g_in, mask_in, g_out, mask_out)
    trimmed = grid_appearance(g_in, mask_in, g_out, mask_out, trim=0.1)
    assert every < 0.6 < 0.99 < trimmed
    assert grid_appearance(g_in[:18], mask_in[:18], g_out, mask_out, trim=0.1) == pytest.approx(1.0)
    # trimming cannot make varied members alike: the median is as varied as they are
    varied = rng.random((20, 2, 2, 1))
    assert grid_appearance(varied, mask_in, g_out, mask_out, trim=0.1) < 0.2


def test_a_region_the_same_in_every_image_is_called_uniform_not_varied(planted: Case) -> None:
    """Appearance 0 for want of any spread (a class of constant images) read as 'vary 100 % as much', and a
    null with nothing to compare was printed as a measurement."""
    x = torch.zeros(6, 1, 4, 4)
    mask = np.zeros((6, 4, 4), bool)
    mask[:, :2, :2] = True

    def donors(g: np.ndarray) -> Donors:
        return Donors(np.arange(3), np.arange(3, 6), [], [], x[:3], x[3:], g[:3], g[3:])

    same = np.full((6, 4, 4, 1), 0.5)
    assert uniform_region(donors(same), mask[:3], mask[3:])
    varied = same.copy()
    varied[0, 0, 0, 0] = 0.9
    assert not uniform_region(donors(varied), mask[:3], mask[3:])
    top = score(planted)[0]
    cand = Candidate(
        top.k,
        top.cluster_id,
        np.zeros(600, bool),
        Region("window", 2, 0, 0),
        False,
        3,
        dict(top.signals),
        0.0,
    )
    test = InterventionTest(0.0, False, "window", 4, 0.0, null_count=0, uniform=True)
    lines = evidence(cand, NAME, 600, 8, 8, test, ScoringConfig())
    assert (
        f"the pixels there are the same in every {NAME} image looked at: nothing tells the members apart"
        in lines
    )
    assert f"no other group of {NAME} was looked at to compare how alike its pixels are" in lines
    assert not any("vary" in line for line in lines)
    assert any("pixels that every image of the class shares" in line for line in lines)

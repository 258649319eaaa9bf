"""Region geometry: masks, integral-image window sums and own-window masks against brute force."""

from __future__ import annotations

import numpy as np

from spray.analysis.scoring.geometry import (
    Region,
    box_sums,
    integral,
    local_peak_masks,
    location_words,
    peak_masks,
    relevance_mask,
    window_sizes,
)


def test_region_masks_and_areas() -> None:
    win = Region("window", 3, 2, 5)
    m = win.mask(10, 12)
    assert m.sum() == 9 and m[2:5, 5:8].all()
    assert win.area(10, 12) == m.mean()
    frame = Region("frame", 2)
    f = frame.mask(10, 12)
    assert f.sum() == 10 * 12 - 6 * 8 and not f[2:-2, 2:-2].any()
    assert frame.area(10, 12) == f.mean()


def test_box_sums_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    p = rng.random((3, 9, 7))
    for s in (1, 2, 4):
        got = box_sums(integral(p), s)
        want = np.array(
            [
                [[p[k, i : i + s, j : j + s].sum() for j in range(7 - s + 1)] for i in range(9 - s + 1)]
                for k in range(3)
            ]
        )
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_window_sizes_are_clamped_and_unique() -> None:
    assert window_sizes(28, 28, (1 / 8, 1 / 6, 1 / 5)) == [4, 5, 6]
    assert window_sizes(8, 8, (0.01, 1 / 8, 2.0)) == [2, 8]


def test_peak_masks_pick_each_samples_hottest_window() -> None:
    p = np.zeros((2, 8, 8))
    p[0, 1:3, 4:6] = 1.0
    p[1, 5:7, 0:2] = 1.0
    m = peak_masks(box_sums(integral(p), 2), 2, 8, 8)
    assert m[0, 1:3, 4:6].all() and m[0].sum() == 4
    assert m[1, 5:7, 0:2].all() and m[1].sum() == 4


def test_local_peak_masks_stay_within_reach_and_centre_on_the_core() -> None:
    p = np.zeros((2, 16, 16), dtype=np.float32)
    p[0, 3:5, 4:6] = 1.0  # near the region
    p[1, 12:14, 12:14] = 1.0  # far away: the window stays within reach
    region = Region("window", 4, 2, 2)
    m = local_peak_masks(p, region, reach=2)
    assert m[0, 3:5, 4:6].all() and m[0].sum() == 16
    rows, cols = np.nonzero(m[1])
    assert rows.min() <= region.row + 2 and cols.min() <= region.col + 2


def test_location_words() -> None:
    assert location_words(Region("window", 4, 0, 0), 28, 28) == "top left"
    assert location_words(Region("window", 4, 12, 12), 28, 28) == "centre"
    assert location_words(Region("window", 4, 12, 24), 28, 28) == "middle right"
    assert location_words(Region("frame", 1), 28, 28) == "border"


def test_relevance_mask_takes_the_shape_of_the_members_hot_pixels() -> None:
    p_out = np.full((28, 28), 1 / 784)
    p_in = p_out.copy()
    p_in[1, 4:24] += 0.02  # a 1-pixel line of 20 cells
    m = relevance_mask(p_in, p_out, level=0.25, max_area=0.15)
    assert m.sum() == 20 and m[1, 4:24].all()
    # At most max_area of the grid, the highest-contrast cells first.
    p_in[10:20, 10:20] += 0.01
    m = relevance_mask(p_in, p_out, level=0.25, max_area=0.05)
    assert m.sum() == int(0.05 * 784) and m[1, 4:24].all()
    assert not relevance_mask(p_out, p_out, 0.25, 0.15).any()

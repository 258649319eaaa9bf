"""Thumbnails (spray.data.thumbnails): the host copy equals the device function's pixels, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spray.data.thumbnails import make_thumbnail, thumbnail_pixels, thumbnail_side


@pytest.mark.parametrize(
    ("shape", "size", "channels"),
    [
        ((1, 28, 28), 28, 1),  # grey, kept at its size
        ((1, 28, 28), 28, 3),  # grey shown as RGB
        ((3, 32, 32), 32, 1),  # colour reduced by luma
        ((3, 40, 56), 24, 3),  # resized and squashed to a square
    ],
)
def test_host_thumbnail_equals_thumbnail_pixels(shape: tuple[int, ...], size: int, channels: int) -> None:
    rng = np.random.default_rng(0)
    # values on the 8-bit grid (decoded images), between it, at the rounding ties and outside [0, 1]
    grid = rng.integers(0, 256, shape) / 255.0
    ties = (rng.integers(0, 255, shape) + 0.5) / 255.0
    wild = rng.uniform(-0.5, 1.5, shape)
    for values in (grid, ties, wild):
        x = torch.from_numpy(values.astype(np.float32))
        got = make_thumbnail(x, size, channels)
        oracle = thumbnail_pixels(x, size, channels).numpy()
        assert got.dtype == np.uint8 and got.shape == (size, size, channels)
        assert np.array_equal(got, oracle)


def test_thumbnail_of_a_non_finite_image_is_made_without_a_warning() -> None:
    """The sample is skipped afterwards (non-finite input); making its thumbnail must not warn or fail."""
    x = torch.full((1, 8, 8), float("nan"))
    with np.errstate(all="raise"):
        assert make_thumbnail(x, 8, 1).shape == (8, 8, 1)


def test_thumbnails_are_never_larger_than_the_image() -> None:
    assert thumbnail_side(64, 28, 28) == 28
    assert thumbnail_side(64, 224, 300) == 64

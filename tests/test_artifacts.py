"""spray.lab.artifacts: the planted shortcuts of the demo and the detection benchmark."""

from __future__ import annotations

import numpy as np
import pytest

from spray.lab.artifacts import ARTIFACTS, SHAPED, plant, shape_alpha


def _garments(n: int = 40, seed: int = 0) -> np.ndarray:
    """Bright blobs of random size and place on a black background, like Fashion-MNIST items."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 28, 28), dtype=np.uint8)
    for i in range(n):
        # at least 6 empty rows or columns on every side: room for a 4×4 square with its margin
        top, left = rng.integers(6, 9, 2)
        bottom, right = rng.integers(18, 23, 2)
        out[i, top:bottom, left:right] = rng.integers(80, 200)
    return out


@pytest.mark.parametrize("kind", ["corner_square", "random_square", "background_square"])
def test_squares_cover_size_squared_pixels_drawn_white(kind: str) -> None:
    images = _garments()
    pl = plant(images, kind, size=4, seed=3)
    assert pl.masks.sum(axis=(1, 2)).tolist() == [16] * len(images)
    assert (pl.images[pl.masks] == 255).all()
    assert (pl.images[~pl.masks] == images[~pl.masks]).all()  # nothing else changes
    again = plant(images, kind, size=4, seed=3)
    assert (again.masks == pl.masks).all()  # seeded


def test_background_square_lands_on_empty_background_at_varying_places() -> None:
    images = _garments()
    pl = plant(images, "background_square", size=4, seed=0)
    corners = set()
    for img, mask in zip(images, pl.masks, strict=True):
        ys, xs = np.nonzero(mask)
        y0, x0 = ys.min(), xs.min()
        corners.add((int(y0), int(x0)))
        ring = img[max(0, y0 - 1) : y0 + 5, max(0, x0 - 1) : x0 + 5]
        assert ring.max() <= 40, "the square or its 1-pixel margin covers the object"
    assert len(corners) > 10  # a random position, not a fixed one


def test_background_square_without_background_falls_back_to_any_position() -> None:
    full = np.full((3, 12, 12), 150, dtype=np.uint8)
    pl = plant(full, "background_square", size=4, seed=0)
    assert pl.masks.sum(axis=(1, 2)).tolist() == [16, 16, 16]


def test_unknown_kind_names_the_choices() -> None:
    with pytest.raises(ValueError, match="background_square"):
        plant(_garments(2), "sticker")
    assert "background_square" in ARTIFACTS


@pytest.mark.parametrize("kind", SHAPED)
def test_shaped_artifacts_are_fixed_drawn_and_masked(kind: str) -> None:
    images = _garments(6)
    pl = plant(images, kind)
    alpha = shape_alpha(kind, 28, 28)
    assert 10 <= pl.masks[0].sum() <= 80, "a small artifact"
    assert (pl.masks == pl.masks[0]).all(), "a fixed position"
    assert (pl.images[:, alpha == 0] == images[:, alpha == 0]).all()  # nothing outside it changes
    assert (pl.images[:, alpha == 1] == 255).all()
    assert pl.images[pl.masks].mean() > images[pl.masks].mean() + 50


def test_lines_are_one_pixel_wide_and_twenty_long() -> None:
    h = shape_alpha("hline", 28, 28)
    assert h.sum() == 20 and np.flatnonzero(h.sum(axis=1)).tolist() == [1]
    v = shape_alpha("vline", 28, 28)
    assert v.sum() == 20 and np.flatnonzero(v.sum(axis=0)).tolist() == [26]


def test_text_artifacts_draw_their_font_in_their_corner() -> None:
    a, tm = shape_alpha("text_a", 28, 28), shape_alpha("text_tm", 28, 28)
    ys, xs = np.nonzero(a >= 0.25)
    assert ys.min() >= 14 and xs.max() < 14  # bottom left
    ys, xs = np.nonzero(tm >= 0.25)
    assert ys.max() < 14 and xs.min() >= 10  # top right


def test_moving_text_lands_in_every_corner_at_several_sizes() -> None:
    images = _garments(60)
    pl = plant(images, "moving_text", seed=2)
    corners, sizes = set(), set()
    for mask in pl.masks:
        ys, xs = np.nonzero(mask)
        assert 10 <= len(ys) <= 120, "a small watermark"
        corners.add((ys.mean() < 14, xs.mean() < 14))
        sizes.add(int(ys.max() - ys.min()))
    assert len(corners) == 4, "a random corner"
    assert len(sizes) >= 3, "a random size"
    outside = ~np.any(pl.images != images, axis=0)
    assert outside.any()  # pixels no watermark touched
    again = plant(images, "moving_text", seed=2)
    assert (again.images == pl.images).all()  # seeded


def test_moving_checker_is_the_checker_texture_on_empty_background_at_varying_places() -> None:
    images = np.zeros((40, 28, 28), dtype=np.uint8)
    images[:, 9:19, 9:19] = 150  # room for the patch and its margin on every side
    pl = plant(images, "moving_checker", seed=0)
    spots = set()
    for img, out, mask in zip(images, pl.images, pl.masks, strict=True):
        ys, xs = np.nonzero(mask)
        assert len(ys) == 36 and ys.max() - ys.min() == 5 and xs.max() - xs.min() == 5  # 6×6
        spots.add((int(ys.min()), int(xs.min())))
        assert img[mask].max() <= 40, "the patch covers the object"
        patch = out[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(int)
        assert patch[0, 0] == 255 and patch[0, 1] < 255  # the checkerboard alternates
    assert len(spots) > 10


def test_colour_cast_tints_every_pixel_of_rgb_images_and_refuses_grey_ones() -> None:
    rgb = np.stack([_garments(5)] * 3, axis=3)
    pl = plant(rgb, "colour_cast")
    assert pl.masks.all()
    diff = pl.images.astype(int) - rgb.astype(int)
    assert (diff[..., 0] >= 0).all() and (diff[..., 2] <= 0).all() and (diff[..., 1] == 0).all()
    assert (pl.images[rgb[..., 0] == 0][:, 0] == 48).all()  # the black background turns dark red
    with pytest.raises(ValueError, match="RGB"):
        plant(_garments(2), "colour_cast")

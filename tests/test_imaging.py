"""Heatmap colouring and overlays (spray.imaging)."""

from __future__ import annotations

import numpy as np
import pytest

from spray import imaging


def test_diverging_map_puts_zero_at_white_and_sign_at_the_ends() -> None:
    heat = np.array([[-2.0, 0.0, 2.0]], dtype=np.float16)
    rgb = imaging.colorize(heat, "bwr")
    assert rgb.shape == (1, 3, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (0, 0, 255)
    assert tuple(rgb[0, 1]) == (255, 255, 255)
    assert tuple(rgb[0, 2]) == (255, 0, 0)


def test_normalisation_is_per_map_and_handles_zero_and_nan() -> None:
    batch = np.zeros((3, 4, 4), np.float32)
    batch[1, 0, 0] = 10.0
    batch[2] = np.nan
    v = imaging.normalize(batch, diverging=True)
    assert np.allclose(v[0], 0.5) and v[1, 0, 0] == 1.0 and np.allclose(v[2], 0.5)
    s = imaging.normalize(batch, diverging=False)
    assert s[1, 0, 0] == 1.0 and s[0].max() == 0.0


@pytest.mark.parametrize("name", sorted(imaging.COLORMAPS))
def test_every_colour_map_renders_batches(name: str) -> None:
    heat = np.random.default_rng(0).normal(size=(5, 7, 7))
    rgb = imaging.colorize(heat, name)
    assert rgb.shape == (5, 7, 7, 3)
    assert imaging.COLORMAPS[name].lut.shape == (imaging.LUT_SIZE, 3)


def test_unknown_colour_map_names_the_choices() -> None:
    with pytest.raises(ValueError, match="bwr"):
        imaging.colorize(np.zeros((2, 2)), "jet")


def test_overlay_leaves_the_input_where_relevance_is_zero() -> None:
    img = np.full((2, 8, 8, 3), 100, np.uint8)
    heat = np.zeros((2, 4, 4), np.float32)
    heat[0, 0, 0] = 1.0
    out = imaging.overlay(img, heat, "bwr", alpha=0.5)
    assert out.shape == img.shape
    assert (out[1] == 100).all()  # all-zero relevance: unchanged
    assert (out[0, 2:, 2:] == 100).all()  # zero cells of map 0: unchanged
    assert out[0, 0, 0, 0] > 100 and out[0, 0, 0, 2] < 100  # hot cell (upscaled 2×2): reddened


def test_resize_nearest_keeps_blocks_and_accepts_single_images() -> None:
    a = np.arange(4).reshape(1, 2, 2)
    r = imaging.resize_nearest(a, 4)
    assert r.shape == (1, 4, 4) and (r[0, :2, :2] == 0).all() and (r[0, 2:, 2:] == 3).all()
    rgb = np.zeros((2, 2, 3), np.uint8)
    assert imaging.resize_nearest(rgb, 6).shape == (6, 6, 3)


def test_render_modes_and_fallback_without_thumbnails() -> None:
    heat = np.random.default_rng(1).normal(size=(3, 7, 7)).astype(np.float16)
    imgs = np.zeros((3, 14, 14), np.uint8)  # grey thumbnails are accepted
    for mode in ("input", "heatmap", "overlay"):
        assert imaging.render(mode, heat, imgs, size=28).shape == (3, 28, 28, 3)
    assert imaging.render("overlay", heat, None).shape == (3, 28, 28, 3)  # heatmap, 4× grid
    with pytest.raises(ValueError):
        imaging.render("xray", heat, imgs)


def test_png_data_uri() -> None:
    uri = imaging.png_data_uri(np.zeros((4, 4, 3), np.uint8))
    assert uri.startswith("data:image/png;base64,")


def test_grey_thumbnails_render_with_the_readers() -> None:
    """Thumbnails of grey datasets are (n, t, t, 1): every reader goes through render/to_rgb."""
    thumbs = np.random.default_rng(0).integers(0, 256, (2, 28, 28, 1), dtype=np.uint8)
    heat = np.random.default_rng(1).normal(size=(2, 7, 7))
    for mode in ("input", "heatmap", "overlay"):
        out = imaging.render(mode, heat, thumbs, size=56)
        assert out.shape == (2, 56, 56, 3) and out.dtype == np.uint8
    assert np.array_equal(imaging.render("input", heat, thumbs, size=28)[..., 1], thumbs[..., 0])

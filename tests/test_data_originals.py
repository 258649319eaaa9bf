"""A sample's original file as viewers show it (:mod:`spray.data.originals`): found under the data root,
decoded as the audit decoded it, relevance drawn where the model saw it (``spray.imaging.overlay_box``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from spray import imaging
from spray.data.originals import decode_original, input_box, original_under

CROP = {"data": {"transform": {"resize": 28, "center_crop": 28}}}


def test_the_centre_crop_box_of_a_wide_image() -> None:
    """An outside check drew a 120×30 image's relevance over its whole width, while the model (resize 28,
    centre crop 28) saw only its middle quarter."""
    top, left, bottom, right = input_box(CROP, 30, 120)
    # resized to 28×112, the crop keeps columns 42..70 of 112: 0.375..0.625 of the width, every row
    assert (top, bottom) == (0.0, 1.0) and (left, right) == pytest.approx((0.375, 0.625))
    assert input_box({"data": {"transform": {"resize": 28}}}, 30, 120) == (0.0, 0.0, 1.0, 1.0)
    assert input_box({}, 30, 120) == (0.0, 0.0, 1.0, 1.0)
    # a run recorded before a validation rule (mean/std on the 0-255 scale) is still drawn
    old = {"data": {"transform": {"resize": 28, "center_crop": 28, "mean": [123.7], "std": [58.4]}}}
    assert input_box(old, 30, 120) == input_box(CROP, 30, 120)
    # a crop taller than the image pads it (as torchvision does): the box reaches past the image
    box = input_box({"data": {"transform": {"center_crop": 64}}}, 30, 120)
    assert box == pytest.approx((-17 / 30, 28 / 120, 47 / 30, 92 / 120))


def test_a_crop_larger_than_the_image_pads_it_as_torchvision_does() -> None:
    """An outside check found spray stretching such an image (aspect ratio lost) where torchvision's
    CenterCrop pads it with zeros: the model was explained on inputs it never gets."""
    import torch
    import torchvision.transforms.functional as TF

    from spray.config import TransformConfig
    from spray.data.transform import Transform

    t = Transform(TransformConfig(center_crop=28))
    for h, w in [(20, 20), (21, 25), (30, 24), (40, 40), (31, 35), (33, 29)]:  # 31-28 = 3: round(1.5) = 2
        x = torch.rand(1, h, w, generator=torch.Generator().manual_seed(h * w))
        assert torch.equal(t.geometry(x), TF.center_crop(x, [28, 28])), (h, w)
    # where the image sits in the padded input is where the overlay draws it
    img = np.full((20, 20, 3), 100, np.uint8)
    heat = np.zeros((28, 28), np.float32)
    heat[4:24, 4:24] = 1.0  # relevance exactly on the image, none on the padding
    box = t.input_box(20, 20)
    out = imaging.overlay_box(img, heat, box)
    assert np.all(out != 100)  # coloured everywhere: every pixel of the image is under relevance
    canvas = imaging.heat_in_box(heat, box)
    assert canvas.shape == (200, 200) and np.all(canvas == 1.0)  # 28 → 280 px: cells of 10 × 10


def test_the_overlay_colours_only_what_the_model_saw() -> None:
    img = np.full((30, 120, 3), 100, np.uint8)
    heat = np.ones((7, 7), np.float32)
    box = input_box(CROP, 30, 120)
    out = imaging.overlay_box(img, heat, box)
    inside, outside = out[:, 45:75], np.concatenate([out[:, :45], out[:, 75:]], axis=1)
    assert np.all(outside == int(100 * 0.45))  # dimmed, no colour: the model did not see it
    assert np.all(inside != 100)  # coloured
    np.testing.assert_array_equal(
        imaging.overlay_box(img, heat, (0.0, 0.0, 1.0, 1.0)), imaging.overlay(img, heat)
    )


def test_a_heatmap_placed_in_the_originals_proportions() -> None:
    heat = np.arange(16, dtype=np.float32).reshape(4, 4) + 1
    canvas = imaging.heat_in_box(heat, (0.0, 0.375, 1.0, 0.625))
    s = imaging.PLACED_SIDE // 4  # cells of s × s pixels
    assert canvas.shape == (4 * s, 16 * s)
    np.testing.assert_array_equal(canvas[::s, 6 * s : 10 * s : s], heat)
    assert canvas[:, : 6 * s].sum() == 0 and canvas[:, 10 * s :].sum() == 0
    assert imaging.heat_in_box(heat, (0.0, 0.0, 1.0, 1.0)).shape == (4, 4)


def test_each_cell_of_a_placed_heatmap_lies_where_the_model_saw_it() -> None:
    """An outside check: the canvas was made of whole heatmap cells, so on a 480 × 640 photo (resize 256, centre
    crop 224, grid 32) cells landed up to 8.8 px (two thirds of a cell) off where the model saw them."""
    from spray.config import TransformConfig
    from spray.data.transform import Transform

    for h, w in [(480, 640), (375, 500), (500, 333)]:
        box = Transform(TransformConfig(resize=256, center_crop=224)).input_box(h, w)
        heat = np.arange(1, 32 * 32 + 1, dtype=np.float32).reshape(32, 32)
        canvas = imaging.heat_in_box(heat, box)
        top, left, bottom, right = box
        for i, j in [(0, 0), (5, 27), (31, 31), (16, 3)]:
            rows, cols = np.nonzero(canvas == heat[i, j])
            got = ((rows.mean() + 0.5) / canvas.shape[0] * h, (cols.mean() + 0.5) / canvas.shape[1] * w)
            want = ((top + (bottom - top) * (i + 0.5) / 32) * h, (left + (right - left) * (j + 0.5) / 32) * w)
            assert abs(got[0] - want[0]) < 1.5 and abs(got[1] - want[1]) < 1.5, (h, w, i, j, got, want)


def test_originals_are_found_by_their_id_and_symlinks_in_the_folder_followed(tmp_path: Path) -> None:
    root, store = tmp_path / "data", tmp_path / "store"
    (root / "cls").mkdir(parents=True)
    store.mkdir()
    Image.new("L", (4, 4)).save(store / "x.png")
    Image.new("L", (4, 4)).save(root / "cls" / "a.png")
    (root / "cls" / "link.png").symlink_to(store / "x.png")
    assert original_under(root, "cls/a.png") == root / "cls" / "a.png"
    assert original_under(root, "cls/link.png") == root / "cls" / "link.png"  # an outside check: was None
    assert original_under(root, "../store/x.png") is None
    assert original_under(root, "cls/../../store/x.png") is None
    assert original_under(root, str(store / "x.png")) is None  # an absolute id
    assert original_under(root, "cls/missing.png") is None and original_under(None, "cls/a.png") is None


def test_a_16_bit_original_is_shown_as_the_audit_decoded_it(tmp_path: Path) -> None:
    """An outside check found the dashboard clipping a 16-bit grey PNG to white (PIL's convert) while the
    audit scaled it to [0, 1]: the relevance was drawn over another image."""
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (16, 1))
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    shown = decode_original(tmp_path / "g16.png", {})
    assert shown.shape == (16, 64, 3) and shown.dtype == np.uint8
    assert abs(float(shown.mean()) - 127.5) < 2  # not 255: not clipped
    np.testing.assert_array_equal(shown[..., 0], shown[..., 2])


def test_a_transparent_original_is_shown_over_the_audits_background(tmp_path: Path) -> None:
    """An outside check: the dashboard's original read data.alpha_background, which is not a key (it is
    data.transform.alpha_background), so a transparent pixel the audit fed as white was shown magenta."""
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = rgba[..., 2] = 255  # magenta under full transparency
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    white = {"data": {"transform": {"alpha_background": "white"}}}
    assert (decode_original(tmp_path / "t.png", white) == 255).all()
    assert decode_original(tmp_path / "t.png", {})[0, 0].tolist() == [255, 0, 255]  # 'ignore', as ImageFolder


def test_the_fiftyone_export_places_the_heatmap_in_the_originals_crop(tmp_path: Path) -> None:
    """FiftyOne stretches a heatmap over the whole image: the export's box comes from the file's header."""
    from types import SimpleNamespace

    from spray.export.fiftyone import _box, _header

    Image.new("RGB", (120, 30)).save(tmp_path / "wide.png")
    src: Any = SimpleNamespace(summary=SimpleNamespace(config=CROP))
    size = _header(tmp_path / "wide.png").size
    assert _box(src, size) == pytest.approx((0.0, 0.375, 1.0, 0.625))
    src.summary.config = {"data": {"transform": {"resize": 28}}}
    assert _box(src, size) == (0.0, 0.0, 1.0, 1.0)


def test_resize_gives_torchvisions_size_and_crop() -> None:
    """An outside check found the longer side rounded where torchvision truncates it: on about half of the
    non-square sizes the input was 1 pixel longer and the centre crop 1 pixel off the model's own inputs."""
    import torch
    import torchvision.transforms.functional as TF

    from spray.config import TransformConfig
    from spray.data.transform import Transform

    sizes = [(40, 57), (57, 40), (332, 500), (500, 332), (30, 30), (31, 77), (64, 47)]
    resize = Transform(TransformConfig(resize=28))
    crop = Transform(TransformConfig(resize=28, center_crop=24))
    for h, w in sizes:
        x = torch.rand(3, h, w, generator=torch.Generator().manual_seed(h * w))
        want = TF.resize(x, 28, antialias=True)
        assert resize.output_size(h, w) == tuple(want.shape[-2:]), (h, w)
        torch.testing.assert_close(resize.geometry(x), want, atol=1e-5, rtol=0)
        torch.testing.assert_close(crop.geometry(x), TF.center_crop(want, [24, 24]), atol=1e-5, rtol=0)
        assert crop.output_size(h, w) == (24, 24)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest"])
def test_resize_interpolates_as_torchvision_does_on_pil_images(mode: str) -> None:
    """An outside check: spray always resized bilinear, while timm's models and torchvision's EfficientNet,
    Swin and MaxViT weights are trained with bicubic (up to 0.45 in normalised units apart on photos, without a
    word). ``data.transform.interpolation`` sets it. A second check found bicubic up to 15/255 off at sharp
    edges (Pillow rounds each pass to 8 bits) and nearest picking another source pixel in 25 of 224 columns at
    256 -> 224: each mode was then within 1/255 of torchvision's Resize on landscape images. A third check found
    bicubic up to 17/255 off on portrait images and squashes (Pillow 13 resizes some shapes height first): 8-bit
    pixels are now resized by Pillow itself, exactly torchvision's, grey and colour, any shape."""
    import torch
    import torchvision.transforms as T
    from torchvision.transforms import InterpolationMode

    from spray.config import TransformConfig
    from spray.data.transform import Transform

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:97, 0:131]
    smooth = (
        127 + 90 * np.sin(xx / 5.0)[..., None] * np.cos(yy / 7.0)[..., None] + rng.normal(0, 25, (97, 131, 3))
    )
    blocks = np.kron(rng.integers(0, 2, (13, 17, 3)) * 255, np.ones((8, 8, 1)))[:97, :131]  # sharp edges
    modes = {
        "bilinear": InterpolationMode.BILINEAR,
        "bicubic": InterpolationMode.BICUBIC,
        "nearest": InterpolationMode.NEAREST,
    }
    for img, sizes in (
        (smooth, (40, 33)),
        (blocks, (40, 96)),
        (
            blocks.transpose(1, 0, 2),
            (40, 16, (48, 48)),
        ),  # portrait, and a squash: height pass first in Pillow
        (blocks[:49, :24, 0], (16, (48, 48))),  # grey
        (rng.integers(0, 256, (256, 256, 3)), (224,)),  # every pixel its own: the source pixel picked shows
    ):
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        arr = np.array(pil)
        x = torch.from_numpy(arr if arr.ndim == 3 else arr[..., None]).permute(2, 0, 1).float() / 255
        for size in sizes:
            want = T.ToTensor()(T.Resize(size, interpolation=modes[mode])(pil))
            got = Transform(TransformConfig(resize=size, interpolation=mode)).geometry(x)
            worst = float((got - want).abs().max()) * 255
            assert got.shape == want.shape and worst == 0.0, (size, worst)
    for other in set(modes) - {mode}:  # the modes differ, so a wrong one shows
        off = Transform(TransformConfig(resize=40, interpolation=other)).geometry(x)
        want = T.ToTensor()(T.Resize(40, interpolation=modes[mode])(pil))
        assert float((off - want).abs().max()) > 4 / 255, other


def test_pixels_pillow_cannot_take_are_resized_by_the_emulation() -> None:
    """Pixels that are not 8-bit (16-bit files, values already on the GPU) keep the torch emulation of Pillow's
    passes: within 1/255 of Pillow on a landscape image, where both resize the width first."""
    import torch
    import torchvision.transforms as T
    from torchvision.transforms import InterpolationMode

    from spray.data.transform import _pillow_resample, resample

    rng = np.random.default_rng(1)
    blocks = np.kron(rng.integers(0, 2, (9, 13, 3)) * 255, np.ones((6, 6, 1)))[:50, :77].astype(np.uint8)
    pil = Image.fromarray(blocks)
    x = torch.from_numpy(blocks).permute(2, 0, 1).float() / 255
    nudged = x + 1e-4  # no longer k / 255
    assert _pillow_resample(nudged, (30, 46), "bicubic") is None
    assert _pillow_resample(x.double(), (30, 46), "bicubic") is None
    assert _pillow_resample(x, (30, 46), "bicubic") is not None
    want = T.ToTensor()(T.Resize((30, 46), interpolation=InterpolationMode.BICUBIC)(pil))
    worst = float((resample(nudged.clamp(0, 1), (30, 46), "bicubic") - want).abs().max()) * 255
    assert worst <= 2.05, worst  # 1/255 of emulation, and the nudge can tip one rounding
    tall = blocks.transpose(1, 0, 2)  # bilinear has no rounding between passes: any shape, within 1/255
    for img, size in (
        (blocks, (30, 46)),
        (np.ascontiguousarray(tall), (46, 30)),
        (np.ascontiguousarray(tall), (20, 20)),
    ):
        want = T.ToTensor()(T.Resize(size, interpolation=InterpolationMode.BILINEAR)(Image.fromarray(img)))
        x8 = torch.from_numpy(img).permute(2, 0, 1).float() / 255
        worst = float((resample((x8 + 1e-6).clamp(0, 1), size, "bilinear") - want).abs().max()) * 255
        assert worst <= 1.05, (size, worst)


def test_a_resize_to_height_and_width_squashes_as_torchvision_does() -> None:
    """An outside check: a model trained with Resize((224, 224)) (a squash, common in tutorials) could not be
    audited on its own pixels: resize took one side only, the error said 'Input should be a valid integer',
    and resize plus a centre crop cut where the model saw a squashed whole image."""
    import torch
    import torchvision.transforms.functional as TF

    from spray.config import TransformConfig
    from spray.data.transform import Transform

    x = torch.rand(3, 57, 90, generator=torch.Generator().manual_seed(0))
    t = Transform(TransformConfig(resize=[32, 24]))
    assert t.output_size(57, 90) == (32, 24) and t.input_box(57, 90) == (0.0, 0.0, 1.0, 1.0)
    torch.testing.assert_close(t.geometry(x), TF.resize(x, [32, 24], antialias=True), atol=1e-5, rtol=0)
    assert TransformConfig(resize=[256]).resize == 256  # one side in a list is the shorter side
    # a bool was read as 1, and a string got pydantic's words
    for bad in ([224, 224, 3], "224x224", [0, 5]):
        with pytest.raises(
            ValueError, match=r"give one side \(e.g. 256: the shorter side\) or \[height, width\]"
        ):
            TransformConfig(resize=bad)
    with pytest.raises(ValueError, match=r"resize must hold numbers, not the YAML boolean true"):
        TransformConfig(resize=[True, 28])
    assert input_box(
        {"data": {"transform": {"resize": [32, 24], "center_crop": 24}}}, 57, 90
    ) == pytest.approx((4 / 32, 0.0, 28 / 32, 1.0))

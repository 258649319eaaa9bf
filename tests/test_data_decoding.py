"""Decoding of real image files of every mode and bit depth (spray.data.decoding), with numpy oracles."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from spray.data import DecodeOptions, UnreadableSample, decode_image, image_to_tensor
from spray.data.channels import array_to_tensor, to_model_channels

OPTS = DecodeOptions()


def _save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png16(arr: np.ndarray) -> bytes:
    """A real 16-bit PNG (grey (H, W), grey+alpha (H, W, 2), RGB (H, W, 3) or RGBA (H, W, 4)), by hand."""
    arr = np.asarray(arr, dtype=np.uint16)
    colour_type = {2: 0, 3: 4}[arr.ndim] if arr.ndim == 2 else {2: 4, 3: 2, 4: 6}[arr.shape[-1]]
    h, w = arr.shape[:2]
    rows = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _ramp16(h: int = 12, w: int = 10) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) * 541 % 65536).astype(np.uint16)


def test_16bit_grey_png_is_scaled_not_clipped() -> None:
    a = _ramp16()
    raw = _save(Image.fromarray(a), "PNG")
    assert Image.open(io.BytesIO(raw)).mode == "I;16"
    t = decode_image(raw, OPTS)
    assert t.shape == (1, 12, 10) and t.dtype == torch.float32
    np.testing.assert_allclose(t[0].numpy(), a / 65535.0, rtol=0, atol=1e-7)
    # what convert("L") did: most pixels saturated at 1.0
    assert (np.clip(a, 0, 255) == 255).mean() > 0.9 and (t.numpy() == 1.0).mean() < 0.01


@pytest.mark.parametrize("fmt", ["TIFF", "PPM"])
def test_16bit_grey_tiff_and_pgm(fmt: str) -> None:
    a = _ramp16()
    if fmt == "TIFF":
        raw = _save(Image.fromarray(a), "TIFF")
    else:
        raw = b"P5\n10 12\n65535\n" + a.astype(">u2").tobytes()
    t = decode_image(raw, OPTS)
    np.testing.assert_allclose(t[0].numpy(), a / 65535.0, atol=1e-7)


def test_16bit_grey_png_big_endian_handwritten() -> None:
    a = _ramp16(7, 9)
    t = decode_image(png16(a), OPTS)
    np.testing.assert_allclose(t[0].numpy(), a / 65535.0, atol=1e-7)


@pytest.mark.parametrize("channels", [3, 4, 2])
def test_16bit_colour_png_keeps_its_scale(channels: int) -> None:
    a = np.random.default_rng(channels).integers(0, 65536, (6, 5, channels)).astype(np.uint16)
    t = decode_image(png16(a), OPTS)
    # Pillow gives 16-bit grey+alpha as RGBA with three equal channels (a grey model takes them as grey).
    colour = np.repeat(a[..., :1], 3, -1) if channels == 2 else a[..., :3]
    want = (colour >> 8).transpose(2, 0, 1) / 255.0  # Pillow keeps the high byte: 8-bit precision
    assert t.shape == (3, 6, 5)
    np.testing.assert_allclose(t.numpy(), want, atol=1e-6)
    assert np.abs(t.numpy() - colour.transpose(2, 0, 1) / 65535.0).max() < 1 / 255


def test_float_tiff_in_unit_range_is_used_and_outside_is_skipped() -> None:
    a = np.linspace(0, 1, 30, dtype=np.float32).reshape(5, 6)
    t = decode_image(_save(Image.fromarray(a), "TIFF"), OPTS)
    np.testing.assert_array_equal(t[0].numpy(), a)
    with pytest.raises(UnreadableSample, match=r"outside \[0, 1\]"):
        decode_image(_save(Image.fromarray(a * 300), "TIFF"), OPTS)


def test_32bit_integer_tiff_is_skipped_with_its_range() -> None:
    a = np.arange(30, dtype=np.int32).reshape(5, 6) * 100_000
    with pytest.raises(UnreadableSample, match=r"32-bit integer pixels \(values 0\.\.2900000\)"):
        decode_image(_save(Image.fromarray(a), "TIFF"), OPTS)


def test_8bit_grey_and_rgb_decode_exactly_as_before() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    old = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0  # spray's formula before decoding.py
    new = decode_image(_save(Image.fromarray(rgb), "PNG"), OPTS)
    assert torch.equal(new, old) and new.stride() == old.stride()
    grey = rgb[..., 0]
    assert torch.equal(
        decode_image(_save(Image.fromarray(grey), "PNG"), OPTS)[0], torch.from_numpy(grey) / 255.0
    )


def test_one_bit_palette_cmyk_ycbcr() -> None:
    bits = Image.fromarray(np.eye(6, dtype=bool))
    t = decode_image(_save(bits, "PNG"), OPTS)
    assert t.shape == (1, 6, 6) and torch.equal(t[0], torch.eye(6))
    pal = Image.fromarray(np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)).convert("P")
    t = decode_image(_save(pal, "GIF"), OPTS)
    want = np.asarray(pal.convert("RGB")).transpose(2, 0, 1) / 255.0
    assert t.shape == (3, 8, 8) and np.allclose(t.numpy(), want)
    cmyk = Image.new("CMYK", (5, 4), (10, 200, 30, 0))
    t = decode_image(_save(cmyk, "TIFF"), OPTS)
    assert t.shape == (3, 4, 5) and np.allclose(t[:, 0, 0].numpy(), np.array([245, 55, 225]) / 255)
    t = decode_image(_save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95), OPTS)
    assert t.shape == (3, 16, 16) and t[0].mean() > 0.9 and t[1:].mean() < 0.1  # red, JPEG's Adobe CMYK
    ycc = Image.new("RGB", (4, 4), (0, 0, 255)).convert("YCbCr")
    assert torch.allclose(image_to_tensor(ycc)[:, 0, 0], torch.tensor([0.0, 0.0, 1.0]), atol=0.02)


@pytest.mark.parametrize(
    ("background", "want"),
    [("ignore", [200, 100, 50]), ("black", [100, 50, 25]), ("white", [227.5, 177.5, 152.5])],
)
def test_rgba_over_the_configured_background(background: str, want: list[float]) -> None:
    rgba = Image.new("RGBA", (3, 2), (200, 100, 50, 128))
    t = decode_image(_save(rgba, "PNG"), DecodeOptions(alpha_background=background))  # type: ignore[arg-type]
    a = 128 / 255
    exact = {
        "ignore": np.array(want) / 255,
        "black": np.array([200, 100, 50]) / 255 * a,
        "white": np.array([200, 100, 50]) / 255 * a + (1 - a),
    }[background]
    assert t.shape == (3, 2, 3) and np.allclose(t[:, 0, 0].numpy(), exact, atol=1e-6)


def test_grey_alpha_stays_grey_and_transparent_palette_composites() -> None:
    la = Image.fromarray(np.stack([np.full((4, 4), 90, np.uint8), np.full((4, 4), 0, np.uint8)], -1), "LA")
    assert torch.allclose(decode_image(_save(la, "PNG"), OPTS), torch.full((1, 4, 4), 90 / 255))
    assert torch.equal(
        decode_image(_save(la, "PNG"), DecodeOptions(alpha_background="white")), torch.ones(1, 4, 4)
    )
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.info["transparency"] = 1
    raw = _save(pal, "PNG")
    assert torch.allclose(decode_image(raw, OPTS)[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(decode_image(raw, DecodeOptions(alpha_background="black"))[:, 0, 0], torch.zeros(3))


def test_a_colour_key_on_grey_and_rgb_pngs_composites_like_an_alpha_channel() -> None:
    """An outside check: PNGs whose transparency is a colour key (a tRNS chunk on an L or RGB image) kept their
    key colour under ``alpha_background: white`` while an RGBA file with the same pixels was composited."""
    a = np.zeros((4, 6, 3), np.uint8)
    a[:, 3:] = (200, 40, 40)
    rgb = _save(Image.fromarray(a), "PNG", transparency=(0, 0, 0))
    grey = _save(Image.fromarray(a).convert("L"), "PNG", transparency=0)
    for raw, channels in ((rgb, 3), (grey, 1)):
        assert "transparency" in Image.open(io.BytesIO(raw)).info
        white = decode_image(raw, DecodeOptions(alpha_background="white"))
        kept = decode_image(raw, OPTS)
        assert white.shape == kept.shape == (channels, 4, 6)
        assert torch.equal(white[:, :, :3], torch.ones(channels, 4, 3))  # the key colour, over white
        assert torch.equal(white[:, :, 3:], kept[:, :, 3:])  # opaque pixels as stored
        assert torch.equal(kept[:, :, :3], torch.zeros(channels, 4, 3))  # ignore: as ImageFolder sees them


def test_garbage_truncated_and_empty_name_no_bytesio() -> None:
    for raw in (b"", b"hello", b"\x89PNG\r\n\x1a\n garbage"):
        with pytest.raises(UnreadableSample) as e:
            decode_image(raw, OPTS)
        assert "BytesIO" not in e.value.reason and "corrupt" in e.value.reason
    full = _save(Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 7), "PNG")
    with pytest.raises(UnreadableSample, match="corrupt or truncated"):
        decode_image(full[: len(full) // 2], OPTS)


def test_pixel_cap_from_the_header_and_jpeg_reduced_decode() -> None:
    png = _save(Image.new("L", (400, 300)), "PNG")
    with pytest.raises(
        UnreadableSample, match=r"400×300 = 0\.1 million pixels, above data\.max_image_pixels \(100,000\)"
    ):
        decode_image(png, DecodeOptions(max_pixels=100_000))
    assert decode_image(png, DecodeOptions(max_pixels=120_000)).shape == (1, 300, 400)
    jpg = _save(Image.new("RGB", (1600, 1200), (250, 5, 5)), "JPEG", quality=90)
    t = decode_image(jpg, DecodeOptions(max_pixels=200_000, draft_side=100))
    assert t.shape == (3, 150, 200) and t[0].mean() > 0.9  # 1/8 scale: still at least 100 on the short side
    with pytest.raises(UnreadableSample, match="max_image_pixels"):
        decode_image(jpg, DecodeOptions(max_pixels=200_000))  # no resize: the native size is the input


def test_decompression_bomb_sized_png_is_a_skip_not_an_error() -> None:
    bomb = _save(Image.new("1", (15_000, 13_000)), "PNG")  # 195 Mpx, above Pillow's own hard limit
    with pytest.raises(UnreadableSample, match=r"15000×13000 = 195\.0 million pixels"):
        decode_image(bomb, OPTS)
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's global setting is restored


def test_channels_for_the_model() -> None:
    grey_rgb = torch.rand(1, 5, 5).repeat(3, 1, 1)
    assert to_model_channels(grey_rgb, 1).shape == (1, 5, 5)
    with pytest.raises(UnreadableSample, match="colour image, but the model takes 1 channel"):
        to_model_channels(torch.rand(3, 5, 5), 1)
    assert to_model_channels(torch.rand(1, 5, 5), 3).shape == (1, 5, 5)  # repeated after the resize


def test_factory_arrays_layouts_and_dtypes() -> None:
    hwc = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    t = array_to_tensor(hwc, "ignore")
    assert t.shape == (3, 10, 12) and torch.allclose(t, torch.from_numpy(hwc).permute(2, 0, 1) / 255.0)
    assert array_to_tensor(torch.from_numpy(hwc).permute(2, 0, 1).contiguous(), "ignore").max() <= 1.0
    u16 = np.full((4, 4), 65535, np.uint16)
    assert torch.equal(array_to_tensor(u16, "ignore"), torch.ones(1, 4, 4))
    rgba = np.zeros((4, 8, 8), np.float32)
    assert array_to_tensor(rgba, "white").shape == (3, 8, 8)
    with pytest.raises(UnreadableSample, match=r"shape \(2, 3, 4, 5\)"):
        array_to_tensor(np.zeros((2, 3, 4, 5)), "ignore")


# --- property-based: nothing a file or PIL image holds crashes the decoder --------------------------------

MODES = [
    "1",
    "L",
    "P",
    "RGB",
    "RGBA",
    "CMYK",
    "YCbCr",
    "LAB",
    "HSV",
    "LA",
    "PA",
    "I",
    "F",
    "I;16",
    "I;16B",
    "RGBX",
    "RGBa",
    "La",
]


def _check(t: torch.Tensor) -> None:
    assert t.dtype == torch.float32 and t.ndim == 3 and t.shape[0] in (1, 3)
    assert torch.isfinite(t).all() and float(t.min()) >= 0.0 and float(t.max()) <= 1.0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_arbitrary_bytes_decode_or_skip(raw: bytes) -> None:
    try:
        _check(decode_image(raw, DecodeOptions(max_pixels=1_000_000)))
    except UnreadableSample as err:
        assert err.reason and "BytesIO" not in err.reason


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from(MODES),
    w=st.integers(1, 24),
    h=st.integers(1, 24),
    seed=st.integers(0, 2**16),
    fmt=st.sampled_from(["PNG", "TIFF", "GIF", "JPEG", "BMP", "WEBP", "PPM", None]),
)
def test_pil_images_of_every_mode_and_size_decode_or_skip(
    mode: str, w: int, h: int, seed: int, fmt: str | None
) -> None:
    rng = np.random.default_rng(seed)
    img = Image.new(mode, (w, h))
    n_bytes = len(img.tobytes())
    img.frombytes(rng.integers(0, 256, n_bytes, dtype=np.uint8).tobytes())
    try:
        if fmt is None:
            t = image_to_tensor(img)
        else:
            try:
                raw = _save(img, fmt)
            except (OSError, ValueError, KeyError, TypeError):
                return  # this format cannot store this mode: nothing to decode
            t = decode_image(raw, OPTS)
    except UnreadableSample as err:
        assert err.reason
        return
    _check(t)
    assert t.shape[1:] == (h, w)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.binary(min_size=1, max_size=200), cut=st.integers(0, 400))
def test_damaged_real_files_decode_or_skip(raw: bytes, cut: int) -> None:
    base = _save(Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8)), "PNG")
    damaged = base[:cut] + raw + base[cut + len(raw) :]
    try:
        _check(decode_image(damaged, OPTS))
    except UnreadableSample as err:
        assert "BytesIO" not in err.reason


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_8bit_pixels_decode_as_torch_divides_them_for_every_value(mode: str) -> None:
    """Every 8-bit value gives the float32 and the memory layout of torch's ``.float() / 255.0`` (the
    decoding that spray's cached heatmaps were made from), bit for bit."""
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    arr = values if mode == "L" else np.stack([values, values[::-1], values.T], axis=-1)
    t = decode_image(_save(Image.fromarray(arr, mode), "PNG"), OPTS)
    hwc = arr if arr.ndim == 3 else arr[:, :, None]
    oracle = torch.from_numpy(hwc.copy()).permute(2, 0, 1).float() / 255.0
    assert t.dtype == torch.float32 and t.stride() == oracle.stride()
    assert torch.equal(t.contiguous().view(torch.int32), oracle.contiguous().view(torch.int32))


@pytest.mark.parametrize(
    ("make", "fmt"),
    [
        (lambda: Image.fromarray(np.arange(120, dtype=np.uint16).reshape(12, 10) * 2), "PNG"),  # 8-bit values
        (lambda: Image.fromarray(_ramp16()), "PNG"),  # values above 255 too
        (lambda: Image.fromarray(_ramp16()), "PPM"),  # mode I (Pillow's 16-bit PGM)
        (lambda: Image.fromarray(np.linspace(0, 1, 120, dtype=np.float32).reshape(12, 10)), "TIFF"),  # mode F
    ],
)
def test_high_bit_depth_clip_reads_as_torchvisions_imagefolder(
    make: object, fmt: str, tmp_path: Path
) -> None:
    """An outside check: 16-bit PNGs holding 8-bit values (max 255) read almost black at the 16-bit scale
    while ImageFolder, which the model was trained through, gives the picture; 'clip' reads them its way."""
    from torchvision.datasets.folder import pil_loader

    raw = _save(make(), fmt)  # type: ignore[operator]
    clip = decode_image(raw, DecodeOptions(high_bit_depth="clip"))
    (tmp_path / "x").write_bytes(raw)
    want = np.asarray(pil_loader(tmp_path / "x"))
    assert clip.shape[0] == 1 and (want == want[..., :1]).all()
    np.testing.assert_array_equal((clip[0].numpy() * 255).round().astype(np.uint8), want[..., 0])
    scaled = decode_image(raw, OPTS)
    if Image.open(io.BytesIO(raw)).mode != "F":
        assert not torch.equal(scaled, clip)  # the default reads them at their true scale

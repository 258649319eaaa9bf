"""Decoding images to ``(C, H, W)`` float32 tensors in ``[0, 1]``, for every mode and bit depth.

What each Pillow mode becomes (``C`` is 1 for grey sources and 3 for colour ones):

===================================  ==========================================================
mode                                 tensor
===================================  ==========================================================
``1``, ``L``                         grey, ``value / 255`` (``1`` is 0 or 1)
``I;16``, ``I;16L``, ``I;16B``, …    grey, ``value / 65535`` (16-bit PNG and TIFF)
``I`` from PNG, PGM/PPM              grey, ``value / 65535`` (Pillow scales these to 16 bits)
``I`` from TIFF with ≤ 16 bits       grey, ``value / (2**bits - 1)``
other ``I`` (32-bit integers)        skipped: their scale cannot be known
``F`` (32-bit float)                 grey, as stored when every value is in ``[0, 1]``; else skipped
``LA``, ``La``                       grey, alpha handled as below
``RGB``, ``RGBX``, ``YCbCr``, ``HSV``, RGB (Pillow's conversion)
``LAB``, ``CMYK``
``P``, ``PA``                        RGB (the palette's colours), alpha handled as below
``RGBA``, ``RGBa``                   RGB, alpha handled as below
===================================  ==========================================================

With ``data.transform.high_bit_depth: clip`` the ``I;16``, ``I`` and ``F`` modes are read as torchvision's
ImageFolder loader reads them instead (``convert("L")``: values above 255 white, ``value / 255`` below).

16-bit RGB(A) PNGs are given by Pillow as 8-bit RGB(A) (the high byte of each sample): correctly
scaled, at 8-bit precision.

Transparency (``data.transform.alpha_background``): ``"ignore"`` (default) keeps the colours stored
under transparent pixels, which is what torchvision's ImageFolder loader (``convert("RGB")``) gives, so
it is what a model trained with it saw; ``"black"`` / ``"white"`` composite the image over that colour.

Very large files: the pixel count is read from the header before anything is decoded. Above
``data.max_image_pixels`` a JPEG is decoded at a reduced scale (Pillow's ``draft``, a DCT-domain
downscale) when ``data.transform.resize`` needs fewer pixels; anything still above the limit is skipped
with a reason. Images under the limit are decoded in full, exactly as before the limit existed.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from spray.data.sample import OBJECT_REPR, UnreadableSample

AlphaBackground = Literal["ignore", "black", "white"]
HighBitDepth = Literal["scale", "clip"]

#: Bumped whenever the pixels that a file decodes to change (part of what a cached heatmap depends on).
#: 2: 16-bit and float images are scaled instead of clipped to 8 bits; modes are matched to the model.
#: 3: a centre crop larger than the resized image pads it with zeros, as torchvision's CenterCrop does
#: (it was stretched to the crop), and the crop's offset is torchvision's round((size - crop) / 2)
#: (1 pixel off where size - crop is 3, 7, 11, ...); other images unchanged.
#: 4: ``resize`` gives the longer side torchvision's ``int(size * long / short)`` (it was rounded: 1 pixel
#: longer, and the centre crop 1 pixel off, on about half of the non-square sizes).
#: 5: 8-bit pixels are resized by Pillow itself (bicubic was up to 17/255 off on portrait images and squashes);
#: a colour key (tRNS) on a grey or RGB PNG is composited under ``alpha_background`` like an alpha channel.
DECODER_VERSION = 5

GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N", "I;16S"})
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I;16S"})
#: Modes whose values exceed 8 bits (16-bit, 32-bit integer, float): ImageFolder's loader clips them.
HIGH_BIT_MODES = SIXTEEN_BIT_MODES | {"I", "F"}
# Formats whose mode-I images Pillow fills with 16-bit samples (PGM/PPM rescaled from their maxval).
_SIXTEEN_BIT_I_FORMATS = frozenset({"PNG", "PPM"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_TIFF_BITS_PER_SAMPLE = 258


@dataclass(frozen=True)
class DecodeOptions:
    """How files are decoded.

    Attributes
    ----------
    max_pixels : int
        Largest number of pixels decoded per image (after a JPEG's reduced decode).
    alpha_background : str
        ``"ignore"``, ``"black"`` or ``"white"`` (see the module docstring).
    draft_side : int or None
        The shorter side the transform resizes to (``data.transform.resize``); a JPEG above
        ``max_pixels`` may be decoded down to it. None: no reduced decode (the native size matters).
    high_bit_depth : str
        ``"scale"`` or ``"clip"`` (see the module docstring).
    """

    max_pixels: int = 50_000_000
    alpha_background: AlphaBackground = "ignore"
    draft_side: int | None = None
    high_bit_depth: HighBitDepth = "scale"


@contextmanager
def _pillow_size_check_off() -> Iterator[None]:
    """Pillow's own decompression-bomb check off: spray checks ``max_pixels`` itself, with a reason."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _describe(err: BaseException) -> str:
    text = OBJECT_REPR.sub("the file", str(err)).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def open_image(raw: bytes, opts: DecodeOptions) -> Image.Image:
    """Open and fully decode ``raw`` (the bytes of an image file), within ``opts.max_pixels``.

    Raises
    ------
    UnreadableSample
        Not an image, truncated or corrupt, or too large (the reason names the limit to raise).
    """
    with _pillow_size_check_off():
        try:
            im = Image.open(io.BytesIO(raw))
        except UnidentifiedImageError:
            raise UnreadableSample("corrupt or not an image: Pillow cannot identify its format") from None
        except Exception as err:  # Pillow raises many types for garbage; all mean "not an image"
            raise UnreadableSample(f"corrupt or not an image ({_describe(err)})") from None
        w, h = im.size
        if w * h > opts.max_pixels and im.format == "JPEG" and opts.draft_side is not None:
            # DCT-domain downscale by 1/2, 1/4 or 1/8, never below what the resize needs.
            im.draft(im.mode, (opts.draft_side, opts.draft_side))
        dw, dh = im.size
        if dw * dh > opts.max_pixels:
            raise UnreadableSample(
                f"image is {w}×{h} = {w * h / 1e6:.1f} million pixels, above data.max_image_pixels "
                f"({opts.max_pixels:,}); raise that limit or downscale the file"
            )
        if w <= 0 or h <= 0:
            raise UnreadableSample(f"image has no pixels ({w}×{h})")
        try:
            im.load()
        except Exception as err:
            raise UnreadableSample(f"corrupt or truncated image ({_describe(err)})") from None
    return im


def _uint8_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    # The same values and memory layout (an (H, W, C) buffer seen as (C, H, W)) as torch's
    # `.float() / 255.0` gave (a float32 division, checked for all 256 values); in numpy, since for
    # a 28×28 image torch's per-call overhead was most of the cost.
    out = torch.from_numpy(arr.astype(np.float32) / np.float32(255.0)).permute(2, 0, 1)
    out.eight_bit_pixels = arr  # type: ignore[attr-defined]  # for a resize by Pillow (data.transform)
    return out


def _float_grey(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(arr, dtype=np.float32)[None])  # a copy: Pillow arrays are read-only


def _int_scale(img: Image.Image) -> float | None:
    """Full scale of a mode-I image's samples, or None when the file does not tell."""
    if img.format in _SIXTEEN_BIT_I_FORMATS:
        return 65535.0
    tags = getattr(img, "tag_v2", None)
    if img.format == "TIFF" and tags is not None:
        bits = tags.get(_TIFF_BITS_PER_SAMPLE)
        bits = bits[0] if isinstance(bits, tuple) and bits else bits
        if isinstance(bits, int) and 1 <= bits <= 16:
            return float(2**bits - 1)
    return None


def _composite(rgba: Image.Image, background: AlphaBackground) -> torch.Tensor:
    """An LA or RGBA image over a black or white background → (C, H, W) in [0, 1] without alpha."""
    arr = np.asarray(rgba, dtype=np.float32) / 255.0
    colour, alpha = arr[..., :-1], arr[..., -1:]
    bg = 1.0 if background == "white" else 0.0
    out = colour * alpha + bg * (1.0 - alpha)
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))


def image_to_tensor(
    img: Image.Image, alpha_background: AlphaBackground = "ignore", high_bit_depth: HighBitDepth = "scale"
) -> torch.Tensor:
    """A decoded PIL image → ``(C, H, W)`` float32 in ``[0, 1]``, ``C`` 1 (grey) or 3 (colour).

    Raises
    ------
    UnreadableSample
        For pixels whose scale cannot be known (32-bit integers, floats outside [0, 1]) or a mode
        Pillow cannot convert.
    """
    mode = img.mode
    keyed = alpha_background != "ignore" and "transparency" in img.info  # a colour key: tRNS, GIF
    if mode in ("1", "L") and keyed:
        return _composite(img.convert("LA"), alpha_background)
    if mode in ("1", "L") or (high_bit_depth == "clip" and mode in HIGH_BIT_MODES):
        return _uint8_tensor(img.convert("L"))  # for high bits: what ImageFolder's convert("RGB") gives
    if mode in SIXTEEN_BIT_MODES:
        return _float_grey(np.asarray(img).astype(np.float32) / 65535.0)
    if mode == "I":
        arr = np.asarray(img)
        scale = _int_scale(img)
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if scale is None or lo < 0 or hi > scale:
            raise UnreadableSample(
                f"32-bit integer pixels (values {lo}..{hi}): their scale cannot be known; save the image "
                "as 8- or 16-bit"
            )
        return _float_grey(arr.astype(np.float32) / np.float32(scale))
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        if arr.size and (not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0):
            raise UnreadableSample(
                f"32-bit float pixels outside [0, 1] (values {np.nanmin(arr):.4g}..{np.nanmax(arr):.4g}): "
                "their scale cannot be known; save the image as 8- or 16-bit, or with values in [0, 1]"
            )
        return _float_grey(arr)
    try:
        if mode in ("LA", "La"):
            if alpha_background == "ignore":
                return _uint8_tensor(img.convert("LA").getchannel(0))
            return _composite(img.convert("LA"), alpha_background)
        if alpha_background != "ignore" and (mode in _ALPHA_MODES or (keyed and mode in ("P", "RGB"))):
            return _composite(img.convert("RGBA"), alpha_background)
        return _uint8_tensor(img if mode == "RGB" else img.convert("RGB"))
    except (ValueError, OSError) as err:
        raise UnreadableSample(f"image mode {mode!r} cannot be converted to RGB ({_describe(err)})") from None


def decode_image(raw: bytes, opts: DecodeOptions) -> torch.Tensor:
    """The bytes of an image file → ``(C, H, W)`` float32 in ``[0, 1]`` (see the module docstring).

    Raises
    ------
    UnreadableSample
        With the reason the file is skipped.
    """
    with open_image(raw, opts) as im:
        return image_to_tensor(im, opts.alpha_background, opts.high_bit_depth)


def source_channels(mode: str) -> int:
    """1 for a grey Pillow mode, 3 for a colour one (what :func:`image_to_tensor` gives)."""
    return 1 if mode in GREY_MODES else 3

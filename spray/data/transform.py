"""The input transform: resize, centre crop, grey→RGB, normalise (``data.transform``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from spray.config import TransformConfig
from spray.data.thumbnails import make_thumbnail
from spray.errors import DataError


def _offset(size: int, crop: int) -> int:
    """The first row (column) of a centre crop: torchvision's ``round((size - crop) / 2)`` (half to even)."""
    return round((size - crop) / 2.0)


def resized(height: int, width: int, size: int | Sequence[int]) -> tuple[int, int]:
    """``(H', W')`` after torchvision's ``Resize(size)``: the shorter side becomes ``size``, the longer one
    ``int(size * long / short)`` (truncated, as torchvision computes it, so the crop sits where it does there);
    ``size`` ``[h, w]`` is that exact size."""
    if not isinstance(size, int):
        return int(size[0]), int(size[1])
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def draft_side(resize: int | Sequence[int] | None) -> int | None:
    """The side a reduced-scale JPEG decode must keep on both axes for ``resize`` (its larger side for a
    ``[h, w]`` size)."""
    return resize if resize is None or isinstance(resize, int) else max(resize)


def resample(x: torch.Tensor, size: tuple[int, int], interpolation: str) -> torch.Tensor:
    """``x`` (C,H,W) in [0, 1] resized to ``size`` as torchvision's ``Resize`` resizes a PIL image.

    8-bit pixels on the CPU (every decoded 8-bit file) are resized by Pillow itself, so bilinear and bicubic
    are exactly torchvision's. Elsewhere (images decoded on the GPU, 16-bit pixels) Pillow is emulated:
    bilinear antialiased (within 1/255); bicubic antialiased, width then height, each pass rounded to 8 bits
    (Pillow 13 resizes some shapes height first, so sharp edges can be up to ~15/255 off there). Nearest:
    Pillow's choice of source pixel (:func:`_pil_nearest`), exact everywhere.
    """
    if interpolation == "nearest":
        rows, cols = (_pil_nearest(n, m).to(x.device) for n, m in zip(x.shape[-2:], size, strict=True))
        return x.index_select(-2, rows).index_select(-1, cols)
    by_pillow = _pillow_resample(x, size, interpolation)
    if by_pillow is not None:
        return by_pillow
    if interpolation == "bilinear":
        return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    wide = F.interpolate(
        x[None], size=(x.shape[-2], size[1]), mode="bicubic", align_corners=False, antialias=True
    )
    tall = F.interpolate(_eight_bit(wide), size=size, mode="bicubic", align_corners=False, antialias=True)
    return _eight_bit(tall)[0]


def _pillow_resample(x: torch.Tensor, size: tuple[int, int], interpolation: str) -> torch.Tensor | None:
    """``x`` resized by Pillow when it holds 8-bit values on the CPU (None otherwise): Pillow's pass order
    and rounding cannot be emulated exactly in torch."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.shape[0] not in (1, 3) or x.ndim != 3:
        return None
    arr = getattr(x, "eight_bit_pixels", None)  # the decoder's own (H, W, C) bytes: no check needed
    if not (isinstance(arr, np.ndarray) and arr.shape == (*x.shape[1:], x.shape[0])):
        hwc = x.detach().permute(1, 2, 0).numpy()
        arr = np.rint(hwc * np.float32(255.0)).astype(np.uint8)
        if not np.array_equal(arr.astype(np.float32) / np.float32(255.0), hwc):
            return None
    img = Image.fromarray(np.ascontiguousarray(arr[..., 0] if arr.shape[-1] == 1 else arr))  # L or RGB
    filt = Image.Resampling.BICUBIC if interpolation == "bicubic" else Image.Resampling.BILINEAR
    out = np.asarray(img.resize((size[1], size[0]), filt), dtype=np.uint8).reshape(size[0], size[1], -1)
    return torch.from_numpy(out.astype(np.float32) / np.float32(255.0)).permute(2, 0, 1).contiguous()


def _eight_bit(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0


def _pil_nearest(n_in: int, n_out: int) -> torch.Tensor:
    """The source index of each of ``n_out`` pixels as Pillow's nearest resize picks it: the centre stepped by
    ``n_in / n_out`` in float64, its rounding included (the exact centres differ at some positions: 25 of 224
    columns at 256 -> 224)."""
    step = n_in / n_out
    steps = np.full(n_out, step)
    steps[0] = step * 0.5
    return torch.from_numpy(np.floor(np.add.accumulate(steps)).astype(np.int64).clip(0, n_in - 1))


@dataclass
class Transform:
    """Resize / crop / grey→RGB / normalise, applied to a ``(C,H,W)`` float tensor in [0, 1] (on any device).

    Returns both the model input and a uint8 thumbnail of the un-normalised image.

    Attributes
    ----------
    cfg : TransformConfig
        The ``data.transform`` section.
    thumbnail_size : int
        Thumbnail edge ``t`` (the dataset sets it from the input size).
    channels : int or None
        Channels the model takes; a grey image is repeated to 3 when this is 3 (or with
        ``grayscale_to_rgb``).
    thumbnail_channels : int
        1 or 3: channels of the thumbnails.
    """

    cfg: TransformConfig
    thumbnail_size: int = 64
    channels: int | None = None
    thumbnail_channels: int = 3

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(H', W')`` of the model input made from a ``height × width`` image."""
        h, w = height, width
        if self.cfg.resize is not None:
            h, w = resized(h, w, self.cfg.resize)
        if self.cfg.center_crop is not None:
            h = w = self.cfg.center_crop
        return h, w

    def input_box(self, height: int, width: int) -> tuple[float, float, float, float]:
        """Where the model input lies on a ``height × width`` image, as ``(top, left, bottom, right)``
        fractions of its height and width: the centre crop's box (``(0, 0, 1, 1)`` without a crop). A crop
        larger than the resized image pads it, so the box reaches past the image (a negative top, a bottom
        above 1) by the padding."""
        h, w = height, width
        if self.cfg.resize is not None:
            h, w = resized(h, w, self.cfg.resize)
        c = self.cfg.center_crop
        if c is None:
            return 0.0, 0.0, 1.0, 1.0
        # the crop's first row and column in the resized image (negative: padding, as in geometry())
        top = _offset(h, c) if c <= h else -((c - h) // 2)
        left = _offset(w, c) if c <= w else -((c - w) // 2)
        return top / h, left / w, (top + c) / h, (left + c) / w

    def __call__(
        self, img: torch.Tensor, *, thumbnail: bool = True
    ) -> tuple[torch.Tensor, np.ndarray | None]:
        """``img`` (C,H,W) float32 in [0,1] → (model input (C',H',W'), thumbnail (t,t,c) uint8 or None)."""
        x = self.geometry(img)
        thumb = make_thumbnail(x, self.thumbnail_size, self.thumbnail_channels) if thumbnail else None
        return self.normalise(x), thumb

    def geometry(self, img: torch.Tensor) -> torch.Tensor:
        """Resize and centre-crop ``img`` (C,H,W) in [0, 1]: the image the thumbnail shows."""
        x = img
        if self.cfg.resize is not None:
            size = resized(int(x.shape[-2]), int(x.shape[-1]), self.cfg.resize)
            x = resample(x, size, self.cfg.interpolation)
        if self.cfg.center_crop is not None:
            c = self.cfg.center_crop
            h, w = x.shape[-2:]
            if c > h or c > w:
                # torchvision's CenterCrop pads a smaller image with zeros (left/top get the smaller half)
                ph, pw = max(0, c - h), max(0, c - w)
                x = F.pad(x, (pw // 2, (pw + 1) // 2, ph // 2, (ph + 1) // 2))
                h, w = x.shape[-2:]
            top, left = _offset(h, c), _offset(w, c)
            x = x[:, top : top + c, left : left + c]
        return x

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Grey → RGB for a 3-channel model, then mean/std: the model input.

        Raises
        ------
        DataError
            When ``data.transform.mean`` does not match the image's channels.
        """
        if x.shape[0] == 1 and (self.cfg.grayscale_to_rgb or self.channels == 3):
            x = x.repeat(3, 1, 1)
        if self.cfg.mean is not None and self.cfg.std is not None:
            # one value applies to every channel (torchvision's Normalize broadcasts it)
            if len(self.cfg.mean) not in (1, x.shape[0]):
                raise DataError(
                    f"data.transform.mean has {len(self.cfg.mean)} values but the images have {x.shape[0]} "
                    "channels. Fix data.transform.mean/std, or set data.transform.channels."
                )
            mean = torch.tensor(self.cfg.mean, dtype=x.dtype, device=x.device)[:, None, None]
            std = torch.tensor(self.cfg.std, dtype=x.dtype, device=x.device)[:, None, None]
            x = (x - mean) / std
        return x.contiguous()

    def input_bounds(self) -> tuple[float, float]:
        """The lowest and highest value a normalised input can take (for the ZBox rule)."""
        if self.cfg.mean is None or self.cfg.std is None:
            return 0.0, 1.0
        lows = [(0.0 - m) / s for m, s in zip(self.cfg.mean, self.cfg.std, strict=True)]
        highs = [(1.0 - m) / s for m, s in zip(self.cfg.mean, self.cfg.std, strict=True)]
        return min(lows), max(highs)

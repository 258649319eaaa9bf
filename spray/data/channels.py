"""Channels: what the model takes, and bringing each sample to it.

The model's channel count is, in this order: ``data.transform.channels``; 3 with
``grayscale_to_rgb``; 3 when ``data.transform.mean`` has 3 values; with one value, 3 when the model's first
convolution takes 3 (the value then applies to every channel, as torchvision's ``Normalize`` broadcasts it),
else 1; the ``in_channels`` of the model's first
convolution (once the model is built); the channel count of most images of the dataset.

A grey sample for a 3-channel model is repeated into three equal channels (after resizing, as
``grayscale_to_rgb`` always did). A colour sample for a 1-channel model whose three channels are equal
(a grey image saved as RGB) is taken as grey. A truly colour one depends on
``data.transform.colour_to_grey``: ``refuse`` (default) skips it with a reason, since spray cannot know
which conversion to grey the model was trained with; ``luma`` converts it with the ITU-R 601-2 luma
weights (:data:`LUMA`), the conversion of PIL's ``convert("L")`` and torchvision's ``Grayscale``. PIL
rounds to whole grey levels, torchvision's tensor path weighs red 0.2989: the float result here is
within about half a grey level of the one and 1e-4 of the other.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from spray.data.decoding import AlphaBackground
from spray.data.sample import UnreadableSample

ColourToGrey = Literal["refuse", "luma"]

#: ITU-R 601-2 luma weights of R, G and B (PIL's ``convert("L")``, torchvision's ``Grayscale``).
LUMA = (0.299, 0.587, 0.114)


def model_input_channels(model: nn.Module) -> int | None:
    """``in_channels`` of the first 2-D convolution of ``model`` (module order), or None when it has none."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    return None


def to_model_channels(
    x: torch.Tensor, channels: int | None, colour_to_grey: ColourToGrey = "refuse"
) -> torch.Tensor:
    """``(C, H, W)`` with C in {1, 3} → what a ``channels``-channel model takes (1→3 is left to the transform).

    Parameters
    ----------
    x : torch.Tensor
        ``(C, H, W)`` float in [0, 1], on any device.
    channels : int or None
        Channels the model takes (None: unknown, ``x`` is returned as it is).
    colour_to_grey : {"refuse", "luma"}
        What a colour image for a 1-channel model becomes (``data.transform.colour_to_grey``).

    Raises
    ------
    UnreadableSample
        A colour image for a 1-channel model with ``refuse``, or a channel count that cannot be converted.
    """
    c = x.shape[0]
    if channels is None or c == channels or (c == 1 and channels == 3):
        return x
    if c == 3 and channels == 1:
        if torch.equal(x[0], x[1]) and torch.equal(x[0], x[2]):
            return x[:1]
        if colour_to_grey == "luma":
            r, g, b = LUMA
            return r * x[:1] + g * x[1:2] + b * x[2:3]
        raise UnreadableSample(
            "colour image, but the model takes 1 channel (grey): set data.transform.colour_to_grey: luma to "
            "convert it as PIL's convert('L') and torchvision's Grayscale do, or set "
            "data.transform.channels: 3 if the model takes RGB"
        )
    raise UnreadableSample(
        f"{c} channels, but the model takes {channels}; set data.transform.channels if that is wrong"
    )


def _drop_alpha(t: torch.Tensor, alpha_background: AlphaBackground) -> torch.Tensor:
    """``(2 or 4, H, W)`` (grey or RGB plus alpha, in [0, 1]) → ``(1 or 3, H, W)``."""
    colour, alpha = t[:-1], t[-1:]
    if alpha_background == "ignore":
        return colour
    bg = 1.0 if alpha_background == "white" else 0.0
    return colour * alpha + bg * (1.0 - alpha)


def array_to_tensor(img: np.ndarray | torch.Tensor, alpha_background: AlphaBackground) -> torch.Tensor:
    """An image array from a factory dataset → ``(C, H, W)`` float32, C in {1, 3}.

    Layouts: ``(H, W)``; ``(C, H, W)`` (torch's); ``(H, W, C)`` for arrays and tensors whose last axis has 1–4
    entries and whose first does not. ``uint8`` is divided by 255, ``uint16`` by 65535, ``bool`` gives 0/1;
    floats are taken as they are (spray expects [0, 1]; see the factory contract in docs/config.md).

    Raises
    ------
    UnreadableSample
        For another rank or channel count.
    """
    if isinstance(img, np.ndarray):
        arr = img[None] if img.ndim == 2 else img
        if arr.ndim == 3 and arr.shape[-1] <= 4 and arr.shape[0] > 4:
            arr = arr.transpose(2, 0, 1)  # (H, W, C), numpy's and PIL's layout
        if arr.dtype == np.uint16:
            arr = arr.astype(np.float32) / np.float32(65535.0)
        arr = np.ascontiguousarray(arr)
        # a read-only array (np.frombuffer, a memory map) made torch print a UserWarning on stderr
        t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    else:
        t = img.detach().cpu()
        t = t[None] if t.ndim == 2 else t
        if t.ndim == 3 and t.shape[-1] <= 4 and t.shape[0] > 4:
            t = t.permute(2, 0, 1)  # (H, W, C), as for arrays: torch.from_numpy(np.asarray(pil_image))
    if t.ndim != 3 or t.shape[0] not in (1, 2, 3, 4):
        raise UnreadableSample(
            f"image array of shape {tuple(img.shape)}: expected (H, W), (C, H, W) or (H, W, C) with 1–4 channels"
        )
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    elif t.dtype == torch.uint16:
        t = t.to(torch.float32) / 65535.0
    else:
        t = t.float()  # bool gives 0/1; floats are taken as [0, 1]
    if t.shape[0] in (2, 4):
        t = _drop_alpha(t, alpha_background)
    return t

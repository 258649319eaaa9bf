"""Thumbnails of the model inputs, for the dashboard and the report.

A thumbnail is square, ``t × t`` with ``t = min(batch.thumbnail_size, H, W)`` of the ``H × W`` model
input (never larger than the image: a 28×28 input keeps its 28×28 pixels), and has the model input's
channels: ``(t, t, 1)`` for a grey model, ``(t, t, 3)`` otherwise. Readers turn both into RGB with
:func:`spray.imaging.to_rgb`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# ITU-R BT.601 luma: the weights Pillow's convert("L") uses, for the rare colour image in a grey dataset.
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def thumbnail_side(cap: int, height: int, width: int) -> int:
    """Edge of the thumbnails of ``height × width`` inputs: at most ``cap``, never more than the image."""
    return max(1, min(cap, height, width))


def make_thumbnail(x: torch.Tensor, size: int, channels: int = 3) -> np.ndarray:
    """``(C, H, W)`` float in [0, 1] → ``(size, size, channels)`` uint8 (aspect squashed to a square).

    The host copy of :func:`thumbnail_pixels`, with the same values. For a CPU tensor the last steps run
    in numpy: for a 28×28 image torch's per-call overhead was most of the thumbnail's cost.
    """
    if x.device.type != "cpu":
        return thumbnail_pixels(x, size, channels).cpu().numpy()
    a = _fitted(x.float(), size, channels).numpy()
    # clip, ×255 in float32 and round half to even are exact per element: torch's values bit for bit.
    with np.errstate(invalid="ignore"):  # NaN pixels: the sample is skipped after this (non-finite)
        return np.round(np.clip(a, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)


def thumbnail_pixels(x: torch.Tensor, size: int, channels: int = 3) -> torch.Tensor:
    """``(C, H, W)`` float in [0, 1] → ``(size, size, channels)`` uint8 on ``x``'s device.

    Parameters
    ----------
    x : torch.Tensor
        ``(C, H, W)`` un-normalised image, C in {1, 3}, on any device.
    size : int
        Thumbnail edge.
    channels : int
        1 (grey) or 3 (RGB): grey inputs are repeated for RGB thumbnails, colour ones reduced by luma
        for grey thumbnails.
    """
    t = _fitted(x.float(), size, channels)
    return (t.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0)


def _fitted(t: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """``(C, H, W)`` float → ``(channels, size, size)`` float: luma or repeated grey, resized to the square."""
    if t.shape[0] == 3 and channels == 1:
        t = (t * _LUMA.to(t.device)[:, None, None]).sum(0, keepdim=True)
    if tuple(t.shape[-2:]) != (size, size):
        t = F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    if t.shape[0] == 1 and channels == 3:
        t = t.repeat(3, 1, 1)
    return t[:channels]

"""The original file of an image-folder sample, as a viewer (the dashboard, a FiftyOne export) shows it.

A viewer must show the image the run explained, where the model saw it: the file is found under the data
root by its sample id (its relative path; a symlink placed in the folder counts, a ``..`` in the id does
not), decoded as the audit decoded it (16-bit files scaled, not clipped; a JPEG above the pixel limit at
reduced scale), and relevance is drawn only over the part of it the model input shows (the centre crop).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spray.config import TransformConfig
from spray.data.decoding import DecodeOptions, decode_image
from spray.data.transform import Transform, draft_side

__all__ = ["decode_original", "input_box", "original_under"]


def original_under(root: Path | None, sample_id: str) -> Path | None:
    """The file ``sample_id`` names under ``root`` (which must be absolute), or None: no root, an id that
    leads outside it (``..``, an absolute id) or to no file. The id is checked as written, so a symlink the
    data's owner put in the folder is followed wherever it points."""
    if root is None:
        return None
    p = Path(os.path.normpath(root / sample_id))
    if not p.is_relative_to(root) or not p.is_file():
        return None
    return p


def _data(config: dict[str, Any]) -> dict[str, Any]:
    return config.get("data") or {}


def decode_original(path: Path, config: dict[str, Any]) -> np.ndarray:
    """uint8 ``(h, w, 3)`` pixels of ``path`` decoded as the run with ``config`` (its ``summary.json``
    config) decoded them.

    Raises
    ------
    spray.data.UnreadableSample
        The file cannot be decoded (the reason says why, e.g. above ``data.max_image_pixels``).
    OSError
        The file cannot be read.
    """
    data = _data(config)
    transform = data.get("transform") or {}
    defaults = DecodeOptions()
    opts = DecodeOptions(
        max_pixels=int(data.get("max_image_pixels") or defaults.max_pixels),
        # the key is data.transform.alpha_background (data.alpha_background was read: always the default)
        alpha_background=transform.get("alpha_background")
        or data.get("alpha_background")
        or defaults.alpha_background,
        draft_side=draft_side(transform.get("resize")),
        high_bit_depth=transform.get("high_bit_depth") or defaults.high_bit_depth,
    )
    x = decode_image(path.read_bytes(), opts)
    arr = (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    return np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr


def input_box(config: dict[str, Any], height: int, width: int) -> tuple[float, float, float, float]:
    """``(top, left, bottom, right)`` fractions of a ``height × width`` original that the model input shows
    under the run's ``data.transform`` (the whole image without a centre crop)."""
    # only the geometry, unvalidated: a run recorded under older rules must still be shown
    t = _data(config).get("transform") or {}
    cfg = TransformConfig.model_construct(resize=t.get("resize"), center_crop=t.get("center_crop"))
    return Transform(cfg).input_box(height, width)

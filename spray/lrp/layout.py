"""Memory layout and precision switches of the LRP copy (``channels_last`` on CPU, TF32 on CUDA)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["_convert_layout", "_is_layout_error", "_tf32", "prefers_channels_last"]


@contextlib.contextmanager
def _tf32(device: torch.device, allow: bool) -> Iterator[None]:
    """TF32 for CUDA matmuls and convolutions allowed or not inside the block (restored after); a no-op
    elsewhere."""
    if device.type != "cuda":
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


_LAYOUT_WORDS = ("view", "stride", "contiguous", "memory format", "memory_format", "channels_last", "layout")


def _is_layout_error(exc: BaseException) -> bool:
    """Whether ``exc`` may come from running in ``channels_last`` (never an out-of-memory error)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return False
    message = str(exc).lower()
    return "out of memory" not in message and any(word in message for word in _LAYOUT_WORDS)


def _convert_layout(model: nn.Module, channels_last: bool) -> bool:
    """Put the 4-D parameters and buffers of ``model`` in ``channels_last`` (or contiguous); return the layout.

    Unlike ``Module.to(memory_format=...)`` this leaves tensors of other ranks alone (a ``Conv3d``
    weight cannot be ``channels_last``). If the conversion fails, the model is made contiguous.
    """
    if channels_last:
        try:
            model._apply(lambda t: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t)
            return True
        except RuntimeError as exc:
            logger.warning(
                "could not convert the model to channels_last (%s); using the contiguous layout", exc
            )
    model._apply(lambda t: t.contiguous() if t.dim() in (4, 5) else t)
    return False


def prefers_channels_last(model: nn.Module, device: torch.device) -> bool:
    """Whether ``model`` runs faster in ``channels_last`` on ``device``: a CPU model with 2-D convolutions
    (3-D volume models keep the contiguous layout, which is the only one their 5-D weights have)."""
    return (
        device.type == "cpu"
        and any(isinstance(m, nn.Conv2d) for m in model.modules())
        and not any(t.dim() == 5 for t in (*model.parameters(), *model.buffers()))
    )

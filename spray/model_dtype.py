"""The model's number type: spray explains every model in float32."""

from __future__ import annotations

import logging

from torch import nn

log = logging.getLogger("spray.models")


def as_float32(model: nn.Module) -> nn.Module:
    """The model in float32: inputs are float32 and LRP runs in float32 (``lrp.precision`` picks faster
    modes), so a float64 or half model met a raw dtype error in its first layer."""
    kinds = {str(t.dtype) for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()}
    if kinds - {"torch.float32"}:
        log.warning(
            "the model's weights are %s: spray explains it in float32 (set lrp.precision for faster modes)",
            " and ".join(sorted(k.removeprefix("torch.") for k in kinds)),
        )
        model = model.float()
    return model

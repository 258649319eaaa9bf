"""Plain forward passes of the audited model outside LRP (the paste and removal tests of the analysis).

They run batched and without gradients and, on CPU, through a ``channels_last`` copy of a convolutional
model: oneDNN runs convolutions fastest in that layout (the small CNN of the demo 1.6–1.8× faster on one
core), and these tests run several thousand images through the model per audit. The copy is checked
against the model on the first batch; a copy that fails in that layout, or answers differently, is
dropped with a warning and the model itself runs from then on.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from spray.lrp.canonizers import model_copy
from spray.lrp.concepts import has_attention
from spray.lrp.layout import _convert_layout, _is_layout_error, prefers_channels_last

log = logging.getLogger(__name__)

__all__ = ["Inference"]

#: Rows of the first batch compared between the copy and the model.
_CHECK_ROWS = 8
#: Rows of every forward pass, by device type (a call's last pass is padded to it): BLAS picks its kernel by
#: the number of rows (MKL's sgemm rounds otherwise below 16), and the paste cache keeps logits across runs,
#: so a fixed shape makes an image's logits independent of how many images ran with it. Changing these
#: changes results in the last bits: bump ANALYSIS_VERSION with them.
PASS_ROWS = {"cpu": 32, "cuda": 256}


def _laid_out_copy(model: nn.Module, device: torch.device) -> nn.Module | None:
    """A ``channels_last`` copy of a convolutional ``model``, or None where that layout does not apply or
    gains little (a transformer), or copying fails."""
    # a ViT's only convolution is its patch embedding: no gain, and a large transformer's copy costs GBs
    if not prefers_channels_last(model, device) or has_attention(model):
        return None
    try:
        copied = model_copy(model)
    except Exception as exc:  # a model holding an uncopyable object runs as it is
        log.info("the model could not be copied for the channels_last layout (%s); running it as it is", exc)
        return None
    return copied if _convert_layout(copied, True) else None


class Inference:
    """Batched forward passes of ``model`` without gradients.

    Parameters
    ----------
    model : nn.Module
        The audited model, in eval mode, on ``device`` (never changed here).
    device : torch.device
        Where the model runs; inputs are moved there batch by batch and outputs come back to the CPU.
    batch_size : int, optional
        Rows of every forward pass (default :data:`PASS_ROWS` of the device type); a call's last pass is
        padded to it with copies of its last row.
    """

    def __init__(self, model: nn.Module, device: torch.device, batch_size: int | None = None) -> None:
        self.model = model
        self.device = device
        self.batch_size = batch_size or PASS_ROWS.get(device.type, PASS_ROWS["cuda"])
        self._fast: nn.Module | None = None
        self._started = self._checked = False  # the copy is made on the first call (none without a test)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, K)`` float logits of ``(n, C, H, W)`` inputs (on the CPU)."""
        if len(x) == 0:
            return torch.zeros(0, 0)
        b, out = self.batch_size, []
        for s in range(0, len(x), b):
            xb = x[s : s + b]
            m = len(xb)
            if m < b:  # a fixed shape: the same logits whatever ran beside this image
                xb = torch.cat([xb, xb[-1:].expand(b - m, *xb.shape[1:])])
            out.append(self._run(xb.to(self.device))[:m])
        return torch.cat([o.float().cpu() for o in out])

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``(n,)`` predicted classes of ``(n, C, H, W)`` inputs (on the CPU)."""
        if len(x) == 0:
            return torch.zeros(0, dtype=torch.long)
        return self.logits(x).argmax(1)

    def _run(self, xb: torch.Tensor) -> torch.Tensor:
        if not self._started:
            self._started = True
            self._fast = _laid_out_copy(self.model, self.device)
        if self._fast is None:
            return self.model(xb)
        try:
            out = self._fast(xb)
        except RuntimeError as exc:
            if not _is_layout_error(exc):
                raise
            self._drop(f"it failed in that layout: {exc}")
            return self.model(xb)
        if not self._checked:
            self._checked = True
            n = min(_CHECK_ROWS, len(xb))
            want = self.model(xb[:n]).float()
            if not torch.allclose(
                out[:n].float(), want, rtol=1e-3, atol=1e-4 * (1 + float(want.abs().max()))
            ):
                self._drop("its outputs differ from the model's on the first batch")
                return self.model(xb)
        return out

    def _drop(self, why: str) -> None:
        log.warning(
            "the channels_last copy of the model for the paste test is not used (%s); the model runs as it is",
            why,
        )
        self._fast = None

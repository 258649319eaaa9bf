"""The linear operation of a dense or convolutional layer (forward and input-VJP), with oneDNN fast paths.

One :class:`_LinearOp` serves every rule that modifies weights: it runs the layer's operation with any
weight set (``W``, ``W⁺``, ``W²``, ...) and its transposed operation for the backward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spray.errors import ConfigError
from spray.lrp.numerics import _memory_format

# Route pointwise convolutions to oneDNN (see _LinearOp); a switch for benchmarks and debugging.
ONEDNN_POINTWISE: bool = True

# --------------------------------------------------------------------------------------------------
# the linear operation of a layer (forward and input-VJP), so one Function serves conv and dense


class _LinearOp:
    """Forward and input-VJP of a dense or convolutional layer with the layer's hyper-parameters.

    Pointwise (1×1, stride 1, no padding, ungrouped) 2-D convolutions on float32 ``channels_last``
    CPU tensors call oneDNN directly, for the forward and for the input-VJP (a 1×1 convolution with
    the transposed weight). PyTorch's own dispatch sends them to its im2col + BLAS path for batches
    below 16 on one thread, which measured 2–2.5× slower per layer on this project's CPU (AMD EPYC,
    AVX-512) and is about half of ResNet-50's convolution work.
    """

    def __init__(self, module: nn.Module) -> None:
        self.kind: str
        self.conv_args: tuple[Any, ...] = ()
        self.pointwise = False
        # transposed weights for the oneDNN input-VJP, by id of the weight (checked by identity)
        self._transposed: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        if isinstance(module, nn.Linear):
            self.kind = "linear"
        elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            if module.padding_mode != "zeros" or isinstance(module.padding, str):
                raise ConfigError(
                    f"{type(module).__name__} with padding={module.padding!r}, padding_mode="
                    f"{module.padding_mode!r} is not supported by the fused LRP rules; use integer "
                    "zero padding or map this layer to Epsilon() via extra_rules."
                )
            self.kind = f"conv{len(module.kernel_size)}d"
            self.conv_args = (module.stride, module.padding, module.dilation, module.groups)
            self.pointwise = (
                self.kind == "conv2d"
                and tuple(module.kernel_size) == (1, 1)
                and tuple(module.stride) == (1, 1)
                and tuple(module.padding) == (0, 0)
                and tuple(module.dilation) == (1, 1)
                and module.groups == 1
            )
        else:
            raise ConfigError(f"rule needs a Linear or Conv1d/2d/3d layer, got {type(module).__name__}")

    def _onednn(self, t: torch.Tensor, w: torch.Tensor) -> bool:
        return (
            self.pointwise
            and ONEDNN_POINTWISE
            and t.device.type == "cpu"
            and t.dtype == torch.float32
            and w.dtype == torch.float32
            and t.dim() == 4
            and _memory_format(t) == torch.channels_last
            and torch.backends.mkldnn.is_available()
            and bool(torch.backends.mkldnn.enabled)
            and not torch.is_autocast_enabled("cpu")
        )

    def shared_input(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``x`` in the memory layout a CPU convolution with the ``channels_last`` weight ``w`` runs in.

        A convolution converts a contiguous input to its weight's ``channels_last`` layout itself, once per
        call; a rule that convolves the same input two or three times (z+, αβ, γ) converts it here once
        instead. The values (and hence every result) are the same: only the copy is saved. This happens
        after a first layer with a 1-channel input, whose output is contiguous (measured: a third of the
        z+ layer's forward after it on 28×28 grey images, under load).
        """
        if (
            self.kind == "conv2d"
            and x.dim() == 4
            and x.device.type == "cpu"
            and _memory_format(w) == torch.channels_last
            and _memory_format(x) != torch.channels_last
        ):
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        """Apply the layer with weight ``w`` and bias ``b`` to ``x``."""
        if self.kind == "linear":
            return F.linear(x, w, b)
        if self._onednn(x, w) and (b is None or b.dtype == torch.float32):
            return torch.ops.aten.mkldnn_convolution(x, w, b, [0, 0], [1, 1], [1, 1], 1)
        fn = {"conv1d": F.conv1d, "conv2d": F.conv2d, "conv3d": F.conv3d}[self.kind]
        return fn(x, w, b, *self.conv_args)

    def input_vjp(self, g: torch.Tensor, w: torch.Tensor, input_shape: Sequence[int]) -> torch.Tensor:
        """Vector-Jacobian product w.r.t. the input: ``Wᵀ g``, shape ``input_shape``."""
        w = w.to(g.dtype)
        if self.kind == "linear":
            return g.matmul(w)
        if self._onednn(g, w):
            cached = self._transposed.get(id(w))
            if cached is None or cached[0] is not w:
                wt = w.transpose(0, 1).contiguous(memory_format=torch.channels_last)
                if len(self._transposed) >= 4:  # a layer has at most a few weight sets; never grow
                    self._transposed.clear()
                cached = self._transposed[id(w)] = (w, wt)
            return torch.ops.aten.mkldnn_convolution(g, cached[1], None, [0, 0], [1, 1], [1, 1], 1)
        stride, padding, dilation, groups = self.conv_args
        # The input only lends its shape here. torch.nn.grad.conv*_input passes an expanded 1-element
        # tensor, which convolution_backward then materialises with a full-size copy (measured: about
        # 3 % of a ResNet-50 LRP call); an uninitialised tensor is never touched.
        shape_only = torch.empty(input_shape, dtype=g.dtype, device=g.device, memory_format=_memory_format(g))
        return torch.ops.aten.convolution_backward(
            g,
            shape_only,
            w,
            None,
            list(stride),
            list(padding),
            list(dilation),
            False,
            [0] * len(stride),
            groups,
            [True, False, False],
        )[0]

"""LRP rules in the gradient×input frame.

Every rule is written so that the tensor travelling backwards through the network is a *modified
gradient* ``g`` with ``relevance = activation × g`` at every activation. This lets the plain autograd
backward of ReLU, max-pool, flatten, dropout and reshapes do the right thing without hooks or clones:

* ReLU: the plain gradient ``g·1[z>0]`` gives ``z·g_in = relu(z)·g``, i.e. relevance passes unchanged
  (zennit's ``Pass`` rule for activations).
* max-pool: the plain gradient routes ``g`` to the winner, so ``x_win·g = y·g`` (winner-take-all).
* ε (linear/conv) and Norm (avg-pool, residual add): the plain layer gradient applied to
  ``g·z/stab(z)``, so only an element-wise rescale of the output gradient is needed
  (:class:`_StabScale`), the layer itself keeps its fast native backward.
* z+, αβ, γ: one fused :class:`torch.autograd.Function` per layer that computes the modified forward
  once, saves only the ratio ``z / stab(z_mod)`` and does one (or two) input-VJPs in backward.
* Flat, w², ZBox produce *relevance*, not a gradient: they are only allowed on the first layer (the one
  whose input is the model input); the engine reads the input relevance off ``inputs.grad``.

The first rule layer of a model is run in "relevance-out" mode: a :class:`_TimesInput` in front of it
turns ``g`` into ``x·g``, so whatever sits between the model input and that layer (flatten, dropout,
max-pool) receives relevance, exactly as in zennit where un-hooked modules apply their gradient to
the relevance.

Stabilisation follows zennit (``stab(z) = z + ε·sign(z)`` with ``sign(0) = +1``) and is always done
in float32, also when the forward runs in bfloat16.

None of this module is derived from zennit's code; the rule definitions follow the LRP papers and are
checked numerically against zennit 0.5.1 in the tests.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from spray.errors import ConfigError

__all__ = [
    "AlphaBeta",
    "Epsilon",
    "Flat",
    "Gamma",
    "Gradient",
    "Norm",
    "Pass",
    "Rule",
    "RuleContext",
    "WSquare",
    "ZBox",
    "ZPlus",
    "stabilize",
]


# --------------------------------------------------------------------------------------------------
# numerics


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """Return ``z + eps·sign(z)`` in float32, with ``sign(0) = +1`` (zennit's convention).

    Parameters
    ----------
    z : torch.Tensor
        Any shape, any float dtype.
    eps : float
        Stabiliser, added away from zero.

    Returns
    -------
    torch.Tensor
        Same shape as ``z``, float32 (the division that follows must not happen in bf16).
    """
    z = z.float()
    # (z >= 0) * 2 - 1 is +1 for z >= 0 and -1 otherwise; one temporary instead of sign() + eq().
    step = (z >= 0).to(torch.float32).mul_(2.0 * eps).sub_(eps)
    return step.add_(z)


def _ratio(num: torch.Tensor, den: torch.Tensor, eps: float, out_dtype: torch.dtype) -> torch.Tensor:
    """``num / stab(den)`` computed in float32, stored in ``out_dtype`` (shapes equal)."""
    d = stabilize(den, eps)
    return torch.div(num.float(), d, out=d).to(out_dtype)


def _ratio_nonneg_den(
    num: torch.Tensor, den: torch.Tensor, eps: float, out_dtype: torch.dtype
) -> torch.Tensor:
    """``num / stab(den)`` for a denominator that is ``>= 0`` in exact arithmetic (z+, flat, w²),
    **consuming** ``den``.

    With ``den >= 0`` zennit's stabiliser is ``den + eps`` (``sign(0) = +1``), so the ratio takes three
    in-place passes (clamp, add, divide) and no temporaries (the general :func:`stabilize` needs five
    passes and two). The clamp to 0 is there because convolution algorithms such as Winograd or FFT
    (cuDNN) can return tiny negative values for a sum of non-negative terms; with it the denominator is
    never below ``eps``. In float32 ``den`` is overwritten with the ratio; callers must not use it
    afterwards.
    """
    d = den.float()  # the same tensor in float32; a float32 copy under bf16
    d.clamp_(min=0).add_(eps)
    return (
        torch.div(num, d, out=d) if num.dtype == d.dtype else torch.div(num.float(), d, out=d).to(out_dtype)
    )


def _self_ratio(z: torch.Tensor, eps: float, nonneg: bool = False) -> torch.Tensor:
    """``z / stab(z)`` in float32 (the ε and Norm rescale).

    ``z / (z + eps·sign(z))`` equals ``|z| / (|z| + eps)`` bit for bit (negation is exact), and is 0 at
    ``z = ±0`` under either sign convention, so no sign tensor is needed. ``nonneg`` skips the ``abs``.
    """
    a = z.float() if nonneg else z.float().abs()
    return torch.div(a, a + eps)


def _scale_grad(g: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """``g · ratio``, written into ``ratio`` when the dtypes allow (it is a saved tensor used once).

    Backward runs once per forward (the engine never retains the graph); a second backward would make
    autograd raise on the version counter of ``ratio`` rather than give wrong numbers.
    """
    if ratio.dtype == g.dtype and ratio.shape == g.shape:
        return ratio.mul_(g)
    return g * ratio.to(g.dtype)


def _dense_flat(x: torch.Tensor) -> torch.Tensor:
    """A 1-D view of all entries of a dense tensor in memory order (any layout), else ``x`` itself.

    Reductions over a ``channels_last`` tensor otherwise make a contiguous copy first.
    """
    if x.is_contiguous():
        return x.view(-1)
    order = sorted(range(x.dim()), key=lambda d: x.stride(d), reverse=True)
    permuted = x.permute(order)
    return permuted.view(-1) if permuted.is_contiguous() else x


def _nonneg(x: torch.Tensor) -> bool:
    """Whether all entries of ``x`` are ``>= 0`` (one reduction pass, no temporary)."""
    return x.numel() == 0 or bool(_dense_flat(x).min() >= 0)


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


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    """``channels_last`` (or ``channels_last_3d``) if ``t`` is laid out that way, else contiguous."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if t.dim() == 5 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


def _pos(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.clamp(min=0)


def _neg(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.clamp(max=0)


def _add(a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return a if b is None else a + b


# --------------------------------------------------------------------------------------------------
# autograd Functions


class _StabScale(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``z / stab(z)`` (ε and Norm rules)."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(z)
        ctx.eps = eps
        return z.view_as(z)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        (z,) = ctx.saved_tensors
        return _scale_grad(g, _self_ratio(z, ctx.eps)), None


class _StabScaleReLU(torch.autograd.Function):
    """``relu(z)`` fused with the ε/Norm rescale of the layer that produced ``z``.

    Backward: ``g · 1[z>0] · z/stab(z) = g · y/(y + eps)`` with ``y = relu(z)``, so only the output is
    saved (which the plain ReLU would have saved too) and the ReLU's own backward pass disappears.
    """

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, eps: float) -> torch.Tensor:
        y = torch.relu(z)
        ctx.save_for_backward(y)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        (y,) = ctx.saved_tensors
        return _scale_grad(g, _self_ratio(y, ctx.eps, nonneg=True)), None


class _AddNormReLU(torch.autograd.Function):
    """``relu(a + b)`` with the Norm rule on the sum (residual blocks); see :class:`_StabScaleReLU`."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
        y = torch.add(a, b).relu_()
        ctx.save_for_backward(y)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        (y,) = ctx.saved_tensors
        gs = _scale_grad(g, _self_ratio(y, ctx.eps, nonneg=True))
        return gs, gs, None


class _TimesInput(torch.autograd.Function):
    """Identity forward; backward returns ``x · g``: turns the modified gradient into relevance."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return g * x


class _PassFn(torch.autograd.Function):
    """Element-wise module with relevance passed unchanged (zennit ``Pass``).

    In the gradient frame ``R_in = R_out`` means ``g_in = g_out · y / x`` (0 where ``x == 0``). Before
    the first rule layer the backward carries relevance already, so it passes ``g`` unchanged.

    The module runs inside the Function and only the ratio ``y / x`` is saved, so the output is a fresh
    tensor that later code may modify in place (torchvision's ``out += identity`` after an unfolded
    BatchNorm with ``canonize=False``; returning a no-grad ``y`` as-is made that an autograd error).
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor], carries_relevance: bool
    ) -> torch.Tensor:
        y = run(x)
        if y is x:
            y = y.clone()
        ctx.carries_relevance = carries_relevance
        if not carries_relevance:
            xf = x.float()
            zero = xf == 0
            ratio = y.float() / torch.where(zero, torch.ones_like(xf), xf)
            ctx.save_for_backward(ratio.masked_fill_(zero, 0.0))
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        if ctx.carries_relevance:
            return g, None, None
        (ratio,) = ctx.saved_tensors
        return _scale_grad(g, ratio), None, None


class _MaxPoolFn(torch.autograd.Function):
    """Max-pooling whose backward keeps only the argmax indices (not the input, as autograd does).

    The backward is the plain gradient (winner-take-all in the gradient×input frame): ``g`` is
    scatter-added onto the winners. Indices are flat positions in the input's spatial plane, as
    returned by ``max_pool{1,2,3}d(..., return_indices=True)``.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, pool: Any, spatial: int) -> torch.Tensor:
        fn: Any = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[spatial]
        y, idx = fn(x, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode, True)
        ctx.save_for_backward(idx)
        ctx.shape, ctx.spatial = x.shape, spatial
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (idx,) = ctx.saved_tensors
        shape, spatial = ctx.shape, ctx.spatial
        if spatial == 2 and len(shape) == 4 and _memory_format(g) == torch.channels_last:
            # channels_last: scatter along the plane of (B, H·W, C) views, no layout copies
            b, c, h, w = (int(n) for n in shape)
            out = g.new_zeros((b, h * w, c))
            g_v = g.permute(0, 2, 3, 1).reshape(b, -1, c)
            out.scatter_add_(1, idx.permute(0, 2, 3, 1).reshape(b, -1, c), g_v)
            return out.view(b, h, w, c).permute(0, 3, 1, 2), None, None
        lead, plane = 1, 1
        for i, n in enumerate(shape):
            if i < len(shape) - spatial:
                lead *= int(n)
            else:
                plane *= int(n)
        out = g.new_zeros((lead, plane))
        out.scatter_add_(1, idx.reshape(lead, -1), g.reshape(lead, -1))
        return out.view(shape), None, None


class LeanMaxPool(nn.Module):
    """Drop-in for ``nn.MaxPool{1,2,3}d`` in the LRP copy: same output, the backward saves only indices.

    Autograd's max-pool saves its (full-size) input as well as the indices; for the LRP backward only
    the indices are needed. On VGG16 this keeps about a quarter of the activations out of memory.
    """

    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.pool = pool
        spatial: dict[type[nn.Module], int] = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}
        self.spatial = spatial[type(pool)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.requires_grad or getattr(self.pool, "return_indices", False):
            return self.pool(x)
        return _MaxPoolFn.apply(x, self.pool, self.spatial)


class _ZPlusFn(torch.autograd.Function):
    """z+ rule (α1β0, zennit ``ZPlus``) fused with the layer's normal forward (and a following ReLU).

    ``R_in = x⁺ ⊙ W⁺ᵀ s + x⁻ ⊙ W⁻ᵀ s`` with ``s = R_out / stab(W⁺x⁺ + W⁻x⁻ + b⁺)`` and ``R_out = z ⊙ g``.
    For non-negative inputs (the usual post-ReLU case) this is one extra forward and one input-VJP.

    The denominator is a sum of non-negative terms, so ``stab`` is ``+ eps`` (two in-place passes).
    With ``relu=True`` the layer's output goes through a ReLU in place; since ``relu(z)/stab = 1[z>0] ·
    z/stab``, the saved ratio already carries the ReLU's mask, and the ReLU needs no backward and saves
    nothing. The backward scales the saved ratio by ``g`` in place and runs one transposed convolution.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        op: _LinearOp,
        w: torch.Tensor,
        b: torch.Tensor | None,
        w_pos: torch.Tensor,
        w_neg: torch.Tensor,
        b_pos: torch.Tensor | None,
        eps: float,
        relu: bool,
    ) -> torch.Tensor:
        z = op.forward(x, w, b)
        mixed = not _nonneg(x)
        if mixed:
            zp = op.forward(x.clamp(min=0), w_pos, b_pos)
            zp += op.forward(x.clamp(max=0), w_neg, None)
        else:
            zp = op.forward(x, w_pos, b_pos)
        if relu:
            z = z.relu_()
        ratio = _ratio_nonneg_den(z, zp, eps, z.dtype)
        if mixed:
            ctx.save_for_backward(ratio, x, w_pos, w_neg)
        else:
            ctx.save_for_backward(ratio, w_pos)
        ctx.mixed, ctx.op, ctx.shape = mixed, op, x.shape
        return z

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        op: _LinearOp = ctx.op
        nones = (None,) * 8
        saved = ctx.saved_tensors  # unpack once: the ratio is overwritten in place below
        s = _scale_grad(g, saved[0])
        if not ctx.mixed:
            return (op.input_vjp(s, saved[1], ctx.shape), *nones)
        _, x, w_pos, w_neg = saved
        a = op.input_vjp(s, w_pos, ctx.shape)
        bn = op.input_vjp(s, w_neg, ctx.shape)
        return (torch.where(x > 0, a, bn), *nones)


class _TwoTermFn(torch.autograd.Function):
    """Two-weight rules fused with the layer's forward: αβ (zennit ``AlphaBeta``) and γ (``Gamma``).

    With two weight sets ``W_a, W_b`` (and biases ``b_a, b_b``):
    ``z_a = W_a x⁺ + W_b x⁻ + b_a``, ``z_b = W_b x⁺ + W_a x⁻ + b_b``,
    ``s_a = c_a·R/stab(z_a)``, ``s_b = c_b·R/stab(z_b)`` and
    ``R_in = x⁺⊙(W_aᵀs_a + W_bᵀs_b) + x⁻⊙(W_bᵀs_a + W_aᵀs_b)``.

    - αβ: ``W_a = W⁺``, ``W_b = W⁻``, ``c_a = α``, ``c_b = −β``.
    - γ: ``W_a = W + γW⁺``, ``W_b = W + γW⁻``, ``c_a = 1[z>0]``, ``c_b = 1[z<0]`` (``coef_a = coef_b = None``).
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        op: _LinearOp,
        w: torch.Tensor,
        b: torch.Tensor | None,
        w_a: torch.Tensor,
        w_b: torch.Tensor,
        b_a: torch.Tensor | None,
        b_b: torch.Tensor | None,
        eps: float,
        coef_a: float | None,
        coef_b: float | None,
    ) -> torch.Tensor:
        z = op.forward(x, w, b)
        mixed = bool((x < 0).any())
        if mixed:
            xp, xn = x.clamp(min=0), x.clamp(max=0)
            za = op.forward(xp, w_a, b_a) + op.forward(xn, w_b, None)
            zb = op.forward(xp, w_b, b_b) + op.forward(xn, w_a, None)
        else:
            za = op.forward(x, w_a, b_a)
            zb = op.forward(x, w_b, b_b)
        ra = _ratio(z, za, eps, z.dtype).mul_(z > 0 if coef_a is None else coef_a)
        rb = _ratio(z, zb, eps, z.dtype).mul_(z < 0 if coef_b is None else coef_b)
        if mixed:
            ctx.save_for_backward(ra, rb, w_a, w_b, x)
        else:
            ctx.save_for_backward(ra, rb, w_a, w_b)
        ctx.mixed, ctx.op, ctx.shape = mixed, op, x.shape
        return z

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        op: _LinearOp = ctx.op
        ra, rb, w_a, w_b = ctx.saved_tensors[:4]
        sa, sb = g * ra, g * rb
        gp = op.input_vjp(sa, w_a, ctx.shape) + op.input_vjp(sb, w_b, ctx.shape)
        nones = (None,) * 10
        if not ctx.mixed:
            return (gp, *nones)
        x = ctx.saved_tensors[4]
        gn = op.input_vjp(sa, w_b, ctx.shape) + op.input_vjp(sb, w_a, ctx.shape)
        return (torch.where(x > 0, gp, gn), *nones)


class _FlatLikeFn(torch.autograd.Function):
    """Flat and w² rules: ``R_in = Vᵀ (R_out / stab(V·1 + c))`` — returns relevance, not a gradient.

    ``V`` is all-ones (flat, ``c = 0``) or ``W²`` (w², ``c = b²``). The denominator does not depend on
    the sample, so it is computed (and stabilised: it is ``>= 0``) for one sample and broadcast over
    the batch. For flat (``ones=True``) with ``groups == 1``, ``Vᵀs`` only depends on the channel sum
    of ``s``, so the backward transposes a one-output-channel convolution. ``relu`` fuses a following
    ReLU as in :class:`_ZPlusFn`.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        op: _LinearOp,
        w: torch.Tensor,
        b: torch.Tensor | None,
        v: torch.Tensor,
        c: torch.Tensor | None,
        eps: float,
        ones: bool,
        relu: bool,
    ) -> torch.Tensor:
        z = op.forward(x, w, b)
        if relu:
            z = z.relu_()
        unit = torch.ones((1, *x.shape[1:]), dtype=v.dtype, device=x.device)
        den = op.forward(unit, v, c).float().add_(eps)
        ratio = torch.div(z.float(), den).to(z.dtype)
        ctx.save_for_backward(ratio, v)
        ctx.op, ctx.shape = op, x.shape
        ctx.channel_sum = ones and (op.kind == "linear" or op.conv_args[3] == 1)
        return z

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        r, v = ctx.saved_tensors
        s = _scale_grad(g, r)
        nones = (None,) * 8
        if ctx.channel_sum:
            return (ctx.op.input_vjp(s.sum(1, keepdim=True), v[:1], ctx.shape), *nones)
        return (ctx.op.input_vjp(s, v, ctx.shape), *nones)


class _ZBoxFn(torch.autograd.Function):
    """ZBox rule: ``R_in = x⊙Wᵀs − l⊙W⁺ᵀs − h⊙W⁻ᵀs``, ``s = R/stab(Wx − W⁺l − W⁻h)`` (relevance out)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        op: _LinearOp,
        w: torch.Tensor,
        b: torch.Tensor | None,
        w_pos: torch.Tensor,
        low: torch.Tensor,
        high: torch.Tensor,
        eps: float,
    ) -> torch.Tensor:
        z = op.forward(x, w, b)
        w_neg = w - w_pos
        # biases cancel in zennit's ZBox denominator: (Wx+b) - (W⁺l+b⁺) - (W⁻h+b⁻)
        den = op.forward(x, w, None) - op.forward(low, w_pos, None) - op.forward(high, w_neg, None)
        ctx.save_for_backward(_ratio(z, den, eps, z.dtype), x, w, w_pos, w_neg, low, high)
        ctx.op, ctx.shape = op, x.shape
        return z

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        r, x, w, w_pos, w_neg, low, high = ctx.saved_tensors
        op: _LinearOp = ctx.op
        s = g * r
        rel = (
            x * op.input_vjp(s, w, ctx.shape)
            - low * op.input_vjp(s, w_pos, ctx.shape)
            - high * op.input_vjp(s, w_neg, ctx.shape)
        )
        return (rel, *(None,) * 7)


# --------------------------------------------------------------------------------------------------
# per-call state shared by all wrapped modules of one Explainer


class RuleContext:
    """Book-keeping of one forward pass: which rule layers ran, in which order.

    The engine needs the first rule layer (the one in relevance-out mode) to be the first rule layer
    that runs, and to run once; otherwise the gradient and relevance frames would be mixed.
    """

    def __init__(self) -> None:
        self.first_done: bool = False
        self.order: list[tuple[str, bool]] = []  # (module path, rule needs the gradient frame)

    def reset(self) -> None:
        """Forget the previous forward pass."""
        self.first_done = False
        self.order.clear()

    def visit(self, name: str, is_first: bool, gradient_frame: bool) -> None:
        """Record that module ``name`` ran."""
        self.order.append((name, gradient_frame))
        if is_first:
            self.first_done = True


# --------------------------------------------------------------------------------------------------
# wrapper modules put in place of the original layers in the canonized copy


class RuleModule(nn.Module):
    """A layer of the canonized copy with an LRP rule attached (replaces the original module).

    Attributes
    ----------
    inner : nn.Module
        The original (canonized) module; its parameters are reused, not copied.
    rule : Rule
        The rule.
    path : str
        Dotted path of the module in the model, for error messages.
    is_first : bool
        Whether this is the relevance-out layer.
    fuse_relu : bool
        Apply a ReLU to the output inside the rule (set by the engine when a plain ReLU is the only
        consumer of this layer's output and the rule supports it, see ``Rule.fuses_relu``).
    """

    def __init__(self, inner: nn.Module, rule: Rule, path: str, is_first: bool, context: RuleContext) -> None:
        super().__init__()
        self.inner = inner
        self.rule = rule
        self.path = path
        self.is_first = is_first
        self.fuse_relu = False
        # a plain attribute, not a submodule: the context is shared by all wrappers of one model
        self.__dict__["context"] = context
        self.rule.prepare(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx: RuleContext = self.__dict__["context"]
        carries_relevance = not ctx.first_done
        ctx.visit(self.path, self.is_first, self.rule.gradient_frame_only)
        if self.is_first and not self.rule.direct and x.requires_grad:
            x = _TimesInput.apply(x)
        return self.rule.apply(self, x, carries_relevance)

    def extra_repr(self) -> str:
        fused = ", relu fused" if self.fuse_relu else ""
        return f"rule={self.rule!r}, first={self.is_first}{fused}"


# --------------------------------------------------------------------------------------------------
# the rules (configuration objects; the work is done by RuleModule + the Functions above)


@dataclass(frozen=True)
class Rule:
    """Base class of all rules.

    Class attributes
    ----------------
    direct : bool
        The rule produces relevance rather than a modified gradient; allowed on the first layer only.
    needs_weight : bool
        The rule needs a ``Linear``/``Conv{1,2,3}d`` layer (it modifies weights).
    gradient_frame_only : bool
        The rule cannot run before the first rule layer (where the backward carries relevance).
    fuses_relu : bool
        ``apply`` honours ``module.fuse_relu`` (applies the ReLU itself, so that the ReLU's mask is
        folded into the rule's saved ratio).
    """

    direct: ClassVar[bool] = False
    needs_weight: ClassVar[bool] = False
    gradient_frame_only: ClassVar[bool] = True
    fuses_relu: ClassVar[bool] = False

    def prepare(self, module: RuleModule) -> None:
        """Precompute what the rule needs (modified weights) once, at setup."""

    def apply(self, module: RuleModule, x: torch.Tensor, carries_relevance: bool) -> torch.Tensor:
        """Run the forward of ``module.inner`` on ``x`` with this rule's backward attached."""
        raise NotImplementedError


def _weights(module: RuleModule) -> tuple[_LinearOp, torch.Tensor, torch.Tensor | None]:
    inner = module.inner
    weight = getattr(inner, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise ConfigError(f"rule {module.rule!r} needs a layer with a weight, {module.path} has none")
    return _LinearOp(inner), weight, getattr(inner, "bias", None)


@dataclass(frozen=True)
class Gradient(Rule):
    """Plain gradient (no modification): relevance follows the module's Jacobian.

    Right for max-pooling (winner-take-all), reshapes, dropout and other modules whose gradient is a
    0/1 routing of ``g``.
    """

    gradient_frame_only: ClassVar[bool] = False

    def apply(self, module: RuleModule, x: torch.Tensor, carries_relevance: bool) -> torch.Tensor:
        return module.inner(x)


@dataclass(frozen=True)
class Epsilon(Rule):
    """LRP-ε: ``R_in = x ⊙ Jᵀ (R_out / stab(z))`` (``epsilon=0`` gives LRP-0).

    Works on any module (uses its own autograd backward) with one element-wise rescale of the output
    gradient.
    """

    epsilon: float = 1e-6
    fuses_relu: ClassVar[bool] = True

    def apply(self, module: RuleModule, x: torch.Tensor, carries_relevance: bool) -> torch.Tensor:
        fn = _StabScaleReLU if module.fuse_relu else _StabScale
        return fn.apply(module.inner(x), self.epsilon)


@dataclass(frozen=True)
class Norm(Rule):
    """Normalise by the output and weight by input contribution (zennit ``Norm``).

    The ε rule with a pure stabiliser; used for average pooling and residual sums.
    """

    stabilizer: float = 1e-6
    fuses_relu: ClassVar[bool] = True

    def apply(self, module: RuleModule, x: torch.Tensor, carries_relevance: bool) -> torch.Tensor:
        fn = _StabScaleReLU if module.fuse_relu else _StabScale
        return fn.apply(module.inner(x), self.stabilizer)


@dataclass(frozen=True)
class Pass(Rule):
    """Pass relevance through unchanged; only for element-wise modules (output shape == input shape)."""

    gradient_frame_only: ClassVar[bool] = False

    def run_elementwise(self, module: RuleModule, x: torch.Tensor) -> torch.Tensor:
        """``module.inner(x)`` without autograd, checked to be element-wise."""
        with torch.no_grad():
            y = module.inner(x)
        if y.shape != x.shape:
            raise ConfigError(
                f"Pass() on {module.path} ({type(module.inner).__name__}) needs an element-wise module, "
                f"but it maps {tuple(x.shape)} to {tuple(y.shape)}"
            )
        return y

    def apply(self, module: RuleModule, x: torch.Tensor, carries_relevance: bool) -> torch.Tensor:
        if not x.requires_grad:
            return self.run_elementwise(module, x)
        return _PassFn.apply(x, functools.partial(self.run_elementwise, module), carries_relevance)


@dataclass(frozen=True)
class _WeightRule(Rule):
    needs_weight: ClassVar[bool] = True


@dataclass(frozen=True)
class ZPlus(_WeightRule):
    """LRP z+ (α1β0; negative inputs allowed as in zennit)."""

    stabilizer: float = 1e-6
    fuses_relu: ClassVar[bool] = True

    def prepare(self, module: RuleModule) -> None:
        op, w, b = _weights(module)
        w_pos = w.detach().clamp(min=0)
        # W⁻ is only used for inputs with negative entries; keep it lazily (it costs a weight copy)
        module.__dict__["lrp_cache"] = [op, w_pos, None, _pos(None if b is None else b.detach())]

    def apply(self, module: RuleModule, x: torch.Tensor, carries_relevance: bool) -> torch.Tensor:
        cache = module.__dict__["lrp_cache"]
        op, w_pos, w_neg, b_pos = cache
        w, b = module.inner.weight, module.inner.bias
        if w_neg is None:
            w_neg = cache[2] = _weights(module)[1].detach() - w_pos
        return _ZPlusFn.apply(x, op, w, b, w_pos, w_neg, b_pos, self.stabilizer, module.fuse_relu)


@dataclass(frozen=True)
class AlphaBeta(_WeightRule):
    """LRP αβ with ``α − β = 1`` (default α=2, β=1)."""

    alpha: float = 2.0
    beta: float = 1.0
    stabilizer: float = 1e-6

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.beta < 0 or abs(self.alpha - self.beta - 1.0) > 1e-12:
            raise ConfigError(f"AlphaBeta needs alpha, beta >= 0 and alpha - beta == 1, got {self}")

    def prepare(self, module: RuleModule) -> None:
        op, w, b = _weights(module)
        w = w.detach()
        w_pos = w.clamp(min=0)
        b_pos = _pos(None if b is None else b.detach())
        b_neg = None if b is None or b_pos is None else b.detach() - b_pos
        module.__dict__["lrp_cache"] = (op, w_pos, w - w_pos, b_pos, b_neg)

    def apply(self, module: RuleModule, x: torch.Tensor, carries_relevance: bool) -> torch.Tensor:
        op, w_pos, w_neg, b_pos, b_neg = module.__dict__["lrp_cache"]
        w, b = module.inner.weight, module.inner.bias
        return _TwoTermFn.apply(
            x, op, w, b, w_pos, w_neg, b_pos, b_neg, self.stabilizer, self.alpha, -self.beta
        )


@dataclass(frozen=True)
class Gamma(_WeightRule):
    """Generalised LRP-γ (positive *and* negative parts boosted as in zennit)."""

    gamma: float = 0.25
    stabilizer: float = 1e-6

    def prepare(self, module: RuleModule) -> None:
        op, w, b = _weights(module)
        w = w.detach()
        w_a = w + self.gamma * w.clamp(min=0)
        w_b = w + self.gamma * w.clamp(max=0)
        b_a = b_b = None
        if b is not None:
            b = b.detach()
            b_a, b_b = b + self.gamma * b.clamp(min=0), b + self.gamma * b.clamp(max=0)
        module.__dict__["lrp_cache"] = (op, w_a, w_b, b_a, b_b)

    def apply(self, module: RuleModule, x: torch.Tensor, carries_relevance: bool) -> torch.Tensor:
        op, w_a, w_b, b_a, b_b = module.__dict__["lrp_cache"]
        w, b = module.inner.weight, module.inner.bias
        return _TwoTermFn.apply(x, op, w, b, w_a, w_b, b_a, b_b, self.stabilizer, None, None)


@dataclass(frozen=True)
class Flat(_WeightRule):
    """LRP flat: all weights 1, no bias; spreads relevance uniformly over the receptive field."""

    stabilizer: float = 1e-6
    direct: ClassVar[bool] = True
    fuses_relu: ClassVar[bool] = True
    _ones: ClassVar[bool] = True  # V is all ones (flat), which allows the channel-sum backward

    def prepare(self, module: RuleModule) -> None:
        op, w, _ = _weights(module)
        module.__dict__["lrp_cache"] = (op, torch.ones_like(w.detach()), None)

    def apply(self, module: RuleModule, x: torch.Tensor, carries_relevance: bool) -> torch.Tensor:
        op, v, c = module.__dict__["lrp_cache"]
        w, b = module.inner.weight, module.inner.bias
        return _FlatLikeFn.apply(x, op, w, b, v, c, self.stabilizer, self._ones, module.fuse_relu)


@dataclass(frozen=True)
class WSquare(Flat):
    """LRP w²: weights squared (bias squared in the denominator, as in zennit)."""

    _ones: ClassVar[bool] = False

    def prepare(self, module: RuleModule) -> None:
        op, w, b = _weights(module)
        module.__dict__["lrp_cache"] = (op, w.detach() ** 2, None if b is None else b.detach() ** 2)


def _as_bound(value: float | torch.Tensor) -> torch.Tensor:
    return value.detach().float() if isinstance(value, torch.Tensor) else torch.tensor(float(value))


@dataclass(frozen=True)
class ZBox(_WeightRule):
    """LRP z^B (bounded input): ``low``/``high`` are floats or tensors broadcastable to ``(1, C, H, W)``."""

    low: float | torch.Tensor = 0.0
    high: float | torch.Tensor = 1.0
    stabilizer: float = 1e-6
    direct: ClassVar[bool] = True

    def prepare(self, module: RuleModule) -> None:
        op, w, _ = _weights(module)
        module.__dict__["lrp_cache"] = (op, w.detach().clamp(min=0))

    def _bound(self, value: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = _as_bound(value).to(device=x.device, dtype=x.dtype)
        if t.ndim == 0:
            return t.expand(1, *x.shape[1:])
        try:
            return (
                torch.broadcast_to(t, (1, *x.shape[1:]))
                if t.shape[0] == 1
                else torch.broadcast_to(t, x.shape)
            )
        except RuntimeError as exc:
            raise ConfigError(
                f"ZBox bound of shape {tuple(t.shape)} does not broadcast to the input {tuple(x.shape)}"
            ) from exc

    def apply(self, module: RuleModule, x: torch.Tensor, carries_relevance: bool) -> torch.Tensor:
        op, w_pos = module.__dict__["lrp_cache"]
        low, high = self._bound(self.low, x), self._bound(self.high, x)
        return _ZBoxFn.apply(x, op, module.inner.weight, module.inner.bias, w_pos, low, high, self.stabilizer)

    def __repr__(self) -> str:
        return f"ZBox(low={self.low!r}, high={self.high!r}, stabilizer={self.stabilizer})"

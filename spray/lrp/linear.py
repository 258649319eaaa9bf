"""Rules for dense and convolutional layers that modify weights: z+, αβ, γ, flat, w² and z^B.

Each rule is one fused :class:`torch.autograd.Function` per layer: the modified forward is computed
once in the forward pass, only the ratio ``z / stab(z_mod)`` is saved, and the backward is one (or two)
input-VJPs through :class:`spray.lrp.kernels._LinearOp`.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from spray.errors import ConfigError
from spray.lrp.base import Rule, RuleModule
from spray.lrp.kernels import _LinearOp
from spray.lrp.numerics import _nonneg, _pos, _ratio, _ratio_nonneg_den, _scale_grad

__all__ = ["AlphaBeta", "Flat", "Gamma", "WSquare", "ZBox", "ZPlus"]


def _activate(z: torch.Tensor, act: Any) -> torch.Tensor:
    """Apply a fused activation (None, ``"relu"`` in place, or a module) to a layer's output."""
    if act is None:
        return z
    return z.relu_() if act == "relu" else act(z)


def _add_bias(t: torch.Tensor, b: torch.Tensor | None, op: _LinearOp, alpha: float = 1.0) -> torch.Tensor:
    """``t += alpha · b`` in place, ``b`` over the channel dimension (dim 1 for convs, last for dense)."""
    if b is None:
        return t
    view = b if op.kind == "linear" else b.reshape(-1, *([1] * (t.dim() - 2)))
    return t.add_(view.to(t.dtype), alpha=alpha)


class _ZPlusFn(torch.autograd.Function):
    """z+ rule (α1β0, zennit ``ZPlus``) fused with the layer's normal forward (and a following activation).

    ``R_in = x⁺ ⊙ W⁺ᵀ s + x⁻ ⊙ W⁻ᵀ s`` with ``s = R_out / stab(W⁺x⁺ + W⁻x⁻ + b⁺)`` and ``R_out = z ⊙ g``.
    For non-negative inputs (the usual post-ReLU case) this is one extra forward and one input-VJP.
    Inputs with negative values (after SiLU, GELU, Hardswish, a BatchNorm, ...) use
    ``W⁺x⁺ + W⁻x⁻ = (Wx + |W||x|) / 2``: one extra forward (``|W|`` on ``|x|``) instead of two, and the
    input-VJP ``(Wᵀs + sign(x) ⊙ |W|ᵀs) / 2``, which is ``W⁺ᵀs`` where ``x > 0`` and ``W⁻ᵀs`` where ``x < 0``.

    The denominator is a sum of non-negative terms, so ``stab`` is ``+ eps`` (two in-place passes).
    With a fused activation ``act`` (a ReLU, applied in place, or an activation with ``Pass``), the
    saved ratio is ``act(z) / stab(z⁺)``: the activation's relevance passes to ``z`` unchanged, so the
    activation needs no backward and saves nothing. The backward scales the saved ratio by ``g`` in
    place and runs one transposed convolution (two for mixed-sign inputs).
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        op: _LinearOp,
        w: torch.Tensor,
        b: torch.Tensor | None,
        w_pos: torch.Tensor,
        w_abs: Any,
        b_pos: torch.Tensor | None,
        eps: float,
        act: Any,
    ) -> torch.Tensor:
        x = op.shared_input(x, w)
        z = op.forward(x, w, b)
        mixed = not _nonneg(x)
        if mixed:
            w_abs = w_abs()
            zp = op.forward(x.abs(), w_abs, None).add_(z)
            _add_bias(zp, b, op, -1.0).mul_(0.5)
            _add_bias(zp, b_pos, op)
        else:
            zp = op.forward(x, w_pos, b_pos)
        z = _activate(z, act)
        ratio = _ratio_nonneg_den(z, zp, eps, z.dtype)
        if mixed:
            ctx.save_for_backward(ratio, x, w, w_abs)
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
        _, x, w, w_abs = saved
        a = op.input_vjp(s, w, ctx.shape)
        a.addcmul_(torch.sign(x).to(a.dtype), op.input_vjp(s, w_abs, ctx.shape)).mul_(0.5)
        return (a, *nones)


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
        x = op.shared_input(x, w)
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
    of ``s``, so the backward transposes a one-output-channel convolution. ``act`` fuses a following
    activation as in :class:`_ZPlusFn`.
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
        act: Any,
    ) -> torch.Tensor:
        z = _activate(op.forward(x, w, b), act)
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
            # the output features are the last dim of a Linear's output, also on (B, L, F) tokens
            dim = -1 if ctx.op.kind == "linear" else 1
            return (ctx.op.input_vjp(s.sum(dim, keepdim=True), v[:1], ctx.shape), *nones)
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


def _weights(module: RuleModule) -> tuple[_LinearOp, torch.Tensor, torch.Tensor | None]:
    inner = module.inner
    weight = getattr(inner, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise ConfigError(f"rule {module.rule!r} needs a layer with a weight, {module.path} has none")
    return _LinearOp(inner), weight, getattr(inner, "bias", None)


@dataclass(frozen=True)
class _WeightRule(Rule):
    needs_weight: ClassVar[bool] = True
    # These rules conserve relevance except where a modified denominator vanishes (z+ where no input
    # meets a positive weight but z != 0; αβ where a part is 0): properties of the rules, verified against
    # zennit in the tests, so the self-check does not hold their layers to conservation.
    conservative: ClassVar[bool] = False


@dataclass(frozen=True)
class ZPlus(_WeightRule):
    """LRP z+ (α1β0; negative inputs allowed as in zennit)."""

    stabilizer: float = 1e-6
    fuses_relu: ClassVar[bool] = True

    def prepare(self, module: RuleModule) -> None:
        op, w, b = _weights(module)
        w_pos = w.detach().clamp(min=0)
        # |W| is only used for inputs with negative entries; made on first use (it costs a weight copy)
        module.__dict__["lrp_cache"] = [op, w_pos, None, _pos(None if b is None else b.detach())]

    def _w_abs(self, module: RuleModule) -> torch.Tensor:
        cache = module.__dict__["lrp_cache"]
        if cache[2] is None:
            cache[2] = _weights(module)[1].detach().abs()
        w_abs: torch.Tensor = cache[2]
        return w_abs

    def apply(self, module: RuleModule, x: torch.Tensor, carries_relevance: bool) -> torch.Tensor:
        op, w_pos, _, b_pos = module.__dict__["lrp_cache"]
        w, b = module.inner.weight, module.inner.bias
        w_abs = functools.partial(self._w_abs, module)
        return _ZPlusFn.apply(x, op, w, b, w_pos, w_abs, b_pos, self.stabilizer, module.activation)


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
        return _FlatLikeFn.apply(x, op, w, b, v, c, self.stabilizer, self._ones, module.activation)


@dataclass(frozen=True)
class WSquare(Flat):
    """LRP w²: weights squared (bias squared in the denominator, as in zennit)."""

    _ones: ClassVar[bool] = False

    def prepare(self, module: RuleModule) -> None:
        op, w, b = _weights(module)
        module.__dict__["lrp_cache"] = (op, w.detach() ** 2, None if b is None else b.detach() ** 2)


def _as_bound(value: float | torch.Tensor) -> torch.Tensor:
    return value.detach().float() if isinstance(value, torch.Tensor) else torch.tensor(float(value))


def _warn_outside(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> None:
    """A WARNING when much of the first batch lies outside ZBox's bounds: the rule assumes every input value
    in [low, high] (the default box [0, 1] does not hold normalised inputs), and its map is wrong otherwise."""
    outside = float(((x < low - 1e-6) | (x > high + 1e-6)).float().mean())
    if outside > 0.01:
        logging.getLogger("spray.lrp").warning(
            "ZBox (the first layer's rule of the Box composites): %.0f %% of the first batch's input values lie "
            "outside its bounds [low, high]; give composite_kwargs low/high as the lowest and highest input the "
            "model sees (after normalisation), or its map is not the z^B rule's",
            100 * outside,
        )


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
        if not module.__dict__.get("lrp_bounds_checked"):
            module.__dict__["lrp_bounds_checked"] = True
            _warn_outside(x.detach(), low, high)
        return _ZBoxFn.apply(x, op, module.inner.weight, module.inner.bias, w_pos, low, high, self.stabilizer)

    def __repr__(self) -> str:
        return f"ZBox(low={self.low!r}, high={self.high!r}, stabilizer={self.stabilizer})"

"""Rules for normalisation layers: LayerNorm, GroupNorm and RMSNorm with their scale held constant.

AttnLRP (Achtibat et al., ICML 2024) explains a normalisation by the identity rule on its division: the
standard deviation (or root mean square) is treated as a constant, so the layer becomes the linear map
``x ↦ w ⊙ (x − mean(x)) / σ + b``, and the gradient×input of that map conserves the relevance that does
not go to the bias ``b``. The backward is therefore ``g_in = (h − mean(h)) / σ`` with ``h = w ⊙ g``
(no mean term for RMSNorm): three element-wise passes, and only ``1/σ`` (one number per normalised
group) is saved.

The Functions here are applied to ``F.layer_norm``, ``F.group_norm`` and ``F.rms_norm`` wherever they run
in spray's forward pass (:mod:`spray.lrp.functional`), so every module built on them is covered
(``nn.LayerNorm``, channel LayerNorms that permute first, timm's norms). :class:`Normalize` is the rule
the composites give those modules; it runs the module's own forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from spray.lrp.activations import class_names
from spray.lrp.base import Rule, RuleModule, _stab_scale

__all__ = ["NORM_TYPES", "HeldNorms", "Normalize", "is_normalization", "is_response_norm"]

NORM_TYPES: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


#: Normalisations that divide by a norm they compute themselves (by qualified class name: nothing imported).
HELD_NORM_CLASS_NAMES: frozenset[str] = frozenset({"timm.layers.grn.GlobalResponseNorm"})


def is_response_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a normalisation that takes :class:`HeldNorms` (timm's ``GlobalResponseNorm``)."""
    return bool(class_names(module) & HELD_NORM_CLASS_NAMES)


#: timm's RMSNorm classes, by name (not subclasses of ``nn.RMSNorm``; they compute ``x / rms(x) * weight``
#: over the last dimensions, or the channels for the 2-D ones, as ``nn.RMSNorm`` does).
TIMM_RMS_NORMS = frozenset({"RmsNorm", "RmsNorm2d", "RmsNormFp32", "RmsNorm2dFp32"})


def is_normalization(module: nn.Module) -> bool:
    """Whether ``module`` is a LayerNorm/GroupNorm/RMSNorm (or a subclass, e.g. a channel LayerNorm), or one of
    timm's RMSNorms."""
    return isinstance(module, NORM_TYPES) or (
        type(module).__name__ in TIMM_RMS_NORMS and type(module).__module__.startswith("timm.")
    )


def _affine(h: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """``h ⊙ weight`` (``weight`` covers the trailing, normalised dimensions); a new tensor either way."""
    return h * weight.to(h.dtype) if weight is not None else h.clone()


class _LayerNormFn(torch.autograd.Function):
    """``F.layer_norm`` forward; backward with the standard deviation held constant."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        shape: Sequence[int],
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        eps: float,
    ) -> torch.Tensor:
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()  # as autocast runs layer_norm: in float32, with a float32 result
        w = None if weight is None else weight.to(x.dtype)
        b = None if bias is None else bias.to(x.dtype)
        y, _, rstd = torch.native_layer_norm(x, list(shape), w, b, eps)
        ctx.save_for_backward(rstd, weight)
        ctx.dims = tuple(range(x.dim() - len(shape), x.dim()))
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        rstd, weight = ctx.saved_tensors
        h = _affine(g, weight)
        h -= h.mean(ctx.dims, keepdim=True)
        return h.mul_(rstd.to(h.dtype)), None, None, None, None


class _GroupNormFn(torch.autograd.Function):
    """``F.group_norm`` forward; backward with each group's standard deviation held constant."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        groups: int,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        eps: float,
    ) -> torch.Tensor:
        n, c = int(x.shape[0]), int(x.shape[1])
        w = None if weight is None else weight.to(x.dtype)
        b = None if bias is None else bias.to(x.dtype)
        y, _, rstd = torch.native_group_norm(x.contiguous(), w, b, n, c, x[0, 0].numel(), groups, eps)
        ctx.save_for_backward(rstd, weight)
        ctx.groups = groups
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        rstd, weight = ctx.saved_tensors
        shape = g.shape
        h = g * weight.to(g.dtype).reshape(1, -1, *([1] * (g.dim() - 2))) if weight is not None else g.clone()
        h = h.contiguous().view(shape[0], ctx.groups, -1)
        h -= h.mean(2, keepdim=True)
        return h.mul_(rstd.to(h.dtype)[..., None]).view(shape), None, None, None, None


class _RMSNormFn(torch.autograd.Function):
    """``F.rms_norm`` forward; backward with the root mean square held constant."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, shape: Sequence[int], weight: torch.Tensor | None, eps: float | None
    ) -> torch.Tensor:
        dims = tuple(range(x.dim() - len(shape), x.dim()))
        e = torch.finfo(x.dtype).eps if eps is None else eps
        rstd = torch.rsqrt(x.float().pow(2).mean(dims, keepdim=True).add_(e)).to(x.dtype)
        y = x * rstd
        if weight is not None:
            y = y * weight.to(x.dtype)
        ctx.save_for_backward(rstd, weight)
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        rstd, weight = ctx.saved_tensors
        return _affine(g, weight).mul_(rstd.to(g.dtype)), None, None, None


class _L2NormalizeFn(torch.autograd.Function):
    """``F.normalize`` forward; backward with the norm held constant (a cosine attention's q and k)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float, dim: int, eps: float) -> torch.Tensor:
        denom = x.norm(p, dim, keepdim=True).clamp_min(eps)
        ctx.save_for_backward(denom)
        return x / denom.expand_as(x)  # F.normalize's own arithmetic: the same values

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (denom,) = ctx.saved_tensors
        return g / denom, None, None, None


def normalize(x: torch.Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12) -> torch.Tensor:
    """``F.normalize`` with the backward of AttnLRP's normalisation rule (the norm constant)."""
    return _L2NormalizeFn.apply(x, p, dim, eps)


def layer_norm(
    x: torch.Tensor,
    shape: Sequence[int],
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``F.layer_norm`` with the AttnLRP backward (standard deviation constant)."""
    return _LayerNormFn.apply(x, tuple(shape), weight, bias, eps)


def group_norm(
    x: torch.Tensor,
    groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``F.group_norm`` with the AttnLRP backward (each group's standard deviation constant)."""
    return _GroupNormFn.apply(x, groups, weight, bias, eps)


def rms_norm(
    x: torch.Tensor, shape: Sequence[int], weight: torch.Tensor | None = None, eps: float | None = None
) -> torch.Tensor:
    """``F.rms_norm`` with the AttnLRP backward (root mean square constant)."""
    return _RMSNormFn.apply(x, tuple(shape), weight, eps)


@dataclass(frozen=True)
class Normalize(Rule):
    """AttnLRP's rule for LayerNorm/GroupNorm/RMSNorm: the scale (σ) is held constant, the rest is linear.

    Runs the module's own forward with spray's functional rules active, so any module whose forward calls
    ``F.layer_norm``, ``F.group_norm`` or ``F.rms_norm`` is covered (channel LayerNorms that permute
    first included). A module that normalises by hand (``x / x.std()``) is not; the self-check on the
    first batch refuses it.
    """

    def apply(self, module: RuleModule, x: torch.Tensor, carries_relevance: bool) -> torch.Tensor:
        from spray.lrp.functional import functional_rules  # functional imports this module

        with functional_rules(module.__dict__["context"]):
            return module.inner(x)


#: The functions that compute a vector norm (a ``Tensor.norm`` call comes through as ``Tensor.norm``).
_NORM_FUNCTIONS = frozenset({torch.Tensor.norm, torch.norm, torch.linalg.vector_norm, torch.linalg.norm})


class _HeldNorms(TorchFunctionMode):
    """Detaches every vector norm computed while active, so what is divided by it becomes a constant scale."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        return out.detach() if func in _NORM_FUNCTIONS and isinstance(out, torch.Tensor) else out


@dataclass(frozen=True)
class HeldNorms(Rule):
    """LRP-ε on a module whose forward divides by vector norms it computes itself (``x.norm(...)``), with those
    norms held constant: AttnLRP's rule for a normalisation, for layers that do not call ``F.layer_norm``.

    ConvNeXt-V2's global response normalisation ``x + γ ⊙ x ⊙ N(x) + β`` (``N(x)``: each channel's spatial
    L2 norm over their mean) is then the element-wise map ``x ⊙ (1 + γ ⊙ N) + β`` with ``N`` fixed, whose
    ε rule conserves the relevance that does not go to ``β``.
    """

    epsilon: float = 1e-6

    def apply(self, module: RuleModule, x: torch.Tensor, carries_relevance: bool) -> torch.Tensor:
        with _HeldNorms():
            out = module.inner(x)
        return _stab_scale(out, self.epsilon, module.activation)

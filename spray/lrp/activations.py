"""Rules for element-wise activations: ``Pass`` (relevance passed unchanged, zennit's rule for activations
and AttnLRP's identity rule for GELU/SiLU), and which module types count as activations and as gates.

A *gate* is an activation whose output multiplies another tensor (the sigmoid of a squeeze-and-excitation
block): :func:`spray.lrp.functional` sends the whole relevance of such a product to the gated tensor.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from spray.errors import ConfigError
from spray.lrp.base import Rule, RuleModule
from spray.lrp.numerics import _scale_grad

__all__ = [
    "ACTIVATION_TYPES",
    "Pass",
    "class_names",
    "is_activation",
    "is_composite_activation",
    "is_gate",
    "mark_gate",
]

# Element-wise activations of torch.nn that get ``Pass`` (zennit's ``Activation`` list, less ReLU, whose
# plain gradient already is ``Pass``, and less MultiheadAttention, which is not element-wise).
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.CELU,
    nn.ELU,
    nn.GELU,
    nn.Hardshrink,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.Hardtanh,  # includes ReLU6
    nn.LeakyReLU,
    nn.LogSigmoid,
    nn.Mish,
    nn.PReLU,
    nn.RReLU,
    nn.SELU,
    nn.Sigmoid,
    nn.SiLU,
    nn.Softplus,
    nn.Softshrink,
    nn.Softsign,
    nn.Tanh,
    nn.Tanhshrink,
    nn.Threshold,
)
# Activation classes of other libraries, by qualified name (no import of those libraries needed).
_ACTIVATION_MODULES = ("timm.layers.activations", "timm.layers.activations_me")
# Element-wise activations that other libraries build from a child module, by qualified class name: the
# whole module takes ``Pass`` (MetaFormer's StarReLU ``s · relu(x)² + b`` and SquaredReLU around an
# ``nn.ReLU``: PoolFormer-v2, ConvFormer, CAFormer).
_ACTIVATION_CLASS_NAMES = frozenset({"timm.models.metaformer.StarReLU", "timm.models.metaformer.SquaredReLU"})
_GATE_NAMES = frozenset(
    {"Sigmoid", "HardSigmoid", "HardSigmoidMe", "Hardsigmoid"}  # class names inside those modules
)
_GATE_ATTR = "_spray_gate"


def class_names(module: nn.Module) -> set[str]:
    """``"package.module.Class"`` for the class of ``module`` and every base class."""
    return {f"{c.__module__}.{c.__qualname__}" for c in type(module).__mro__}


def is_activation(module: nn.Module) -> bool:
    """Whether ``module`` is an element-wise activation that takes ``Pass``."""
    if isinstance(module, ACTIVATION_TYPES) or is_composite_activation(module):
        return True
    return type(module).__module__ in _ACTIVATION_MODULES and next(module.children(), None) is None


def is_composite_activation(module: nn.Module) -> bool:
    """Whether ``module`` is an element-wise activation built from a child module (it takes ``Pass`` as one
    unit, its child none of its own)."""
    return bool(class_names(module) & _ACTIVATION_CLASS_NAMES)


def is_gate(module: nn.Module) -> bool:
    """Whether ``module`` is a gating activation (sigmoid, hard sigmoid)."""
    if isinstance(module, (nn.Sigmoid, nn.Hardsigmoid)):
        return True
    return type(module).__module__ in _ACTIVATION_MODULES and type(module).__name__ in _GATE_NAMES


def mark_gate(t: torch.Tensor) -> torch.Tensor:
    """Tag ``t`` as a gate: a product with it sends all relevance to the other factor."""
    setattr(t, _GATE_ATTR, True)
    return t


def gated(t: Any) -> bool:
    """Whether ``t`` is a tensor tagged by :func:`mark_gate`."""
    return isinstance(t, torch.Tensor) and bool(getattr(t, _GATE_ATTR, False))


class _PassFn(torch.autograd.Function):
    """Element-wise module with relevance passed unchanged (zennit ``Pass``).

    In the gradient frame ``R_in = R_out`` means ``g_in = g_out · y / x`` (0 where ``x == 0``, and where
    ``y / x`` overflows, i.e. ``|x|`` below float32's normal range). Before
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
            # y / x, and 0 where x == 0 (0/0 or c/0) or where the quotient overflows (|x| denormal)
            ratio = torch.div(y.float(), x.float()).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
            ctx.save_for_backward(ratio)
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        if ctx.carries_relevance:
            return g, None, None
        (ratio,) = ctx.saved_tensors
        return _scale_grad(g, ratio), None, None


@dataclass(frozen=True)
class Pass(Rule):
    """Pass relevance through unchanged; only for element-wise modules (output shape == input shape).

    In the gradient×input frame the relevance of an input that is exactly 0 is 0, so where ``x == 0``
    and ``f(0) != 0`` (a BatchNorm that cannot be folded, after a ReLU) the relevance of that entry is
    dropped; zennit hands it on to the layer below. See docs/lrp.md.
    """

    gradient_frame_only: ClassVar[bool] = False

    def run_elementwise(self, module: RuleModule, x: torch.Tensor) -> torch.Tensor:
        """``module.inner(x)`` without autograd, checked to be element-wise and to leave ``x`` intact.

        The rule needs ``x`` after the module ran. A module that writes into its input (``inplace=True``
        that canonization could not switch off, ``x.clamp_()`` in a custom forward) is found on its first
        call, which runs on a copy, and gets a copy from then on.
        """
        mutates = module.__dict__.get("lrp_mutates")
        arg = x.clone() if mutates is None or mutates else x
        version = arg._version
        with torch.no_grad():
            y = module.inner(arg)
        if mutates is None:
            module.__dict__["lrp_mutates"] = arg._version != version
        if y.shape != x.shape:
            raise ConfigError(
                f"Pass() on {module.path} ({type(module.inner).__name__}) needs an element-wise module, "
                f"but it maps {tuple(x.shape)} to {tuple(y.shape)}"
            )
        return y

    def apply(self, module: RuleModule, x: torch.Tensor, carries_relevance: bool) -> torch.Tensor:
        if not x.requires_grad:
            y = self.run_elementwise(module, x)
        else:
            y = _PassFn.apply(x, functools.partial(self.run_elementwise, module), carries_relevance)
        return mark_gate(y) if is_gate(module.inner) else y

"""The machinery every rule shares: the rule base class, the wrapper module and the per-call context.

:class:`RuleModule` replaces a layer of the canonized copy; its :class:`Rule` runs the layer's forward
with the rule's backward attached. :class:`Gradient`, :class:`Epsilon` and :class:`Norm` work on any
module (they use the module's own backward), so they live here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from spray.lrp.fused import compiled, fused_active
from spray.lrp.numerics import _scale_grad, _scaled_self_ratio

__all__ = ["Epsilon", "Gradient", "Norm", "Rule", "RuleContext", "RuleModule"]


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
        return _scaled_self_ratio(g, z, ctx.eps), None


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
        return _scaled_self_ratio(g, y, ctx.eps, nonneg=True), None


class _StabScaleAct(torch.autograd.Function):
    """``act(z)`` fused with the ε/Norm rescale of the layer that produced ``z`` (``act`` gets ``Pass``).

    The relevance of ``act``'s output passes to ``z`` unchanged, and ε then divides it by ``stab(z)``,
    so the backward is ``g · act(z) / stab(z)``: one saved tensor and no separate activation pass.
    """

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, eps: float, act: Any) -> torch.Tensor:
        y = act(z)
        if fused_active():
            ctx.save_for_backward(compiled("ratio")(y, z, eps).to(y.dtype))
            return y
        d = z.float().abs().add_(eps).copysign_(z)  # stab(z) = z + eps·sign(z)
        ctx.save_for_backward(torch.div(y.float(), d, out=d).to(y.dtype))
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (ratio,) = ctx.saved_tensors
        return _scale_grad(g, ratio), None, None


def _stab_scale(z: torch.Tensor, eps: float, act: Any) -> torch.Tensor:
    """The ε/Norm rescale of ``z``, with the layer's fused activation (None, "relu" or a module)."""
    if act is None:
        return _StabScale.apply(z, eps)
    if act == "relu":
        return _StabScaleReLU.apply(z, eps)
    return _StabScaleAct.apply(z, eps, act)


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
        gs = _scaled_self_ratio(g, y, ctx.eps, nonneg=True)
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


# --------------------------------------------------------------------------------------------------
# per-call state shared by all wrapped modules of one Explainer


class RuleContext:
    """Book-keeping of one forward pass: which rule layers ran, in which order.

    The engine needs the first rule layer (the one in relevance-out mode) to be the first rule layer
    that runs, and to run once; otherwise the gradient and relevance frames would be mixed.
    """

    def __init__(self, has_first: bool = True) -> None:
        self.has_first = has_first  # False: no relevance-out layer, the backward is a gradient throughout
        self.first_done: bool = False
        self.order: list[tuple[str, bool]] = []  # (module path, rule needs the gradient frame)
        self.rebound: list[str] = []  # in-place operations on a rule's output, run out of place
        self.input_readers: list[str] = []  # rule layers after the input layer that read the model's input

    @property
    def relevance_frame(self) -> bool:
        """Whether the backward pass carries relevance (not a gradient) at the point the forward has reached."""
        return self.has_first and not self.first_done

    def reset(self) -> None:
        """Forget the previous forward pass."""
        self.first_done = False
        self.order.clear()
        self.rebound.clear()
        self.input_readers.clear()

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
        # plain attributes, not submodules: the context is shared by all wrappers of one model, and a
        # fused activation (set by spray.lrp.fusion) stays registered where the model had it
        self.__dict__["context"] = context
        self.__dict__["fuse_act"] = None
        self.rule.prepare(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx: RuleContext = self.__dict__["context"]
        carries_relevance = ctx.relevance_frame
        ctx.visit(self.path, self.is_first, self.rule.gradient_frame_only)
        if (
            ctx.has_first
            and not carries_relevance
            and x.is_leaf
            and x.requires_grad
            and not isinstance(x, nn.Parameter)
        ):
            # after the input layer ran, a layer reads the model's input (a leaf the explainer made, not a weight)
            ctx.input_readers.append(self.path)
        if self.is_first and not self.rule.direct and x.requires_grad:
            x = _TimesInput.apply(x)
        return self.rule.apply(self, x, carries_relevance)

    @property
    def activation(self) -> Any:
        """The activation this layer applies to its output itself: None, ``"relu"`` or a module."""
        return "relu" if self.fuse_relu else self.__dict__.get("fuse_act")

    def __getattr__(self, name: str) -> Any:
        # Code that reads a wrapped layer's attributes (``block.qkv.weight`` passed to a functional
        # attention, ``out_proj.bias`` in nn.MultiheadAttention) must keep working on the copy.
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self._modules.get("inner")
            if inner is None or name == "inner":
                raise
            return getattr(inner, name)

    def extra_repr(self) -> str:
        act = self.activation
        fused = "" if act is None else f", {act if isinstance(act, str) else type(act).__name__} fused"
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
        ``apply`` honours ``module.activation`` (applies a following ReLU or ``Pass`` activation itself,
        so that the activation is folded into the rule's saved ratio).
    conservative : bool
        With zero biases and a vanishing stabiliser the rule hands on exactly the relevance it receives
        at every layer, so the engine's self-check on the first batch holds the layer to conservation.
        False for the weight-modifying rules (z+, αβ, γ, flat, w², z^B): they are exact except where a
        modified denominator vanishes, which is a property of the rule, not a fault.
    """

    direct: ClassVar[bool] = False
    conservative: ClassVar[bool] = True
    needs_weight: ClassVar[bool] = False
    gradient_frame_only: ClassVar[bool] = True
    fuses_relu: ClassVar[bool] = False

    def prepare(self, module: RuleModule) -> None:
        """Precompute what the rule needs (modified weights) once, at setup."""

    def apply(self, module: RuleModule, x: torch.Tensor, carries_relevance: bool) -> torch.Tensor:
        """Run the forward of ``module.inner`` on ``x`` with this rule's backward attached."""
        raise NotImplementedError


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
        return _stab_scale(module.inner(x), self.epsilon, module.activation)


@dataclass(frozen=True)
class Norm(Rule):
    """Normalise by the output and weight by input contribution (zennit ``Norm``).

    The ε rule with a pure stabiliser; used for average pooling and residual sums.
    """

    stabilizer: float = 1e-6
    fuses_relu: ClassVar[bool] = True

    def apply(self, module: RuleModule, x: torch.Tensor, carries_relevance: bool) -> torch.Tensor:
        return _stab_scale(module.inner(x), self.stabilizer, module.activation)

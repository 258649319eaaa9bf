"""LRP rules for functional operations inside ``forward()``: products, attention, activations, norms.

Module rules cannot see what a model computes in its own ``forward()``: ``scale * x`` in a
squeeze-and-excitation block, ``q @ k.transpose(-2, -1)`` and ``softmax`` in an attention, ``F.gelu``,
``F.layer_norm`` after a permute. In the gradient×input frame most functional operations are right as
they are (additions, concatenation, indexing, reshapes, ReLU, pooling, multiplication by a constant),
but a few are not. :class:`FunctionalRules` is a ``TorchFunctionMode`` that is active during spray's
forward pass and gives exactly those their rule:

* **product of two activations** (``*``, ``torch.mul``, ``@``, ``matmul``, ``bmm``, ``tensordot``,
  two-operand ``einsum``, and the product in ``baddbmm``/``addbmm``/``addmm``): AttnLRP's uniform rule, half of the relevance to each factor (the plain gradient would
  give each factor all of it). If one factor is a *gate* (the output of a sigmoid or hard sigmoid,
  see :func:`spray.lrp.activations.mark_gate`), the **gate rule**: all relevance to the other factor and
  none to the gate (the gate acts as a weight, as in squeeze-and-excitation).
* **``F.scaled_dot_product_attention``**: ``softmax(q kᵀ) v`` with the uniform rule on both matmuls,
  i.e. the gradient at ``q`` and ``k`` divided by 4 and at ``v`` by 2. ``attention="cp"`` (CP-LRP)
  instead treats the attention weights as constants: no relevance reaches ``q`` and ``k``.
* **softmax**: its plain gradient is AttnLRP's softmax rule ``R_in = x ⊙ (R_out − s·ΣR_out)`` (not
  conservative: the self-check does not expect conservation across it). Under ``attention="cp"`` a
  softmax output that then multiplies an activation is treated as a constant. Under either rule a softmax
  over a dimension other than the last (the branch weights of a selective-kernel or split attention:
  ``x_paths * softmax(a, dim=1)``) gets the gate rule in an *element-wise* product: it weighs the branches as
  a sigmoid gate weighs channels, and its plain gradient would lose most of the relevance. Attention
  normalises over the last dimension (the keys; MobileViTv2's element-wise ``key * softmax(query)`` too),
  so its softmax keeps the rule above.
* **element-wise non-linearities** (``F.gelu``, ``F.silu``, ``torch.sigmoid``, ``tanh``, ``F.hardswish``,
  ...): the identity rule (``Pass``), also for their in-place forms, which run out of place and copy the
  result into the input tensor, so the rule still sees the input.
* **normalisations** (``F.layer_norm``, ``F.group_norm``, ``F.rms_norm``, and ``F.normalize``, e.g. the
  cosine attention of SwinV2): the scale held constant (:mod:`spray.lrp.normalization`; its plain gradient
  would take all relevance out of ``q`` and ``k``, since a vector's direction does not scale with it);
  ``F.batch_norm`` in eval mode: ``Pass`` (zennit's rule for BN).

Operations on tensors that do not require a gradient, and everything that runs with gradients off
(inside the rules' own Functions), pass through untouched.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from spray.lrp.activations import _PassFn, gated, mark_gate
from spray.lrp.base import RuleContext
from spray.lrp.normalization import group_norm, layer_norm, normalize, rms_norm

__all__ = ["ATTENTION_RULES", "FunctionalRules", "functional_rules", "scale_gradient"]

ATTENTION_RULES = ("attnlrp", "cp")
_ATTENTION_ATTR = "_spray_attention"
# a softmax output: held constant where it weighs activations element-wise (see the module docstring)
_SOFTMAX_ATTR = "_spray_softmax"


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the backward multiplies the gradient by ``factor``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        return g * ctx.factor, None


def scale_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` whose gradient is multiplied by ``factor`` in the backward (the uniform rule's split)."""
    return _ScaleGrad.apply(x, factor) if _grad(x) else x


def _grad(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.requires_grad


def _custom_view_error(err: RuntimeError) -> bool:
    """Whether ``err`` is autograd refusing an in-place change of a view made inside a custom Function (an
    LRP rule's identity forward returns its input as a view), or of any view of such a view."""
    text = str(err)
    return "is being modified inplace" in text and "custom Function" in text


def _bound(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """The call's arguments by parameter name, or None where the signature is not introspectable."""
    try:
        bound = inspect.signature(func).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return None
    bound.apply_defaults()
    return dict(bound.arguments)


# ops that only reshape, broadcast or select: their output of a gate (or of a softmax) is one too
_SHAPE_OPS = frozenset(
    {
        torch.Tensor.view, torch.Tensor.reshape, torch.reshape, torch.Tensor.expand, torch.Tensor.expand_as,
        torch.Tensor.unsqueeze, torch.unsqueeze, torch.Tensor.squeeze, torch.squeeze, torch.Tensor.flatten,
        torch.flatten, torch.Tensor.permute, torch.permute, torch.Tensor.transpose, torch.transpose,
        torch.Tensor.__getitem__, torch.Tensor.contiguous, torch.Tensor.repeat, torch.broadcast_to,
    }
)  # fmt: skip

# element-wise non-linearities (the identity rule); sigmoids are gates
_GATES = {torch.sigmoid, torch.Tensor.sigmoid, F.sigmoid, F.hardsigmoid}
_ELEMENTWISE = {
    F.gelu,
    F.silu,
    F.mish,
    F.hardswish,
    F.elu,
    F.selu,
    F.celu,
    F.leaky_relu,
    F.relu6,
    F.hardtanh,
    F.softplus,
    F.logsigmoid,
    F.tanh,
    torch.tanh,
    torch.Tensor.tanh,
    *_GATES,
}
# in-place forms and their out-of-place equivalents
_INPLACE = {
    torch.Tensor.sigmoid_: torch.Tensor.sigmoid,
    torch.Tensor.tanh_: torch.Tensor.tanh,
    torch.sigmoid_: torch.sigmoid,
    torch.tanh_: torch.tanh,
    F.elu_: F.elu,
    F.leaky_relu_: F.leaky_relu,
    F.hardtanh_: F.hardtanh,
}
_ELEMENTWISE_PRODUCTS = {torch.mul, torch.Tensor.mul}
_PRODUCTS = {
    *_ELEMENTWISE_PRODUCTS,
    torch.matmul,
    torch.Tensor.matmul,
    torch.bmm,
    torch.Tensor.bmm,
    torch.tensordot,
}
# ``input + product``: baddbmm(zeros, q, kᵀ) in attention written for speed (the product is the 2nd and 3rd operand)
_ADDED_PRODUCTS = {torch.baddbmm, torch.Tensor.baddbmm, torch.addbmm, torch.Tensor.addbmm}
_ADDED_PRODUCTS |= {torch.addmm, torch.Tensor.addmm}
# in-place arithmetic and its out-of-place forms (``x += y`` reaches the mode as ``Tensor.add_``)
_INPLACE_ARITHMETIC = {
    torch.Tensor.add_: torch.Tensor.add,
    torch.Tensor.sub_: torch.Tensor.sub,
    torch.Tensor.mul_: torch.Tensor.mul,
    torch.Tensor.div_: torch.Tensor.div,
}
# in-place ReLU and clamps and their out-of-place forms (a ReLU passes relevance as its gradient does, so
# only the in-place write on a rule's output needs help; ``F.relu_`` is ``torch.relu_``)
_INPLACE_ARITHMETIC |= {
    torch.relu_: torch.relu,
    torch.Tensor.relu_: torch.Tensor.relu,
    torch.clamp_: torch.clamp,
    torch.Tensor.clamp_: torch.Tensor.clamp,
    torch.clamp_min_: torch.clamp_min,
    torch.Tensor.clamp_min_: torch.Tensor.clamp_min,
}
# functions with an ``inplace`` flag that no rule of this module handles otherwise
_INPLACE_FLAG = {F.relu, F.threshold}
_SOFTMAX = {F.softmax, torch.softmax, torch.Tensor.softmax, F.log_softmax, torch.log_softmax}
_SOFTMAX |= {torch.Tensor.log_softmax}
_BRANCH_SOFTMAX = {F.softmax, torch.softmax, torch.Tensor.softmax}


def _carry_marks(source: Any, out: torch.Tensor) -> None:
    """Give a reshaped, broadcast or selected ``out`` the marks of its ``source`` (gate, softmax, CP-LRP's
    attention weights): SE's ``.view(b, c, 1, 1)``, ECA's ``expand_as``, a split attention's ``reshape``."""
    if gated(source):
        mark_gate(out)
    for attr in (_SOFTMAX_ATTR, _ATTENTION_ATTR):
        if getattr(source, attr, False):
            setattr(out, attr, True)


class FunctionalRules(TorchFunctionMode):
    """Applies spray's rules to functional operations during a forward pass (see the module docstring).

    Parameters
    ----------
    context : RuleContext
        The Explainer's context: tells whether the backward carries relevance or a gradient at the point
        the forward pass has reached (before/after the first rule layer).
    attention : {"attnlrp", "cp"}
        The rule for attention: AttnLRP (uniform rule on the matmuls, softmax by its gradient) or CP-LRP
        (attention weights held constant).
    recorder : callable, optional
        Called with the name of every operation whose rule is not conservative (softmax), for the
        self-check.
    watcher : callable, optional
        ``watcher(tensor, "in" | "out")`` returns an alias of a tensor entering or leaving a softmax or
        ``scaled_dot_product_attention`` whose relevance the self-check counts as that operation's own; with
        it, those operations are measured instead of passed to ``recorder``, so that only their own change of
        relevance is exempt from conservation, not the rest of the code around them.
    """

    def __init__(
        self,
        context: RuleContext,
        attention: str = "attnlrp",
        recorder: Callable[[str], None] | None = None,
        watcher: Callable[[torch.Tensor, str], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if attention not in ATTENTION_RULES:
            raise ValueError(f"attention must be one of {ATTENTION_RULES}, got {attention!r}")
        self.context = context
        self.attention = attention
        self.recorder = recorder
        self.watcher = watcher
        self._handlers: dict[Any, Callable[..., Any]] = {
            **{f: self._product for f in _PRODUCTS},
            **{f: self._added_product for f in _ADDED_PRODUCTS},
            torch.einsum: self._einsum,
            F.scaled_dot_product_attention: self._sdpa,
            **{f: self._softmax for f in _SOFTMAX},
            **{f: self._elementwise for f in (*_ELEMENTWISE, *_INPLACE)},
            F.layer_norm: self._layer_norm,
            F.group_norm: self._group_norm,
            F.rms_norm: self._rms_norm,
            F.normalize: self._normalize,
            F.batch_norm: self._batch_norm,
            **{f: self._inplace_on_rule_output for f in _INPLACE_ARITHMETIC},
            **{f: self._inplace_flag for f in _INPLACE_FLAG},
        }

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        handler = self._handlers.get(func)
        if handler is None or not torch.is_grad_enabled():
            out = func(*args, **kwargs)
            # a gate reshaped for its product (SE's .view(b, c, 1, 1), ECA's expand_as) is still a gate
            if func in _SHAPE_OPS and args and isinstance(out, torch.Tensor):
                _carry_marks(args[0], out)
            return out
        return handler(func, args, kwargs)

    def _record(self, op: str) -> None:
        if self.recorder is not None:
            self.recorder(op)

    # products ------------------------------------------------------------------------------------

    def _factors(self, a: Any, b: Any, elementwise: bool = False) -> tuple[Any, Any]:
        """The two factors of a product with the gate, CP-LRP or uniform rule applied."""
        if not (_grad(a) and _grad(b)):
            return a, b
        for t, other in ((a, b), (b, a)):
            constant = (
                gated(t)
                or (self.attention == "cp" and bool(getattr(t, _ATTENTION_ATTR, False)))
                or (elementwise and bool(getattr(t, _SOFTMAX_ATTR, False)))
            )
            # a watched softmax was measured where it ran: only an unwatched one exempts its module
            branch_in_matmul = getattr(t, _SOFTMAX_ATTR, False) and not elementwise and self.attention != "cp"
            if branch_in_matmul and self.watcher is None:
                self._record("softmax over branches in a matrix product")
            if constant and not gated(other):
                return (t.detach(), other) if t is a else (other, t.detach())
        return scale_gradient(a, 0.5), scale_gradient(b, 0.5)

    def _product(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if len(args) < 2:
            return func(*args, **kwargs)
        a, b = self._factors(args[0], args[1], elementwise=func in _ELEMENTWISE_PRODUCTS)
        return func(a, b, *args[2:], **kwargs)

    def _added_product(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if len(args) < 3:  # operands by keyword: the plain gradient, which the self-check judges
            return func(*args, **kwargs)
        return func(args[0], *self._factors(args[1], args[2]), *args[3:], **kwargs)

    def _einsum(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        operands = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
        if len(operands) != 2:
            return func(*args, **kwargs)
        return func(args[0], *self._factors(*operands), **kwargs)

    def _sdpa(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        bound = _bound(func, args, kwargs) or {}
        q, k, v = bound.get("query"), bound.get("key"), bound.get("value")
        if q is None or k is None or v is None:  # positional-only builtin signature
            q, k, v, rest = args[0], args[1], args[2], args[3:]
        else:
            rest = ()
            kwargs = {n: val for n, val in bound.items() if n not in ("query", "key", "value")}
        watch = self.watcher
        if self.attention == "cp":
            q, k = q.detach(), k.detach()
        elif _grad(q) or _grad(k):
            if watch is None:
                self._record("softmax in scaled_dot_product_attention")
            else:
                q, k, v = watch(q, "in"), watch(k, "in"), watch(v, "in")
            q, k, v = scale_gradient(q, 0.25), scale_gradient(k, 0.25), scale_gradient(v, 0.5)
            out = func(q, k, v, *rest, **kwargs)
            return out if watch is None else watch(out, "out")
        else:
            v = scale_gradient(v, 0.5)
        return func(q, k, v, *rest, **kwargs)

    def _softmax(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # the input by position or by keyword (torch.softmax(input=a, dim=-1) reaches the mode with no args)
        x = args[0] if args else kwargs.get("input")
        if not (isinstance(x, torch.Tensor) and _grad(x)):
            return func(*args, **kwargs)

        def call(t: torch.Tensor) -> Any:
            return func(t, *args[1:], **kwargs) if args else func(**{**kwargs, "input": t})

        bound = _bound(func, args, kwargs) or {}
        dim = bound.get("dim", args[1] if len(args) > 1 else kwargs.get("dim"))
        branch = func in _BRANCH_SOFTMAX and isinstance(dim, int) and x.dim() and dim % x.dim() != x.dim() - 1
        # measured (the self-check under AttnLRP): its own change of relevance is known, so the code around it
        # is still checked
        watch = self.watcher if self.attention != "cp" else None
        y = call(x if watch is None else watch(x, "in"))
        if self.attention == "cp":
            setattr(y, _ATTENTION_ATTR, True)
        if branch:
            # branch weights: held constant where they weigh activations; recorded only if used otherwise
            setattr(y, _SOFTMAX_ATTR, True)
        elif watch is None and self.attention != "cp":
            self._record(getattr(func, "__name__", "softmax"))
        return y if watch is None else watch(y, "out")  # the alias keeps the marks set above

    # in-place arithmetic on a rule's output --------------------------------------------------------

    def _inplace_on_rule_output(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``x += y`` where ``x`` is a rule's output or a view of it (autograd forbids modifying those in
        place, e.g. a linear layer's output under the ε rule before timm's ``x += shortcut``): the
        out-of-place result, which Python binds to ``x``. Autograd checks before it writes, so the failed
        attempt changed nothing. A bare ``x.add_(y)`` statement would drop the result: the explainer's
        first-call check of the output against the model's then names the difference instead of a wrong
        map."""
        return self._in_place_or_rebound(
            func,
            lambda: func(*args, **kwargs),
            lambda: self.__torch_function__(_INPLACE_ARITHMETIC[func], (), args, kwargs),
        )

    def _inplace_flag(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``F.relu(x, inplace=True)`` on a rule's output (a classifier head's ``F.relu(self.fc1(x),
        inplace=True)``, torchvision's GoogLeNet): as :meth:`_inplace_on_rule_output`, with the flag off."""
        bound = _bound(func, args, kwargs)
        if bound is None or not bound.get("inplace"):
            return func(*args, **kwargs)
        return self._in_place_or_rebound(
            func, lambda: func(*args, **kwargs), lambda: func(**{**bound, "inplace": False})
        )

    def _in_place_or_rebound(self, func: Any, write: Callable[[], Any], result: Callable[[], Any]) -> Any:
        """``write()`` (an in-place write), or where autograd refuses it because its tensor is a rule's
        output or a view of one (it checks before writing, so nothing changed), ``result()``: the same value
        out of place, which the caller binds to its name (recorded for the first call's output check)."""
        try:
            return write()
        except RuntimeError as err:
            if not _custom_view_error(err):
                raise
        self.context.rebound.append(getattr(func, "__name__", str(func)))
        return result()

    # element-wise non-linearities and normalisations -----------------------------------------------

    def _elementwise(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x = args[0] if args else kwargs.get("input")
        if not isinstance(x, torch.Tensor) or not x.requires_grad:
            return func(*args, **kwargs)
        inplace = func in _INPLACE
        plain = _INPLACE.get(func, func)
        bound = _bound(plain, (x, *args[1:]), {k: v for k, v in kwargs.items() if k != "input"})
        if bound is not None and "inplace" in bound:
            inplace = inplace or bool(bound["inplace"])
            bound["inplace"] = False
        if bound is not None:
            first = next(iter(bound))
            rest = {k: v for k, v in bound.items() if k != first}

            def run(t: torch.Tensor) -> torch.Tensor:
                return plain(t, **rest)
        else:

            def run(t: torch.Tensor) -> torch.Tensor:
                return plain(t, *args[1:], **kwargs)

        y = _PassFn.apply(x, run, self.context.relevance_frame)
        if plain in _GATES:
            mark_gate(y)
        if not inplace:
            return y
        # the caller relies on x holding the result: copy it in (autograd routes the gradient through y)
        return self._in_place_or_rebound(func, lambda: x.copy_(y), lambda: y)

    def _layer_norm(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b = _bound(func, args, kwargs)
        if b is None or not _grad(b["input"]):
            return func(*args, **kwargs)
        return layer_norm(b["input"], b["normalized_shape"], b["weight"], b["bias"], b["eps"])

    def _group_norm(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b = _bound(func, args, kwargs)
        if b is None or not _grad(b["input"]):
            return func(*args, **kwargs)
        return group_norm(b["input"], b["num_groups"], b["weight"], b["bias"], b["eps"])

    def _normalize(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b = _bound(func, args, kwargs)
        if b is None or not _grad(b["input"]) or b.get("out") is not None:
            return func(*args, **kwargs)
        return normalize(b["input"], b["p"], b["dim"], b["eps"])

    def _rms_norm(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b = _bound(func, args, kwargs)
        if b is None or not _grad(b["input"]):
            return func(*args, **kwargs)
        return rms_norm(b["input"], b["normalized_shape"], b["weight"], b["eps"])

    def _batch_norm(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b = _bound(func, args, kwargs)
        if b is None or b["training"] or not _grad(b["input"]):
            return func(*args, **kwargs)
        rest = {k: v for k, v in b.items() if k != "input"}
        return _PassFn.apply(b["input"], lambda t: func(t, **rest), self.context.relevance_frame)


_ACTIVE: list[FunctionalRules] = []


@contextlib.contextmanager
def functional_rules(
    context: RuleContext,
    attention: str = "attnlrp",
    recorder: Callable[[str], None] | None = None,
    watcher: Callable[[torch.Tensor, str], torch.Tensor] | None = None,
) -> Iterator[FunctionalRules]:
    """Make :class:`FunctionalRules` active for the block, unless one already is (modes must not nest:
    an inner and an outer mode would both apply their rule to the same call)."""
    if _ACTIVE:
        yield _ACTIVE[-1]
        return
    mode = FunctionalRules(context, attention, recorder, watcher)
    with mode:
        _ACTIVE.append(mode)
        try:
            yield mode
        finally:
            _ACTIVE.pop()

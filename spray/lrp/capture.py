"""Relevance taps: the relevance that enters and leaves every module call, read off one backward pass.

Each tapped call gets its own alias of every tensor it receives and returns (an identity autograd node),
so the gradient at an alias is exactly the part that flows through that call, even where a tensor has
several consumers (a residual branch and its skip). In the backward, a hook on each alias turns the
gradient into relevance: ``activation × gradient`` after the relevance-out layer, the gradient itself
before it (where spray's backward already carries relevance). The taps cost one extra graph node per
tensor and call; the engine uses them once, on the first batch (:mod:`spray.lrp.checks`), and they are
the place where a layer's relevance can be captured during the ordinary backward pass.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["CallRecord", "RelevanceTaps"]


class _Alias(torch.autograd.Function):
    """``scale · x`` forward, ``scale · g`` backward: a private graph node for one consumer of a tensor.

    The forward returns a copy, not a view: consumers may modify it in place (``out += identity``).
    A scale other than 1 multiplies the tensor by a constant, which conserves relevance
    (``(s·x)·g = x·(s·g)``).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.clone() if scale == 1.0 else x * scale

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        return (g if ctx.scale == 1.0 else g * ctx.scale), None


def _unit_scale(t: torch.Tensor) -> float:
    """A power of two that brings ``max |t|`` near 1 when it is far from it (else 1).

    Used by the self-check, whose copy has every bias at 0: there activations can shrink (or grow) by
    orders of magnitude through a deep net, towards float32's limits, while every rule on them stays
    conservative at any scale.
    """
    peak = float(t.detach().abs().max()) if t.numel() else 0.0
    if peak == 0.0 or not math.isfinite(peak) or 1e-3 <= peak <= 1e3:
        return 1.0
    return float(2.0 ** -round(math.log2(peak)))


@dataclass
class CallRecord:
    """One call of a module during the tapped forward pass, and the relevance through it.

    Attributes
    ----------
    path : str
        The module's path in the model (``""`` for the model itself).
    module : nn.Module
    parent : int or None
        Index of the call during which this call ran.
    children : list[int]
        Calls that ran during this one (its submodules, or any module it called).
    rel_in, rel_out : float
        Total relevance at the call's tensor inputs / outputs (all samples).
    abs_in, abs_out : float
        Total absolute relevance (element-wise), the scale of the call.
    ops : list[str]
        Operations with a non-conservative rule (softmax) that ran in this call's own code unmeasured.
    op_in, op_out : float
        Total relevance at the inputs / outputs of the measured non-conservative operations of the call's own
        code (:meth:`RelevanceTaps.watch_op`).
    op_abs_in, op_abs_out : float
        Their absolute relevance.
    opaque : bool
        An input or output of the call is an object the taps cannot look into.
    """

    path: str
    module: nn.Module
    parent: int | None
    children: list[int] = field(default_factory=list)
    rel_in: float = 0.0
    rel_out: float = 0.0
    abs_in: float = 0.0
    abs_out: float = 0.0
    ops: list[str] = field(default_factory=list)
    op_in: float = 0.0
    op_out: float = 0.0
    op_abs_in: float = 0.0
    op_abs_out: float = 0.0
    opaque: bool = False

    @property
    def loss(self) -> float:
        """Relevance that reaches the outputs and does not come out at the inputs."""
        return self.rel_out - self.rel_in

    @property
    def op_abs(self) -> float:
        """The scale of the measured operations: the larger side's absolute relevance (not their sum, which
        would loosen the tolerance of the code around them)."""
        return max(self.op_abs_in, self.op_abs_out)

    @property
    def op_loss(self) -> float:
        """The part of the call's own loss that its measured non-conservative operations account for."""
        return self.op_out - self.op_in


class RelevanceTaps:
    """Forward hooks that alias and watch the inputs and outputs of every call of the given modules.

    Parameters
    ----------
    units : iterable of (path, module)
        The modules to tap (a module object is tapped once, under its first path).
    relevance_frame : callable
        Whether, at the current point of the forward pass, the backward will carry relevance (True)
        or a gradient (False) at a tensor produced now.
    rescale : bool
        Bring every call's outputs to a magnitude near 1 (by a power of two) where they are far from it
        (for the self-check's bias-free copy, see :func:`_unit_scale`).
    """

    def __init__(
        self,
        units: Iterable[tuple[str, nn.Module]],
        relevance_frame: Callable[[], bool],
        rescale: bool = False,
    ) -> None:
        self.calls: list[CallRecord] = []
        self._rescale = rescale
        self._stack: list[int] = []
        self._frame = relevance_frame
        self._handles: list[Any] = []
        seen: set[int] = set()
        for path, module in units:
            if id(module) in seen:
                continue
            seen.add(id(module))
            self._handles.append(module.register_forward_pre_hook(self._enter(path), with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._leave()))

    def record_op(self, op: str) -> None:
        """Note a non-conservative operation in the innermost running call."""
        if self._stack:
            self.calls[self._stack[-1]].ops.append(op)

    def watch_op(self, t: torch.Tensor, side: str) -> torch.Tensor:
        """An alias of ``t`` entering (``"in"``) or leaving (``"out"``) a non-conservative operation of the
        innermost running call, whose relevance counts as that operation's (its own change is then known)."""
        if not self._stack:
            return t
        return self._watch(t, self._stack[-1], side, op=True)

    def remove(self) -> None:
        """Remove all hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _watch(self, t: Any, index: int, side: str, op: bool = False) -> Any:
        if not (isinstance(t, torch.Tensor) and t.requires_grad and t.is_floating_point()):
            return t
        if not torch.is_grad_enabled():  # a call under no_grad(): nothing flows back through it to measure
            return t
        scale = _unit_scale(t) if self._rescale and side == "out" and not op else 1.0
        alias = _Alias.apply(t, scale)
        # keep spray's tags (a gate, CP-LRP's attention weights): the functional rules read them
        for name, tag in vars(t).items():
            if name.startswith("_spray_"):
                setattr(alias, name, tag)
        relevance_frame = self._frame()
        value = (
            t.detach() if scale == 1.0 else t.detach() * scale
        )  # not the alias: consumers may write into it

        def hook(g: torch.Tensor) -> None:
            r = g if relevance_frame else g * value
            record = self.calls[index]
            total, absolute = float(r.sum(dtype=torch.float64)), float(r.abs().sum(dtype=torch.float64))
            if op and side == "in":
                record.op_in += total
                record.op_abs_in += absolute
            elif op:
                record.op_out += total
                record.op_abs_out += absolute
            elif side == "in":
                record.rel_in += total
                record.abs_in += absolute
            else:
                record.rel_out += total
                record.abs_out += absolute

        alias.register_hook(hook)
        return alias

    def _map(self, obj: Any, index: int, side: str) -> Any:
        """``obj`` with every tensor in it aliased; containers keep their type (named tuples, dict
        subclasses such as Hugging Face outputs, dataclasses). Anything else that is not a plain value
        makes the call *opaque*: its relevance cannot be accounted for."""
        if isinstance(obj, torch.Tensor):
            return self._watch(obj, index, side)
        if isinstance(obj, tuple):
            items = [self._map(o, index, side) for o in obj]
            return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
        if isinstance(obj, list):
            return type(obj)(self._map(o, index, side) for o in obj)
        if isinstance(obj, dict):
            mapped = copy.copy(obj)
            for k, v in obj.items():
                mapped[k] = self._map(v, index, side)
            return mapped
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            changes = {
                f.name: self._map(getattr(obj, f.name), index, side)
                for f in dataclasses.fields(obj)
                if f.init
            }
            return dataclasses.replace(obj, **changes)
        if obj is not None and not isinstance(obj, (bool, int, float, str, slice, torch.dtype, torch.device)):
            self.calls[index].opaque = True
        return obj

    def _enter(self, path: str) -> Callable[..., Any]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            parent = self._stack[-1] if self._stack else None
            index = len(self.calls)
            self.calls.append(CallRecord(path, module, parent))
            if parent is not None:
                self.calls[parent].children.append(index)
            self._stack.append(index)
            return self._map(args, index, "in"), self._map(kwargs, index, "in")

        return hook

    def _leave(self) -> Callable[..., Any]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
            index = self._stack.pop()
            return self._map(output, index, "out")

        return hook

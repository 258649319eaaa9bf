"""Fused element-wise kernels of the rules (``Explainer(elementwise="compile")``).

Around every convolution the rules do a few element-wise passes: the stabilised ratio ``z / stab(z')`` in
the forward, the rescale ``g · z / stab(z)`` in the backward. On one CPU thread they hide behind the
arithmetic of the convolutions; on a GPU they are memory-bound (each pass reads and writes the whole
tensor), which is where spray's LRP loses most against forward + input gradient. Here each of them is
written as one pure function and handed to ``torch.compile``, which fuses it into a single kernel (Triton
on CUDA, C++ on CPU). The eager path (:mod:`spray.lrp.numerics`) stays the default: compiling costs tens
of seconds on the first batch and needs a C++ compiler (CPU) or Triton (CUDA).

The mode is process-wide while an Explainer call runs (:func:`elementwise_mode`): the backward pass runs
on autograd's device threads on CUDA, which a thread-local setting would not reach.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

__all__ = ["ELEMENTWISE_MODES", "compiled", "elementwise_mode", "fused_active"]

ELEMENTWISE_MODES = ("eager", "compile")
_STATE = {"mode": "eager"}
_COMPILED: dict[str, Callable[..., torch.Tensor]] = {}


def ratio_nonneg(num: torch.Tensor, den: torch.Tensor, eps: float) -> torch.Tensor:
    """``num / (max(den, 0) + eps)`` in float32 (z+, flat, w² denominators, ``>= 0`` in exact arithmetic)."""
    return num.float() / (den.float().clamp(min=0) + eps)


def ratio(num: torch.Tensor, den: torch.Tensor, eps: float) -> torch.Tensor:
    """``num / (den + eps·sign(den))`` in float32, ``sign(0) = +1`` (zennit's stabiliser)."""
    d = den.float()
    return num.float() / (d + torch.where(d >= 0, eps, -eps))


def scaled_self_ratio(g: torch.Tensor, z: torch.Tensor, eps: float) -> torch.Tensor:
    """``g · |z| / (|z| + eps)`` (= ``g · z / stab(z)``), in ``g``'s dtype: the ε and Norm backward."""
    a = z.float().abs()
    return g * (a / (a + eps)).to(g.dtype)


_KERNELS: dict[str, Callable[..., torch.Tensor]] = {
    "ratio_nonneg": ratio_nonneg,
    "ratio": ratio,
    "scaled_self_ratio": scaled_self_ratio,
}


def compiled(name: str) -> Callable[..., Any]:
    """The ``torch.compile`` d kernel ``name`` (compiled once per process, shapes dynamic)."""
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(_KERNELS[name], dynamic=True, fullgraph=True)
    return _COMPILED[name]


def fused_active() -> bool:
    """Whether the rules use the compiled kernels now."""
    return _STATE["mode"] == "compile"


@contextlib.contextmanager
def elementwise_mode(mode: str) -> Iterator[None]:
    """Use the ``"eager"`` or ``"compile"`` kernels inside the block (restored afterwards)."""
    previous = _STATE["mode"]
    _STATE["mode"] = mode
    try:
        yield
    finally:
        _STATE["mode"] = previous

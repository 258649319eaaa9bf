"""Numerics of the LRP rules: zennit's stabiliser, stabilised ratios and in-place gradient scaling.

Everything a rule divides by is stabilised here, in float32 (also when the forward runs in bfloat16).
"""

from __future__ import annotations

import torch

from spray.lrp.fused import compiled, fused_active

__all__ = ["CUT_GRAPH", "graph_reaches", "seeded_grad", "stabilize"]


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
    if fused_active():
        return compiled("ratio")(num, den, eps).to(out_dtype)
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
    if fused_active():
        return compiled("ratio_nonneg")(num, den, eps).to(out_dtype)
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


def _scaled_self_ratio(g: torch.Tensor, z: torch.Tensor, eps: float, nonneg: bool = False) -> torch.Tensor:
    """``g · z / stab(z)``: the backward of the ε and Norm rules (one fused kernel when compiled)."""
    if fused_active():
        return compiled("scaled_self_ratio")(g, z, eps)
    return _scale_grad(g, _self_ratio(z, eps, nonneg))


def _scale_grad(g: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """``g · ratio``, written into ``ratio`` when the dtypes allow (it is a saved tensor used once).

    Backward runs once per forward (the engine never retains the graph); a second backward would make
    autograd raise on the version counter of ``ratio`` rather than give wrong numbers.
    """
    if ratio.dtype == g.dtype and ratio.shape == g.shape:
        return ratio.mul_(g)
    return g * ratio.to(g.dtype)


def seeded_grad(out: torch.Tensor, x: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """``torch.autograd.grad(out, x, grad_outputs=seed)``, bit for bit, as the gradient of a scalar.

    The backward of ``(out · seed).sum()`` hands ``1 · seed``, i.e. ``seed`` exactly, to ``out``. Passing
    ``seed`` as ``grad_outputs`` instead makes the first such call in a process import PyTorch's
    symbolic-shape module and sympy (about 0.5 CPU s, measured), which only a run that computes
    heatmaps would pay.

    Parameters
    ----------
    out : torch.Tensor
        ``(B, K)`` outputs, part of a graph that reaches ``x``.
    x : torch.Tensor
        ``(B, ...)`` input that requires grad.
    seed : torch.Tensor
        ``(B, K)`` the gradient put on ``out`` (same dtype and device).

    Returns
    -------
    torch.Tensor
        Same shape as ``x``.
    """
    with torch.enable_grad():  # the caller may be under no_grad: the graph of out exists regardless
        scalar = (out * seed).sum()
    (grad,) = torch.autograd.grad(scalar, x)
    return grad


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


def graph_reaches(out: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether ``out``'s graph reaches ``x`` (asked only after a backward failed: it runs one itself)."""
    try:
        (g,) = torch.autograd.grad(out.sum(), x, allow_unused=True, retain_graph=True)
    except RuntimeError:
        return True  # cannot tell: the first error is the one to report
    return g is not None


#: Why a forward pass whose logits do not reach the input cannot be explained, and what to change.
CUT_GRAPH = (
    "the model's logits do not depend on its input through autograd: its forward() cuts the graph (a "
    "backbone run under torch.no_grad(), x.detach(), .data, a round trip through numpy), so there is nothing to "
    "propagate relevance through. Remove the cut from forward(): a frozen backbone keeps the graph with its "
    "parameters' requires_grad=False (spray never trains the model)."
)

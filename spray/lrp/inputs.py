"""What an :class:`~spray.lrp.explainer.Explainer` call accepts: the input batch, the classes to explain and
the model's logits, each checked with the problem and the fix named (a notebook's common slips among them: one
image without its batch dimension, uint8 pixels, fractional class indices, ``torch.inference_mode``)."""

from __future__ import annotations

from typing import Any

import torch

from spray.errors import ConfigError, ModelError

_TARGET_FORMS = "'pred', 'label', an int or a (B,) tensor"

INFERENCE_MODE = (
    "torch.inference_mode() is on: LRP runs a backward pass, which inference tensors cannot take; build and "
    "call the explainer outside it (torch.no_grad() around it is fine)"
)


def batch_input(inputs: Any, image_model: bool, device: torch.device) -> torch.Tensor:
    """The float32 ``(B, ...)`` batch on ``device``, detached, after the checks below (``image_model``: the
    model has a ``Conv2d``, so a 3-D input is one image, not a batch).

    Raises
    ------
    ConfigError
        Not a tensor; one image ``(C, H, W)`` for an image model; an empty batch; integer or boolean
        pixels; a call under ``torch.inference_mode()``.
    """
    if not isinstance(inputs, torch.Tensor) or inputs.ndim < 2:
        raise ConfigError("inputs must be a batched tensor (B, C, H, W)")
    if inputs.ndim == 3 and image_model:
        raise ConfigError(
            f"inputs have shape {tuple(inputs.shape)}: one image (C, H, W)? The explainer takes a batch "
            "(B, C, H, W): pass x[None] (or x.unsqueeze(0)) for one image."
        )
    if inputs.shape[0] == 0:
        raise ConfigError(f"inputs hold no samples (shape {tuple(inputs.shape)}): pass at least one")
    if not inputs.is_floating_point():
        raise ConfigError(
            f"inputs are {str(inputs.dtype).removeprefix('torch.')}: the model takes float inputs, prepared as "
            "in its training (e.g. x.float() / 255, then its normalisation); spray does not guess the scale"
        )
    if torch.is_inference_mode_enabled():
        raise ConfigError(INFERENCE_MODE)
    return inputs.detach().to(device, torch.float32)


def _class_indices(values: Any, what: str, device: torch.device) -> torch.Tensor:
    """``values`` as int64 class indices, refusing fractions and booleans (``.long()`` truncated them)."""
    t = torch.as_tensor(values, device=device)
    if t.dtype == torch.bool:
        raise ConfigError(f"{what} must be class indices, not booleans")
    if t.is_floating_point() and (not bool(torch.isfinite(t).all()) or not torch.equal(t, t.round())):
        raise ConfigError(f"{what} must be whole class indices, got {t.flatten()[:8].tolist()}")
    return t.long().reshape(-1)


def resolve_targets(
    target: str | int | torch.Tensor, labels: torch.Tensor | None, logits: torch.Tensor
) -> torch.Tensor:
    """The ``(B,)`` int64 classes to explain (see :meth:`Explainer.__call__`)."""
    batch, classes = logits.shape
    if isinstance(target, str):
        if target == "pred":
            t = logits.argmax(dim=1)
        elif target == "label":
            if labels is None:
                raise ConfigError("target='label' needs labels=(B,) int64 class indices")
            t = _class_indices(labels, "labels", logits.device)
        else:
            raise ConfigError(f"target must be {_TARGET_FORMS}, got {target!r}")
    elif isinstance(target, bool):
        raise ConfigError(f"target must be {_TARGET_FORMS}, not a bool")
    elif isinstance(target, int):
        t = torch.full((batch,), int(target), dtype=torch.long, device=logits.device)
    elif isinstance(target, torch.Tensor):
        t = _class_indices(target, "target", logits.device)
        if t.numel() == 1:
            t = t.expand(batch)
    else:
        raise ConfigError(f"target must be {_TARGET_FORMS}, got {type(target)}")
    if t.shape != (batch,):
        raise ConfigError(f"targets must have shape ({batch},), got {tuple(t.shape)}")
    if batch and (int(t.min()) < 0 or int(t.max()) >= classes):
        raise ConfigError(f"target class out of range [0, {classes}): {t.tolist()}")
    return t.contiguous()


def normalised_kind(out: torch.Tensor) -> str | None:
    """``"probabilities"`` or ``"log-probabilities"`` when every row of ``(B, K)`` outputs is one, probabilities
    scaled by a constant (``100 * softmax``: every row of two or more sums to the same), else None."""
    x = out.detach().double()
    if bool((x >= 0).all()) and torch.allclose(x.sum(1), torch.ones_like(x[:, 0]), atol=1e-4):
        return "probabilities"
    total = x.sum(1)
    # rows that differ yet sum to the same: a scaled softmax (identical rows, a duplicate image or an output
    # that ignores its input, tell nothing)
    differ = bool((x - x[:1]).abs().amax() > 1e-3 * x.abs().amax())
    same_sum = total[0] > 0 and torch.allclose(total, total[:1].expand_as(total), rtol=1e-6, atol=0)
    if differ and bool((x >= 0).all()) and same_sum:
        return f"probabilities scaled by {float(total[0]):.4g}"
    if bool((x <= 0).all()) and torch.allclose(torch.logsumexp(x, 1), torch.zeros_like(x[:, 0]), atol=1e-4):
        return "log-probabilities"
    return None


def flat_classifier_output(out: Any, batch: int) -> bool:
    """Whether ``out`` is ``(batch, K, 1, ...)`` logits: a 1×1 convolution as the classifier, not flattened."""
    return (
        isinstance(out, torch.Tensor)
        and out.ndim > 2
        and out.shape[0] == batch
        and all(d == 1 for d in out.shape[2:])
    )


def checked_logits(out: Any, x: torch.Tensor) -> torch.Tensor:
    """The detached float32 ``(B, K)`` logits, checked for shape and finiteness."""
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
        ones = flat_classifier_output(out, x.shape[0])
        raise ModelError(
            f"the model must return (B, K) logits, got {shape}; "
            + (
                "its trailing dimensions are 1 (a 1×1 convolution as the classifier): flatten them "
                "(torch.flatten(out, 1))"
                if ones
                else "for a model that returns a tuple or dict, select the logits (model.output in the config)"
            )
        )
    logits = out.detach().float()
    if not bool(torch.isfinite(logits).all()):
        bad = (~torch.isfinite(logits)).any(dim=1).nonzero().flatten().tolist()
        err = ModelError(f"the model produced NaN/inf logits for batch rows {bad}; check inputs and weights")
        err.rows = bad  # type: ignore[attr-defined]  # for callers that know the rows' sample ids
        raise err
    return logits

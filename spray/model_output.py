"""The audited model's output: the logits taken from a forward that returns a tuple, list, dict or output
object (``model.output``, :func:`select_output`), and checked on a real batch before any work: it runs on
the input, returns ``(batch, classes)`` finite logits (not a softmax's probabilities) and has an output for
every class."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from spray.errors import ModelError, SprayError
from spray.lrp.inputs import flat_classifier_output, normalised_kind

__all__ = ["check_model_output", "describe_output", "select_output"]


def describe_output(out: Any) -> str:
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    if isinstance(out, (tuple, list)):
        parts = ", ".join(
            describe_output(o) if isinstance(o, torch.Tensor) else type(o).__name__ for o in out
        )
        return f"a {type(out).__name__} of {len(out)} ({parts})"
    if isinstance(out, dict):
        return f"a dict with keys {list(out)}"
    return f"a {type(out).__name__}"


def _pick(out: Any, key: int | str) -> Any:
    """``out[key]`` for sequences and dicts, ``getattr(out, key)`` for objects and a namedtuple's fields;
    LookupError if absent."""
    if isinstance(out, torch.Tensor):
        raise LookupError(key)
    if isinstance(out, (tuple, list)):
        if isinstance(key, str) and key in getattr(out, "_fields", ()):
            return getattr(out, key)  # a namedtuple's field by name
        if not isinstance(key, int):
            raise LookupError(key)
        return out[key]
    if isinstance(out, dict):
        return out[key]
    if isinstance(key, str) and hasattr(out, key):
        return getattr(out, key)
    raise LookupError(key)


def select_output(out: Any, key: int | str) -> torch.Tensor:
    """The logits at ``key`` in a model's output; :class:`ModelError` naming ``model.output`` if absent."""
    try:
        chosen = _pick(out, key)
    except LookupError:
        fix = (
            ", or remove it (the model returns the logits tensor itself)."
            if isinstance(out, torch.Tensor)
            else "."
        )
        raise ModelError(
            f"model.output: {key!r} does not select anything in the model's output, which is "
            f"{describe_output(out)}. Set model.output to the index or key of the logits{fix}"
        ) from None
    if not isinstance(chosen, torch.Tensor):
        raise ModelError(f"model.output: {key!r} selects a {type(chosen).__name__}, not the logits tensor.")
    return chosen


def _channels_hint(model: nn.Module, example: torch.Tensor) -> str:
    """A sentence when the input's channels differ from the first convolution's (empty otherwise)."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or example.dim() != 4 or first.in_channels == example.shape[1]:
        return ""
    return (
        f"The inputs have {example.shape[1]} channel(s) and the model's first convolution takes "
        f"{first.in_channels}: set data.transform.channels: {first.in_channels} (it, or the number of "
        f"data.transform.mean/std values, sets the channels; give {first.in_channels} values or one). "
    )


def check_model_output(
    model: nn.Module, example: torch.Tensor, num_classes: int, empty_classes: list[str] | None = None
) -> int:
    """Run one forward pass and check the output shape and values.

    Parameters
    ----------
    example : torch.Tensor
        ``(B, C, H, W)`` a real input batch.
    num_classes : int
        Number of classes of the dataset.
    empty_classes : list[str], optional
        Names of the dataset's classes without samples (named when the model has too few outputs).

    Returns
    -------
    int
        The model's number of outputs ``K``.
    """
    with torch.no_grad():
        try:
            out = model(example)
        except SprayError:
            raise  # model.output names a wrong key: that message says more
        except Exception as err:  # models reject inputs with any type (ViT: AssertionError): all mean this
            kind = "" if isinstance(err, RuntimeError) else f"{type(err).__name__}: "
            raise ModelError(
                f"The model fails on an input of shape {tuple(example.shape)}: {kind}{err}. "
                f"{_channels_hint(model, example)}Check data.transform (resize, center_crop, grayscale_to_rgb) "
                "against what the model expects: some architectures (ViT, MaxViT) take only the input size they "
                "were built for."
            ) from None
    if not isinstance(out, torch.Tensor):
        raise ModelError(
            f"The model returns {describe_output(out)}, not a (batch, classes) logits tensor. Set "
            "model.output to the index or key of the logits (e.g. model.output: 0 or model.output: logits)."
        )
    if out.ndim != 2 or out.shape[0] != example.shape[0]:
        raise _shape_error(out, example)
    if not torch.isfinite(out).all():
        raise ModelError(
            "The model outputs NaN or inf on real inputs; check the checkpoint and the normalisation."
        )
    k = int(out.shape[1])
    if k >= 2 and (normalised := normalised_kind(out)):
        raise ModelError(
            f"The model returns {normalised}: every row of its output is a distribution over the {k} classes, so it "
            "ends in a softmax. spray explains a class's logit; through the softmax each heatmap would explain "
            "the class against the others, scaled by its probability (near 0 for a confident prediction), and "
            "the confidences would be a softmax of probabilities. Give the model without its final softmax: a "
            "model.factory that returns the network up to the logits (e.g. nn.Sequential(*list(net.children())"
            "[:-1]) for a Sequential ending in nn.Softmax), or model.output naming the logits if it returns both."
        )
    if k < num_classes:
        empty = f" Classes without samples: {', '.join(empty_classes[:8])} (an empty class folder still counts as " \
            "a class: remove it if the model has no such class)." if empty_classes else ""  # fmt: skip
        binary = (
            " A model with one output (a binary classifier trained with a sigmoid, BCEWithLogitsLoss) is not "
            "explained as it is: return two logits from a model.factory, torch.cat([-z / 2, z / 2], 1) for its "
            "output z (a softmax of [-z/2, z/2] is sigmoid(z), so the predictions are the same and class 1 is "
            "explained by z; [0, z] would read as log-probabilities where z is very negative)."
            if k == 1 and num_classes == 2
            else ""
        )
        stray = (
            " In an image folder every folder under data.path is a class, in name order: move a folder that is "
            "not one of the model's classes (one that came with new data, say) out of data.path."
            if k > 1
            else ""
        )
        raise ModelError(
            f"The model has {k} outputs but the dataset has {num_classes} classes. Set model.num_classes (or the "
            f"factory's argument) to match the checkpoint and the data.{stray}{empty}{binary}"
        )
    return k


def _shape_error(out: torch.Tensor, example: torch.Tensor) -> ModelError:
    """The refusal of an output that is no ``(batch, classes)`` tensor, with the fix for a ``(B, K, 1, 1)`` one."""
    flat = (
        " Its trailing dimensions are 1 (a 1×1 convolution as the classifier): return torch.flatten(out, 1) "
        "from a model.factory."
        if flat_classifier_output(out, example.shape[0])
        else ""
    )
    return ModelError(
        f"The model must return logits of shape (batch, classes); got {tuple(out.shape)}.{flat}"
    )

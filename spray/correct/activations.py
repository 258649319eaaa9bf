"""Activations at a named layer: finding the layer, capturing its output with a forward hook, pooling.

A layer is a module path as ``model.named_modules()`` spells it (``"features"``, ``"layer4"``,
``"features.9"``). ``"auto"`` picks the last module, in execution order, whose output is a feature map
``(B, C, H, W)`` with a spatial grid (``H·W > 1``: ``layer4`` of a torchvision ResNet, not its ``avgpool``,
whose 1×1 output leaves the artifact region no footprint); of modules returning the very same tensor (a
container and its last child) it takes the outermost, so that the artifact direction is defined on the
whole block's output. A chosen or named layer with a 1×1 output is used with a WARNING. In a transformer,
``auto`` takes the last block's ``(B, tokens, D)`` output, else the last feature map after its attention.
A channels-last ``(B, H, W, C)`` output (timm's Swin), one that is no single tensor, and the model's
output (the logits) are refused.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from spray.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

POOLINGS = ("none", "max", "mean")


@dataclass
class LayerCall:
    """One module call seen by :func:`trace_calls`.

    Attributes
    ----------
    path : str
        Module path.
    order : int
        Position of the call's end in execution order.
    shape : tuple[int, ...]
        Output shape (batch first); empty when the output is not a tensor.
    output_id : int
        ``id()`` of the output tensor (modules returning the same tensor share it).
    """

    path: str
    order: int
    shape: tuple[int, ...]
    output_id: int


def trace_calls(model: nn.Module, example: torch.Tensor) -> list[LayerCall]:
    """Every module call of one forward pass on ``example``, in the order the calls end."""
    calls: list[LayerCall] = []
    keep: list[object] = []  # hold outputs so that their ids stay unique during the pass

    def hook(path: str) -> Callable[..., None]:
        def record(_m: nn.Module, _i: object, out: object) -> None:
            keep.append(out)
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else ()
            calls.append(LayerCall(path, len(calls), shape, id(out)))

        return record

    handles = [m.register_forward_hook(hook(p)) for p, m in model.named_modules() if p]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return calls


def _layer_list(model: nn.Module) -> str:
    """The model's layers for a message: the outer two levels (stages and blocks, where a correction is usually
    placed), not the first 40 of hundreds (a timm model's stem), and how many there are in all."""
    paths = [p for p, _ in model.named_modules() if p]
    outer = [p for p in paths if p.count(".") <= 1]
    shown = ", ".join(outer[:60]) + (", ..." if len(outer) > 60 else "")
    deeper = f" ({len(paths)} in all: any deeper path of model.named_modules() works too)"
    return shown + (deeper if len(outer) < len(paths) else "")


def resolve_layer(model: nn.Module, layer: str, example: torch.Tensor) -> str:
    """The module path to correct at: ``layer`` checked, or the ``"auto"`` choice.

    Parameters
    ----------
    model : nn.Module
        The model (eval mode).
    layer : str
        A module path or ``"auto"``.
    example : torch.Tensor
        ``(B, C, H, W)`` a real input batch (finds output shapes and calls).

    Raises
    ------
    ConfigError
        The path does not exist (the message lists the layers and the closest name), the module is
        called more than once per forward pass (its output is not one activation), or it is not called.
    """
    paths = {p for p, _ in model.named_modules() if p}
    calls = trace_calls(model, example)
    if layer == "auto":
        chosen = _auto_layer(model, calls, len(example))
    elif layer not in paths:
        close = difflib.get_close_matches(layer, sorted(paths), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"correction.layer: the model has no layer {layer!r}.{hint} Layers: {_layer_list(model)}."
        )
    else:
        n = _call_counts(calls).get(layer, 0)
        if n != 1:
            what = "is not called in the forward pass" if n == 0 else f"is called {n} times per forward pass"
            raise ConfigError(
                f"correction.layer: {layer!r} {what}, so its output is not one activation; name a block that "
                "runs once (e.g. its parent)."
            )
        chosen = layer
        _check_named(model, chosen, calls, example)
    _warn_without_grid(chosen, layer, calls)
    return chosen


def _attention_paths(model: nn.Module) -> list[str]:
    """Paths of the model's attention modules (a ``MultiheadAttention``, a class named "...Attention...")."""
    return [
        p
        for p, m in model.named_modules()
        if p and (isinstance(m, nn.MultiheadAttention) or "attention" in type(m).__name__.lower())
    ]


def _channel_widths(model: nn.Module) -> set[int]:
    """The widths the model's LayerNorms normalise over one axis: its channels (a LayerNorm over (C, H, W)
    says nothing of the layout)."""
    return {
        m.normalized_shape[0]
        for m in model.modules()
        if isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1
    }


def _channels_last(shape: tuple[int, ...], widths: set[int]) -> bool:
    """Whether a 4-D output is ``(B, H, W, C)``: its last axis, not its second, has a channel width of the
    model (:func:`_channel_widths`; timm's Swin, a ConvNeXt block's inside)."""
    return len(shape) == 4 and shape[3] in widths and shape[1] not in widths


def _check_named(model: nn.Module, layer: str, calls: list[LayerCall], example: torch.Tensor) -> None:
    """Refuse a named layer whose output spray cannot correct at: no tensor, channels-last, the logits."""
    shape = next(c.shape for c in calls if c.path == layer)
    if not shape:
        raise ConfigError(
            f"correction.layer: {layer!r} returns no single tensor (a tuple or another object), so it has no "
            "one activation to correct; name its parent block or a submodule that returns a tensor. "
            f"Layers: {_layer_list(model)}."
        )
    from spray.lrp.concepts import sequence_first

    if sequence_first(model, layer):
        raise ConfigError(
            f"correction.layer: {layer!r} works on (tokens, batch, D) (batch_first=False, torch's default): spray "
            "corrects at (B, tokens, D) outputs only. Build the model with batch_first=True (the same weights "
            "load; change forward() to keep the batch first), or name a (B, C, H, W) feature map before the "
            "transformer."
        )
    if shape[0] != len(example):
        raise ConfigError(
            f"correction.layer: {layer!r} returns {shape} for {len(example)} inputs: its first axis is not the "
            "batch (patches or windows of the images, as MobileViT unfolds them, or tokens first, as a "
            "transformer with batch_first=False keeps them), so it holds no activation per image; name the block "
            "that folds them back."
        )
    if _channels_last(shape, _channel_widths(model)):
        raise ConfigError(
            f"correction.layer: {layer!r} returns {tuple(shape[1:])}, a channels-last (H, W, C) map; spray "
            "corrects at (B, C, H, W) feature maps and (B, tokens, D) transformer outputs, and would read "
            "this one's height as its channels. Name such a layer; a model whose maps are all channels-last "
            "(timm's Swin) cannot be corrected at its layers."
        )
    if _gives_the_logits(model, layer, calls, example):
        raise ConfigError(
            f"correction.layer: {layer!r} returns the model's output, its class scores: a direction there "
            "mixes the classes, and projecting it out or penalising it removes class evidence, not a "
            "shortcut's feature. Name an earlier layer ('auto' takes the last feature map or transformer "
            "block)."
        )


def _gives_the_logits(model: nn.Module, layer: str, calls: list[LayerCall], example: torch.Tensor) -> bool:
    """Whether ``layer`` computes the class scores: no module with weights runs after it (but its own parents),
    and its output has the model output's size per sample (``fc(x) / T``, SqueezeNet's classifier before a
    flatten, timm's ``head.fc`` before ``head.flatten``)."""
    last = max(c.order for c in calls if c.path == layer)
    later = {c.path for c in calls if c.order > last and not layer.startswith(c.path + ".")}
    if any(next(model.get_submodule(p).parameters(), None) is not None for p in later):
        return False
    with torch.no_grad():
        out = model(example)
    if not isinstance(out, torch.Tensor):
        return False
    shape = next(c.shape for c in calls if c.path == layer)
    return math.prod(shape[1:]) == math.prod(out.shape[1:])


def _has_grid(shape: tuple[int, ...]) -> bool:
    """Whether an output shape is a feature map ``(B, C, H, W)`` with more than one position."""
    return len(shape) == 4 and shape[2] * shape[3] > 1


def _auto_layer(model: nn.Module, calls: list[LayerCall], batch: int) -> str:
    """The ``"auto"`` layer: for a transformer its last block; else the last feature map with a grid (else the
    last 1×1 one), outermost module."""
    from spray.lrp.concepts import default_concept_layer, has_attention, sequence_first

    seq_first: str | None = None
    if has_attention(model):
        # Inside a ViT, 4-D outputs are attention's keys or weights (heads × tokens), not feature maps: its
        # last block's (B, tokens, D) output is taken. A Swin's blocks are channels-last (B, H, W, C) and a
        # block returning a tuple is no activation: both go on to the feature-map search below.
        block = default_concept_layer(model)
        shapes = [c.shape for c in calls if c.path == block]
        if block is not None and sequence_first(model, block):
            seq_first = (
                block  # (T, B, D): its first axis is the batch only when tokens and images are as many
            )
        elif block is not None and len(shapes) == 1 and len(shapes[0]) == 3 and shapes[0][0] == batch:
            log.info(
                "correction.layer: 'auto' took %r, the transformer's last block (tokens: no spatial grid)",
                block,
            )
            return block
    # In a transformer a map is one after its last attention over tokens (a stem's map before it is no feature
    # map, and an attention module's insides end before it does); an attention pooling head, (B, D), counts not.
    inside, widths = set(_attention_paths(model)), _channel_widths(model)
    after = max((c.order for c in calls if c.path in inside and len(c.shape) >= 3), default=-1)
    maps = [
        c
        for c in calls
        if len(c.shape) == 4
        and c.shape[0] == batch
        and c.order >= after
        and not _channels_last(c.shape, widths)
    ]
    if not maps:
        why = (
            " (its 4-D outputs are channels-last, (B, H, W, C), as timm's Swin keeps them)"
            if any(_channels_last(c.shape, widths) for c in calls)
            else ""
        )
        raise ConfigError(
            f"correction.layer: 'auto' found no (B, C, H, W) feature map to correct at{why}. Name a layer with a "
            "(B, C, H, W) or (B, tokens, D) output if the model has one; a model whose maps are all "
            f"channels-last cannot be corrected at its layers. Layers: {_layer_list(model)}."
        )
    last = ([c for c in maps if _has_grid(c.shape)] or maps)[-1]
    same = [c for c in calls if c.output_id == last.output_id]
    counts = _call_counts(calls)
    chosen = [c.path for c in same if counts[c.path] == 1]
    if not chosen:
        raise ConfigError(
            f"correction.layer: 'auto' found {last.path}, which runs more than once per forward pass; "
            f"name a layer. Layers: {_layer_list(model)}."
        )
    found = min(chosen, key=lambda p: p.count("."))
    if seq_first is not None:
        log.warning(
            "correction.layer: 'auto' took %r: the transformer's blocks (%r) work on (tokens, batch, D) "
            "(batch_first=False), where spray cannot correct, so it took the last feature map before them, and "
            "RR-ClArC fine-tunes every layer after it, the attention included (watch the clean accuracy); a "
            "model built with batch_first=True can be corrected at its last block",
            found, seq_first,
        )  # fmt: skip
    return found


def _warn_without_grid(chosen: str, asked: str, calls: list[LayerCall]) -> None:
    """A WARNING when ``chosen``'s output is a feature map with a single (1×1) position."""
    shape = next(c.shape for c in calls if c.path == chosen)
    if len(shape) != 4 or _has_grid(shape):
        return
    how = (
        "'auto' found no feature map larger than 1×1 and took" if asked == "auto" else "the configured layer"
    )
    log.warning(
        "correction.layer: %s %r, whose output %s has no spatial grid (1×1): the artifact direction is "
        "one value per channel and RR-ClArC's region term has no footprint there. Name an earlier layer "
        "with an H×W > 1 output in correction.layer (or feed larger images).",
        how, chosen, tuple(shape[1:]),
    )  # fmt: skip


def _call_counts(calls: list[LayerCall]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in calls:
        counts[c.path] = counts.get(c.path, 0) + 1
    return counts


@contextmanager
def tap(
    model: nn.Module, layer: str, replace: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> Iterator[list[torch.Tensor]]:
    """Capture the output of ``layer`` on every forward pass inside the block.

    Parameters
    ----------
    model : nn.Module
        The model.
    layer : str
        Module path.
    replace : callable, optional
        ``replace(output) -> tensor`` that the rest of the model receives instead (and that is captured),
        e.g. a detached copy that requires grad.

    Yields
    ------
    list[torch.Tensor]
        Filled with one captured output per forward pass.
    """
    captured: list[torch.Tensor] = []

    def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> torch.Tensor | None:
        if not isinstance(out, torch.Tensor):
            raise ModelError(f"layer {layer!r} returns a {type(out).__name__}, not a tensor")
        new = replace(out) if replace is not None else out
        captured.append(new)
        # The rest of the model gets a copy: an in-place operation after the layer (ReLU(inplace=True))
        # would otherwise change the captured tensor, or fail on a leaf that requires grad.
        return new.clone()

    handle = model.get_submodule(layer).register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module in eval mode inside the block; each module's own mode restored after (a fine-tuning
    setup sets modes module by module, which ``model.train(was)`` would not restore)."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode


def layer_activations(
    model: nn.Module, layer: str, batches: Iterator[torch.Tensor], device: torch.device
) -> torch.Tensor:
    """The layer's output for every input batch, on the CPU (in eval mode; the modes are restored).

    Returns
    -------
    torch.Tensor
        ``(N, C, H, W)`` (or ``(N, D)`` for a flat layer) float32.
    """
    out: list[torch.Tensor] = []
    with eval_mode(model), torch.no_grad(), tap(model, layer) as got:
        for x in batches:
            got.clear()
            model(x.to(device))
            out.append(got[0].detach().float().cpu())
    return torch.cat(out)


def pool(acts: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool activations over space.

    Parameters
    ----------
    acts : torch.Tensor
        ``(N, C, H, W)`` or ``(N, D)``.
    pooling : {"none", "max", "mean"}
        ``"none"`` flattens (one value per channel and position).

    Returns
    -------
    torch.Tensor
        ``(N, C)`` for max/mean over a feature map, ``(N, C·H·W)`` for none, ``(N, D)`` for flat input.
    """
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
    if acts.dim() <= 2 or pooling == "none":
        return acts.flatten(1)
    flat = acts.flatten(2)
    return flat.amax(2) if pooling == "max" else flat.mean(2)

"""Which parameters a training correction updates, and in which mode each module runs.

``after_layer``: only modules that run after the layer (in one forward pass) are trained; the layer and
everything before it are frozen and in eval mode, so the activations the artifact direction was fitted on
do not move. ``all``: every parameter is trained. In both, BatchNorm keeps its running statistics (eval
mode): a few fine-tuning batches must not overwrite what the whole training set estimated, and parameters
the user froze (``requires_grad`` False, unless every one is) stay frozen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from spray.correct.activations import trace_calls

log = logging.getLogger(__name__)

_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@dataclass
class TrainScope:
    """The trainable part of a model.

    Attributes
    ----------
    parameters : list[nn.Parameter]
        Parameters to optimise.
    trained_modules : list[str]
        Paths of the modules whose parameters are trained.
    frozen_input : bool
        True when nothing before the layer trains (the layer's output can be detached).
    """

    parameters: list[nn.Parameter]
    trained_modules: list[str]
    frozen_input: bool


def _after_layer(model: nn.Module, layer: str, example: torch.Tensor) -> set[str]:
    """Modules every call of which ends after the layer's call and that are not inside the layer."""
    calls = trace_calls(model, example)
    end = max(c.order for c in calls if c.path == layer)
    first: dict[str, int] = {}
    for c in calls:
        first.setdefault(c.path, c.order)
    inside = layer + "."
    return {
        p
        for p, o in first.items()
        if o > end and p != layer and not p.startswith(inside) and not layer.startswith(p + ".")
    }


def set_scope(model: nn.Module, layer: str, scope: str, example: torch.Tensor) -> TrainScope:
    """Freeze, unfreeze and set train/eval modes for fine-tuning (in place).

    Parameters
    ----------
    model : nn.Module
        The model to fine-tune.
    layer : str
        Module path of the artifact direction.
    scope : {"after_layer", "all"}
        What trains.
    example : torch.Tensor
        ``(B, C, H, W)`` an input batch (finds the execution order).
    """
    model.eval()
    if scope == "all":
        names = [p for p, _ in model.named_modules()]
    else:
        names = sorted(_after_layer(model, layer, example))
    # Parameters the user froze stay frozen (a model frozen as a whole, for inference, is not a choice).
    every = list(model.parameters())
    user_frozen = {id(p) for p in every if not p.requires_grad}
    if len(user_frozen) == len(every):
        user_frozen = set()
    params: list[nn.Parameter] = []
    trained: list[str] = []
    kept: list[str] = []
    for p in every:
        p.requires_grad_(False)
    for name in names:
        module = model.get_submodule(name)
        mine = list(module.parameters(recurse=False))
        own = [p for p in mine if id(p) not in user_frozen]
        # one module at a time (not .train(), which recurses into children that may run before the layer)
        module.training = not isinstance(module, _NORM_TYPES)
        if len(own) < len(mine):
            kept.append(name or "<root>")
        if own:
            trained.append(name or "<root>")
            for p in own:
                p.requires_grad_(True)
                params.append(p)
    if kept:
        log.warning(
            "the model's frozen parameters (requires_grad False) stay frozen: %s", ", ".join(kept[:8])
        )
    return TrainScope(params, trained, frozen_input=scope != "all")


def train_all(model: nn.Module) -> TrainScope:
    """Everything trains, BatchNorm included (a model trained from scratch)."""
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    return TrainScope(list(model.parameters()), [n or "<root>" for n, _ in model.named_modules()], False)

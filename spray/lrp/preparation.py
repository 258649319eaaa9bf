"""Preparing the LRP copy of a model: canonize, choose the layout, attach the rules, fuse ReLUs.

Everything here happens once per :class:`~spray.lrp.explainer.Explainer`, before any forward pass, and
only ever on a deep copy of the user's model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from spray.errors import ConfigError, ModelError, UnsupportedLayerError
from spray.lrp.activations import is_activation
from spray.lrp.base import Epsilon, Norm, Rule, RuleContext, RuleModule
from spray.lrp.canonizers import ResidualAdd, canonize
from spray.lrp.composites import LINEAR_TYPES, Composite, user_rule_types
from spray.lrp.fusion import _fuse_relus, _Fusion
from spray.lrp.layout import _convert_layout, prefers_channels_last
from spray.lrp.normalization import is_normalization
from spray.lrp.pooling import lean_maxpools

logger = logging.getLogger(__name__)

__all__ = ["PreparedModel", "eager_model", "prepare", "reference_copy", "uncompiled"]


@dataclass
class PreparedModel:
    """The canonized copy with rules attached, and what the engine needs to know about it.

    Attributes
    ----------
    model : nn.Module
        The copy (eval mode, frozen parameters, rules attached).
    rules : dict[str, Rule]
        Module path → rule (plain-gradient leaves are not listed).
    first_path : str or None
        The relevance-out layer (the first dense/conv layer in module order), if any.
    context : RuleContext
        Shared by all rule modules of the copy.
    fusions : list[_Fusion]
        ReLUs folded into the layer before them (checked on the first call).
    channels_last : bool
        The copy's memory layout.
    """

    model: nn.Module
    rules: dict[str, Rule]
    first_path: str | None
    context: RuleContext
    fusions: list[_Fusion]
    channels_last: bool


def _set_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, new)


def _kind(module: nn.Module) -> tuple[str, str]:
    """What ``module`` looks like (in words) and the rule to suggest for it."""
    name = type(module).__name__.lower()
    if next(module.children(), None) is not None:
        return "a container", "one rule for the whole container, e.g. Epsilon()"
    if isinstance(module, nn.modules.instancenorm._InstanceNorm):
        return (
            "an instance normalisation",
            "none of spray's: build the model in a model.factory with nn.GroupNorm(C, C, affine=...) in its place "
            "(the same computation without running statistics; its weight and bias load as they are), which "
            "spray explains with Normalize()",
        )
    if is_normalization(module) or "norm" in name:
        return (
            "a normalisation layer",
            "Normalize() if its forward() calls F.layer_norm/F.group_norm/F.rms_norm, HeldNorms() if it divides by "
            "a norm it computes itself (x.norm(...)), else Epsilon()",
        )
    if is_activation(module) or any(w in name for w in ("act", "elu", "swish", "sigmoid", "tanh", "mish")):
        return "an element-wise activation", "Pass()"
    if "pool" in name:
        return "a pooling layer", "Norm() for average pooling, Gradient() for max pooling"
    if any(True for _ in module.parameters(recurse=False)):
        return "a layer with weights", "Epsilon() if it is a linear map"
    return (
        "a module without weights",
        "Gradient() if it only moves or copies values, Pass() if it is element-wise",
    )


def input_normalisation_advice(type_name: str = "TYPE") -> str:
    """What to do with a module that normalises the model's input inside the model (measured: with Pass() the
    maps equal those of the same normalisation in ``data.transform``, cosine 1.0 on a ResNet-18)."""
    return (
        f"if it normalises the input ((x - mean) / std), give it Pass(): "
        f"spray.lrp.composites.register_layer_rule({type_name}, spray.lrp.rules.Pass()) in the module of your "
        "model factory; relevance then passes through it unchanged, the same maps as with the normalisation in "
        "data.transform.mean/std. With a Box composite (EpsilonGammaBox) take it out of the model instead "
        "(data.transform.mean/std, and the network after it: a checkpoint saved with the wrapper loads by its "
        "key prefix, e.g. 'net.'), since the box rule's bounds come from data.transform"
    )


def _input_normaliser(m: nn.Module) -> bool:
    """No weights, and buffers named like a mean and a standard deviation: an input normalisation."""
    names = [n.lower() for n, _ in m.named_buffers()]
    return (
        next(m.parameters(), None) is None
        and any("mean" in n for n in names)
        and any("std" in n for n in names)
    )


def unsupported_message(unsupported: list[tuple[str, nn.Module]]) -> str:
    """The refusal for modules without a rule: each path with its type and kind, and the fix."""
    normalisers = [(path, m) for path, m in unsupported if _input_normaliser(m)]
    advice = ""
    if normalisers:
        advice = f"\n{normalisers[0][0]}: {input_normalisation_advice(type(normalisers[0][1]).__name__)}."
        unsupported = [(p, m) for p, m in unsupported if not _input_normaliser(m)]
        if not unsupported:
            return f"spray has no LRP rule for {', '.join(p for p, _ in normalisers)}.{advice}"
    lines: list[str] = []
    hints: dict[str, str] = {}
    for path, m in unsupported:
        kind, rule = _kind(m)
        lines.append(f"  - {path}: {type(m).__module__}.{type(m).__qualname__} ({kind})")
        hints.setdefault(type(m).__name__, rule)
    # the example names a type a rule fits (an instance normalisation has none: it is replaced instead)
    ruled = [(t, r.split(" ")[0]) for t, r in hints.items() if r.split(" ")[0].endswith(")")]
    example = (
        f" For example Explainer(model, extra_rules={{{ruled[0][0]}: {ruled[0][1]}}}), or for every Explainer "
        f"spray.lrp.composites.register_layer_rule({ruled[0][0]}, {ruled[0][1]}) (from a config: call it in the "
        "module of your model factory, which the audit imports before it explains)."
        if ruled
        else ""
    )
    return (
        f"spray has no LRP rule for {len(unsupported)} module(s) of this model:\n"
        + "\n".join(lines)
        + "\nGive each type a rule (rules in spray.lrp.rules): "
        + "; ".join(f"{t}: {r}" for t, r in hints.items())
        + f".{example} A container "
        "(a module with submodules) can be given one rule as a whole. Supported out of the box: "
        "Conv1d/2d/3d, Linear, BatchNorm (also Sync- and FrozenBatchNorm), LayerNorm/GroupNorm/RMSNorm, element-wise activations (torch.nn "
        "and timm), Max/AvgPool (incl. adaptive), Softmax, Flatten, Dropout, Identity, containers, and "
        "attention, gating and activations written in forward()." + advice
    )


def _relevance_out_layer(model: nn.Module, rules: Mapping[str, Rule]) -> str | None:
    # The first dense/conv layer in module order; it returns relevance instead of a gradient.
    for path, module in model.named_modules():
        if path in rules and isinstance(module, LINEAR_TYPES):
            return path
    direct = [p for p, r in rules.items() if r.direct]
    return direct[0] if direct else None


def _attach(model: nn.Module, rules: dict[str, Rule], first: str | None, context: RuleContext) -> None:
    """Replace every ruled module by a :class:`RuleModule` (residual sums get their stabiliser).

    A module registered under several names (``self.c3 = self.c2``, ``nn.ModuleList([block] * 2)``, a
    layer also grouped into a Sequential) is one object that ``named_modules()`` lists once; every name
    gets the same :class:`RuleModule`, else the calls through the other names would bypass the rule.
    """
    aliases: dict[int, list[str]] = {}
    for path, m in model.named_modules(remove_duplicate=False):
        aliases.setdefault(id(m), []).append(path)
    for path, rule in rules.items():
        if not path:
            raise ConfigError(
                f"the rule {rule!r} was given to {type(model).__name__}, the model itself: a rule replaces one "
                "layer's backward, and the whole model is no layer. Give rules to its submodules (move an "
                "operation written in its forward() into a module of its own and give that module the rule)."
            )
        module = model.get_submodule(path)
        if isinstance(module, ResidualAdd):
            if not isinstance(rule, (Norm, Epsilon)):
                raise ConfigError(f"only Norm/Epsilon rules can go on residual sums ({path}), got {rule!r}")
            module.stabilizer = rule.stabilizer if isinstance(rule, Norm) else rule.epsilon
            continue
        if rule.direct and path != first:
            raise ConfigError(
                f"rule {rule!r} produces relevance, not a gradient, and can only go on the first layer "
                f"({first}); it was assigned to {path}"
            )
        wrapped = RuleModule(module, rule, path, path == first, context)
        for alias in aliases.get(id(module), [path]):
            _set_module(model, alias, wrapped)


def prepare(
    model: nn.Module,
    composite: Composite,
    *,
    device: torch.device,
    canonize_model: bool,
    extra_rules: Mapping[type[nn.Module], Rule] | None,
    channels_last: bool | None,
    unfused: str | None = None,
) -> PreparedModel:
    """Deep-copy, canonize and lay out ``model``, attach ``composite``'s rules, fuse ReLUs (not the
    activation at the module path ``unfused``: a concept layer must run).

    Raises
    ------
    UnsupportedLayerError
        Some leaf module has no rule (before any forward pass).
    ConfigError
        A rule that cannot go where the composite puts it.
    """
    # a type the user gave a rule keeps it: canonization must not replace it by another one
    keep = (*(extra_rules or {}), *user_rule_types())
    copied = canonize(model, "auto" if canonize_model else None, device=device, keep=keep, protect=unfused)
    layout = prefers_channels_last(copied, device) if channels_last is None else channels_last
    # before the rules are attached, so that their cached weights (W⁺, ...) share the layout
    layout = _convert_layout(copied, bool(layout))
    rules, unsupported = composite.assign(copied, extra_rules)
    if unsupported:
        raise UnsupportedLayerError(unsupported_message(unsupported))
    first = _relevance_out_layer(copied, rules)
    context = RuleContext(has_first=first is not None)
    _attach(copied, rules, first, context)
    fusions = _fuse_relus(copied, unfused)
    lean_maxpools(copied)
    return PreparedModel(copied, rules, first, context, fusions, layout)


def reference_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """An eval-mode copy of the user's model without its hooks (weight and spectral norm baked in, see
    :func:`~spray.lrp.canonizers.bake_weight_transforms`), for the first call's output check: a rule copy that
    computes another function (a layer computing its weight in ``forward``, a wrongly folded BatchNorm) is
    caught."""
    return canonize(model, None, device=device)


def hooked_modules(model: nn.Module) -> list[str]:
    """Paths of the user's modules that carry forward hooks which spray's copies do not run (weight and
    spectral norm's pre-hooks are baked in instead, so they are not listed)."""
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    found = []
    for path, m in model.named_modules():
        pre = [h for h in m._forward_pre_hooks.values() if not isinstance(h, (SpectralNorm, WeightNorm))]
        if m._forward_hooks or pre or getattr(m, "_forward_hooks_with_kwargs", None):
            found.append(path or "<root>")
    return found


def warn_hooks(model: nn.Module) -> nn.Module | None:
    """Warn that spray's copies do not run the user's forward hooks; return ``model`` when it has any (its
    outputs are compared with the hook-free copy's on the first batch, :func:`check_hooks`), else None."""
    hooked = hooked_modules(model)
    if not hooked:
        return None
    logger.warning(
        "the model has forward hooks on %s; spray explains the model without them (its copies never run the "
        "user's hooks): its heatmaps, predictions and accuracy are the hook-free model's, checked on the first "
        "batch to compute the same outputs",
        ", ".join(hooked[:5]) + (" ..." if len(hooked) > 5 else ""),
    )
    return model


def check_hooks(model: nn.Module | None, reference: nn.Module, x: torch.Tensor) -> None:
    """Refuse a model whose forward hooks change its outputs: on ``x[:2]``, in eval mode (the user's training
    flags are restored), the model with its hooks against its hook-free copy ``reference``.

    Raises
    ------
    ModelError
        The logits differ by more than 0.1 % of their scale.
    """
    if model is None:
        return
    n = min(len(x), 2)
    flags = [(m, m.training) for m in model.modules()]
    device = next((p.device for p in model.parameters()), x.device)
    try:
        model.eval()
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            got = model(x[:n].detach().float().to(device))
            want = reference(x[:n].detach().float())
    finally:
        for m, training in flags:
            m.training = training
    if not isinstance(got, torch.Tensor) or not isinstance(want, torch.Tensor) or got.shape != want.shape:
        return  # the output check of the copy says what the model returns
    got, want = got.float().to(want.device), want.float()
    scale = float(want.abs().max().clamp(min=1e-12))
    err = float((got - want).abs().max())
    if err > 1e-3 * scale:
        raise ModelError(
            f"the model's forward hooks change its outputs (max |Δlogit| = {err:.3g} of {scale:.3g} on two "
            f"samples, with the hooks on {', '.join(hooked_modules(model)[:5])}): spray's copies never run the "
            "user's hooks, so its heatmaps, predictions and accuracy would be another model's. Remove the hooks, "
            "or build what they do into the model's forward()."
        )


def uncompiled(model: nn.Module) -> nn.Module:
    """The model a ``torch.compile``'d one compiles (LRP's backward runs the eager modules' rules, and spray's
    hooks would make the compiled graph recompile); other models as they are."""
    compiled = getattr(model, "_orig_mod", None)
    return (
        compiled if type(model).__name__ == "OptimizedModule" and isinstance(compiled, nn.Module) else model
    )


def eager_model(model: nn.Module, concept_layer: str | None) -> tuple[nn.Module, str | None]:
    """:func:`uncompiled` ``model``, with ``concept_layer`` given under torch.compile's ``_orig_mod.`` prefix
    read without it (a compiled model's first call took 31 s and ~90 recompilations)."""
    eager = uncompiled(model)
    if eager is not model and concept_layer is not None and concept_layer.startswith("_orig_mod."):
        concept_layer = concept_layer.removeprefix("_orig_mod.")
    return eager, concept_layer

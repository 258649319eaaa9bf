"""Composites: which LRP rule goes on which layer, with zennit's names and meaning.

The layer maps mirror zennit 0.5.1 (``zennit/composites.py``), checked against its source:

================================  ======================  ===========  ======  ==========================
composite                         first layer             other conv   dense   shared (all composites)
================================  ======================  ===========  ======  ==========================
``EpsilonPlusFlat`` (default)     Flat (first conv/dense)  ZPlus        ε       avg-pool, residual sum:
``EpsilonAlpha2Beta1Flat``        Flat (first conv/dense)  α2β1         ε       Norm; BatchNorm (unfolded),
``EpsilonGammaBox``               ZBox (first conv only)   Gamma        ε       activations: Pass;
``EpsilonPlus``                   —                        ZPlus        ε       max-pool: gradient
``EpsilonAlpha2Beta1``            —                        α2β1         ε
================================  ======================  ===========  ======  ==========================

"First layer" is, as in zennit, the first matching module in ``named_modules()`` order. zennit's
``Pass`` on ReLU is implemented by the plain ReLU gradient, which is the same thing in the
gradient×input frame (see :mod:`spray.lrp.rules`).

All composites share the rules for what zennit has no rule for: LayerNorm/GroupNorm/RMSNorm get
:class:`~spray.lrp.normalization.Normalize` (AttnLRP), every element-wise activation gets ``Pass``
(zennit's ``Activation`` list and timm's activations), and functional operations inside ``forward()``
(attention, gating products, functional activations and norms) get the rules of
:mod:`spray.lrp.functional`. ``AttnLRP`` and ``CPLRP`` are the transformer composites: ε on every dense
and convolutional layer, with AttnLRP's or CP-LRP's rule for attention.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from spray.errors import ConfigError
from spray.lrp.activations import class_names, is_activation, is_composite_activation
from spray.lrp.canonizers import ResidualAdd
from spray.lrp.functional import ATTENTION_RULES
from spray.lrp.normalization import HeldNorms, Normalize, is_normalization, is_response_norm
from spray.lrp.rules import AlphaBeta, Epsilon, Flat, Gamma, Gradient, Norm, Pass, Rule, ZBox, ZPlus

__all__ = [
    "COMPOSITES",
    "Composite",
    "get_composite",
    "register_layer_rule",
]

CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
DENSE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear,)
LINEAR_TYPES: tuple[type[nn.Module], ...] = CONV_TYPES + DENSE_TYPES
AVGPOOL_TYPES: tuple[type[nn.Module], ...] = (
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
)
BATCHNORM_TYPES: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# Modules whose plain gradient is the right LRP backward in the gradient×input frame.
GRADIENT_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.Flatten,
    nn.Unflatten,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.Identity,
    nn.Softmax,  # AttnLRP's softmax rule is its gradient (spray.lrp.functional)
    nn.LogSoftmax,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
    nn.ChannelShuffle,
    nn.Upsample,
    nn.ZeroPad1d,
    nn.ZeroPad2d,
    nn.ZeroPad3d,
    nn.ReflectionPad1d,
    nn.ReflectionPad2d,
    nn.ReflectionPad3d,
    nn.ReplicationPad1d,
    nn.ReplicationPad2d,
    nn.ReplicationPad3d,
    # a nonzero pad value is an added constant, which the self-check reports like any other
    nn.ConstantPad1d,
    nn.ConstantPad2d,
    nn.ConstantPad3d,
)
# Routing/identity modules of other libraries (by qualified class name, so nothing is imported), and
# multiplications by a learned constant (layer scale), whose gradient is the LRP-0/Pass rule.
GRADIENT_CLASS_NAMES: frozenset[str] = frozenset(
    {
        "torchvision.ops.misc.Permute",
        "torchvision.ops.stochastic_depth.StochasticDepth",
        "timm.layers.drop.DropPath",
        "timm.layers.patch_dropout.PatchDropout",
        "timm.layers.layer_scale.LayerScale",
        "timm.layers.layer_scale.LayerScale2d",
        # the same per-channel constant, defined again by some timm models (FastViT, SwiftFormer, MetaFormer)
        "timm.models.fastvit.LayerScale2d",
        "timm.models.swiftformer.LayerScale2d",
        "timm.models.metaformer.Scale",
        # timm's global poolings over the spatial dims (max, and half mean half max): their gradient is
        # conservative (a max passes its input's share, a mean LRP-0's)
        "timm.layers.adaptive_avgmax_pool.FastAdaptiveMaxPool",
        "timm.layers.adaptive_avgmax_pool.FastAdaptiveAvgMaxPool",
        "timm.layers.adaptive_avgmax_pool.FastAdaptiveCatAvgMaxPool",
        "timm.layers.adaptive_avgmax_pool.AdaptiveAvgMaxPool2d",
        "timm.layers.adaptive_avgmax_pool.AdaptiveCatAvgMaxPool2d",
        # ResNeSt's split-attention weights (a softmax over the branches, a sigmoid for one): only reshapes
        # around it, and the product with the branches holds the weights constant (the gate rule)
        "timm.layers.split_attn.RadixSoftmax",
    }
)


# Per-channel affine input transforms of other libraries (torchvision's Normalize inside
# ``nn.Sequential(normalize, net)``): element-wise like an unfolded BatchNorm, so ``Pass``.
PASS_CLASS_NAMES: frozenset[str] = frozenset(
    {"torchvision.transforms.transforms.Normalize", "torchvision.transforms.v2._misc.Normalize"}
)


def is_channel_affine(module: nn.Module) -> bool:
    """Whether ``module`` is another library's per-channel affine transform (torchvision's ``Normalize``)."""
    return bool(class_names(module) & PASS_CLASS_NAMES)


# Mean poolings of other libraries, by qualified class name: they get the average pooling's rule
AVGPOOL_CLASS_NAMES: frozenset[str] = frozenset({"timm.layers.adaptive_avgmax_pool.FastAdaptiveAvgPool"})


def is_avgpool(module: nn.Module) -> bool:
    """Whether ``module`` averages over positions (torch's average poolings, timm's ``FastAdaptiveAvgPool``
    of channels-last heads)."""
    return isinstance(module, AVGPOOL_TYPES) or bool(class_names(module) & AVGPOOL_CLASS_NAMES)


def is_gradient_module(module: nn.Module) -> bool:
    """Whether ``module``'s plain gradient is its LRP backward (routing, reshapes, dropout, ...; an empty
    ``nn.Sequential``, which timm and torchvision use as an identity, passes its input through)."""
    if type(module) is nn.Sequential and len(module) == 0:
        return True
    return isinstance(module, (*GRADIENT_TYPES, ResidualAdd)) or bool(
        class_names(module) & GRADIENT_CLASS_NAMES
    )


# Global registry for user layer types (``register_layer_rule``); ``extra_rules`` of an Explainer
# take precedence over it.
_USER_RULES: dict[type[nn.Module], Rule] = {}


def register_layer_rule(layer_type: type[nn.Module], rule: Rule) -> None:
    """Register an LRP rule for a custom layer type, for every Explainer created afterwards.

    Parameters
    ----------
    layer_type : type[nn.Module]
        The module class (subclasses match too).
    rule : Rule
        E.g. ``Pass()`` for an element-wise activation, ``Epsilon()`` for a linear map,
        ``Gradient()`` for a routing/reshape module.
    """
    if not (isinstance(layer_type, type) and issubclass(layer_type, nn.Module)):
        raise ConfigError(f"register_layer_rule needs an nn.Module subclass, got {layer_type!r}")
    if not isinstance(rule, Rule):
        raise ConfigError(f"register_layer_rule needs a spray.lrp.rules.Rule instance, got {rule!r}")
    _USER_RULES[layer_type] = rule


def user_rule_types() -> tuple[type[nn.Module], ...]:
    """The layer types given a rule with :func:`register_layer_rule`."""
    return tuple(_USER_RULES)


Matcher = tuple[type[nn.Module], ...] | Callable[[nn.Module], bool]
LayerMap = list[tuple[Matcher, Rule]]


def _matches(matcher: Matcher, module: nn.Module) -> bool:
    return (
        matcher(module)
        if callable(matcher) and not isinstance(matcher, tuple)
        else isinstance(module, matcher)
    )


@dataclass
class Composite:
    """A mapping from layers to rules.

    Attributes
    ----------
    name : str
        Registry name (CamelCase, as zennit's class name).
    layer_map : list of (types, Rule)
        First match wins.
    first_map : list of (types, Rule)
        Checked, before ``layer_map``, until one module matched (zennit's special first layer).
    stabilizer : float
        Stabiliser of the Norm rule on average pooling and residual sums.
    """

    name: str
    layer_map: LayerMap
    first_map: LayerMap = field(default_factory=list)
    stabilizer: float = 1e-6
    attention: str = "attnlrp"

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_RULES:
            raise ConfigError(f"attention must be one of {list(ATTENTION_RULES)}, got {self.attention!r}")

    def _rule(
        self, module: nn.Module, user: list[tuple[type[nn.Module], Rule]], first_visited: bool
    ) -> tuple[Rule | None, bool, bool]:
        """(rule, matched by the user, matched the first-layer map) for one module."""
        rule = next((r for t, r in user if isinstance(module, t)), None)
        if rule is not None:
            return rule, True, False
        if not first_visited:
            rule = next((r for m, r in self.first_map if _matches(m, module)), None)
            if rule is not None:
                return rule, False, True
        return next((r for m, r in self.layer_map if _matches(m, module)), None), False, False

    def assign(
        self, model: nn.Module, extra_rules: Mapping[type[nn.Module], Rule] | None = None
    ) -> tuple[dict[str, Rule], list[tuple[str, nn.Module]]]:
        """Decide the rule of every module of a canonized model.

        Composite rules go on leaf modules. A user rule (``extra_rules`` or :func:`register_layer_rule`)
        may also name a container: the container then runs as one unit under that rule, and its
        submodules get no rules of their own. A container that owns parameters itself (a class token, a
        layer scale) is accepted: whether its ``forward()`` conserves relevance is checked on the first
        batch.

        Parameters
        ----------
        model : nn.Module
            The canonized copy.
        extra_rules : mapping of module type to Rule, optional
            User rules; they take precedence over the composite and the global registry.

        Returns
        -------
        rules : dict[str, Rule]
            Module path → rule, for modules that need one (plain-gradient leaves are left out).
        unsupported : list of (path, module)
            Leaf modules for which no rule is known.
        """
        user = list((extra_rules or {}).items()) + list(_USER_RULES.items())
        first_visited = False
        rules: dict[str, Rule] = {}
        unsupported: list[tuple[str, nn.Module]] = []
        ruled: list[str] = []  # containers with a user rule: their submodules are skipped
        for path, module in model.named_modules():
            if any(path.startswith(p + ".") for p in ruled):
                continue
            has_children = next(module.children(), None) is not None
            rule, by_user, first = self._rule(module, user, first_visited)
            if rule is not None and has_children and not by_user and not is_composite_activation(module):
                rule = None  # composite rules are for leaves; a matching container is walked into
            if rule is not None:
                first_visited = first_visited or first
                if has_children:
                    ruled.append(path)
                    rules[path] = rule
                elif not isinstance(rule, Gradient):
                    rules[path] = rule
                continue
            if not has_children and not is_gradient_module(module):
                unsupported.append((path or "<root>", module))
        return rules, unsupported


def _base_map(stabilizer: float) -> LayerMap:
    return [
        ((ResidualAdd,), Norm(stabilizer=stabilizer)),
        (is_avgpool, Norm(stabilizer=stabilizer)),
        (BATCHNORM_TYPES, Pass()),
        (is_channel_affine, Pass()),
        (is_normalization, Normalize()),
        (is_response_norm, HeldNorms()),
        (is_activation, Pass()),
    ]


def epsilon_plus_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """Flat on the first dense/conv layer, z+ on the other convs, ε on dense layers (the default)."""
    return Composite(
        "EpsilonPlusFlat",
        [*_base_map(stabilizer), (CONV_TYPES, ZPlus(stabilizer)), (DENSE_TYPES, Epsilon(epsilon))],
        first_map=[(LINEAR_TYPES, Flat(stabilizer))],
        stabilizer=stabilizer,
    )


def epsilon_plus(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """z+ on all convs (including the first), ε on dense layers."""
    return Composite(
        "EpsilonPlus",
        [*_base_map(stabilizer), (CONV_TYPES, ZPlus(stabilizer)), (DENSE_TYPES, Epsilon(epsilon))],
        stabilizer=stabilizer,
    )


def epsilon_alpha2_beta1_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """Flat on the first dense/conv layer, α2β1 on the other convs, ε on dense layers."""
    return Composite(
        "EpsilonAlpha2Beta1Flat",
        [
            *_base_map(stabilizer),
            (CONV_TYPES, AlphaBeta(2.0, 1.0, stabilizer)),
            (DENSE_TYPES, Epsilon(epsilon)),
        ],
        first_map=[(LINEAR_TYPES, Flat(stabilizer))],
        stabilizer=stabilizer,
    )


def epsilon_alpha2_beta1(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """α2β1 on all convs, ε on dense layers."""
    return Composite(
        "EpsilonAlpha2Beta1",
        [
            *_base_map(stabilizer),
            (CONV_TYPES, AlphaBeta(2.0, 1.0, stabilizer)),
            (DENSE_TYPES, Epsilon(epsilon)),
        ],
        stabilizer=stabilizer,
    )


def epsilon_gamma_box(
    low: float | torch.Tensor = 0.0,
    high: float | torch.Tensor = 1.0,
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    stabilizer: float = 1e-6,
) -> Composite:
    """ZBox on the first conv, γ on the other convs, ε on dense layers.

    ``low``/``high`` are the lowest/highest possible input values *as the model sees them* (after
    normalisation), floats or tensors broadcastable to ``(1, C, H, W)``; zennit requires them, spray
    defaults to the raw pixel range ``[0, 1]``.
    """
    return Composite(
        "EpsilonGammaBox",
        [*_base_map(stabilizer), (CONV_TYPES, Gamma(gamma, stabilizer)), (DENSE_TYPES, Epsilon(epsilon))],
        first_map=[(CONV_TYPES, ZBox(low, high, stabilizer))],
        stabilizer=stabilizer,
    )


def attn_lrp(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """AttnLRP (Achtibat et al., ICML 2024): ε on every dense and convolutional layer (the patch
    embedding included, so the map has the input's resolution), the uniform rule on the attention
    matmuls, the softmax by its gradient, LayerNorm with σ held constant, GELU by the identity rule."""
    return Composite(
        "AttnLRP", [*_base_map(stabilizer), (LINEAR_TYPES, Epsilon(epsilon))], stabilizer=stabilizer
    )


def cp_lrp(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """CP-LRP (Ali et al., ICML 2022): as :func:`attn_lrp`, but the attention weights are held constant,
    so relevance flows through the values only; conservative with zero biases."""
    return Composite(
        "CPLRP",
        [*_base_map(stabilizer), (LINEAR_TYPES, Epsilon(epsilon))],
        stabilizer=stabilizer,
        attention="cp",
    )


COMPOSITES: dict[str, Callable[..., Composite]] = {
    "EpsilonPlusFlat": epsilon_plus_flat,
    "EpsilonGammaBox": epsilon_gamma_box,
    "EpsilonAlpha2Beta1Flat": epsilon_alpha2_beta1_flat,
    "EpsilonPlus": epsilon_plus,
    "EpsilonAlpha2Beta1": epsilon_alpha2_beta1,
    "AttnLRP": attn_lrp,
    "CPLRP": cp_lrp,
}


def _snake(name: str) -> str:
    # "EpsilonAlpha2Beta1Flat" -> "epsilon_alpha2_beta1_flat" (zennit's registry keys)
    return {"CPLRP": "cp_lrp"}.get(name) or re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def composite_key(name: str) -> str | None:
    """The :data:`COMPOSITES` key of ``name``, given as that key or as zennit's snake_case one; None when
    unknown."""
    if name in COMPOSITES:
        return name
    return next((k for k in COMPOSITES if _snake(k) == name), None)


def get_composite(name: str, **kwargs: Any) -> Composite:
    """Build a composite by name.

    Parameters
    ----------
    name : str
        A key of :data:`COMPOSITES` (CamelCase) or zennit's snake_case key (``"epsilon_plus_flat"``).
    **kwargs
        Parameters of the composite (``epsilon``, ``stabilizer``, ``gamma``, ``low``, ``high``).

    Raises
    ------
    ConfigError
        Unknown name (the message lists the known ones) or a bad parameter.
    """
    key = composite_key(name)
    if key is None:
        import difflib

        close = difflib.get_close_matches(name, list(COMPOSITES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"lrp.composite: unknown LRP composite {name!r}.{hint} Known composites: {', '.join(COMPOSITES)}."
        )
    try:
        return COMPOSITES[key](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad parameters for composite {name!r}: {exc}") from exc

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
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from spray.errors import ConfigError
from spray.lrp.canonizers import ResidualAdd
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


LayerMap = list[tuple[tuple[type[nn.Module], ...], Rule]]


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

    def assign(
        self, model: nn.Module, extra_rules: Mapping[type[nn.Module], Rule] | None = None
    ) -> tuple[dict[str, Rule], list[tuple[str, nn.Module]]]:
        """Decide the rule of every module of a canonized model.

        Parameters
        ----------
        model : nn.Module
            The canonized copy.
        extra_rules : mapping of module type to Rule, optional
            User rules; they take precedence over the composite and the global registry.

        Returns
        -------
        rules : dict[str, Rule]
            Module path → rule, for modules that need one (plain-gradient modules are left out).
        unsupported : list of (path, module)
            Modules for which no rule is known.
        """
        user: list[tuple[type[nn.Module], Rule]] = list((extra_rules or {}).items()) + list(
            _USER_RULES.items()
        )
        first_visited = False
        rules: dict[str, Rule] = {}
        unsupported: list[tuple[str, nn.Module]] = []
        for path, module in model.named_modules():
            rule = next((r for t, r in user if isinstance(module, t)), None)
            if rule is None and not first_visited:
                rule = next((r for t, r in self.first_map if isinstance(module, t)), None)
                first_visited = rule is not None
            if rule is None:
                rule = next((r for t, r in self.layer_map if isinstance(module, t)), None)
            has_children = next(module.children(), None) is not None
            if rule is not None:
                if has_children:
                    # a rule on a container would hide its children's rules; only leaves get rules
                    raise ConfigError(
                        f"rule {rule!r} matched {path} ({type(module).__name__}), which has submodules; "
                        "rules can only be attached to leaf modules"
                    )
                if not isinstance(rule, Gradient):
                    rules[path] = rule
                continue
            if isinstance(module, (GRADIENT_TYPES, ResidualAdd)):
                continue
            own_params = any(True for _ in module.parameters(recurse=False))
            if not has_children or own_params:
                unsupported.append((path or "<root>", module))
        return rules, unsupported


def _base_map(stabilizer: float) -> LayerMap:
    return [
        ((ResidualAdd,), Norm(stabilizer=stabilizer)),
        (AVGPOOL_TYPES, Norm(stabilizer=stabilizer)),
        (BATCHNORM_TYPES, Pass()),
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


COMPOSITES: dict[str, Callable[..., Composite]] = {
    "EpsilonPlusFlat": epsilon_plus_flat,
    "EpsilonGammaBox": epsilon_gamma_box,
    "EpsilonAlpha2Beta1Flat": epsilon_alpha2_beta1_flat,
    "EpsilonPlus": epsilon_plus,
    "EpsilonAlpha2Beta1": epsilon_alpha2_beta1,
}


def _snake(name: str) -> str:
    # "EpsilonAlpha2Beta1Flat" -> "epsilon_alpha2_beta1_flat" (zennit's registry keys)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


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
    lookup = {**{_snake(k): v for k, v in COMPOSITES.items()}, **COMPOSITES}
    if name not in lookup:
        raise ConfigError(f"unknown LRP composite {name!r}; known composites: {', '.join(COMPOSITES)}")
    try:
        return lookup[name](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad parameters for composite {name!r}: {exc}") from exc

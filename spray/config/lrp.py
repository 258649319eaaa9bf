"""The ``lrp`` section: how heatmaps are computed."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from spray.config.section import Section

_EPS = ("epsilon", "stabilizer")
#: Each composite's parameters (spray.lrp.composites' builders; a test holds them equal), so that the config is
#: checked when loaded without importing torch.
COMPOSITE_PARAMETERS: dict[str, tuple[str, ...]] = {
    "EpsilonPlusFlat": _EPS,
    "EpsilonGammaBox": ("low", "high", "epsilon", "gamma", "stabilizer"),
    "EpsilonAlpha2Beta1Flat": _EPS,
    "EpsilonPlus": _EPS,
    "EpsilonAlpha2Beta1": _EPS,
    "AttnLRP": _EPS,
    "CPLRP": _EPS,
}


#: The composites' default parameters (the builders' defaults; a test holds them equal): a parameter written
#: out at its default is dropped when the config is read, so that it names the same heatmaps and cache as
#: leaving it out.
COMPOSITE_DEFAULTS: dict[str, float] = {"epsilon": 1e-6, "stabilizer": 1e-6, "gamma": 0.25}


#: The composites with rules for attention (a transformer's).
TRANSFORMER_COMPOSITES = frozenset({"AttnLRP", "CPLRP"})


def canonical_composite(name: str) -> str:
    """spray's key of a composite given as that key, zennit's snake_case key or in another case
    (``epsilon_gamma_box`` -> ``EpsilonGammaBox``); an unknown name is returned as given."""
    flat = name.replace("_", "").lower()
    return next((k for k in COMPOSITE_PARAMETERS if k.lower() == flat), name)


def _composite_problem(composite: str, kwargs: dict[str, float]) -> str | None:
    """What is wrong with ``kwargs`` for ``composite`` (its name as spray's or zennit's key), or None."""
    known = COMPOSITE_PARAMETERS.get(canonical_composite(composite))
    if known is not None:
        unknown = [k for k in kwargs if k not in known]
        if unknown:
            return (
                f"lrp.composite_kwargs: {composite} takes no parameter {unknown[0]!r}; its parameters are "
                f"{', '.join(known)}"
            )
    for name in ("epsilon", "stabilizer"):
        v = kwargs.get(name)
        if v is not None and not (math.isfinite(v) and v > 0):
            # a non-positive stabiliser flips or removes the denominator's guard: the map no longer
            # conserves the logit
            return f"lrp.composite_kwargs: {name} must be a positive number (e.g. 1e-6); got {v}"
    gamma = kwargs.get("gamma")
    if gamma is not None and not (math.isfinite(gamma) and gamma >= 0):
        return f"lrp.composite_kwargs: gamma must be 0 or more (0 is the z-rule; default 0.25); got {gamma}"
    for name in ("low", "high"):
        v = kwargs.get(name)
        if v is not None and not math.isfinite(v):
            return f"lrp.composite_kwargs: {name} must be a finite number; got {v}"
    low, high = kwargs.get("low", 0.0), kwargs.get("high", 1.0)
    if not low < high:
        return (
            f"lrp.composite_kwargs: low ({low}) must be below high ({high}): the lowest and highest input "
            "values as the model sees them"
        )
    return None


class LRPConfig(Section):
    """LRP settings for the batch stage."""

    # eager is how spray always computed: left out of the record, existing runs keep their ids and cache keys
    omit_at_default = ("elementwise",)

    composite: str = Field(
        "EpsilonPlusFlat",
        description="Composite name: EpsilonPlusFlat, EpsilonGammaBox, EpsilonAlpha2Beta1Flat, EpsilonPlus, "
        "EpsilonAlpha2Beta1, AttnLRP or CPLRP (zennit's snake_case keys and other cases are read as these).",
    )
    composite_kwargs: dict[str, float] = Field(
        default_factory=dict,
        description="Composite parameters such as epsilon, gamma, low, high (a Box composite's low and high "
        "default to the transform's input range). One at its default (epsilon 1e-6, stabilizer 1e-6, gamma "
        "0.25) is dropped when read: the same heatmaps and cache as leaving it out.",
    )
    target: Literal["label", "pred"] | int = Field("label", description="Which logit to explain.")
    precision: Literal["fp32", "tf32", "bf16"] = Field("fp32", description="Compute precision.")
    canonize: bool = Field(True, description="Fold BatchNorm and canonize residual adds.")
    elementwise: Literal["eager", "compile"] = Field(
        "eager",
        description="How the rules' element-wise work (stabilised ratios, gradient rescales) runs: 'eager' "
        "(PyTorch's in-place operations) or 'compile' (each fused into one kernel by torch.compile: Triton "
        "on CUDA, C++ on CPU; meant for GPUs, where that work is memory-bound). 'compile' costs tens of "
        "seconds on the first batch and gives the eager maps to float32 round-off (tested on CPU; GPU "
        "speed not measured yet, see docs/lrp.md). It is part of the heatmap cache key and the run id.",
    )
    concept_layer: str = Field(
        "auto",
        description=(
            "Layer whose per-channel relevance (concept relevance, summed over positions) is stored for "
            "every sample, from the heatmap's own backward pass: a module path of the model "
            "(model.named_modules()), 'auto' (the last convolutional stage: the top-level child holding "
            "the last convolution, e.g. 'features' or 'layer4'; for a transformer its last block; for a model "
            "with neither, none, with a warning) or 'none' (no concept relevance). See docs/concepts.md."
        ),
    )

    @field_validator("composite")
    @classmethod
    def _composite_canonical(cls, v: str) -> str:
        # one spelling per composite: another case or zennit's key would name other heatmaps, and code that
        # reads the name (a Box composite's input bounds) would not recognise it
        return canonical_composite(v)

    @field_validator("concept_layer")
    @classmethod
    def _concept_layer_named(cls, v: str) -> str:
        # an empty module path is the whole model, whose output is the logits
        if not v.strip():
            raise ValueError(
                "an empty layer is the whole model, whose output is the class scores: give a module path "
                "(model.named_modules()), 'auto' or 'none'"
            )
        return v

    @model_validator(mode="after")
    def _composite_kwargs_ok(self) -> LRPConfig:
        problem = _composite_problem(self.composite, self.composite_kwargs)
        if problem:
            raise ValueError(problem)
        at_default = [k for k, v in self.composite_kwargs.items() if COMPOSITE_DEFAULTS.get(k) == v]
        if at_default:
            # assigned without re-validation: this validator runs on assignment too
            kept = {k: v for k, v in self.composite_kwargs.items() if k not in at_default}
            object.__setattr__(self, "composite_kwargs", kept)
        return self

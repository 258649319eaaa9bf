"""The ``lrp`` section: how heatmaps are computed."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from spray.config.section import Section


class LRPConfig(Section):
    """LRP settings for the batch stage."""

    composite: str = Field("EpsilonPlusFlat", description="Composite name (zennit's names).")
    composite_kwargs: dict[str, float] = Field(
        default_factory=dict, description="Composite parameters such as epsilon, gamma, low, high."
    )
    target: Literal["label", "pred"] | int = Field("label", description="Which logit to explain.")
    precision: Literal["fp32", "tf32", "bf16"] = Field("fp32", description="Compute precision.")
    canonize: bool = Field(True, description="Fold BatchNorm and canonize residual adds.")
    concept_layer: str = Field(
        "auto",
        description=(
            "Layer whose per-channel relevance (concept relevance, summed over positions) is stored for "
            "every sample, from the heatmap's own backward pass: a module path of the model "
            "(model.named_modules()), 'auto' (the last convolutional stage: the top-level child holding "
            "the last convolution, e.g. 'features' or 'layer4'; for a transformer its last block) or "
            "'none' (no concept relevance). See docs/concepts.md."
        ),
    )

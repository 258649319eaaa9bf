"""The ``lrp`` section: how heatmaps are computed."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from spray.config.section import Section


class LRPConfig(Section):
    """LRP settings for the batch stage."""

    # eager is how spray always computed: left out of the record, existing runs keep their ids and cache keys
    omit_at_default = ("elementwise",)

    composite: str = Field("EpsilonPlusFlat", description="Composite name (zennit's names).")
    composite_kwargs: dict[str, float] = Field(
        default_factory=dict, description="Composite parameters such as epsilon, gamma, low, high."
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

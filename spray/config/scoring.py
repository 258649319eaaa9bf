"""The ``scoring`` section: suspicion scoring, the intervention test and the flag rule."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from spray.config.section import Section


class ScoringConfig(Section):
    """Suspicion scoring of clusters (see docs/detection.md for the calibration behind the defaults)."""

    intervention: bool = Field(
        True, description="Run the paste-the-hot-region test on the leading candidates."
    )
    intervention_candidates: int = Field(3, ge=0, description="Leading candidates per labelling to test.")
    intervention_samples: int = Field(200, ge=1, description="Other-class images to paste into.")
    flip_margin: float = Field(
        0.05, ge=0.0, le=1.0, description="Flag: paste flip rate minus same-class null at least this."
    )
    flip_alpha: float = Field(
        0.01, gt=0.0, lt=1.0, description="Flag: one-sided sign-test p-value below this."
    )
    flip_ratio: float = Field(
        2.0, ge=1.0, description="Flag: smoothed flip rate over the null at least this."
    )
    flag_min_map_score: float = Field(
        0.0, ge=0.0, description="Flag: map score at least this (with a probe)."
    )
    flag_max_fraction: float = Field(
        0.6, gt=0.0, le=1.0, description="Flag: cluster at most this share of its class."
    )
    flag_min_appearance: float = Field(
        0.4,
        ge=0.0,
        le=1.0,
        description="Flag: the members' pixels in the region must be at least this alike (the "
        "'appearance' signal: 1 = identical in every member, as a stamp; 0 = as varied as the class).",
    )
    map_threshold: float = Field(
        0.35, ge=0.0, description="Flag without a probe: map score at least this (weak)."
    )
    translation_tolerant: bool = Field(
        True, description="Also score per-sample windows (artifacts that move)."
    )
    carriers: bool = Field(
        True,
        description="For flagged clusters, list the other samples of the class that repeat the members' "
        "pixels where their relevance is (one scan of the class's inputs per flagged cluster).",
    )
    select_k: Literal["best", "chosen"] = Field(
        "best", description="Score the labelling whose top pattern is best isolated, or only the chosen k."
    )

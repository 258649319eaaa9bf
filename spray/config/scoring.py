"""The ``scoring`` section: suspicion scoring, the intervention test and the flag rule.

Every number that tunes the ranking or the alarm is a field here (and so recorded with the run); the
calibration behind each default is told in ``docs/detection.md``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from spray.config.section import Section


class ScoringConfig(Section):
    """Suspicion scoring of clusters (see docs/detection.md for the calibration behind the defaults)."""

    # --- the intervention (paste) test -------------------------------------------------------------
    intervention: bool = Field(
        True, description="Run the paste-the-hot-region test on the leading candidates."
    )
    intervention_candidates: int = Field(3, ge=0, description="Leading candidates per labelling to test.")
    intervention_samples: int = Field(200, ge=1, description="Other-class images to paste into.")
    max_donors: int = Field(
        64,
        ge=1,
        description="Members (and, for the null, non-members) whose pixels are pasted, cycled over the "
        "target images.",
    )
    # --- the flag rule -------------------------------------------------------------------------------
    flip_margin: float = Field(
        0.05, ge=0.0, le=1.0, description="Flag: paste flip rate minus same-class null at least this."
    )
    flip_alpha: float = Field(
        0.01, gt=0.0, lt=1.0, description="Flag: one-sided sign-test p-value below this."
    )
    flip_ratio: float = Field(
        2.0, ge=1.0, description="Flag: smoothed flip rate over the null at least this."
    )
    ratio_eps: float = Field(
        0.02,
        gt=0.0,
        description="Smoothing of the flip rate ratio (flip + eps) / (null + eps): a flip rate of this "
        "size counts as 'no flips'.",
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
    min_cluster_size: int = Field(
        5, ge=1, description="Clusters smaller than this are scored 0 and never tested or flagged."
    )
    # --- the score -----------------------------------------------------------------------------------
    appearance_floor: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Score factor of a cluster whose pixels vary like the class (appearance 0); the "
        "factor is floor + (1 - floor) * appearance.",
    )
    full_excess: float = Field(
        0.5, gt=0.0, le=1.0, description="Paste flip excess over the null that gives the full paste strength."
    )
    lift_full: float = Field(
        100.0,
        gt=1.0,
        description="Lift (members' share in the region over the rest's median share) that counts fully in "
        "the map score; the factor is log(lift) / log(lift_full), clipped to [0, 1].",
    )
    lift_eps: float = Field(
        0.005, gt=0.0, description="Regulariser of the lift ratio (a share this small counts as none)."
    )
    consistency_weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Map score factor (1 - weight) + weight * consistency (2 AUROC - 1 of the members' share "
        "in the region against the rest's).",
    )
    separation_weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Map score factor (1 - weight) + weight * separation (1 - conductance of the cluster "
        "in the kNN graph).",
    )
    rarity_weight: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description="Map score factor 1 - weight * fraction: rarer clusters rank slightly higher.",
    )
    # --- regions -------------------------------------------------------------------------------------
    window_fractions: tuple[float, ...] = Field(
        (1 / 8, 1 / 6, 1 / 5),
        min_length=1,
        description="Sides of the square windows tried as hot regions, as fractions of the grid side. Only "
        "small windows: a large one holds a whole object part of a natural sub-group.",
    )
    frame_widths: tuple[int, ...] = Field(
        (1, 2), description="Widths (cells) of the border frames tried as hot regions."
    )
    area_penalty: float = Field(
        0.5,
        ge=0.0,
        description="Penalty per unit of region area (fraction of the grid) when the hot region is chosen: "
        "a region covering all the image would trivially hold all the relevance.",
    )
    translation_tolerant: bool = Field(
        True, description="Also score per-sample windows (artifacts that move)."
    )
    moving_margin: float = Field(
        0.05,
        ge=0.0,
        description="Per-sample windows win over the shared region only when their contrast is higher by "
        "this much (a fixed artifact is trivially a moving one too).",
    )
    # --- aligned appearance --------------------------------------------------------------------------
    jitter_reach: float = Field(
        1.0,
        ge=0.0,
        description="Appearance is also measured at each sample's own window within this many window "
        "sides of a fixed window, aligned to the members' median pixels (a tag on the background lands "
        "at a slightly different spot in each image). 0 turns it off.",
    )
    aligned_margin: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="The aligned appearance counts only when it reaches flag_min_appearance plus this (each "
        "sample picking its best-matching window makes any region look somewhat more alike).",
    )
    align_rounds: int = Field(
        2, ge=1, description="Rounds of aligning each sample's window to the members' median pixels."
    )
    # --- carriers and labellings ---------------------------------------------------------------------
    carriers: bool = Field(
        True,
        description="For flagged clusters, list the other samples of the class that repeat the members' "
        "pixels where their relevance is (one scan of the class's inputs per flagged cluster).",
    )
    carrier_chunk: int = Field(
        512, ge=1, description="Samples loaded at once by the carrier scan (bounds its memory)."
    )
    select_k: Literal["best", "chosen"] = Field(
        "best", description="Score the labelling whose top pattern is best isolated, or only the chosen k."
    )
    select_slack: float = Field(
        0.7,
        gt=0.0,
        le=1.0,
        description="Clusters of any k within this fraction of the best map score (and overlapping its "
        "region) count as versions of the same pattern; the best isolated one picks the labelling.",
    )

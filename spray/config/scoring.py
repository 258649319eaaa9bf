"""The ``scoring`` section: suspicion scoring, the intervention test and the flag rule.

Every number that tunes the ranking or the alarm is a field here (and so recorded with the run); the
calibration behind each default is told in ``docs/detection.md``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from spray.config.section import Section


class ScoringConfig(Section):
    """Suspicion scoring of clusters (see docs/detection.md for the calibration behind the defaults)."""

    # --- the intervention (paste) test -------------------------------------------------------------
    intervention: bool = Field(
        True, description="Run the paste-the-hot-region test on the leading candidates."
    )
    intervention_candidates: int = Field(
        3,
        ge=0,
        description="At most this many candidates per class get the interventions: the leading appraised "
        "ones whose appearance could be flagged.",
    )
    intervention_samples: int = Field(200, ge=1, description="Other-class images to paste into.")
    intervention_region: Literal["relevance", "window"] = Field(
        "relevance",
        description="Region the interventions paste and remove: the members' own hot pixels (cells where "
        "their mean relevance share most exceeds the rest of the class's: a line, text, a frame, a blob) "
        "or the square window / frame of the map signals.",
    )
    mask_level: float = Field(
        0.25,
        gt=0.0,
        le=1.0,
        description="Hot pixels: cells whose contrast (members' minus rest's mean share) reaches this "
        "fraction of its maximum.",
    )
    appearance_trim: float = Field(
        0.1,
        ge=0.0,
        lt=0.5,
        description="Appearance: per cell, this share of the members farthest from the members' median is left "
        "out of their spread, so a few members without the stamp do not hide it; 0 uses every member. 0.1 "
        "was chosen on the held-out protocol's tuning split by a rule fixed before the run "
        "(docs/detection.md).",
    )
    mask_max_area: float = Field(
        0.15,
        gt=0.0,
        le=1.0,
        description="Hot pixels: at most this fraction of the grid (highest contrast first).",
    )
    removal: bool = Field(
        True,
        description="Also remove the hot pixels from the members (fill them with the non-member donors' "
        "per-pixel median) and measure the drop of their class logit against the same removal on "
        "non-members. Needs a probe with logits.",
    )
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
    paste_gain_margin: float = Field(
        0.5,
        ge=0.0,
        description="Flag by paste (with logits): pasting the members' region raises the targets' class logit "
        "by at least this much more than pasting the same region of non-members (logits).",
    )
    gain_ratio: float = Field(
        4.5,
        ge=1.0,
        description="Flag by paste gain: the smoothed ratio (gain + gain_eps) / (null gain + gain_eps) reaches "
        "this (a natural part raises the logit from either donor).",
    )
    gain_eps: float = Field(0.25, gt=0.0, description="Smoothing of the paste gain ratio (logits).")
    full_gain: float = Field(
        2.0, gt=0.0, description="Paste gain excess (logits) that gives the full paste strength in the score."
    )
    removal_margin: float = Field(
        0.5,
        ge=0.0,
        description="Flag by removal: the members' class-logit drop exceeds the non-members' by at least this "
        "(logits; chosen on the tuning split, docs/detection.md).",
    )
    removal_alpha: float = Field(
        0.01, gt=0.0, lt=1.0, description="Flag by removal: one-sided rank-sum p-value below this."
    )
    removal_min_auroc: float = Field(
        0.94,
        ge=0.5,
        le=1.0,
        description="Flag by removal: the members' drops exceed a random non-member's with at least this "
        "probability (most members rely on the pattern, not a few; chosen on the tuning split at "
        "removal_margin 0.5, docs/detection.md).",
    )
    full_removal: float = Field(
        2.0, gt=0.0, description="Removal excess (logits) that gives the full removal strength in the score."
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
        0.5,
        ge=0.0,
        le=1.0,
        description="Flag: the members' pixels in the region must be at least this alike (the "
        "'appearance' signal: 1 = identical in every member, as a stamp; 0 = as varied as the class).",
    )
    flag_min_relative_appearance: float = Field(
        0.65,
        ge=0.0,
        le=1.0,
        description="Flag: the appearance relative to the class's own typical appearance a0 (the median over "
        "its other leading candidates), (a - a0) / (1 - a0), reaches this.",
    )
    flag_min_relative_appearance_two_routes: float = Field(
        0.55,
        ge=0.0,
        le=1.0,
        description="Flag: the relative appearance needed instead of flag_min_relative_appearance when both the "
        "paste and the removal test clear their margins (two independent interventions agree, so less "
        "alike pixels suffice: a hot-pixel mask that also takes in object pixels looks less alike). "
        "Never stricter than flag_min_relative_appearance (the lower of the two applies); candidates are run "
        "through the model from the lower of the two.",
    )
    appraised_candidates: int = Field(
        8,
        ge=1,
        description="Leading candidates per class whose appearance is measured (pixels only, no forward "
        "pass); each one's is judged against the others' (the class's own null for the appearance).",
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
        description="Sides of the square windows tried as hot regions, as fractions of the grid side, each in "
        "(0, 1] (a window is at least 2 cells). Only small windows: a large one holds a whole object part of a "
        "natural sub-group.",
    )
    frame_widths: tuple[int, ...] = Field(
        (1, 2),
        description="Widths (cells) of the border frames tried as hot regions: each at least 1 and less than "
        "half of batch.grid (a frame that wide covers the whole grid).",
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
        2,
        ge=1,
        le=10,
        description="Rounds of aligning each sample's window to the members' median pixels, 1 to 10 (each "
        "round scans every donor's neighbourhood again; the alignment is a local search that settles in a "
        "few).",
    )
    # --- carriers and labellings ---------------------------------------------------------------------
    carriers: bool = Field(
        True,
        description="For flagged clusters, list the other samples of the class that repeat the members' "
        "pixels where their relevance is (one scan of the class's inputs per flagged cluster).",
    )
    graded_suspicion: bool = Field(
        True,
        description="A flagged cluster's carrier scan also gives the class's other samples a graded suspicion, "
        "score × a (a < 0.5), where a places the sample's distance to the stamp between the members' median (1) "
        "and the scanned samples' median (0) on a log scale; carriers are a ≥ 0.5 and keep the full score. "
        "Changes samples.parquet's score only, never a flag. On by default since 5 Dec 2026 by a rule fixed "
        "before the tuning cells (docs/detection.md).",
    )
    carrier_chunk: int = Field(
        512, ge=1, description="Samples loaded at once by the carrier scan (bounds its memory)."
    )
    carrier_exact: float = Field(
        0.01,
        gt=0.0,
        lt=1.0,
        description="A member whose distance to the stamp is under this fraction of the scanned samples' median "
        "distance is an exact copy. When most members are (a pixel-identical stamp), the carriers' threshold "
        "takes the members that carry it inexactly as the members' distance, not the median of 0, which "
        "admitted exact copies only.",
    )
    carrier_inexact_max: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="The members that carry the stamp inexactly (see carrier_exact) are those under this "
        "fraction of the scanned samples' median distance; the members above are taken for members without "
        "the stamp.",
    )
    select_k: Literal["best", "chosen"] = Field(
        "best", description="Candidates from the clusters of every k ('best') or only of the chosen k."
    )
    nest_overlap: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Two candidates with overlapping hot regions are versions of one pattern when this share "
        "of the smaller one's members is in the other (nested or overlapping clusters of different k).",
    )
    select_slack: float = Field(
        0.7,
        gt=0.0,
        le=1.0,
        description="Versions of a pattern within this fraction of its best map score compete to represent "
        "it; the one that isolates it best (consistency) wins.",
    )
    select_superset: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="A competing version that holds at least this share of the winner's members and isolates "
        "the pattern at least as well (unrounded consistency) represents it instead: the whole group, not "
        "a part of it that won on a rounded tie. Then a pattern whose representative lies inside a stronger "
        "one's (nest_overlap, overlapping regions) is folded into it. None (default): neither. 0.9 was "
        "checked on the tuning split and not kept (one learned hit and 0.005 of mean top F1 fewer; "
        "docs/detection.md).",
    )
    # --- the rare-shortcut route ---------------------------------------------------------------------
    hotspots: bool = Field(
        True,
        description="Also take hot-spot groups as candidates: per window, a distinct group of samples whose "
        "share of relevance there stands far above the rest's (finds a group of a few dozen samples that "
        "k-means does not isolate).",
    )
    hotspot_candidates: int = Field(3, ge=0, description="Hot-spot groups per class (strongest first).")
    hotspot_min_size: int = Field(8, ge=2, description="Hot-spot groups hold at least this many samples.")
    hotspot_separation: float = Field(
        11.5,
        gt=0.0,
        description="Hot spot: the Fisher ratio (mean difference squared over the summed variances) of the "
        "top group's shares of relevance in a window against the rest's, on the ``hotspot_split`` scale, "
        "reaches this (a distinct group, not the tail of a continuous spread). 11.5 on log shares proposes "
        "a group in as many clean classes as 20 did on raw shares (docs/detection.md).",
    )
    hotspot_split: Literal["share", "log_share"] = Field(
        "log_share",
        description="Scale on which each window's shares are split into a top group and the rest: "
        "``share`` (the shares themselves) or ``log_share`` (their logarithm, so a group whose shares are "
        "many times the rest's stands apart even when its own shares spread widely, instead of the few "
        "most extreme samples). The defaults of ``hotspot_separation`` (11.5) and ``hotspot_distinct`` (45) are "
        "for ``log_share``; with ``share`` use 20 and None (analysis version 7's route).",
    )
    hotspot_log_floor: float = Field(
        0.05,
        gt=0.0,
        description="``log_share`` split: added to every share before the logarithm, as a fraction of the "
        "window's share under uniform relevance (its area over the image's), so that samples with no "
        "relevance in a window do not spread to minus infinity.",
    )
    hotspot_distinct: float | None = Field(
        45.0,
        gt=0.0,
        description="A hot-spot group whose Fisher ratio reaches this is distinct in its own right (about 1 % "
        "of clean classes show one like it): it earns consistency credit in its map score and competes with the "
        "clusters of its pattern to represent it. None: hot-spot groups never earn that credit and represent "
        "a pattern only when no cluster comes close. 45 on log shares: the clean classes' 99th percentile "
        "(docs/detection.md).",
    )
    hotspot_min_excess: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="Hot spot: the group's mean share in the window exceeds the class's median by this much.",
    )
    hotspot_max_fraction: float = Field(
        0.3, gt=0.0, le=1.0, description="Hot-spot groups hold at most this share of the class."
    )
    # --- what is reported ------------------------------------------------------------------------------
    suspicion_tie_break: float = Field(
        0.01,
        ge=0.0,
        lt=0.1,
        description="Per-sample suspicion (samples.parquet's score): a member scores as its candidate plus this "
        "times its own share of relevance in the candidate's hot region, so the samples that carry the "
        "pattern most strongly come first within a candidate; kept below any score difference that matters.",
    )
    findings_top: int = Field(
        5,
        ge=1,
        description="The run's findings: every flagged candidate and the top this many by score (every "
        "candidate stays in its class's list).",
    )

    @property
    def gate_relative_appearance(self) -> float:
        """The relative appearance from which a candidate is run through the model (the lower threshold)."""
        return min(self.flag_min_relative_appearance_two_routes, self.flag_min_relative_appearance)

    @field_validator("window_fractions")
    @classmethod
    def _fractions_in_range(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        # a fraction out of (0, 1] would be clamped to a 2-cell or a whole-grid window without a word
        bad = [f for f in v if not 0.0 < f <= 1.0]
        if bad:
            raise ValueError(
                f"window fractions must lie in (0, 1] (a window's side as a fraction of the grid side); got "
                f"{bad[0]}: write e.g. 0.125 for an eighth of the grid"
            )
        return v

    @field_validator("frame_widths")
    @classmethod
    def _frames_at_least_one_cell(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        bad = [w for w in v if w < 1]
        if bad:
            raise ValueError(
                f"frame widths are border widths in grid cells, at least 1; got {bad[0]}: write e.g. [1, 2]"
            )
        return v

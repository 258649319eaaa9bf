"""The verdict on one candidate: its suspicion score and the ``suspicious`` flag.

With a probe::

    ratio    = (flip + ratio_eps) / (null + ratio_eps)
    strength = min(1, excess / full_excess) · min(1, ratio / flip_ratio)   (0 unless p < flip_alpha)
    score    = map_score · (appearance_floor + (1 − appearance_floor)·appearance) · (0.5 + strength)

and the flag needs every condition of :func:`judge`. Without a probe the score is the map score and the
flag a fixed map-score threshold (weak; calibrated on synthetic maps only). See ``docs/detection.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from spray.analysis.scoring.intervention import PasteTest
from spray.analysis.scoring.signals import Candidate
from spray.config import ScoringConfig


@dataclass
class Verdict:
    """Score and flag of one candidate; ``ratio`` is the smoothed flip ratio (None without a null)."""

    score: float
    suspicious: bool
    ratio: float | None = None


def judge(cand: Candidate, test: PasteTest | None, config: ScoringConfig, use_probe: bool) -> Verdict:
    """Score and flag one candidate from its map score and (with a probe) its paste test."""
    if not use_probe:
        ok = cand.map_score >= config.map_threshold and cand.signals["size"] >= config.min_cluster_size
        return Verdict(cand.map_score, ok)
    strength = 0.0
    ratio: float | None = None
    excess = test.excess if test is not None else None
    if test is not None and excess is not None and test.flip_rate is not None and test.flip_null is not None:
        # Smoothed rate ratio: the members' region must flip several times as often as the same region
        # of ordinary class members (a natural part flips both).
        ratio = (test.flip_rate + config.ratio_eps) / (test.flip_null + config.ratio_eps)
        if test.flip_p < config.flip_alpha:
            strength = min(1.0, max(0.0, excess) / config.full_excess) * min(1.0, ratio / config.flip_ratio)
    # Appearance (looked-at candidates only; 0 otherwise): a region whose pixels repeat in every member
    # is what a shortcut looks like, an object part that varies is not.
    appearance = test.appearance if test is not None else 0.0
    floor = config.appearance_floor
    # The map evidence ranks, the paste test confirms: the paste flip rates of a planted artifact and of
    # a "catch-all" class's natural halves overlap, while the map score ranked the artifact first.
    score = cand.map_score * (floor + (1 - floor) * appearance) * (0.5 + strength)
    suspicious = (
        test is not None
        and excess is not None
        and excess >= config.flip_margin
        and test.flip_p < config.flip_alpha
        and ratio is not None
        and ratio >= config.flip_ratio
        and cand.map_score >= config.flag_min_map_score
        # The null arm is "ordinary members of the class"; when the cluster IS most of the class, its
        # complement is the odd group and the comparison no longer calibrates anything.
        and cand.signals["fraction"] <= config.flag_max_fraction
        # A shortcut repeats the same pixels in every member; a natural object part varies.
        and appearance >= config.flag_min_appearance
    )
    return Verdict(float(score), bool(suspicious), ratio)

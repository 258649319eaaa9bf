"""The verdict on one candidate: its suspicion score and the ``suspicious`` flag.

With a probe::

    paste    = min(1, excess / full_excess) · min(1, ratio / flip_ratio)     (0 unless p < flip_alpha)
    removal  = min(1, removal_excess / full_removal)                        (0 unless p < removal_alpha)
    gain     = min(1, gain_excess / full_gain) · min(1, gain_ratio / gain_ratio_min)  (0 unless p < flip_alpha)
    relative = (appearance − appearance_null) / (1 − appearance_null)
    score    = map_score · (appearance_floor + (1 − appearance_floor)·relative) · (0.5 + max(paste, gain, removal))

where ``excess`` is the paste flip rate above its same-class null, ``ratio = (flip + ratio_eps) / (null +
ratio_eps)``, ``gain_excess`` the class logit's mean gain from pasting the members' region above the
gain from pasting non-members' (``gain_ratio`` their smoothed ratio), ``removal_excess`` the members'
class-logit drop above the non-members' when the hot pixels are removed, and ``appearance_null`` the
class's typical appearance (the per-class null of the appearance). The flag needs alike pixels, a cluster that is not most of its class, and one
intervention that clears its margins against the same-class null (:func:`judge`); when both interventions
clear them, less alike pixels suffice (``flag_min_relative_appearance_two_routes``). Without a probe the
score is the map score and the flag a fixed map-score threshold (weak; calibrated on synthetic maps
only). The calibration of the margins is in ``docs/detection.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from spray.analysis.scoring.intervention import InterventionTest
from spray.analysis.scoring.signals import Candidate
from spray.config import ScoringConfig


@dataclass
class Verdict:
    """Score and flag of one candidate.

    Attributes
    ----------
    score : float
        Suspicion score in [0, 1] (comparable across the classes of one run): at least 0.5 exactly when
        flagged (:func:`suspicion`).
    suspicious : bool
        The flag.
    ratio : float, optional
        Smoothed paste flip ratio (None without a null arm).
    routes : tuple[str, ...]
        The interventions that cleared their margins (``"paste"``, ``"removal"``).
    """

    score: float
    suspicious: bool
    ratio: float | None = None
    routes: tuple[str, ...] = ()


def paste_gain_ratio(test: InterventionTest, config: ScoringConfig) -> float | None:
    """The members' paste gain over the non-members', smoothed: ``(gain + gain_eps) / (max(null, 0) +
    gain_eps)``; None without logits."""
    gain, null = test.paste_gain, test.paste_gain_null
    if gain is None or null is None:
        return None
    return (gain + config.gain_eps) / (max(null, 0.0) + config.gain_eps)


def _paste(test: InterventionTest, config: ScoringConfig) -> tuple[float, float | None, bool]:
    """Paste strength, flip ratio and whether the paste clears the flag's margins (by flips, or with
    logits by the class logit's gain over the null's)."""
    g_strength, g_ok = 0.0, False
    g_excess, g_ratio = test.gain_excess, paste_gain_ratio(test, config)
    if g_excess is not None and g_ratio is not None and test.paste_gain_p < config.flip_alpha:
        # As for flips: the members' region must raise the logit several times as much as the same
        # region of ordinary class members (a natural part, a stroke of a digit, raises both).
        g_strength = min(1.0, max(0.0, g_excess) / config.full_gain) * min(1.0, g_ratio / config.gain_ratio)
        g_ok = g_excess >= config.paste_gain_margin and g_ratio >= config.gain_ratio
    excess = test.excess
    if excess is None or test.flip_rate is None or test.flip_null is None:
        return g_strength, None, g_ok
    # Smoothed rate ratio: the members' region must flip several times as often as the same region of
    # ordinary class members (a natural part flips both).
    ratio = (test.flip_rate + config.ratio_eps) / (test.flip_null + config.ratio_eps)
    significant = test.flip_p < config.flip_alpha
    strength = min(1.0, max(0.0, excess) / config.full_excess) * min(1.0, ratio / config.flip_ratio)
    ok = significant and excess >= config.flip_margin and ratio >= config.flip_ratio
    return max(g_strength, strength if significant else 0.0), ratio, ok or g_ok


def _removal(test: InterventionTest, config: ScoringConfig) -> tuple[float, bool]:
    """Removal strength and whether the removal clears the flag's margins."""
    r = test.removal
    if r is None:
        return 0.0, False
    significant = r.p < config.removal_alpha
    strength = min(1.0, max(0.0, r.excess) / config.full_removal) if significant else 0.0
    return strength, not removal_shortfall(test, config)


def removal_shortfall(test: InterventionTest, config: ScoringConfig) -> str:
    """The first of the removal test's margins it missed, in words ("" when it cleared them all, or did not
    run): the one statement of those margins, for the flag and for its evidence."""
    r = test.removal
    if r is None:
        return ""
    if r.p >= config.removal_alpha:
        return f"its rank-sum p = {r.p:.2g} is not below {config.removal_alpha:g}"
    if r.excess < config.removal_margin:
        return (
            f"the members' drop exceeds the non-members' by {r.excess:.2f} logits, under the margin of "
            f"{config.removal_margin:g}"
        )
    if r.auroc < config.removal_min_auroc:
        return (
            f"its drops' AUROC against the non-members' is {r.auroc:.3f}, under {config.removal_min_auroc:g}"
        )
    return ""


def relative_needed(routes: tuple[str, ...], config: ScoringConfig) -> float:
    """The relative appearance a flag needs: less when the paste and the removal test both clear their margins."""
    if len(routes) == 2:
        return config.gate_relative_appearance
    return config.flag_min_relative_appearance


@dataclass
class Routes:
    """What the interventions of one candidate add up to, before the gates of the flag.

    Attributes
    ----------
    strength : float
        The stronger intervention's strength in [0, 1] (the score's intervention factor is ``0.5 +
        strength``).
    ratio : float, optional
        Smoothed paste flip ratio (None without a null arm).
    cleared : tuple[str, ...]
        The interventions that cleared their margins (``"paste"``, ``"removal"``).
    """

    strength: float
    ratio: float | None
    cleared: tuple[str, ...]


def intervention_routes(test: InterventionTest, config: ScoringConfig) -> Routes:
    """Strength of the paste and removal tests and which of them cleared their margins."""
    paste, ratio, paste_ok = _paste(test, config)
    removal, removal_ok = _removal(test, config)
    cleared = tuple(name for name, ok in (("paste", paste_ok), ("removal", removal_ok)) if ok)
    return Routes(max(paste, removal), ratio, cleared)


def judge(cand: Candidate, test: InterventionTest | None, config: ScoringConfig, use_probe: bool) -> Verdict:
    """Score and flag one candidate from its map score and (with a probe) its interventions."""
    if not use_probe:
        ok = cand.map_score >= config.map_threshold and cand.signals["size"] >= config.min_cluster_size
        return Verdict(suspicion(cand.map_score, ok), ok)
    if test is None:
        return Verdict(suspicion(cand.map_score * config.appearance_floor * 0.5, False), False)
    found = intervention_routes(test, config)
    ratio, routes = found.ratio, found.cleared
    floor = config.appearance_floor
    relative = test.relative_appearance
    # The map evidence ranks, the interventions confirm: the paste flip rates of a planted artifact and
    # of a "catch-all" class's natural halves overlap, while the map score ranked the artifact first.
    score = cand.map_score * (floor + (1 - floor) * relative) * (0.5 + found.strength)
    suspicious = (
        bool(routes)
        and cand.map_score >= config.flag_min_map_score
        # The null arm is "ordinary members of the class"; when the cluster IS most of the class, its
        # complement is the odd group and the comparison no longer calibrates anything.
        and cand.signals["fraction"] <= config.flag_max_fraction
        # A shortcut repeats the same pixels in every member; a natural object part varies. Some classes
        # look alike everywhere (digits): the appearance must also stand out from the class's own.
        and test.appearance >= config.flag_min_appearance
        and relative >= relative_needed(routes, config)
    )
    return Verdict(suspicion(score, bool(suspicious)), bool(suspicious), ratio, routes)


#: Largest raw score: every factor of the map score is at most 1, the appearance factor too, and the
#: intervention factor at most 1.5.
RAW_MAX = 1.5


def unflagged(v: Verdict) -> Verdict:
    """``v`` without its flag: the same raw score on the unflagged side of :func:`suspicion`."""
    return dataclasses.replace(v, score=v.score - 0.5 * v.suspicious, suspicious=False)


def suspicion(raw: float, flagged: bool) -> float:
    """The reported score in [0, 1]: flagged candidates in [0.5, 1], the others in [0, 0.5), each by
    their raw score, so one ordering holds the verdict first and the evidence second."""
    return float(0.5 * flagged + 0.5 * min(max(raw, 0.0) / RAW_MAX, 1.0 - 1e-12))

"""Evidence: short sentences a person can check against the heatmaps and the images, one claim each."""

from __future__ import annotations

from spray.analysis.scoring.candidates import HOTSPOT_K
from spray.analysis.scoring.geometry import location_words
from spray.analysis.scoring.intervention import InterventionTest
from spray.analysis.scoring.signals import Candidate
from spray.analysis.scoring.verdict import Verdict, relative_needed, removal_shortfall
from spray.config import ScoringConfig


def pct(x: float) -> str:
    """A share as a rounded percentage ("12 %"); a share that is not 0 or 1 never reads as one ("under 1 %",
    "over 99 %")."""
    text = f"{100 * x:.0f}"
    if text == "0" and x > 0:
        return "under 1 %"
    if text == "100" and x < 1:
        return "over 99 %"
    return f"{text} %"


def _where(cand: Candidate, class_name: str, h: int, w: int) -> list[str]:
    """Where the members' relevance lies, against the rest of the class."""
    s = cand.signals
    if cand.moving:
        ms = cand.moving_size
        return [
            f"each member puts {pct(s['peak_in'])} of its positive relevance into a {ms}×{ms} spot at varying positions",
            f"other {class_name} images put {pct(s['peak_out'])} into their hottest spot of that size",
        ]
    r = cand.region
    where = (
        f"a {r.size}-cell frame along the image border"
        if r.kind == "frame"
        else f"a {r.size}×{r.size} region at the {location_words(r, h, w)}"
    )
    return [
        f"members put {pct(s['share_in'])} of their positive relevance in {where}",
        f"other {class_name} images put {pct(s['share_out'])} of theirs there",
        f"a member's share there exceeds another {class_name} image's with probability "
        f"{pct(s.get('auroc_fixed', (1 + s['consistency']) / 2))}",
    ]


def region_sentence(test: InterventionTest, n_cells: int) -> str:
    """Which region the interventions used."""
    if test.region_kind == "pixels":
        return f"tested region: the members' hot pixels, {test.region_cells} cells of {n_cells}"
    if test.region_kind == "aligned":
        return "tested region: each member's own window near the region, aligned to the members' pixels"
    if test.region_kind == "moving":
        return "tested region: each member's own hottest spot"
    if test.region_kind == "concept":
        return "tested region: each image's own hot pixels in its concept-conditional heatmap"
    return f"tested region: the {test.region_kind} above"


def _verb(change: float, positive: str, negative: str) -> str:
    """The verb for a logit change: the sentence states the magnitude, the verb carries the sign."""
    return positive if change >= 0 else negative


def intervention_sentences(class_name: str, test: InterventionTest) -> list[str]:
    """What the paste and removal tests showed."""
    out = []
    # In concept space every non-member donor brings its own region (the same channels' hot pixels).
    same = (
        f"other {class_name} images' own hot pixels in the same channels"
        if test.region_kind == "concept"
        else f"the same region from other {class_name} images"
    )
    removed = "their own hot pixels" if test.region_kind == "concept" else "it"
    if test.no_targets:
        out.append("no paste test: no image of another class was audited to paste into")
    if test.flip_rate is not None:
        out.append(
            f"pasting it into {test.flip_targets} other-class images turns {pct(test.flip_rate)} into {class_name}"
        )
        if test.flip_null is None:
            out.append("that is below the paste margin, so the same-class null was not run")
        else:
            out.append(f"pasting {same} turns {pct(test.flip_null)}")
            out.append(f"sign test of the paste: p = {test.flip_p:.2g}")
    if test.paste_gain is not None and test.paste_gain_null is not None:
        # The paste test also clears its margins by the class logit's gain (a model can shift its logits
        # without crossing the decision boundary), so the gain is evidence of its own.
        gain, null = test.paste_gain, test.paste_gain_null
        out.append(
            f"pasting it {_verb(gain, 'raises', 'lowers')} those images' {class_name} logit by {abs(gain):.2f} "
            "on average"
        )
        out.append(f"pasting {same} {_verb(null, 'raises', 'lowers')} it by {abs(null):.2f}")
        out.append(f"sign test of the logit gain: p = {test.paste_gain_p:.2g}")
    r = test.removal
    if r is not None:
        tested = f" of the {r.n_members} members tested" if r.n_members else " of the members"
        out.append(
            f"removing it {_verb(r.drop, 'lowers', 'raises')} the {class_name} logit{tested} by {abs(r.drop):.2f} "
            "on average"
        )
        others = f"{r.n_others} other" if r.n_others else "other"
        out.append(
            f"removing {removed} from {others} {class_name} images {_verb(r.null, 'lowers', 'raises')} theirs "
            f"by {abs(r.null):.2f}"
        )
        out.append(f"rank-sum test of the removal: p = {r.p:.2g}")
    return out


def evidence(
    cand: Candidate,
    class_name: str,
    n: int,
    h: int,
    w: int,
    test: InterventionTest | None,
    config: ScoringConfig,
    verdict: Verdict | None = None,
) -> list[str]:
    """Sentences a person can check, one claim each, for a candidate of a class of ``n`` samples on an
    ``h×w`` grid."""
    s = cand.signals
    found = (
        "found as a hot spot: these samples' relevance there stands far above the class's"
        if cand.k == HOTSPOT_K
        else f"found as cluster {cand.cluster_id} of the k = {cand.k} clustering"
    )
    out = [
        f"{int(s['size'])} of {n} {class_name} images: {100 * s['fraction']:.1f} % of the class",
        found,
        f"{pct(s.get('inside_share', s['separation']))} of their kNN-graph edges stay inside the group",
        *_where(cand, class_name, h, w),
    ]
    if test is None:
        return out
    out.append(region_sentence(test, h * w))
    if test.uniform:
        out.append(
            f"the pixels there are the same in every {class_name} image looked at: nothing tells the members apart"
        )
    else:
        out.append(
            f"their pixels there vary {pct(1.0 - test.appearance)} as much as other {class_name} images'"
        )
    if test.null_count == 0:
        out.append(f"no other group of {class_name} was looked at to compare how alike its pixels are")
    else:
        beyond = (
            f"the members' pixels are {pct(test.relative_appearance)} of the way to identical beyond that"
            if test.relative_appearance > 0
            else "the members' pixels are no more alike than that"
        )
        out.append(f"typical groups of {class_name} vary {pct(1.0 - test.appearance_null)} as much: {beyond}")
    if not test.intervened:
        if test.uniform:
            out.append(
                "no intervention was run: pixels that every image of the class shares are no shortcut of a group"
            )
        elif test.appearance < config.flag_min_appearance:
            out.append("no intervention was run: a flag needs alike pixels, as a stamp, tag or frame has")
            out.append(
                f"alike means varying at most {pct(1.0 - config.flag_min_appearance)} as much as other images"
            )
        elif test.relative_appearance < config.gate_relative_appearance:
            out.append(
                f"no intervention was run: a flag needs pixels more alike than other groups of {class_name}"
            )
            # one decimal: a value just under the gate must not read as the gate itself
            out.append(
                f"that is at least {100 * config.gate_relative_appearance:.0f} % of the way to identical, and "
                f"these are {100 * test.relative_appearance:.1f} %"
            )
        else:
            out.append("no intervention was run: more suspicious candidates of the class came first")
        return out
    out += intervention_sentences(class_name, test)
    if verdict is not None and verdict.suspicious:
        out.append("flagged by the " + " and the ".join(f"{route} test" for route in verdict.routes))
    elif verdict is not None and verdict.routes:
        out.append(_why_not_flagged(cand, class_name, test, config, verdict.routes))
    elif verdict is not None and (missed := removal_shortfall(test, config)):
        # a removal drop that reads large is no flag by itself: name the margin it missed
        out.append(f"not flagged: no test cleared its margins (the removal test: {missed})")
    return out


def _why_not_flagged(
    cand: Candidate, class_name: str, test: InterventionTest, config: ScoringConfig, routes: tuple[str, ...]
) -> str:
    """Why a candidate whose intervention cleared its margins is still not flagged (the first unmet condition)."""
    tests = " and the ".join(f"{route} test" for route in routes)
    fraction = cand.signals["fraction"]
    if fraction > config.flag_max_fraction:
        return (
            f"not flagged although the {tests} cleared its margins: the group is {pct(fraction)} of the class, "
            f"and a flag needs at most {pct(config.flag_max_fraction)} (the rest of {class_name} is the comparison)"
        )
    if cand.map_score < config.flag_min_map_score:
        return (
            f"not flagged although the {tests} cleared its margins: its relevance stands out too little "
            f"from the class's (map score {cand.map_score:.3f}, a flag needs {config.flag_min_map_score:.3f})"
        )
    needed = relative_needed(routes, config)
    if len(routes) == 1 and test.relative_appearance < needed:
        # Name what the other test missed too: a near miss there is what a person would check first.
        other = removal_shortfall(test, config) if routes == ("paste",) else ""
        return (
            f"not flagged: only the {tests} cleared its margins{f' (the removal test: {other})' if other else ''}, "
            f"and with one test alone a flag needs pixels more alike than other groups of {class_name}: at least "
            f"{100 * needed:.0f} % of the way to identical, and these are {100 * test.relative_appearance:.1f} %"
        )
    return f"not flagged although the {tests} cleared its margins: its pixels are not alike enough"


def carriers_sentence(n_carriers: int, class_name: str, n: int, in_place: bool) -> str:
    """What the carrier scan of a flagged candidate found."""
    where = "in the same place" if in_place else "at some position"
    if n_carriers:
        return (
            f"{n_carriers} more {class_name} images, {pct(n_carriers / n)} of the class, repeat the members' "
            f"pixels {where}: listed as carriers"
        )
    return f"no other {class_name} image repeats the members' pixels {where}"

"""Evidence: the sentences a person can check against the heatmaps and the images."""

from __future__ import annotations

from spray.analysis.scoring.geometry import location_words
from spray.analysis.scoring.intervention import PasteTest
from spray.analysis.scoring.signals import Candidate


def pct(x: float) -> str:
    """A share as a rounded percentage ("12 %")."""
    return f"{100 * x:.0f} %"


def _where(cand: Candidate, class_name: str, h: int, w: int) -> str:
    """Where the members' relevance lies, against the rest of the class."""
    s = cand.signals
    if cand.moving:
        ms = cand.moving_size
        return (
            f"each member puts {pct(s['peak_in'])} of its relevance into a {ms}×{ms} spot at varying positions "
            f"(rest of {class_name}: {pct(s['peak_out'])})"
        )
    r = cand.region
    where = (
        f"a {r.size}-cell frame along the image border"
        if r.kind == "frame"
        else f"a {r.size}×{r.size} region at the {location_words(r, h, w)}"
    )
    return (
        f"{pct(s['share_in'])} of its relevance lies in {where} "
        f"(rest of {class_name}: {pct(s['share_out'])}; the region is {pct(s['region_cells'] / (h * w))} "
        "of the image)"
    )


def _paste(cand: Candidate, class_name: str, test: PasteTest) -> list[str]:
    """What the appearance and paste test showed."""
    where_alike = (
        f"in each member's own {cand.region.size}×{cand.region.size} window near the region (aligned to "
        "the members' median pixels)"
        if test.aligned
        else "there"
    )
    pasted = "those windows" if test.aligned else "that region"
    alike = (
        f"its members' pixels {where_alike} vary {pct(1.0 - test.appearance)} as much as those of "
        f"{class_name} images in general (a stamp, tag or frame repeats the same pixels"
    )
    if test.flip_rate is None:
        return [alike + "), so it was not paste-tested: a flag needs alike pixels"]
    if test.flip_null is None:
        return [
            f"pasting {pasted} flips {pct(test.flip_rate)} of other-class images to {class_name} "
            f"({test.flip_targets} images; below the margin a flag needs, so the same-class null "
            "was not run)"
        ]
    return [
        f"pasting {pasted} flips {pct(test.flip_rate)} of other-class images to {class_name} "
        f"(the same region from "
        f"other {class_name} images: {pct(test.flip_null)}; "
        f"p = {test.flip_p:.2g}, {test.flip_targets} images)",
        alike + "; an object part varies)",
    ]


def evidence(cand: Candidate, class_name: str, n: int, h: int, w: int, test: PasteTest | None) -> list[str]:
    """Sentences a person can check, for a candidate of a class of ``n`` samples on an ``h×w`` grid."""
    s = cand.signals
    size = int(s["size"])
    out = [
        f"{pct(s['fraction'])} of class {class_name} ({size} of {n} samples); "
        f"{pct(s['separation'])} of its kNN-graph edges stay inside the cluster",
        _where(cand, class_name, h, w),
        f"a member's share there exceeds a random other {class_name} sample's with probability "
        f"{pct((1 + s['consistency']) / 2)}",
    ]
    if test is not None:
        out += _paste(cand, class_name, test)
    return out


def carriers_sentence(n_carriers: int, class_name: str, n: int, frame: bool) -> str:
    """What the carrier scan of a flagged candidate found."""
    where = "in the same place" if frame else "at some position"
    if n_carriers:
        return (
            f"{n_carriers} more {class_name} images ({pct(n_carriers / n)} of the class) repeat "
            f"the members' pixels {where}: listed as carriers of the same pattern"
        )
    return (
        f"no other {class_name} image repeats the members' pixels {where}: the cluster holds "
        "every carrier of the pattern"
    )

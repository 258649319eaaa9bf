"""The colour test of a concept-only finding: the images' colour statistics instead of a region.

A colour cast tints the whole image; there is no region to paste or remove, and a concept group of
cast images can be pure while its hot-pixel test (:mod:`spray.analysis.concept_test`) moves the logit
little. Here the intervention acts on each image's **per-channel mean and spread** (the colour transfer
``x' = (x - mean_x) / spread_x · spread_d + mean_d``, channel by channel, in the model's input space,
where an affine input normalisation leaves it the same operation):

* **remove**: give each member donor the class's typical colour statistics (the non-member donors'
  median) and measure the drop of its class logit, against the same on the non-members;
* **paste**: give each other-class target the colour statistics of a member and measure the class
  logit's gain (and flips), against the same with a non-member's.

A model that ignores colour changes its logits little under either arm; one that leans on the members'
colour loses the class when it is taken away and grants it when it is given. Grey images carry no colour
to move: a class whose donors' channels are one image up to a common scale and offset is not tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from spray.analysis.scoring.appearance import Donors
from spray.analysis.scoring.intervention import (
    InterventionTest,
    PasteResult,
    Removal,
    paired_paste,
)
from spray.analysis.scoring.probe import InterventionProbe, Targets

#: Relative residual below which one channel is an affine copy of another across all donors (grey data
#: replicated to three channels and normalised per channel leaves only rounding error, ~1e-7).
GREY_TOLERANCE = 1e-4
#: A channel whose spread over the image is at most this is flat (float32 inputs hold ~7 digits).
FLAT_SPREAD = 1e-6


@dataclass
class ColourStats:
    """Per-image, per-channel colour statistics.

    Attributes
    ----------
    mean : torch.Tensor
        ``(n, C)`` mean of each channel over the image.
    spread : torch.Tensor
        ``(n, C)`` standard deviation of each channel over the image.
    """

    mean: torch.Tensor
    spread: torch.Tensor

    @classmethod
    def of(cls, x: torch.Tensor) -> ColourStats:
        """The statistics of ``x`` ``(n, C, H, W)`` (float64: a transfer divides by the spread)."""
        flat = x.double().flatten(2)
        return cls(flat.mean(dim=2), flat.std(dim=2, unbiased=False))

    def take(self, index: np.ndarray) -> ColourStats:
        """The statistics of the images ``index`` ``(m,)``, in that order."""
        i = torch.from_numpy(np.asarray(index, dtype=np.int64))
        return ColourStats(self.mean[i], self.spread[i])


def with_colour(x: torch.Tensor, to: ColourStats) -> torch.Tensor:
    """``x`` ``(n, C, H, W)`` with each image's per-channel mean and spread replaced by ``to``'s ``(n, C)``; a
    channel without spread (a flat channel) becomes ``to``'s mean exactly (it has no pattern to stretch)."""
    own = ColourStats.of(x)
    flat = own.spread <= FLAT_SPREAD
    scale = torch.where(flat, torch.zeros_like(own.spread), to.spread / torch.where(flat, 1.0, own.spread))
    out = (x.double() - own.mean[..., None, None]) * scale[..., None, None] + to.mean[..., None, None]
    return out.to(x.dtype)


def has_colour(x: torch.Tensor) -> bool:
    """Whether the images ``(n, C, H, W)`` hold colour: some channel is not one affine function of the first
    across all of them (False for one channel, and for grey images replicated and normalised per channel)."""
    if x.shape[1] < 2 or x.shape[0] == 0:
        return False
    flat = x.double().transpose(0, 1).reshape(x.shape[1], -1)
    first = flat[0] - flat[0].mean()
    for channel in flat[1:]:
        centred = channel - channel.mean()
        norm = float(centred.norm())
        if norm == 0.0:
            continue
        denom = float(first @ first)
        fit = first * (float(first @ centred) / denom) if denom > 0 else torch.zeros_like(first)
        if float((centred - fit).norm()) > GREY_TOLERANCE * norm:
            return True
    return False


def _class_logit(probe: InterventionProbe, x: torch.Tensor, class_index: int) -> np.ndarray:
    """``(n,)`` float64 class-``class_index`` logits of ``x`` ``(n, C, H, W)``."""
    assert probe.logits is not None
    with torch.no_grad():
        return np.asarray(probe.logits(x)[:, class_index].double().cpu().numpy())


def colour_removal(probe: InterventionProbe, class_index: int, donors: Donors) -> Removal:
    """The removal arm: the member donors and, for the null, the non-member donors all take the class's
    typical colour (:func:`typical_colour`, as the hot-pixel removal fills with the non-members' median
    pixels).

    Parameters
    ----------
    probe : InterventionProbe
        With ``logits``.
    class_index : int
        The class analysed.
    donors : Donors
        The group's member and non-member donors, loaded.

    Returns
    -------
    Removal
        The members' and the non-members' mean class-logit drops, their rank-sum p-value and AUROC.
    """
    typical = typical_colour(donors.x_out)
    return Removal.of(
        colour_drop(probe, class_index, donors.ids_in, donors.x_in, typical),
        colour_drop(probe, class_index, donors.ids_out, donors.x_out, typical),
    )


def _recoloured(y: torch.Tensor, to: ColourStats, positions: list[int]) -> torch.Tensor:
    """``(len(positions), C, H, W)`` the images ``y[positions]`` given the statistics ``to`` holds for them."""
    return with_colour(y[positions], to.take(np.asarray(positions)))


def colour_paste(
    probe: InterventionProbe, class_index: int, donors: Donors, targets: Targets
) -> PasteResult | None:
    """The paste arm: each valid target (not already the class) takes a member donor's colour statistics,
    and, for the null, a non-member donor's, each paired by the probe's rendezvous hashing.

    Parameters
    ----------
    probe : InterventionProbe
        With ``logits``.
    class_index : int
        The class analysed.
    donors : Donors
        The group's member and non-member donors, loaded.
    targets : Targets
        Other-class images.

    Returns
    -------
    PasteResult, optional
        Flips and class-logit gains of both arms; None when every target already is the class.
    """
    valid = ~targets.already
    if not valid.any():
        return None
    ids = [t for t, ok in zip(targets.ids, valid, strict=True) if ok]
    y = probe.target_inputs(ids)
    base = targets.base_logit()[valid]
    arms = []
    for donor_ids, x in ((donors.ids_in, donors.x_in), (donors.ids_out, donors.x_out)):
        pick = probe.pairs(ids, donor_ids)
        to = ColourStats.of(x).take(pick)
        # A target given one donor's colour is the same image for every group of the class: run it once.
        keys = [f"colour|{probe.key(t)}|{probe.key(donor_ids[i])}" for t, i in zip(ids, pick, strict=True)]
        z = probe.memo_logits(keys, partial(_recoloured, y, to))
        arms.append((z.argmax(1) == class_index, z[:, class_index] - base))
    (fi, gi), (fo, go) = arms
    return paired_paste(fi, gi, fo, go)


def colour_intervention(
    probe: InterventionProbe,
    class_index: int,
    donors: Donors,
    targets: Targets | None,
    removal: bool,
) -> InterventionTest | None:
    """The colour test of one group: its removal arm (with ``removal``) and its paste arm (with ``targets``);
    None (untested) without logits, with fewer than 2 non-member donors, or when the donors are grey.

    Parameters
    ----------
    probe : InterventionProbe
        With ``logits``.
    class_index : int
        The class analysed.
    donors : Donors
        The group's member and non-member donors, loaded (``x_in`` ``(n_in, C, H, W)``, ``x_out``
        ``(n_out, C, H, W)``).
    targets : Targets, optional
        Other-class images (None: no paste arm).
    removal : bool
        Run the removal arm (``scoring.removal``).
    """
    x_in, x_out = donors.x_in, donors.x_out
    if probe.logits is None or len(x_in) == 0 or len(x_out) < 2:
        return None
    if not has_colour(torch.cat([x_in, x_out])):
        return None
    test = InterventionTest(0.0, False, "colour")
    if removal:
        test.removal = colour_removal(probe, class_index, donors)
    paste = colour_paste(probe, class_index, donors, targets) if targets is not None else None
    if paste is not None:
        test.take_paste(paste)
    return test if test.intervened else None


def typical_colour(x_out: torch.Tensor) -> ColourStats:
    """``(1, C)`` the class's typical colour statistics: the median over its non-member donors ``x_out``
    ``(n_out, C, H, W)``."""
    out = ColourStats.of(x_out)
    return ColourStats(out.mean.median(dim=0).values[None], out.spread.median(dim=0).values[None])


def colour_drop(
    probe: InterventionProbe, class_index: int, ids: list[str], x: torch.Tensor, typical: ColourStats
) -> np.ndarray:
    """The drop of each image's class logit when it is given ``typical``'s colour.

    Parameters
    ----------
    probe : InterventionProbe
        With ``logits``; each sample's own logits are run once per probe (every group of the class
        reuses them).
    class_index : int
        The class analysed.
    ids : list[str]
        The ``n`` samples.
    x : torch.Tensor
        ``(n, C, H, W)`` their inputs.
    typical : ColourStats
        ``(1, C)`` the colour statistics to give them.

    Returns
    -------
    np.ndarray
        ``(n,)`` float64 logit drops (negative: the logit rose).
    """
    to = ColourStats(typical.mean.expand(len(x), -1), typical.spread.expand(len(x), -1))
    own = probe.memo_logits([f"plain|{probe.key(i)}" for i in ids], lambda j: x[j])[:, class_index]
    return own - _class_logit(probe, with_colour(x, to), class_index)


def colour_carriers(
    probe: InterventionProbe,
    class_index: int,
    typical: ColourStats,
    removal: Removal,
    sample_ids: list[str],
    rows: np.ndarray,
    chunk: int,
) -> list[int]:
    """The class's images whose colour the model reads as it reads the members': those whose class logit
    drops, when given the class's typical colour, nearer the members' mean drop than the non-members'.

    Parameters
    ----------
    probe : InterventionProbe
        With ``logits``.
    class_index : int
        The class analysed.
    typical : ColourStats
        ``(1, C)`` the class's typical colour (:func:`typical_colour` of the group's non-member donors).
    removal : Removal
        The group's colour removal, which cleared its margins (members drop more than non-members).
    sample_ids : list[str]
        The class's samples.
    rows : np.ndarray
        ``(m,)`` the rows of ``sample_ids`` to scan (the non-members).
    chunk : int
        Samples loaded at once (``scoring.carrier_chunk``).

    Returns
    -------
    list[int]
        The carriers' rows.
    """
    if rows.size == 0 or removal.drop <= removal.null:
        return []
    threshold = 0.5 * (removal.drop + removal.null)
    parts = []
    for start in range(0, len(rows), chunk):
        ids = [sample_ids[i] for i in rows[start : start + chunk]]
        parts.append(colour_drop(probe, class_index, ids, probe.load_inputs(ids), typical))
    return [int(i) for i in rows[np.concatenate(parts) >= threshold]]


def colour_sentences(class_name: str, test: InterventionTest) -> list[str]:
    """What the colour test showed, one claim per line."""
    out = ["colour test: each image's per-channel mean and spread given to another image"]
    if test.flip_rate is not None and test.flip_null is not None:
        out.append(
            f"giving {test.flip_targets} other-class images the members' colour turns {100 * test.flip_rate:.0f} % "
            f"into {class_name}"
        )
        out.append(f"giving them other {class_name} images' colour turns {100 * test.flip_null:.0f} %")
        out.append(f"sign test of the colour paste: p = {test.flip_p:.2g}")
    if test.paste_gain is not None and test.paste_gain_null is not None:
        out.append(
            f"the members' colour changes those images' {class_name} logit by {test.paste_gain:+.2f} on average"
        )
        out.append(f"other {class_name} images' colour changes it by {test.paste_gain_null:+.2f}")
        out.append(f"sign test of the colour's logit gain: p = {test.paste_gain_p:.2g}")
    r = test.removal
    if r is not None:
        out.append(
            f"giving the members the typical colour of {class_name} changes their {class_name} logit by "
            f"{-r.drop:+.2f} on average"
        )
        out.append(f"the same on other {class_name} images changes theirs by {-r.null:+.2f}")
        out.append(f"rank-sum test of the colour removal: p = {r.p:.2g}")
        out.append(f"AUROC of the members' colour-removal drops against the non-members': {r.auroc:.3f}")
    return out

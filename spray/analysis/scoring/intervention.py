"""The intervention (paste) test of one candidate against its same-class null.

Paste the hot region of member images into images of other classes and count how many flip to this
class (the horse-tag test of Lapuschkin et al. 2019). The **null** is the same paste taken from
*non-member* images of the same class into the same targets: a natural object part of the class flips
both about equally, a shortcut only the members'. The paired design gives an exact sign test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spray.analysis.scoring.appearance import Donors, Look, grid_cells, look
from spray.analysis.scoring.carriers import Stamp, make_stamp
from spray.analysis.scoring.probe import InterventionProbe, Targets
from spray.analysis.scoring.signals import Candidate, ClassStats
from spray.config import ScoringConfig


def sign_test_p(b: int, c: int) -> float:
    """One-sided exact sign test: P(X >= b) for X ~ Binomial(b + c, 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(b, n + 1))
    return float(tail / 2.0**n)


@dataclass
class PasteTest:
    """What the paste test of one candidate measured.

    Attributes
    ----------
    appearance : float
        How alike the members' pixels are in the region (see :mod:`.appearance`).
    aligned : bool
        Measured (and pasted) at each sample's own aligned window.
    flip_rate : float, optional
        Share of valid targets that flip to the class with the members' region pasted; None when the
        paste was skipped (appearance below ``flag_min_appearance``: no flag possible).
    flip_null : float, optional
        The same with non-members' regions; None when skipped (members' rate below the margin).
    flip_p : float
        One-sided sign test on the discordant pairs (1.0 when the null was not run).
    flip_targets : int
        Valid targets (other-class images not already predicted as the class).
    """

    appearance: float
    aligned: bool
    flip_rate: float | None = None
    flip_null: float | None = None
    flip_p: float = 1.0
    flip_targets: int = 0

    @property
    def pasted(self) -> bool:
        """Whether the members' region was pasted at all."""
        return self.flip_rate is not None

    @property
    def excess(self) -> float | None:
        """Flip rate above the null (None when the null arm was not run)."""
        if self.flip_rate is None or self.flip_null is None:
            return None
        return self.flip_rate - self.flip_null

    def signals(self) -> dict[str, float]:
        """The raw numbers as finding signals."""
        if self.flip_rate is None:
            return {"appearance": self.appearance, "aligned": float(self.aligned), "paste_skipped": 1.0}
        if self.flip_null is None:
            return {
                "flip_rate": self.flip_rate,
                "flip_p": 1.0,
                "flip_targets": float(self.flip_targets),
                "flip_null_skipped": 1.0,
                "appearance": self.appearance,
                "aligned": float(self.aligned),
            }
        return {
            "flip_rate": self.flip_rate,
            "flip_null": self.flip_null,
            "flip_excess": self.flip_rate - self.flip_null,
            "flip_p": self.flip_p,
            "flip_targets": float(self.flip_targets),
            "appearance": self.appearance,
            "aligned": float(self.aligned),
        }


def pick_donors(
    cand: Candidate,
    stats: ClassStats,
    sample_ids: list[str],
    probe: InterventionProbe,
    donor_order: np.ndarray,
    max_donors: int,
) -> Donors | None:
    """The first ``max_donors`` members (and non-members) in the class's seeded ``donor_order``, loaded.

    ``donor_order`` is the class's :func:`~spray.analysis.scoring.ordering.stable_order` of its
    samples' contents, so one new member does not redraw every donor. None when there are no members
    or no rest of the class to compare with (untestable).
    """
    in_order = cand.member[donor_order]
    d_in = np.sort(donor_order[in_order][:max_donors])
    d_out = np.sort(donor_order[~in_order][:max_donors])
    if d_in.size == 0 or d_out.size == 0:
        return None
    # Both donor sets are loaded once: the appearance signal needs them, and the pastes reuse them.
    ids_in, ids_out = [sample_ids[i] for i in d_in], [sample_ids[i] for i in d_out]
    x_in, x_out = probe.load_inputs(ids_in), probe.load_inputs(ids_out)
    g_in, g_out = grid_cells(x_in, stats.h, stats.w), grid_cells(x_out, stats.h, stats.w)
    return Donors(d_in, d_out, ids_in, ids_out, x_in, x_out, g_in, g_out)


def paste_test(
    stats: ClassStats,
    cand: Candidate,
    class_index: int,
    sample_ids: list[str],
    probe: InterventionProbe,
    targets: Targets | None,
    donor_order: np.ndarray,
    config: ScoringConfig,
    stamps: dict[int, Stamp] | None = None,
) -> PasteTest | None:
    """The paste test of one candidate against its same-class null; None when untestable.

    The appearance signal comes first: below ``flag_min_appearance`` no flag is possible, so no paste is
    predicted. When the members' flip rate is below ``flip_margin`` the null arm is not run. The
    candidate's :class:`Stamp` is put into ``stamps`` (for the carrier scan of a flagged candidate).
    """
    if targets is None:
        return None
    donors = pick_donors(cand, stats, sample_ids, probe, donor_order, config.max_donors)
    if donors is None:
        return None
    seen: Look = look(stats, cand, donors, config)
    if stamps is not None:
        stamps[cand.cluster_id] = make_stamp(stats, cand, donors, seen.m_in)
    if seen.appearance < config.flag_min_appearance:
        # The flag needs appearance >= flag_min_appearance, so below it no paste can change the
        # verdict: skip both arms. Most natural clusters end here, which takes the paste test's forward
        # passes, the costliest part of a rerun, off them.
        return PasteTest(seen.appearance, seen.aligned)
    valid = ~targets.already  # a target already predicted as this class cannot flip to it
    nv = int(valid.sum())
    if nv == 0:
        return None  # every target is already this class: nothing can flip, untestable
    fi = probe.paste_flips(class_index, donors.ids_in, seen.m_in, targets.ids, donors.x_in)[valid]
    if fi.mean() < config.flip_margin:
        # The flag needs flip - null >= flip_margin, so below the margin it is impossible whatever the
        # null: skip the null arm (half the test's forward passes; most natural clusters end here).
        return PasteTest(seen.appearance, seen.aligned, float(fi.mean()), None, 1.0, nv)
    fo = probe.paste_flips(class_index, donors.ids_out, seen.m_out, targets.ids, donors.x_out)[valid]
    b = int((fi & ~fo).sum())
    c = int((~fi & fo).sum())
    return PasteTest(seen.appearance, seen.aligned, float(fi.mean()), float(fo.mean()), sign_test_p(b, c), nv)

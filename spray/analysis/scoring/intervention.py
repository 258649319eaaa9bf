"""The interventions on one candidate, each against its same-class null.

* **Paste** the members' hot pixels into images of other classes and count how many flip to this class
  (the horse-tag test of Lapuschkin et al. 2019). The null is the same paste taken from *non-member*
  images of the same class into the same targets: a natural object part of the class flips both about
  equally, a shortcut only the members'. The paired design gives an exact sign test.
* **Remove** the hot pixels from the members themselves (replace them by the non-member donors'
  per-pixel median: the class without the pattern) and measure the drop of the class logit. The null
  is the same removal on non-members. This works where pasting cannot: a shortcut the model uses only
  together with the object, or one that needs the rest of a member image to count.

Both run only when the members' pixels are alike there, also relative to the class's typical appearance
(see :func:`~spray.analysis.scoring.findings.score_class`): otherwise no flag is possible, and the
forward passes are spared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from spray.analysis.scoring.appearance import Donors, Look, grid_cells, look
from spray.analysis.scoring.carriers import Stamp, make_stamp
from spray.analysis.scoring.probe import InterventionProbe, Targets, fill_masked
from spray.analysis.scoring.signals import Candidate, ClassStats, auroc, rankdata
from spray.config import ScoringConfig


def sign_test_p(b: int, c: int) -> float:
    """One-sided exact sign test: P(X >= b) for X ~ Binomial(b + c, 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(b, n + 1))
    return float(tail / 2.0**n)


def rank_sum_p(pos: np.ndarray, neg: np.ndarray) -> float:
    """One-sided Mann-Whitney p-value that ``pos`` tends to exceed ``neg`` (normal approximation with
    a tie correction and a continuity correction; 1.0 when either is empty or all values tie)."""
    n1, n2 = pos.size, neg.size
    if n1 == 0 or n2 == 0:
        return 1.0
    allv = np.concatenate([pos, neg]).astype(np.float64)
    ranks = rankdata(allv)
    u = float(ranks[:n1].sum()) - n1 * (n1 + 1) / 2
    _, counts = np.unique(allv, return_counts=True)
    n = n1 + n2
    var = n1 * n2 / 12.0 * ((n + 1) - float((counts**3 - counts).sum()) / (n * (n - 1)))
    if var <= 0:
        return 1.0
    z = (u - n1 * n2 / 2.0 - 0.5) / math.sqrt(var)
    return float(0.5 * math.erfc(z / math.sqrt(2.0)))


@dataclass
class Removal:
    """The removal test: class-logit drops of member and non-member donors when the region is filled.

    Attributes
    ----------
    drop : float
        Mean drop of the members' class logit.
    null : float
        Mean drop of the non-members'.
    p : float
        One-sided rank-sum p-value that members drop more.
    auroc : float
        AUROC of the members' drops against the non-members'.
    spread : float
        Standard deviation of the non-members' drops (the scale of the per-class null).
    n_members, n_others : int
        How many member and non-member donors were tested (0: not recorded).
    """

    drop: float
    null: float
    p: float
    auroc: float
    spread: float
    n_members: int = 0
    n_others: int = 0

    @property
    def excess(self) -> float:
        """Members' mean drop above the null's, in logits."""
        return self.drop - self.null

    @classmethod
    def of(cls, d_in: np.ndarray, d_out: np.ndarray) -> Removal:
        """The test from the members' ``(n_in,)`` and the non-members' ``(n_out,)`` logit drops."""
        return cls(
            float(d_in.mean()),
            float(d_out.mean()),
            rank_sum_p(d_in, d_out),
            auroc(d_in, d_out),
            float(d_out.std()),
            len(d_in),
            len(d_out),
        )


@dataclass
class InterventionTest:
    """What the interventions on one candidate measured.

    Attributes
    ----------
    appearance : float
        How alike the members' pixels are in the region (see :mod:`.appearance`).
    aligned : bool
        Measured (and pasted) at each sample's own aligned window.
    region_kind : str
        The tested region (:attr:`.appearance.Look.kind`).
    region_cells : int
        Cells of the (shared) region on the grid.
    appearance_null : float
        The class's typical appearance: the median over its other leading candidates.
    null_count : int
        How many other candidates that median is over (0: none to compare with; -1: not recorded).
    uniform : bool
        The region's pixels are the same in every donor, members and non-members alike (appearance 0: nothing
        to tell apart, not "as varied as the class").
    no_targets : bool
        The paste test could not run: no image of another class was audited (a one-class audit).
    flip_rate : float, optional
        Share of valid targets that flip to the class with the members' region pasted; None when the
        paste was not run.
    flip_null : float, optional
        The same with non-members' regions; None when skipped (members' rate below the margin).
    flip_p : float
        One-sided sign test on the discordant pairs (1.0 when the null was not run).
    flip_targets : int
        Valid targets (other-class images not already predicted as the class).
    removal : Removal, optional
        The removal test (None without logits or when not run).
    paste_gain, paste_gain_null : float, optional
        With logits: mean gain of the class logit of the valid targets from pasting the members' region,
        and from pasting the same region of non-members.
    paste_gain_p : float
        One-sided sign test that the members' paste gains more than the null's, target by target.
    """

    appearance: float
    aligned: bool
    region_kind: str = "window"
    region_cells: int = 0
    appearance_null: float = 0.0
    flip_rate: float | None = None
    flip_null: float | None = None
    flip_p: float = 1.0
    flip_targets: int = 0
    removal: Removal | None = None
    paste_gain: float | None = None
    paste_gain_null: float | None = None
    paste_gain_p: float = 1.0
    null_count: int = -1
    uniform: bool = False
    no_targets: bool = False

    @property
    def intervened(self) -> bool:
        """Whether any intervention ran (paste or removal)."""
        return self.flip_rate is not None or self.removal is not None

    @property
    def relative_appearance(self) -> float:
        """The appearance above the class's typical one, as a share of what is left above it."""
        return max(0.0, (self.appearance - self.appearance_null) / max(1e-9, 1.0 - self.appearance_null))

    @property
    def gain_excess(self) -> float | None:
        """Mean gain of the class logit from pasting the members' region, above the null's."""
        if self.paste_gain is None or self.paste_gain_null is None:
            return None
        return self.paste_gain - self.paste_gain_null

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

    def take_paste(self, paste: PasteResult) -> None:
        """Fill in the paste test's results (in place)."""
        self.flip_rate, self.flip_null, self.flip_p, self.flip_targets = (
            paste.flip_rate, paste.flip_null, paste.flip_p, paste.targets
        )  # fmt: skip
        self.paste_gain, self.paste_gain_null, self.paste_gain_p = paste.gain, paste.gain_null, paste.gain_p

    def signals(self) -> dict[str, float]:
        """The raw numbers as finding signals."""
        out = {
            "appearance": self.appearance,
            "appearance_null": self.appearance_null,
            "aligned": float(self.aligned),
            "test_region_cells": float(self.region_cells),
        }
        if self.flip_rate is None:
            out["paste_skipped"] = 1.0
        else:
            out |= {
                "flip_rate": self.flip_rate,
                "flip_p": self.flip_p,
                "flip_targets": float(self.flip_targets),
            }
            if self.flip_null is None:
                out["flip_null_skipped"] = 1.0
            else:
                out |= {"flip_null": self.flip_null, "flip_excess": self.flip_rate - self.flip_null}
        if self.paste_gain is not None and self.paste_gain_null is not None:
            out |= {"paste_gain": self.paste_gain, "paste_gain_null": self.paste_gain_null,
                    "paste_gain_excess": self.paste_gain - self.paste_gain_null, "paste_gain_p": self.paste_gain_p}  # fmt: skip
        if self.removal is not None:
            r = self.removal
            out |= {"removal_drop": r.drop, "removal_null": r.null, "removal_excess": r.excess,
                    "removal_p": r.p, "removal_auroc": r.auroc, "removal_spread": r.spread}  # fmt: skip
        return out


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


def removal_test(probe: InterventionProbe, class_index: int, donors: Donors, seen: Look) -> Removal | None:
    """The members' and non-members' class-logit drops when their region is filled with the non-member
    donors' per-pixel median (see the module docstring); None without the probe's logits."""
    if probe.logits is None:
        return None
    fill = torch.median(donors.x_out.float(), dim=0).values
    with torch.no_grad():
        xs = [
            donors.x_in,
            fill_masked(donors.x_in, seen.m_in, fill),
            donors.x_out,
            fill_masked(donors.x_out, seen.m_out, fill),
        ]
        z = [np.asarray(probe.logits(x)[:, class_index].float().cpu().numpy(), dtype=np.float64) for x in xs]
    return Removal.of(z[0] - z[1], z[2] - z[3])


@dataclass
class PasteResult:
    """Raw results of the paste test (see :class:`InterventionTest`)."""

    flip_rate: float
    flip_null: float | None
    flip_p: float
    targets: int
    gain: float | None = None
    gain_null: float | None = None
    gain_p: float = 1.0


def _paste_logits(
    probe: InterventionProbe,
    class_index: int,
    donors: Donors,
    seen: Look,
    targets: Targets,
    valid: np.ndarray,
) -> PasteResult:
    """Both paste arms with logits: flips, and the class logit's gain over the target as it is."""
    base = targets.base_logit()
    arms = []
    for ids, masks, x in (
        (donors.ids_in, seen.m_in, donors.x_in),
        (donors.ids_out, seen.m_out, donors.x_out),
    ):
        pick = probe.pairs(targets.ids, ids)
        pred, z = probe.class_logits(
            class_index,
            targets.ids,
            [ids[i] for i in pick],
            np.asarray(masks)[pick],
            dict(zip(ids, x, strict=True)),
        )
        arms.append(((pred == class_index)[valid], (z - base)[valid]))
    (fi, gi), (fo, go) = arms
    return paired_paste(fi, gi, fo, go)


def paired_paste(fi: np.ndarray, gi: np.ndarray, fo: np.ndarray, go: np.ndarray) -> PasteResult:
    """The paste test's result from both arms, target by target.

    Parameters
    ----------
    fi, fo : np.ndarray
        ``(m,)`` bool: the target is now predicted as the class, with the members' paste (``fi``) and with
        the non-members' (``fo``).
    gi, go : np.ndarray
        ``(m,)`` the class logit's gain over the target as it is, in the same two arms.
    """
    d = gi - go
    return PasteResult(
        float(fi.mean()),
        float(fo.mean()),
        sign_test_p(int((fi & ~fo).sum()), int((~fi & fo).sum())),
        len(fi),
        float(gi.mean()),
        float(go.mean()),
        sign_test_p(int((d > 0).sum()), int((d < 0).sum())),
    )


def paste_test(
    probe: InterventionProbe,
    class_index: int,
    donors: Donors,
    seen: Look,
    targets: Targets,
    config: ScoringConfig,
) -> PasteResult | None:
    """The paste test: flips of both arms (and, with logits, the class logit's gain); None when every
    target is already predicted as the class."""
    valid = ~targets.already  # a target already predicted as this class cannot flip to it
    nv = int(valid.sum())
    if nv == 0:
        return None  # nothing can flip: untestable
    if probe.logits is not None:
        return _paste_logits(probe, class_index, donors, seen, targets, valid)
    fi = probe.paste_flips(class_index, donors.ids_in, seen.m_in, targets.ids, donors.x_in)[valid]
    if fi.mean() < config.flip_margin:
        # The paste route of the flag needs flip - null >= flip_margin, so below the margin it is
        # impossible whatever the null: skip the null arm (half the paste's forward passes).
        return PasteResult(float(fi.mean()), None, 1.0, nv)
    fo = probe.paste_flips(class_index, donors.ids_out, seen.m_out, targets.ids, donors.x_out)[valid]
    b = int((fi & ~fo).sum())
    c = int((~fi & fo).sum())
    return PasteResult(float(fi.mean()), float(fo.mean()), sign_test_p(b, c), nv)


def appraise(
    stats: ClassStats,
    cand: Candidate,
    sample_ids: list[str],
    probe: InterventionProbe,
    donor_order: np.ndarray,
    config: ScoringConfig,
) -> tuple[Donors, Look] | None:
    """The candidate's donors and how alike their pixels are in its region (no forward pass); None when
    the candidate has no members or no rest of the class to compare with."""
    donors = pick_donors(cand, stats, sample_ids, probe, donor_order, config.max_donors)
    if donors is None:
        return None
    return donors, look(stats, cand, donors, config)


def intervention_test(
    stats: ClassStats,
    cand: Candidate,
    class_index: int,
    probe: InterventionProbe,
    targets: Targets | None,
    appraised: tuple[Donors, Look],
    appearance_null: float,
    config: ScoringConfig,
    stamps: dict[tuple[int, int], Stamp] | None = None,
) -> InterventionTest:
    """Paste and removal tests of one appraised candidate.

    ``appearance_null`` is the class's typical appearance (of its other candidates). The candidate's
    :class:`Stamp` is put into ``stamps`` under ``(k, cluster_id)`` (for the carrier scan of a flagged
    candidate).
    """
    donors, seen = appraised
    if stamps is not None:
        stamps[(cand.k, cand.cluster_id)] = make_stamp(stats, cand, donors, seen.m_in, seen.kind)
    test = InterventionTest(
        seen.appearance, seen.aligned, seen.kind, int(seen.m_in[0].sum()), appearance_null
    )
    return run_interventions(test, probe, class_index, donors, seen, targets, config)


def run_interventions(
    test: InterventionTest,
    probe: InterventionProbe,
    class_index: int,
    donors: Donors,
    seen: Look,
    targets: Targets | None,
    config: ScoringConfig,
) -> InterventionTest:
    """``test`` with the removal test (``config.removal``) and the paste test (with ``targets``) of the
    donors' regions ``seen.m_in`` / ``seen.m_out`` filled in."""
    if config.removal:
        test.removal = removal_test(probe, class_index, donors, seen)
    test.no_targets = targets is None
    paste = paste_test(probe, class_index, donors, seen, targets, config) if targets is not None else None
    if paste is not None:
        test.take_paste(paste)
    return test

"""The intervention test of a concept-only finding, at each image's own concept-conditional hot pixels.

A concept-space cluster groups samples whose decision leans on the same channels of the concept layer,
wherever in the image those channels fired: a watermark in a random corner, a patch anywhere. The pixel
candidates are tested at one region shared by the members; a concept finding has none. Here every
tested image gets its own region: the hot pixels of its *concept-conditional heatmap* (only the
relevance of the finding's characteristic channels, propagated to the input) where it exceeds the
non-member donors' mean conditional heatmap, so the test follows the pattern to wherever it sits in each
image. Then the pixel stage's two interventions run unchanged:

* **paste** each member's region (at its own place) into images of other classes and measure the gain
  of the class logit, against the same paste of non-members' regions (the same channels' hot pixels in
  ordinary images of the class);
* **remove** each member's region (fill with the non-member donors' per-pixel median) and measure the
  drop of its class logit, against the same removal on non-members.

Every heatmap here explains the logit of the class analysed (with ``analysis.group_by: label`` and
``lrp.target: label``, the defaults, the target the concept vectors were taken for). The margins are the
``scoring`` section's. A concept finding has no appearance gate (its members'
regions lie at different places), so ``concepts.flag_rule`` says which tests must clear them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spray.analysis.colour_test import colour_carriers, colour_intervention, colour_sentences, typical_colour
from spray.analysis.concept_findings import by_score
from spray.analysis.scoring.appearance import Donors, Look
from spray.analysis.scoring.evidence import intervention_sentences, region_sentence
from spray.analysis.scoring.geometry import relevance_mask
from spray.analysis.scoring.intervention import InterventionTest, run_interventions
from spray.analysis.scoring.ordering import stable_order
from spray.analysis.scoring.probe import InterventionProbe, Targets
from spray.analysis.scoring.verdict import (
    Routes,
    intervention_routes,
    paste_gain_ratio,
    removal_shortfall,
    suspicion,
)
from spray.config import AuditConfig, ScoringConfig
from spray.records import ClusterFinding

#: The signals of an :class:`InterventionTest` that describe pixels alike at one region: a concept test
#: has no such region, so they are not reported.
_PIXEL_ONLY = ("appearance", "appearance_null", "aligned")


def shares(maps: np.ndarray) -> np.ndarray:
    """``(n, h, w)`` each map's positive relevance as a share of its total (0 for a map without any)."""
    pos = np.clip(np.asarray(maps, dtype=np.float64), 0.0, None)
    total = pos.reshape(len(pos), -1).sum(axis=1)
    return pos / np.where(total > 0, total, 1.0)[:, None, None]


def own_masks(p: np.ndarray, base: np.ndarray, level: float, max_area: float) -> np.ndarray:
    """``(n, h, w)`` bool: each share map's own hot cells, where it most exceeds ``base`` ``(h, w)``
    (:func:`~spray.analysis.scoring.geometry.relevance_mask`); empty where nothing exceeds it."""
    if not len(p):
        return np.zeros(p.shape, dtype=bool)
    return np.stack([relevance_mask(m, base, level, max_area) for m in p])


def concept_donors(
    finding: ClusterFinding,
    sample_ids: list[str],
    probe: InterventionProbe,
    donor_order: np.ndarray,
    max_donors: int,
) -> Donors | None:
    """The finding's first ``max_donors`` members and non-members in the class's seeded ``donor_order``
    ``(n,)`` (the pixel candidates' own), loaded; None without members or with fewer than 2 non-members
    (one non-member would be its own null: an empty mask and a null of exactly 0)."""
    member = np.isin(np.asarray(sample_ids), np.asarray(finding.member_ids))
    in_order = member[donor_order]
    d_in = np.sort(donor_order[in_order][:max_donors])
    d_out = np.sort(donor_order[~in_order][:max_donors])
    if d_in.size == 0 or d_out.size < 2:
        return None
    ids_in, ids_out = [sample_ids[i] for i in d_in], [sample_ids[i] for i in d_out]
    none = np.zeros(0)
    return Donors(
        d_in, d_out, ids_in, ids_out, probe.load_inputs(ids_in), probe.load_inputs(ids_out), none, none
    )


@dataclass
class HotPixelTest:
    """The hot-pixel test of a concept-only finding and where its members' hot pixels lie.

    Attributes
    ----------
    test : InterventionTest
        Paste and removal at each donor's own concept-conditional hot pixels.
    typicality : float
        The non-member donors' mean conditional share at a member's hot cells over that map's grid mean,
        the median over members with hot cells (:func:`typicality`).
    """

    test: InterventionTest
    typicality: float


def typicality(masks: np.ndarray, base: np.ndarray) -> float:
    """Where hot cells lie in the rest of the class's relevance: 1 on average places, above 1 on its usual
    ones (object parts), below 1 off them.

    Parameters
    ----------
    masks : np.ndarray
        ``(n, h, w)`` bool, each member's own hot cells (empty masks are left out).
    base : np.ndarray
        ``(h, w)`` the non-members' mean share map.

    Returns
    -------
    float
        The median over non-empty masks of the mean of ``base`` on the mask over the mean of ``base``;
        0 when ``base`` is all zero (the rest of the class has no usual place for this relevance) or every
        mask is empty.
    """
    mean = float(base.mean())
    values = [float(base[m].mean()) / mean for m in masks if m.any()] if mean > 0 else []
    return float(np.median(values)) if values else 0.0


def concept_intervention(
    finding: ClusterFinding,
    donors: Donors,
    n_channels: int,
    probe: InterventionProbe,
    targets: Targets | None,
    cfg: AuditConfig,
) -> HotPixelTest | None:
    """Paste and removal tests of one concept-only finding at each donor's own concept-conditional hot
    pixels, and where those pixels lie; None (untested) when no member's channels stand out anywhere in
    its image.

    Parameters
    ----------
    finding : ClusterFinding
        A finding with ``space == "concept"`` and its characteristic ``channels``.
    donors : Donors
        Its member and non-member donors (:func:`concept_donors`).
    n_channels : int
        Channels of the concept layer.
    probe : InterventionProbe
        With ``logits`` and ``concept_maps``.
    targets : Targets, optional
        The class's paste targets (None: no paste test).
    cfg : AuditConfig
        ``scoring`` (margins, mask level and area).
    """
    assert probe.concept_maps is not None
    sc = cfg.scoring
    c = finding.class_index
    p_in = shares(probe.concept_maps(donors.x_in, c, finding.channels, n_channels))
    p_out = shares(probe.concept_maps(donors.x_out, c, finding.channels, n_channels))
    # Against the non-members' mean map, as the pixel stage's hot pixels are: the channels' usual places
    # in the class (object parts) drop out, what an image holds beyond them stays.
    base = p_out.mean(axis=0)
    m_in = own_masks(p_in, base, sc.mask_level, sc.mask_max_area)
    m_out = own_masks(p_out, base, sc.mask_level, sc.mask_max_area)
    if not m_in.any():
        return None  # no member's channels stand out anywhere: nothing to paste or remove (untested)
    seen = Look(0.0, False, m_in, m_out, kind="concept")
    test = InterventionTest(0.0, False, "concept", int(np.median(m_in.reshape(len(m_in), -1).sum(axis=1))))
    return HotPixelTest(run_interventions(test, probe, c, donors, seen, targets, sc), typicality(m_in, base))


def _missing(cleared: tuple[str, ...], test: InterventionTest, cfg: AuditConfig) -> str:
    """What ``concepts.flag_rule`` still asks of a tested concept finding, in words ("" when nothing)."""
    rule = cfg.concepts.flag_rule
    if rule == "any":
        return "" if cleared else "no test cleared its margins"
    colour = "colour " if test.region_kind == "colour" else ""
    if rule == "both":
        return "" if len(cleared) == 2 else f"a concept-only finding needs both {colour}tests to clear theirs"
    if "removal" not in cleared:
        short = removal_shortfall(test, colour_scoring(cfg) if colour else cfg.scoring)
        return f"a concept-only finding needs the {colour}removal test to clear its margins" + (
            f" ({short})" if short else ""
        )
    need = cfg.concepts.flag_gain_ratio
    ratio = paste_gain_ratio(test, cfg.scoring) or 0.0
    given = "colour" if colour else "paste"
    if need > 0 and ratio < need:
        return (
            f"its members' {given} raises the class logit only {ratio:.2f} times as much as the non-members' "
            f"(a concept-only finding needs {need:.2f})"
        )
    margin, excess = cfg.scoring.paste_gain_margin, test.gain_excess
    if colour and cfg.concepts.colour_gain_margin and (excess is None or excess < margin):
        return (
            f"its members' colour raises the class logit only {excess or 0.0:.2f} more than the non-members' "
            f"(a colour finding needs {margin:g})"
        )
    return ""


def colour_scoring(cfg: AuditConfig) -> ScoringConfig:
    """The scoring margins the colour test is judged by: ``concepts.colour_min_auroc`` for the removal's AUROC."""
    auroc = cfg.concepts.colour_min_auroc
    return cfg.scoring if auroc is None else cfg.scoring.model_copy(update={"removal_min_auroc": auroc})


@dataclass
class _Verdict:
    """One test of a concept-only finding, judged: the routes that cleared their margins and what the flag
    rule still asks ("" when nothing)."""

    test: InterventionTest
    routes: Routes
    missing: str
    #: met the rule, but its hot pixels lie on the class's usual places (``concepts.max_typicality``)
    typical: bool = False

    def names(self) -> list[str]:
        """The cleared tests in words ("removal test", "colour removal test")."""
        prefix = "colour " if self.test.region_kind == "colour" else ""
        return [f"{prefix}{route} test" for route in self.routes.cleared]


def _cleared(names: list[str]) -> str:
    """``"the X test cleared its margins"`` / ``"the X test and the Y test cleared their margins"``."""
    return f"the {' and the '.join(names)} cleared {'its' if len(names) == 1 else 'their'} margins"


def _space_lines(f: ClusterFinding, pixel: list[ClusterFinding], merge_jaccard: float) -> list[str]:
    """Where a concept-only finding stands to the pixel candidates of its class: none is the same group, and
    the one holding most of its members, if any (a subgroup of a larger pixel group is still concept-only)."""
    out = [
        f"found in concept space only: no pixel candidate holds the same group (member Jaccard ≥ {merge_jaccard:g})"
    ]
    members = set(f.member_ids)
    shared = [(len(members & set(p.member_ids)), p) for p in pixel]
    best = max(shared, key=lambda t: t[0], default=(0, None))
    if best[1] is not None and best[0] > 0:
        out.append(
            f"{best[0]} of its {len(members)} members are in the pixel candidate {best[1].key} of {best[1].size}"
        )
    return out


def _judge_hot(hot: HotPixelTest, cfg: AuditConfig) -> _Verdict:
    """The hot-pixel test judged by ``concepts.flag_rule``, then by ``concepts.max_typicality``."""
    test = hot.test
    routes = intervention_routes(test, cfg.scoring)
    verdict = _Verdict(test, routes, _missing(routes.cleared, test, cfg))
    limit = cfg.concepts.max_typicality
    if not verdict.missing and limit is not None and not hot.typicality <= limit:
        verdict.typical = True
        verdict.missing = (
            f"its members' hot pixels lie where the rest of the class puts these channels' relevance "
            f"(typicality {hot.typicality:.2f}; a concept-only finding needs at most {limit:g})"
        )
    return verdict


def _judge(
    f: ClusterFinding,
    hot: HotPixelTest | None,
    colour: InterventionTest | None,
    cfg: AuditConfig,
    grid_cells: int,
    pixel: list[ClusterFinding],
) -> list[_Verdict]:
    """Score, flag, signals and evidence of a concept-only finding with its hot-pixel test, its colour test
    or both (at least one; in place): either test can meet ``concepts.flag_rule``. ``pixel`` are the class's
    pixel candidates (for where the finding stands to them). Returns the tests that met the rule."""
    hot_v = None if hot is None else _judge_hot(hot, cfg)
    colour_v = None
    if colour is not None:
        routes = intervention_routes(colour, colour_scoring(cfg))
        colour_v = _Verdict(colour, routes, _missing(routes.cleared, colour, cfg))
    judged = [v for v in (hot_v, colour_v) if v is not None]
    small = f.size < max(cfg.scoring.min_cluster_size, cfg.concepts.min_cluster_size)
    too_big = f.fraction > cfg.scoring.flag_max_fraction
    met = [v for v in judged if not v.missing]
    flagged = bool(met) and not small and not too_big
    strength = max(v.routes.strength for v in judged)
    raw = cfg.concepts.score_weight * f.signals["concept_score"] * (0.5 + strength)
    f.score, f.suspicious = suspicion(raw, flagged), flagged
    lines = [f.evidence[0], *_space_lines(f, pixel, cfg.concepts.merge_jaccard)]
    if hot is not None:
        f.signals.update({k: v for k, v in hot.test.signals().items() if k not in _PIXEL_ONLY})
        lines += [region_sentence(hot.test, grid_cells), *intervention_sentences(f.class_name, hot.test)]
        lines.append(_typicality_sentence(f.class_name, hot.typicality))
    else:
        lines.append("hot-pixel test not run: no member's channels stand out anywhere in its image")
    if colour is not None:
        # A colour has no region: no cells to report.
        skip = (*_PIXEL_ONLY, "test_region_cells")
        f.signals.update({f"colour_{k}": v for k, v in colour.signals().items() if k not in skip})
        lines += colour_sentences(f.class_name, colour)
    f.signals.update(_rule_signals(hot, hot_v, colour_v, eligible=not small and not too_big))
    f.evidence = lines + _verdict_lines(f, judged, met, flagged, cfg)
    return met


def _typicality_sentence(class_name: str, value: float) -> str:
    """Where the members' hot pixels lie, in words (one claim)."""
    if value <= 0:
        return (
            f"other {class_name} images put no relevance on these channels where the members' hot pixels lie"
        )
    return (
        f"other {class_name} images put {value:.2f} times these channels' average relevance where the "
        "members' hot pixels lie"
    )


def _rule_signals(
    hot: HotPixelTest | None, hot_v: _Verdict | None, colour_v: _Verdict | None, *, eligible: bool
) -> dict[str, float]:
    """What the flag rule saw, so that another rule can be replayed from a run's signals: whether each test
    met ``concepts.flag_rule`` (the hot-pixel test before ``concepts.max_typicality``), its typicality, and
    whether the group's size allows a flag."""
    out = {"concept_tested": 1.0, "concept_flag_eligible": float(eligible)}
    if hot is not None and hot_v is not None:
        out["concept_typicality"] = hot.typicality
        out["concept_hot_met"] = float(not hot_v.missing or hot_v.typical)
    if colour_v is not None:
        out["concept_colour_met"] = float(not colour_v.missing)
    return out


def _verdict_lines(
    f: ClusterFinding, judged: list[_Verdict], met: list[_Verdict], flagged: bool, cfg: AuditConfig
) -> list[str]:
    """The flag and, when a test cleared its margins without a flag, why not (one line per claim)."""
    if flagged:
        return ["flagged by the " + " and the ".join(n for v in met for n in v.names())]
    if met and f.fraction > cfg.scoring.flag_max_fraction:
        return [
            f"not flagged although {_cleared([n for v in met for n in v.names()])}: the group is "
            f"{100 * f.fraction:.0f} % of the class, and a flag needs at most "
            f"{100 * cfg.scoring.flag_max_fraction:.0f} %"
        ]
    if met:
        return [
            f"not flagged although {_cleared([n for v in met for n in v.names()])}: the group has only "
            f"{f.size} members"
        ]
    out = [
        f"not flagged: {_cleared(v.names())}, but {v.missing}"
        if v.routes.cleared
        else f"not flagged by the {'colour' if v.test.region_kind == 'colour' else 'hot-pixel'} test: {v.missing}"
        for v in judged
        if v.routes.cleared or v.missing
    ]
    if f.fraction > cfg.scoring.flag_max_fraction:  # said even when no test cleared its margins
        out.append(
            f"a flag also needs the group to be at most {100 * cfg.scoring.flag_max_fraction:.0f} % of the class, "
            f"and it is {100 * f.fraction:.0f} %"
        )
    return out


def intervene_concept_findings(
    findings: list[ClusterFinding],
    sample_ids: list[str],
    n_channels: int,
    grid_cells: int,
    probe: InterventionProbe | None,
    cfg: AuditConfig,
) -> list[ClusterFinding]:
    """The class's findings with every concept-only one tested (:func:`concept_intervention`, and on
    colour inputs :func:`~spray.analysis.colour_test.colour_intervention`), scored and flagged, most
    suspicious first; unchanged without a probe that has logits and concept maps.

    Parameters
    ----------
    findings : list[ClusterFinding]
        The class's candidates of both spaces (:func:`~spray.analysis.concept_findings.merge_concept_findings`).
    sample_ids : list[str]
        The class's sample ids.
    n_channels : int
        Channels of the concept layer.
    grid_cells : int
        Cells of the analysis grid (for the evidence).
    probe : InterventionProbe, optional
        The class's probe.
    cfg : AuditConfig
        ``concepts``, ``scoring`` and ``seed``.
    """
    todo = [f for f in findings if f.space == "concept" and f.channels]
    if not todo or probe is None or probe.logits is None or probe.concept_maps is None:
        return findings
    if not cfg.concepts.intervention or not cfg.scoring.intervention:
        return findings
    c = todo[0].class_index
    pixel = [f for f in findings if f.space != "concept"]
    # The pixel candidates' donor order: the same seeded draw of the class's contents.
    donor_order = stable_order([probe.key(s) for s in sample_ids], f"donor|{cfg.seed}|{c}")
    targets = Targets.load(probe, c, cfg.scoring.intervention_samples)
    for f in todo:
        donors = concept_donors(f, sample_ids, probe, donor_order, cfg.scoring.max_donors)
        if donors is None:
            continue
        hot = concept_intervention(f, donors, n_channels, probe, targets, cfg)
        colour = (
            colour_intervention(probe, c, donors, targets, cfg.scoring.removal)
            if cfg.concepts.colour_test
            else None
        )
        if hot is None and colour is None:
            continue
        met = _judge(f, hot, colour, cfg, grid_cells, pixel)
        by_colour = next((v for v in met if v.test is colour), None)
        # Carriers compare drops: only a colour test that met the rule with its removal has them.
        if f.suspicious and by_colour is not None and "removal" in by_colour.routes.cleared:
            _colour_carriers(f, by_colour.test, donors, sample_ids, probe, cfg)
    return by_score(findings)


def _colour_carriers(
    f: ClusterFinding,
    colour: InterventionTest,
    donors: Donors,
    sample_ids: list[str],
    probe: InterventionProbe,
    cfg: AuditConfig,
) -> None:
    """A finding flagged by its colour test, whose colour removal cleared its margins, gets the class's other
    images whose logit the typical colour lowers as the members' as carriers
    (:func:`~spray.analysis.colour_test.colour_carriers`; in place, with ``scoring.carriers``)."""
    if not cfg.scoring.carriers or colour.removal is None:
        return
    members = set(f.member_ids)
    rows = np.array([i for i, s in enumerate(sample_ids) if s not in members], dtype=np.int64)
    typical = typical_colour(donors.x_out)
    found = colour_carriers(
        probe, f.class_index, typical, colour.removal, sample_ids, rows, cfg.scoring.carrier_chunk
    )
    f.carrier_ids = [sample_ids[i] for i in found]
    f.signals["carriers"] = float(len(found))
    n = len(sample_ids)
    f.evidence.append(
        f"{len(found)} more {f.class_name} images, {100 * len(found) / n:.1f} % of the class, whose logit drops "
        "with the typical colour more like the members' than the rest's: listed as carriers"
        if found
        else f"no other {f.class_name} image's logit drops with the typical colour like the members'",
    )

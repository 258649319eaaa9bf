"""Whether the heatmaps say *where*: a check that the LRP composite gives this model's heatmaps contrast.

A composite can pass every conservation check and still spread a model's relevance almost evenly over the
image (a ConvNeXt under ``EpsilonPlusFlat``: each map's cells vary by about 10 % of their mean, against
100–200 % for ResNet, MobileNet and spray's small CNN on their data). Such maps cluster by nothing, so the
audit reports no finding and looks like a clean model. The check (a warning; the audit goes on) is the
median over samples of each map's coefficient of variation of ``|R|`` over the analysis grid's cells; under
:data:`FLAT_CV` the heatmaps are called flat. Measurements: ``docs/lrp.md`` ("Flat heatmaps").
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from spray.config.lrp import TRANSFORMER_COMPOSITES

log = logging.getLogger(__name__)

#: Median coefficient of variation of ``|R|`` over the grid below which the heatmaps are flat: the flat
#: ConvNeXt maps measured 0.09–0.12, the other models 0.4 and more (docs/lrp.md).
FLAT_CV = 0.3
#: Maps handled at once (bounds the check's memory).
CHUNK = 4096
#: Fewer samples than this say too little to warn about.
CONTRAST_MIN_SAMPLES = 20


@dataclass(frozen=True)
class HeatmapContrast:
    """How much the heatmaps vary across the grid.

    Attributes
    ----------
    median_cv : float
        Median over samples of ``std(|R|) / mean(|R|)`` over a map's grid cells (0: a uniform map).
    n_samples : int
        Maps counted (those with any relevance).
    flat : bool
        ``median_cv`` under :data:`FLAT_CV` (and enough samples).
    composite : str or None
        The LRP composite the maps were computed with (None: a run recorded before it was).
    transformer : bool or None
        Whether the model has attention layers (None: not recorded).
    """

    median_cv: float
    n_samples: int
    flat: bool
    composite: str | None = None
    transformer: bool | None = None


def composite_advice(composite: str | None, transformer: bool | None) -> str:
    """Which composite to compare, given the one the maps came from and whether the model has attention (never
    the one in use; a transformer is pointed at the attention rules)."""
    if composite is None:
        return "try lrp.composite: EpsilonGammaBox (or EpsilonAlpha2Beta1Flat; AttnLRP for a transformer)"
    if transformer and composite in TRANSFORMER_COMPOSITES:
        other = next(c for c in sorted(TRANSFORMER_COMPOSITES) if c != composite)
        return (
            f"compare lrp.composite: {other} (an untrained or barely trained transformer gives such maps under "
            "every composite)"
        )
    if transformer:
        return "try lrp.composite: AttnLRP, whose rules are made for attention (docs/lrp.md, 'Which composite for a ViT')"
    options = [c for c in ("EpsilonGammaBox", "EpsilonAlpha2Beta1Flat") if c != composite]
    return f"try lrp.composite: {options[0]}" + (f" (or {options[1]})" if len(options) > 1 else "")


def heatmap_contrast(
    relevance: np.ndarray, composite: str | None = None, transformer: bool | None = None
) -> HeatmapContrast | None:
    """The contrast of a run's heatmaps; warns when they are flat (module docstring).

    Parameters
    ----------
    relevance : np.ndarray
        ``(N, h, w)`` heatmaps on the analysis grid.
    composite : str, optional
        ``lrp.composite`` (the advice names another one).
    transformer : bool, optional
        Whether the model has attention layers (the advice names the attention rules).

    Returns
    -------
    HeatmapContrast or None
        None when no map holds any relevance.
    """
    if len(relevance) == 0:
        return None
    cvs = []
    # In row blocks of float32: a float64 copy of a million maps would cost gigabytes after the LRP is done.
    for start in range(0, len(relevance), CHUNK):
        a = np.abs(
            np.asarray(relevance[start : start + CHUNK], dtype=np.float32).reshape(-1, relevance[0].size)
        )
        mean = a.mean(axis=1, dtype=np.float64)
        keep = mean > 0
        cvs.append(a[keep].std(axis=1, dtype=np.float64) / mean[keep])
    cv = np.concatenate(cvs)
    if not len(cv):
        return None
    median, n = float(np.median(cv)), len(cv)
    got = HeatmapContrast(median, n, n >= CONTRAST_MIN_SAMPLES and median < FLAT_CV, composite, transformer)
    for problem in problems(asdict(got)):
        log.warning("%s", problem)
    return got


def problems(rec: dict[str, Any]) -> list[str]:
    """The sentence for a recorded check (the fields of :class:`HeatmapContrast`), or none."""
    if not rec.get("flat"):
        return []
    return [
        f"The heatmaps are nearly flat: a map's cells vary by {100 * rec['median_cv']:.0f} % of their mean "
        f"(median of {rec['n_samples']:,} maps; other models give 40 % and more), so the clusters and findings say "
        "little about where the model looks, and no finding here does not mean a clean model. The LRP "
        f"composite may not suit this model: {composite_advice(rec.get('composite'), rec.get('transformer'))}, "
        "and compare the heatmaps of a few images."
    ]

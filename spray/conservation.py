"""How much of the explained logit the heatmaps carry: a check of the LRP composite on the model at hand.

LRP's relevance sums to the explained logit only where no bias or stabiliser takes a share. ε-rules give
each bias its share, so a model whose batch norms were folded into its convolutions can end with a few per
cent of the logit in its heatmaps (an outside-in check measured a median of 1.6 % for a trained timm
EfficientNet-B0 and 10 % for a MobileNetV3 under ``EpsilonPlusFlat``, 35 % for a ViT under ``AttnLRP``, 99 %
for a ConvNeXt under ``EpsilonGammaBox``). The heatmaps still rank pixels, but a small remainder is easily
noise. The audit explains a few images spread over the dataset once more, records the median of
``sum(R) / logit`` (``summary.json`` → ``extra.conservation``) and, under :data:`LOW_SHARE`, says so with
what to try (a warning; the audit goes on). Measurements: ``docs/lrp.md`` ("How much of the logit").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from spray.heatmap_contrast import composite_advice

if TYPE_CHECKING:  # torch only where the check runs: its sentences are read by the dashboard and reports
    import torch

log = logging.getLogger(__name__)

#: Median share of the logit under which the heatmaps are said to carry little of it (docs/lrp.md).
LOW_SHARE = 0.1
#: Images explained for the check, spread evenly over the dataset.
PROBE_SAMPLES = 32
#: Logits closer to 0 than this give no meaningful share and are left out.
MIN_LOGIT = 1e-3


@dataclass(frozen=True)
class Conservation:
    """The share of the explained logit the input relevance carries.

    Attributes
    ----------
    median_share, low_share, high_share : float
        Median, 10th and 90th percentile over the images of ``sum(R) / logit``.
    n_samples : int
        Images counted (those with a logit away from 0).
    low : bool
        ``median_share`` under :data:`LOW_SHARE`.
    composite : str or None
        The LRP composite (None: a run recorded before it was).
    transformer : bool or None
        Whether the model has attention layers (None: not recorded).
    """

    median_share: float
    low_share: float
    high_share: float
    n_samples: int
    low: bool
    composite: str | None = None
    transformer: bool | None = None


def shares(relevance: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """``(m,)`` ``sum(R) / logit`` of each image whose explained logit is away from 0.

    Parameters
    ----------
    relevance : torch.Tensor
        ``(B, ...)`` input relevance.
    logits : torch.Tensor
        ``(B, K)`` model outputs.
    targets : torch.Tensor
        ``(B,)`` the class explained for each image.
    """
    total = relevance.detach().double().reshape(len(relevance), -1).sum(dim=1)
    z = logits.detach().double().gather(1, targets.long().view(-1, 1).to(logits.device)).view(-1)
    keep = z.abs() > MIN_LOGIT
    return (total[keep.to(total.device)] / z[keep].to(total.device)).cpu().numpy()


def measure(
    explainer: Any,
    dataset: Any,
    target: str | int,
    device: torch.device,
    skip: frozenset[str] = frozenset(),
    transformer: bool | None = None,
    order: Sequence[int] | None = None,
) -> Conservation | None:
    """Explain :data:`PROBE_SAMPLES` images spread over ``dataset`` and judge the shares (module docstring);
    None when no image could be counted.

    Parameters
    ----------
    explainer : spray.lrp.Explainer
        The batch stage's explainer.
    dataset : spray.data.AuditDataset
        ``load_input(i)``, ``labels`` and ``sample_ids``; unreadable images are passed over.
    target : str or int
        ``lrp.target``.
    device : torch.device
        Where the explainer runs.
    skip : frozenset of str
        Sample ids the audit skipped (unreadable): never loaded again.
    transformer : bool, optional
        Whether the model has attention layers (for the advice).
    order : sequence of int, optional
        Dataset positions in the order the probe images are spread over (the audit's: by content, so that the
        check does not move with file names).
    """
    import torch

    from spray.data.dataset import spread_inputs

    picked = spread_inputs(dataset, PROBE_SAMPLES, skip, order)
    if not picked:
        return None
    labels = torch.as_tensor([int(dataset.labels[i]) for i, _ in picked], dtype=torch.long, device=device)
    res = explainer(torch.stack([x for _, x in picked]).to(device), target=target, labels=labels)
    got = shares(res.relevance, res.logits, res.targets)
    if not len(got):
        return None
    median = float(np.median(got))
    name = getattr(getattr(explainer, "composite", None), "name", None)
    check = Conservation(
        median, float(np.quantile(got, 0.1)), float(np.quantile(got, 0.9)), len(got), median < LOW_SHARE,
        name if isinstance(name, str) else None, transformer,
    )  # fmt: skip
    for problem in problems(asdict(check)):
        log.warning("%s", problem)
    return check


def problems(rec: dict[str, Any]) -> list[str]:
    """The sentence for a recorded check (the fields of :class:`Conservation`), or none."""
    if not rec.get("low"):
        return []
    composite = rec.get("composite")
    # z+ takes relevance where no input meets a positive weight: said only where z+ ran (or it is not known)
    z_plus = (
        " and the z+ rule where no input meets a positive weight"
        if composite in (None, "EpsilonPlusFlat", "EpsilonPlus")
        else ""
    )
    return [
        f"The heatmaps carry {100 * rec['median_share']:.1f} % of the explained logit (median of "
        f"{rec['n_samples']} images; 10 to 90 %: {100 * rec['low_share']:.1f} to {100 * rec['high_share']:.1f} "
        f"%): the model's biases and the rules' stabilisers{z_plus} took the rest, so the maps show a small part "
        "of the decision and read noise more easily. Findings can still be right; if they look like noise, "
        f"{composite_advice(rec.get('composite'), rec.get('transformer'))} on a few images (docs/lrp.md)."
    ]

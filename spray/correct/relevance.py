"""LRP heatmaps for the correction, with spray's own engine and the audit's LRP settings."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from spray.config import LRPConfig
from spray.lrp import Explainer


def relevance_maps(
    model: nn.Module,
    batches: Iterator[torch.Tensor],
    labels: np.ndarray,
    lrp: LRPConfig,
    device: torch.device,
    composite_kwargs: dict[str, float] | None = None,
) -> np.ndarray:
    """Channel-summed input relevance of the true class for every input.

    Parameters
    ----------
    model : nn.Module
        The model (a canonized copy is explained; the model is not modified).
    batches : iterator of torch.Tensor
        ``(b, C, H, W)`` inputs, in the order of ``labels``.
    labels : np.ndarray
        ``(n,)`` int64 class explained per input.
    lrp : LRPConfig
        Composite, its parameters, precision and canonization (the audit's).
    device : torch.device
        Where to run.
    composite_kwargs : dict, optional
        Overrides ``lrp.composite_kwargs`` (the audit fills in ZBox bounds from the transform).

    Returns
    -------
    np.ndarray
        ``(n, H, W)`` float32.
    """
    explainer = Explainer(
        model,
        lrp.composite,
        composite_kwargs=composite_kwargs if composite_kwargs is not None else dict(lrp.composite_kwargs),
        canonize=lrp.canonize,
        device=device,
        precision=lrp.precision,
    )
    out: list[np.ndarray] = []
    start = 0
    for x in batches:
        y = torch.from_numpy(labels[start : start + len(x)])
        start += len(x)
        res = explainer(x.to(device), target=y.to(device))
        out.append(res.relevance.sum(1).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def composite_kwargs(lrp: LRPConfig, bounds: tuple[float, float]) -> dict[str, float]:
    """The composite's parameters as the audit uses them: a box rule gets the inputs' range."""
    kw = dict(lrp.composite_kwargs)
    if "Box" in lrp.composite:
        kw.setdefault("low", bounds[0])
        kw.setdefault("high", bounds[1])
    return kw


def normalise(maps: np.ndarray) -> np.ndarray:
    """Each ``(h, w)`` map divided by its total absolute relevance (``(n, h, w)`` in and out)."""
    total = np.abs(maps).sum(axis=(1, 2), keepdims=True)
    return maps / np.maximum(total, 1e-12)


def region_share(maps: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``Σ|R·mask| / Σ|R|`` per map: ``(n, h, w)`` maps, ``(h, w)`` bool mask → ``(n,)``."""
    a = np.abs(maps)
    return (a * mask[None]).sum(axis=(1, 2)) / np.maximum(a.sum(axis=(1, 2)), 1e-12)

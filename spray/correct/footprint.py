"""The artifact region's footprint at the layer: how much of each position's relevance LRP carries into it.

RR-ClArC's region term (``correction.rr_region_weight``) penalises the share of the layer's relevance
that sits at positions whose relevance the audit's LRP rules send into the flagged region. Which
positions those are, and how much, follows from the audited model's own LRP: for every tile of the
layer's ``(h, w)`` grid only that tile's relevance is propagated to the input (a concept mask over
positions, :class:`spray.lrp.concepts.ConceptTap`), and the tile's weight is the share of the resulting
heatmaps' absolute relevance inside the region. With ``train_scope: after_layer`` nothing before the
layer trains, so the footprint measured once holds for the whole fine-tuning.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from spray.config import LRPConfig
from spray.correct.activations import layer_activations
from spray.correct.relevance import composite_kwargs
from spray.correct.samples import SampleSet
from spray.errors import ConfigError
from spray.lrp import Explainer

log = logging.getLogger(__name__)

#: Most tiles per side of the layer's grid: a larger grid is measured in bands (cost ≤ 64 LRP passes).
MAX_TILES_PER_SIDE = 8


class NoGridError(ConfigError):
    """The layer's output has no ``(h, w)`` grid (or a 1×1 one), so the region has no footprint there."""


@dataclass
class RegionFootprint:
    """Per position of the layer's grid, the share of its relevance that LRP sends into the region.

    Attributes
    ----------
    weights : np.ndarray
        ``(h, w)`` float32 in [0, 1].
    tiles : tuple[int, int]
        Bands measured along each side (``(h, w)`` itself up to :data:`MAX_TILES_PER_SIDE`).
    n_samples : int
        Flagged samples the heatmaps were computed on.
    """

    weights: np.ndarray
    tiles: tuple[int, int]
    n_samples: int


@dataclass
class FootprintSummary:
    """The footprint without its map (that is in the correction's ``cav.npz``)."""

    tiles: list[int]
    n_samples: int
    peak: float

    @classmethod
    def of(cls, footprint: RegionFootprint) -> FootprintSummary:
        """The summary of ``footprint``."""
        return cls(list(footprint.tiles), footprint.n_samples, float(footprint.weights.max(initial=0.0)))

    def text(self, parameters: Mapping[str, Any]) -> str:
        """``"region term 30 on the artifact class's relevance (the footprint of 16 flagged samples on a 7×7
        grid; at most 47 % of a position's relevance reaches the region)"``, from a correction record's
        ``parameters`` (``rr_region_weight``, ``rr_region_target``, ``rr_region_scope``)."""
        grid = "×".join(str(t) for t in self.tiles)
        weight = parameters["rr_region_weight"]
        # records written before rr_region_target existed explained each sample's own class
        target = parameters.get("rr_region_target", "label")
        whose = (
            "the artifact class's relevance"
            if target == "artifact_class"
            else "each sample's own class's relevance"
        )
        if parameters.get("rr_region_scope", "all") == "flagged":
            whose += ", flagged samples only"
        return (f"region term {weight:g} on {whose} (the footprint of {self.n_samples} flagged samples on a "
                f"{grid} grid; at most {100 * self.peak:.0f} % of a position's relevance reaches the region)")  # fmt: skip


def _bands(n: int) -> list[slice]:
    """At most :data:`MAX_TILES_PER_SIDE` contiguous bands covering ``range(n)``."""
    edges = np.linspace(0, n, min(n, MAX_TILES_PER_SIDE) + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def measure_footprint(
    model: nn.Module,
    layer: str,
    samples: SampleSet,
    rows: np.ndarray,
    region: np.ndarray,
    lrp: LRPConfig,
    device: torch.device,
    batch_size: int,
) -> RegionFootprint:
    """The region's footprint at ``layer`` on the heatmaps of ``rows`` (explaining their true class).

    Parameters
    ----------
    model : nn.Module
        The audited model (an Explainer's canonized copy is used; the model is not modified).
    layer : str
        Module path with a ``(B, C, h, w)`` output.
    samples : SampleSet
        Data.
    rows : np.ndarray
        ``(n,)`` flagged rows.
    region : np.ndarray
        ``(H, W)`` bool artifact region of the input.
    lrp : LRPConfig
        The audit's LRP settings.
    device : torch.device
        Where to compute.
    batch_size : int
        Most images per LRP pass (rows × tiles of one pass).

    Raises
    ------
    NoGridError
        The layer's output has no ``(h, w)`` grid, or a 1×1 one.
    """
    x = samples.inputs(rows)
    shape = tuple(layer_activations(model, layer, iter([x[:1]]), device).shape[1:])
    if len(shape) != 3 or shape[1] * shape[2] == 1:
        # a 1×1 map is one position: its footprint would be a constant share, a term without a gradient
        raise NoGridError(
            f"correction.rr_region_weight needs a layer with a (B, C, H, W) output; {layer!r} gives "
            f"{(-1, *shape)}: a CNN's convolutional layer with a spatial grid, H×W > 1, has one "
            "(correction.layer); a transformer's tokens have none: set rr_region_weight: 0 there."
        )
    explainer = Explainer(model, lrp.composite, composite_kwargs=composite_kwargs(lrp, samples.input_bounds()),
                          canonize=lrp.canonize, device=device, precision=lrp.precision, concept_layer=layer)  # fmt: skip
    down, across = _bands(shape[1]), _bands(shape[2])
    tiles = [(a, b) for a in down for b in across]
    labels = torch.from_numpy(samples.labels[rows])
    inside = torch.from_numpy(region).to(torch.float32)
    per_pass = max(1, batch_size // len(rows))
    weights = np.zeros(shape[1:], dtype=np.float32)
    for s in range(0, len(tiles), per_pass):
        chunk = tiles[s : s + per_pass]
        mask = torch.zeros(len(chunk), len(rows), *shape)
        for i, (a, b) in enumerate(chunk):
            mask[i, :, :, a, b] = 1.0
        res = explainer(x.repeat(len(chunk), 1, 1, 1).to(device), target="label",
                        labels=labels.repeat(len(chunk)).to(device), concept_mask=mask.flatten(0, 1).to(device))  # fmt: skip
        heat = res.relevance.float().sum(1).abs().cpu().reshape(len(chunk), len(rows), *region.shape)
        share = (heat * inside).sum((1, 2, 3)) / heat.sum((1, 2, 3)).clamp_min(1e-12)
        for (a, b), value in zip(chunk, share.tolist(), strict=True):
            weights[a, b] = value
    bands = (len(down), len(across))
    log.info("region footprint at %s: %d×%d tiles on %d samples, largest weight %.2f",
             layer, *bands, len(rows), float(weights.max()))  # fmt: skip
    return RegionFootprint(weights, bands, len(rows))

"""Where the artifact sits in the input: the region used to paste it, mask it, and measure relevance on it.

Without a user-given box, the region is found in two steps. *Where*: the pixels where the artifact
group's normalised relevance exceeds the reference's most, fewest first until they hold ``region_mass``
of the total excess (at most ``region_max_fraction`` of the image), grown by one pixel because LRP
spreads a stamp's relevance onto its edges. *What*: inside that zone, the pixels the flagged samples
repeat (their median differs from the reference's mean by ``stamp_contrast`` reference standard deviations
while most of them, ``stamp_quantile``, lie within ``stamp_consistency`` of it from their median): a stamp,
tag or frame. The samples that match it on ``stamp_carrier_share`` of its pixels are its carriers (a sample
flagged by mistake is not), and the stamp is read again from them alone, every carrier within
``stamp_consistency`` at each of its pixels: a pixel that most of a look-alike group shares is not a
stamp's. *Whole*: the stamp is
extended to the pixels connected to it that pass the same test outside the zone (``stamp_extend``), since
relevance often covers only part of a frame or line. When nothing in the zone repeats (an artifact that is
not a fixed stamp), the zone itself is the region. The flagged samples' own pixels in the region are what
the paste test stamps into other images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spray.config.correction import CorrectionConfig
from spray.errors import ConfigError


@dataclass
class ArtifactRegion:
    """The artifact's pixels.

    Attributes
    ----------
    mask : np.ndarray
        ``(H, W)`` bool, True on the artifact.
    source : str
        ``"box"`` (given in the config), ``"stamp"`` (pixels the flagged samples repeat, where their excess
        relevance is) or ``"relevance"`` (where their excess relevance is).
    excess_share : float
        Share of the group's excess relevance over the reference in the zone searched (estimated regions).
    """

    mask: np.ndarray
    source: str
    excess_share: float

    @property
    def fraction(self) -> float:
        """Share of the image the region covers."""
        return float(self.mask.mean())

    def bounding_box(self) -> list[int]:
        """``[top, left, height, width]`` of the region."""
        ys, xs = np.nonzero(self.mask)
        return [int(ys.min()), int(xs.min()), int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)]


def box_region(box: list[int], shape: tuple[int, int]) -> ArtifactRegion:
    """The region of a ``[top, left, height, width]`` box on an ``(H, W)`` input.

    Raises
    ------
    ConfigError
        The box does not fit the input.
    """
    top, left, h, w = box
    if top + h > shape[0] or left + w > shape[1]:
        raise ConfigError(
            f"correction.artifact_box {box} does not fit the model input of {shape[0]}x{shape[1]} pixels; "
            "give [top, left, height, width] in model-input pixels (after resize and crop)."
        )
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + h, left : left + w] = True
    return ArtifactRegion(mask, "box", 1.0)


def _relevance_zone(
    artifact: np.ndarray, reference: np.ndarray, cfg: CorrectionConfig
) -> tuple[np.ndarray, float]:
    """Pixels holding ``region_mass`` of the excess relevance, grown by one pixel; and the excess share held."""
    excess = np.clip(artifact.mean(0) - reference.mean(0), 0.0, None)
    total = float(excess.sum())
    if total <= 0:
        raise ConfigError(
            "The flagged samples hold no more relevance anywhere than the rest of their class, so the "
            "artifact's region cannot be located; give it as correction.artifact_box [top, left, height, width]."
        )
    order = np.argsort(-excess.ravel(), kind="stable")
    cum = np.cumsum(excess.ravel()[order]) / total
    n = int(np.searchsorted(cum, cfg.region_mass) + 1)
    n = max(1, min(n, int(cfg.region_max_fraction * excess.size)))
    zone = np.zeros(excess.size, dtype=bool)
    zone[order[:n]] = True
    zone = zone.reshape(excess.shape)
    grown = zone.copy()
    grown[1:] |= zone[:-1]
    grown[:-1] |= zone[1:]
    grown[:, 1:] |= zone[:, :-1]
    grown[:, :-1] |= zone[:, 1:]
    return grown, float(excess[grown].sum() / total)


def estimate_region(
    artifact: np.ndarray,
    reference: np.ndarray,
    artifact_inputs: np.ndarray,
    reference_inputs: np.ndarray,
    cfg: CorrectionConfig,
) -> ArtifactRegion:
    """The artifact region from relevance (where) and pixels (what repeats).

    Parameters
    ----------
    artifact, reference : np.ndarray
        ``(n, H, W)`` / ``(m, H, W)`` normalised relevance of flagged / reference samples.
    artifact_inputs, reference_inputs : np.ndarray
        ``(n, C, H, W)`` / ``(m, C, H, W)`` their model inputs.
    cfg : CorrectionConfig
        ``region_mass``, ``region_max_fraction``, ``stamp_contrast``, ``stamp_consistency``,
        ``stamp_quantile``, ``stamp_carrier_share``, ``stamp_std_floor``, ``stamp_extend``.
    """
    zone, held = _relevance_zone(artifact, reference, cfg)
    mean_r = reference_inputs.mean(0)
    scale = reference_inputs.std(0) + cfg.stamp_std_floor * float(reference_inputs.std())

    def repeats(centre: np.ndarray, spread: np.ndarray) -> np.ndarray:
        """``(H, W)``: pixels (any channel) far from the reference's mean where the samples agree."""
        far = np.abs(centre - mean_r) >= cfg.stamp_contrast * scale
        return (far & (spread <= cfg.stamp_consistency * scale)).any(axis=0)

    centre, spread = robust_centre_spread(artifact_inputs, cfg.stamp_quantile)
    first = repeats(centre, spread) & zone
    if not first.any():
        return ArtifactRegion(zone, "relevance", held)
    carriers = stamp_carriers(
        artifact_inputs, centre, first, cfg.stamp_consistency * scale, cfg.stamp_carrier_share
    )
    if not carriers.any():  # only possible with stamp_carrier_share near 1: read the stamp from everyone
        carriers[:] = True
    repeated = repeats(*robust_centre_spread(artifact_inputs[carriers], 1.0))
    seed = repeated & zone
    if not seed.any():
        seed, repeated = first, repeated | first
    if cfg.stamp_extend:
        whole = _connected_to(seed, repeated)
        if whole.mean() <= cfg.region_max_fraction:
            seed = whole
    return ArtifactRegion(seed, "stamp", held)


def stamp_carriers(
    inputs: np.ndarray, centre: np.ndarray, stamp: np.ndarray, tolerance: np.ndarray, share: float
) -> np.ndarray:
    """``(n,)`` bool: the samples that carry the stamp, close to its value on ``share`` of its pixels.

    Parameters
    ----------
    inputs : np.ndarray
        ``(n, C, H, W)`` the flagged samples' inputs.
    centre : np.ndarray
        ``(C, H, W)`` the stamp's value (their median).
    stamp : np.ndarray
        ``(H, W)`` bool, the stamp's pixels found so far.
    tolerance : np.ndarray
        ``(C, H, W)`` how far from ``centre`` a pixel still matches.
    share : float
        Share of the stamp's pixels a carrier matches.
    """
    close = (np.abs(inputs - centre[None]) <= tolerance[None]).all(axis=1)  # (n, H, W), every channel
    return np.asarray(close[:, stamp].mean(axis=1) >= share)


def robust_centre_spread(inputs: np.ndarray, quantile: float) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the samples' median and the ``quantile`` of their distances from it.

    Parameters
    ----------
    inputs : np.ndarray
        ``(n, C, H, W)``.
    quantile : float
        In (0.5, 1]: the share of samples whose spread counts (1: the largest distance).

    Returns
    -------
    tuple of np.ndarray
        ``(C, H, W)`` centre and spread; a few outlying samples move neither, unlike a mean and a
        standard deviation.
    """
    centre = np.median(inputs, axis=0)
    spread = np.quantile(np.abs(inputs - centre[None]), quantile, axis=0)
    return centre, spread


def _connected_to(seed: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The pixels of ``allowed`` ``(H, W)`` 8-connected to ``seed`` ``(H, W)`` (a subset of it)."""
    from scipy import ndimage

    labels, _ = ndimage.label(allowed, structure=np.ones((3, 3), dtype=bool))
    keep = np.unique(labels[seed & allowed])
    return np.isin(labels, keep[keep > 0])


def paste(targets: torch.Tensor, donors: torch.Tensor, mask: np.ndarray) -> torch.Tensor:
    """Stamp the donors' pixels inside ``mask`` into the targets (donor ``i % len(donors)`` into target i).

    Parameters
    ----------
    targets : torch.Tensor
        ``(n, C, H, W)`` model inputs.
    donors : torch.Tensor
        ``(m, C, H, W)`` model inputs carrying the artifact.
    mask : np.ndarray
        ``(H, W)`` bool.
    """
    m = torch.from_numpy(mask).to(targets.dtype)[None, None]
    idx = torch.arange(len(targets)) % len(donors)
    return targets * (1 - m) + donors[idx] * m


def fill(inputs: torch.Tensor, mask: np.ndarray, value: torch.Tensor) -> torch.Tensor:
    """Replace the pixels inside ``mask`` by ``value`` ``(C, H, W)`` (the reference's mean input)."""
    m = torch.from_numpy(mask).to(inputs.dtype)[None, None]
    return inputs * (1 - m) + value[None].to(inputs.dtype) * m

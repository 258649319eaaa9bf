"""The artifact subspace: the CAV plus the strongest further directions of the artifact's paired effect.

The pattern CAV is the *mean* change the artifact makes to the layer's activation. Where that change
differs from image to image (a frame drawn over different garments lights up different channels at the
border), penalising the gradient along the mean alone leaves the rest of the change free to steer the
output and to draw relevance. The *paired effect* measures the change directly: the flagged samples'
pixels in the artifact region are pasted into reference samples, and each pasted activation minus the
clean one is one row. The subspace is the CAV and the ``n - 1`` leading right singular vectors of those
rows once the CAV's component is removed, so the first direction is always the CAV and ``n = 1`` is plain
RR-ClArC.

For a pooled direction (over channels, applied at every position) every position's channel vector of
the change is a row, so the further directions are channel directions too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from spray.correct.activations import layer_activations
from spray.correct.cav import ArtifactDirection
from spray.correct.region import paste
from spray.correct.samples import SampleSet

log = logging.getLogger(__name__)


@dataclass
class ArtifactSubspace:
    """Orthonormal directions at the layer, the CAV first, and how much of the paired effect they hold.

    Attributes
    ----------
    vectors : np.ndarray
        ``(n, D)`` float32 orthonormal rows; row 0 is the direction's CAV; ``D`` as its vector.
    captured : float
        Share of the paired effect's energy (squared norm, summed over rows) inside their span.
    cav_captured : float
        The same share for the CAV alone: how far the mean change describes the artifact's effect.
    n_pairs : int
        Pasted/clean image pairs measured (rows of the effect: for a pooled direction, every position of
        each pair is a row).
    """

    vectors: np.ndarray
    captured: float
    cav_captured: float
    n_pairs: int

    @property
    def n_directions(self) -> int:
        """Number of directions."""
        return len(self.vectors)


@dataclass
class SubspaceSummary:
    """The subspace without its vectors (those are in the correction's ``cav.npz``)."""

    n_directions: int
    captured: float
    cav_captured: float
    n_pairs: int

    @classmethod
    def of(cls, subspace: ArtifactSubspace) -> SubspaceSummary:
        """The summary of ``subspace``."""
        return cls(subspace.n_directions, subspace.captured, subspace.cav_captured, subspace.n_pairs)

    def text(self) -> str:
        """``"the CAV, holding 90 % of the paste's effect at the layer (459 pastes)"``; with more than one
        direction it names their number and adds the CAV's own share."""
        what = "the CAV" if self.n_directions == 1 else f"{self.n_directions} directions"
        alone = "" if self.n_directions == 1 else f"; the CAV alone {100 * self.cav_captured:.0f} %"
        return f"{what}, holding {100 * self.captured:.0f} % of the paste's effect at the layer ({self.n_pairs} pastes{alone})"


def paired_effect(
    model: nn.Module,
    layer: str,
    targets: torch.Tensor,
    donors: torch.Tensor,
    mask: np.ndarray,
    pooled: bool,
    device: torch.device,
    batch_size: int,
) -> torch.Tensor:
    """The change of the layer's activation when the donors' pixels in ``mask`` are pasted into the targets.

    Parameters
    ----------
    model : nn.Module
        The audited model.
    layer : str
        Module path.
    targets, donors : torch.Tensor
        ``(n, C, H, W)`` and ``(m, C, H, W)`` model inputs; donor ``i % m`` goes into target ``i``.
    mask : np.ndarray
        ``(H, W)`` bool artifact region.
    pooled : bool
        Return every position's channel vector as a row (for a channel direction).
    device : torch.device
        Where the model runs.
    batch_size : int
        Inputs per forward pass.

    Returns
    -------
    torch.Tensor
        ``(n, D)`` float32 (``D = C·H·W``), or ``(n·H'·W', C)`` when ``pooled`` (for a feature map).
    """

    def acts(x: torch.Tensor) -> torch.Tensor:
        return layer_activations(model, layer, iter(x.split(batch_size)), device)

    diff = acts(paste(targets, donors, mask)) - acts(targets)
    if pooled and diff.dim() > 2:
        return diff.flatten(2).transpose(1, 2).reshape(-1, diff.shape[1])
    return diff.flatten(1)


def artifact_subspace(
    direction: ArtifactDirection, effect: torch.Tensor, n_directions: int, n_pairs: int
) -> ArtifactSubspace:
    """The CAV and the ``n_directions - 1`` leading directions of the effect orthogonal to it.

    Parameters
    ----------
    direction : ArtifactDirection
        Its unit ``vector`` ``(D,)`` is the first direction.
    effect : torch.Tensor
        ``(N, D)`` paired effect rows (:func:`paired_effect`).
    n_directions : int
        Directions wanted (at least 1); fewer are returned when the effect has lower rank.
    n_pairs : int
        Pasted images the effect was measured on (``N``, or ``N / positions`` for a pooled direction).
    """
    v = torch.from_numpy(direction.vector).double()
    e = effect.double()
    total = float((e**2).sum())
    along = e @ v
    cav_captured = float((along**2).sum()) / total if total > 0 else 0.0
    vectors = [v]
    if n_directions > 1 and total > 0:
        rest = e - along[:, None] * v[None]
        _, s, vh = torch.linalg.svd(rest, full_matrices=False)
        keep = int(min(n_directions - 1, int((s > s[0] * 1e-6).sum())))
        if keep < n_directions - 1:
            log.warning(
                "correction.rr_directions = %d: the paired effect has only %d further directions; %d are used",
                n_directions,
                keep,
                keep + 1,
            )
        vectors.extend(vh[:keep])
    basis = torch.stack(vectors)
    captured = float(((e @ basis.T) ** 2).sum()) / total if total > 0 else 0.0
    return ArtifactSubspace(basis.float().numpy(), captured, cav_captured, n_pairs)


def measure_subspace(
    model: nn.Module,
    direction: ArtifactDirection,
    samples: SampleSet,
    reference_rows: np.ndarray,
    donor_rows: np.ndarray,
    mask: np.ndarray,
    n_directions: int,
    device: torch.device,
    batch_size: int,
) -> ArtifactSubspace:
    """Paste the donors' region into the reference rows and return the subspace of the change.

    Parameters
    ----------
    model : nn.Module
        The audited model.
    direction : ArtifactDirection
        The fitted CAV (its layer and pooling).
    samples : SampleSet
        The audited data.
    reference_rows, donor_rows : np.ndarray
        ``(n,)`` and ``(m,)`` int64 rows of unflagged and flagged samples of the class.
    mask : np.ndarray
        ``(H, W)`` bool artifact region.
    n_directions : int
        ``correction.rr_directions``.
    device : torch.device
        Where the model runs.
    batch_size : int
        Inputs per forward pass.
    """
    effect = paired_effect(
        model,
        direction.layer,
        samples.inputs(reference_rows),
        samples.inputs(donor_rows),
        mask,
        direction.pooling != "none",
        device,
        batch_size,
    )
    subspace = artifact_subspace(direction, effect, n_directions, len(reference_rows))
    log.info(
        "artifact subspace: %d direction(s) hold %.0f %% of the paired effect of %d pastes (the CAV alone %.0f %%)",
        subspace.n_directions,
        100 * subspace.captured,
        subspace.n_pairs,
        100 * subspace.cav_captured,
    )
    return subspace

"""Held-out test images that look like the flagged group along the artifact direction (:func:`lookalikes`).

A test set whose images of the artifact class carry the shortcut too (the same collection process, the same
watermark) makes a working correction read as a loss of clean accuracy: the corrected model classifies them
without the shortcut it used before. Each test image of the artifact class is projected onto the artifact
direction at the correction's layer, with the audited model, and counted when it lies past the midpoint between
the held-out flagged and reference images' mean projections; the held-out reference images give the share an
image without the artifact reaches. The warning is decided when the record is read (``lookalike_alpha``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import binomtest

from spray.correct.activations import layer_activations, pool
from spray.correct.cav import ArtifactDirection
from spray.correct.samples import SampleSet

#: Ids of lookalikes kept in the record (the count covers them all).
MAX_IDS = 50
#: The advice on a loss of accuracy when the test data seems to carry the shortcut (the loss may be its removal).
LOOKALIKE_ADVICE = (
    "the test data seems to carry the shortcut (below), so the loss may be its removal: measure on test data "
    "without those images"
)


@dataclass
class Lookalikes:
    """Test images of the artifact class that project along the artifact direction as the flagged images do.

    Attributes
    ----------
    n_checked : int
        Test images of the artifact class projected.
    n_like : int
        Of them, those past the midpoint between the held-out flagged and reference images' mean projections.
    reference_rate : float
        Share of the held-out reference images (unflagged, of the class) past that midpoint.
    n_reference : int
        Held-out reference images behind ``reference_rate``.
    sample_ids : list[str]
        The first :data:`MAX_IDS` lookalikes' ids, in the test data's order.
    """

    n_checked: int
    n_like: int
    reference_rate: float
    n_reference: int
    sample_ids: list[str] = field(default_factory=list)

    def p_value(self) -> float:
        """One-sided binomial test: this many lookalikes among ``n_checked`` images without the artifact
        (each past the midpoint with the reference's rate, at least one in ``n_reference + 1``)."""
        if self.n_checked == 0:
            return 1.0
        rate = max(self.reference_rate, 1.0 / (self.n_reference + 1))
        return float(binomtest(self.n_like, self.n_checked, rate, alternative="greater").pvalue)


def lookalikes(
    model: torch.nn.Module,
    direction: ArtifactDirection,
    test: SampleSet,
    test_rows: np.ndarray,
    samples: SampleSet,
    held_reference: np.ndarray,
    batch_size: int,
    device: torch.device,
) -> Lookalikes:
    """Count the test images of the artifact class that project past the groups' midpoint.

    Parameters
    ----------
    model : torch.nn.Module
        The audited model.
    direction : ArtifactDirection
        The fitted direction (its layer, pooling, unit vector and held-out separation).
    test : SampleSet
        The test data.
    test_rows : np.ndarray
        ``(m,)`` rows of ``test`` of the artifact class.
    samples : SampleSet
        The audited data.
    held_reference : np.ndarray
        ``(r,)`` rows of ``samples``: the held-out reference images.
    batch_size : int
        Images per forward pass.
    device : torch.device
        Where the model runs.
    """
    sep = direction.separation
    mid = (sep.mean_artifact + sep.mean_reference) / 2
    # the side the flagged images lie on (the pattern CAV points to them, but the held-out means say it)
    sign = 1.0 if sep.mean_artifact >= sep.mean_reference else -1.0

    def past(data: SampleSet, rows: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            return np.zeros(0, dtype=bool)
        acts = layer_activations(model, direction.layer, data.batches(rows, batch_size), device)
        proj = pool(acts, direction.pooling).numpy().astype(np.float64) @ direction.vector.astype(np.float64)
        return np.asarray(sign * (proj - mid) > 0)

    like, ref = past(test, test_rows), past(samples, held_reference)
    ids = [test.sample_ids[int(r)] for r in test_rows[like][:MAX_IDS]]
    return Lookalikes(
        n_checked=len(test_rows),
        n_like=int(like.sum()),
        reference_rate=float(ref.mean()) if len(ref) else 0.0,
        n_reference=len(ref),
        sample_ids=ids,
    )

"""The artifact direction: a pattern ("signal") CAV at a layer, and how well it separates the groups.

The pattern CAV of activations ``A`` and group indicator ``t`` (1 = artifact) is ``cov(A, t) / var(t)``,
normalised to unit length (Pahde et al., arXiv 2202.03482): unlike a classifier's weight vector (SVM,
ridge) it points along the artifact's signal in the activations rather than along whatever best cancels
the distractors, which is what a projection or a gradient penalty needs. For a 0/1 indicator it is the
difference of the two groups' mean activations.

It is fitted on one part of each group and scored on the held-out rest: the AUROC of the projection
``vᵀa`` (artifact vs reference), which is the number that says whether correcting along it makes sense.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from spray.correct.activations import pool
from spray.errors import ConfigError, SprayError
from spray.runs.atomic import atomic_save_npz

log = logging.getLogger(__name__)


@dataclass
class Separation:
    """How well a direction tells held-out artifact samples from held-out reference samples.

    Attributes
    ----------
    auroc : float
        AUROC of the projection ``vᵀa`` (1 = every artifact sample projects above every reference one).
    accuracy : float
        Accuracy of the threshold halfway between the two held-out means.
    n_artifact, n_reference : int
        Held-out samples of each group.
    mean_artifact, mean_reference : float
        Mean projection of each held-out group.
    """

    auroc: float
    accuracy: float
    n_artifact: int
    n_reference: int
    mean_artifact: float
    mean_reference: float


@dataclass
class ArtifactDirection:
    """The artifact direction at a layer (arrays are saved to ``cav.npz``; the rest goes to the JSON).

    Attributes
    ----------
    layer : str
        Module path.
    pooling : str
        ``"none"`` (a direction over channels × positions) or ``"max"``/``"mean"`` (over channels, applied
        at every position).
    vector : np.ndarray
        ``(D,)`` float32 unit vector; ``D = C·H·W`` for ``"none"``, ``C`` when pooled.
    reference_mean : np.ndarray
        ``(C, H, W)`` (or ``(D,)`` for a flat layer) float32 mean activation of the reference samples used
        in the fit: the clean value P-ClArC moves activations to.
    separation : Separation
        Held-out separation of the chosen direction.
    candidates : dict[str, float]
        Held-out AUROC of every pooling tried.
    """

    layer: str
    pooling: str
    vector: np.ndarray
    reference_mean: np.ndarray
    separation: Separation
    candidates: dict[str, float]


def signal_cav(features: np.ndarray, indicator: np.ndarray) -> np.ndarray:
    """Pattern CAV ``cov(A, t) / var(t)``, normalised.

    Parameters
    ----------
    features : np.ndarray
        ``(n, D)`` activations.
    indicator : np.ndarray
        ``(n,)`` 1 for the artifact group, 0 for the reference.

    Returns
    -------
    np.ndarray
        ``(D,)`` float64 unit vector.
    """
    a = np.asarray(features, dtype=np.float64)
    t = np.asarray(indicator, dtype=np.float64)
    tc = t - t.mean()
    var = float((tc**2).sum())
    if var == 0:
        raise SprayError("the artifact direction needs samples of both groups")
    w = (a - a.mean(0)).T @ tc / var
    norm = float(np.linalg.norm(w))
    if not np.isfinite(norm) or norm == 0:
        raise SprayError(
            "the flagged and reference samples have identical mean activations at this layer: there is no "
            "artifact direction to correct. Choose another correction.layer."
        )
    return w / norm


def separation(vector: np.ndarray, artifact: np.ndarray, reference: np.ndarray) -> Separation:
    """Score ``vector`` on held-out ``(n, D)`` features of each group."""
    pa = artifact.astype(np.float64) @ vector
    pr = reference.astype(np.float64) @ vector
    scores = np.concatenate([pa, pr])
    truth = np.concatenate([np.ones(len(pa)), np.zeros(len(pr))])
    mid = (pa.mean() + pr.mean()) / 2
    acc = float(((scores > mid) == (truth == 1)).mean())
    return Separation(
        auroc=float(roc_auc_score(truth, scores)),
        accuracy=acc,
        n_artifact=len(pa),
        n_reference=len(pr),
        mean_artifact=float(pa.mean()),
        mean_reference=float(pr.mean()),
    )


@dataclass
class GroupActivations:
    """Activations ``(n, C, H, W)`` (or ``(n, D)``) of the fit and held-out parts of both groups."""

    fit_artifact: torch.Tensor
    fit_reference: torch.Tensor
    held_artifact: torch.Tensor
    held_reference: torch.Tensor


def fit_direction(
    layer: str, acts: GroupActivations, pooling: str, margin: float = 0.01
) -> ArtifactDirection:
    """Fit the pattern CAV for each candidate pooling and keep the one that separates best on held-out data.

    Parameters
    ----------
    layer : str
        Module path the activations come from.
    acts : GroupActivations
        Activations of both groups.
    pooling : {"auto", "none", "max", "mean"}
        ``"auto"`` tries ``"none"`` and ``"max"``.
    margin : float
        With ``"auto"``, ``"max"`` is kept only when its AUROC beats ``"none"``'s by more than this.
    """
    spatial = acts.fit_artifact.dim() == 4
    if not spatial and pooling in ("max", "mean"):
        # a token or flat output has no (H, W) grid to pool over: "none" would run under the name asked for
        raise ConfigError(
            f"correction.pooling: {pooling!r} pools a (B, C, H, W) feature map over its positions, but the "
            f"output of {layer!r} is {tuple(acts.fit_artifact.shape[1:])} (transformer tokens or a flat "
            "vector). Set correction.pooling: none (or auto), or name a layer with a feature map."
        )
    options = ["none"] if not spatial else ["none", "max"] if pooling == "auto" else [pooling]
    fitted: dict[str, tuple[np.ndarray, Separation]] = {}
    for p in options:
        fa, fr = pool(acts.fit_artifact, p).numpy(), pool(acts.fit_reference, p).numpy()
        x = np.concatenate([fa, fr])
        t = np.concatenate([np.ones(len(fa)), np.zeros(len(fr))])
        v = signal_cav(x, t)
        sep = separation(v, pool(acts.held_artifact, p).numpy(), pool(acts.held_reference, p).numpy())
        fitted[p] = (v, sep)
        log.info("artifact direction at %s (pooling %s): held-out AUROC %.3f", layer, p, sep.auroc)
    best = max(fitted, key=lambda p: fitted[p][1].auroc - (0.0 if p == "none" else margin))
    v, sep = fitted[best]
    return ArtifactDirection(
        layer=layer,
        pooling=best,
        vector=v.astype(np.float32),
        reference_mean=acts.fit_reference.mean(0).numpy().astype(np.float32),
        separation=sep,
        candidates={p: round(s.auroc, 6) for p, (_, s) in fitted.items()},
    )


def save_direction(direction: ArtifactDirection, path: Path) -> None:
    """Write the direction's arrays (``vector``, ``reference_mean``) to an ``.npz`` file (atomically)."""
    atomic_save_npz(path, vector=direction.vector, reference_mean=direction.reference_mean)

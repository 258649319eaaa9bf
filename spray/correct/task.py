"""What every correction method is given (:class:`CorrectionTask`) and returns (:class:`MethodResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spray.config import AuditConfig
from spray.correct.cav import ArtifactDirection
from spray.correct.footprint import RegionFootprint
from spray.correct.groups import ArtifactGroup
from spray.correct.region import ArtifactRegion
from spray.correct.samples import SampleSet, seeded_subset
from spray.correct.subspace import ArtifactSubspace
from spray.correct.training import TrainingLog


@dataclass
class CorrectionTask:
    """Everything a correction method needs.

    Attributes
    ----------
    cfg : AuditConfig
        The audit config (its ``correction`` section holds the method's parameters; ``seed`` the seed).
    model : nn.Module
        The audited model, eval mode, on ``device``; methods never modify it.
    samples : SampleSet
        The audited data.
    group : ArtifactGroup
        Artifact group and reference.
    direction : ArtifactDirection
        The artifact direction at the layer.
    region : ArtifactRegion
        The artifact's pixels.
    subspace : ArtifactSubspace or None
        The directions RR-ClArC penalises (None for the other methods).
    footprint : RegionFootprint or None
        The region's footprint at the layer for RR-ClArC's region term (None: no region term).
    train_rows : np.ndarray
        ``(n,)`` int64 rows a method may train on (the evaluation hold-out and unreadable samples are out).
    example : torch.Tensor
        ``(B, C, H, W)`` a real input batch on ``device``.
    device : torch.device
        Where to compute.
    work_dir : Path
        The correction's private folder (resume checkpoints).
    progress : bool
        Show progress bars.
    """

    cfg: AuditConfig
    model: nn.Module
    samples: SampleSet
    group: ArtifactGroup
    direction: ArtifactDirection
    region: ArtifactRegion
    subspace: ArtifactSubspace | None
    footprint: RegionFootprint | None
    train_rows: np.ndarray
    example: torch.Tensor
    device: torch.device
    work_dir: Path
    progress: bool = True


@dataclass
class MethodResult:
    """A corrected model.

    Attributes
    ----------
    model : nn.Module
        The corrected model (eval mode).
    training : TrainingLog or None
        What training did (None for P-ClArC).
    trained_modules : list[str]
        Modules whose parameters changed (empty for P-ClArC).
    """

    model: nn.Module
    training: TrainingLog | None = None
    trained_modules: list[str] = field(default_factory=list)


def finetune_rows(task: CorrectionTask) -> np.ndarray:
    """Rows to fine-tune on: a seeded subset of ``finetune_samples`` that always holds the flagged rows."""
    cfg = task.cfg.correction
    flagged = np.intersect1d(task.group.flagged_rows, task.train_rows)
    rest = np.setdiff1d(task.train_rows, flagged)
    n_rest = max(0, cfg.finetune_samples - len(flagged))
    return np.sort(np.concatenate([flagged, seeded_subset(rest, n_rest, task.cfg.seed, "finetune")]))

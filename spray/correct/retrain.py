"""The plain baseline: train without the flagged samples, or with their artifact region masked.

``retrain_init: scratch`` builds the architecture afresh (seeded) and trains every parameter for
``retrain_epochs`` with spray's generic recipe (cross-entropy, the configured optimiser, no
augmentation), which is not the user's own recipe: its clean accuracy says what spray's recipe reaches,
not what the user's would. ``checkpoint`` fine-tunes the audited model instead (``epochs``,
``train_scope``); dropping samples alone cannot make a fine-tuned model forget what it learned, so that
form is only meaningful with ``retrain_mode: mask``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spray.correct.region import fill
from spray.correct.samples import SampleSet
from spray.correct.scope import set_scope, train_all
from spray.correct.task import CorrectionTask, MethodResult
from spray.correct.training import TrainingPlan, make_optimizer, train
from spray.lrp.canonizers import model_copy
from spray.models import build_model

log = logging.getLogger(__name__)


@dataclass
class CrossEntropyLoss:
    """Cross-entropy of a batch, with the artifact region of some rows filled (a ``step_fn``).

    Attributes
    ----------
    model : nn.Module
        The model being trained.
    samples : SampleSet
        Source of the batches.
    device : torch.device
        Where the model runs.
    masked_rows : np.ndarray
        Rows whose inputs get ``mask`` filled with ``fill_value`` (empty: none).
    mask : np.ndarray
        ``(H, W)`` bool artifact region.
    fill_value : torch.Tensor
        ``(C, H, W)`` what the region is filled with (the reference samples' mean input).
    """

    model: nn.Module
    samples: SampleSet
    device: torch.device
    masked_rows: np.ndarray
    mask: np.ndarray
    fill_value: torch.Tensor

    def __call__(self, rows: np.ndarray, step: int) -> dict[str, torch.Tensor]:
        """``{"loss", "ce"}`` of the batch ``rows``."""
        x = self.samples.inputs(rows)
        hit = np.isin(rows, self.masked_rows)
        if hit.any():
            x[hit] = fill(x[hit], self.mask, self.fill_value)
        y = torch.from_numpy(self.samples.labels[rows]).to(self.device)
        ce = F.cross_entropy(self.model(x.to(self.device)), y)
        return {"loss": ce, "ce": ce.detach()}


def retrain(task: CorrectionTask) -> MethodResult:
    """Train the baseline (see the module docstring).

    Returns
    -------
    MethodResult
        The retrained model (eval mode) and its training log.
    """
    cfg = task.cfg.correction
    flagged = task.group.flagged_rows
    if cfg.retrain_mode == "drop":
        rows = np.setdiff1d(task.train_rows, flagged)
        masked = np.zeros(0, dtype=np.int64)
    else:
        rows, masked = task.train_rows, flagged
    if cfg.retrain_init == "scratch":
        torch.manual_seed(task.cfg.seed)
        base = task.cfg.model.model_copy(update={"checkpoint": None})
        model = build_model(base).to(task.device)
        scope = train_all(model)
        epochs, lr = cfg.retrain_epochs, cfg.retrain_lr
    else:
        model = model_copy(task.model)
        scope = set_scope(model, task.direction.layer, cfg.train_scope, task.example)
        epochs, lr = cfg.epochs, cfg.lr
    ref = task.samples.inputs(task.group.fit_reference[: cfg.region_samples]).mean(0)
    step = CrossEntropyLoss(model, task.samples, task.device, masked, task.region.mask, ref)
    plan = TrainingPlan(rows, epochs, cfg.batch_size, task.cfg.seed, cfg.checkpoint_every, "retraining",
                        cfg.lr_schedule)  # fmt: skip
    opt = make_optimizer(scope.parameters, cfg.optimizer, lr, cfg.momentum, cfg.weight_decay)
    log.info("baseline: %s training on %d samples (%s the %d flagged)", cfg.retrain_init, len(rows),
             (cfg.retrain_mode == "drop" and "without") or "masking", len(flagged))  # fmt: skip
    trained = train(model, opt, plan, step, task.work_dir, task.device, progress=task.progress)
    return MethodResult(model.eval(), trained, scope.trained_modules)

"""A seeded, resumable training loop for the corrections that train (RR-ClArC, the retrain baseline).

The batch of every step is a function of the seed and the step number (one seeded permutation per
epoch), and every ``checkpoint_every`` steps the model, the optimiser, the random state and the running
losses are saved atomically. A run killed at any point restarts from its last checkpoint and ends with the
same weights as a run that was never interrupted (on the same device).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from spray.runs.atomic import atomic_file

log = logging.getLogger(__name__)

STATE_NAME = "train_state.pt"

#: ``step_fn(rows, step)`` → named scalar losses of one batch; ``"loss"`` is the one minimised.
StepFn = Callable[[np.ndarray, int], dict[str, torch.Tensor]]


@dataclass
class TrainingPlan:
    """What to train on and how long.

    Attributes
    ----------
    rows : np.ndarray
        ``(n,)`` int64 dataset rows of the training set.
    epochs : int
        Passes over ``rows``.
    batch_size : int
        Rows per step.
    seed : int
        Seeds the batch order and the model's random state.
    checkpoint_every : int
        Steps between resume checkpoints.
    desc : str
        Progress bar label.
    schedule : {"cosine", "constant"}
        Learning rate over the steps: from the optimiser's rate down to 0 along a half cosine, or fixed.
    """

    rows: np.ndarray
    epochs: int
    batch_size: int
    seed: int
    checkpoint_every: int
    desc: str = "correcting"
    schedule: str = "cosine"

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps in one epoch."""
        return max(1, math.ceil(len(self.rows) / self.batch_size))

    @property
    def total_steps(self) -> int:
        """Optimiser steps in all."""
        return self.epochs * self.steps_per_epoch

    def lr_factor(self, step: int) -> float:
        """Multiplier of the base learning rate at ``step``."""
        if self.schedule == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * step / self.total_steps))

    def batch(self, step: int) -> np.ndarray:
        """Rows of global step ``step``."""
        epoch, k = divmod(step, self.steps_per_epoch)
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.rows)
        return perm[k * self.batch_size : (k + 1) * self.batch_size]


@dataclass
class TrainingLog:
    """What a training run did.

    Attributes
    ----------
    steps : int
        Optimiser steps taken in all (across resumes).
    samples : int
        Samples processed in all.
    resumed_from : int
        Step the last start resumed from (0 for a fresh start).
    seconds : float
        Wall time of the last start (a resumed run counts only its own part).
    epochs : list[dict[str, float]]
        Mean of every loss term per epoch.
    """

    steps: int
    samples: int
    resumed_from: int
    seconds: float
    epochs: list[dict[str, float]] = field(default_factory=list)


def _save_state(path: Path, state: dict[str, Any]) -> None:
    # a full disk ends the correction with a message naming the file, and the last state stays whole
    with atomic_file(path) as fh:
        torch.save(state, fh)


def _rng_state(device: torch.device) -> dict[str, Any]:
    out: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def make_optimizer(
    params: list[nn.Parameter], name: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """Adam or SGD (with momentum) over ``params``."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def _resume(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, seed: int
) -> tuple[int, list[dict[str, float]], dict[str, float]]:
    if not path.is_file():
        torch.manual_seed(seed)
        return 0, [], {}
    state = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    _set_rng_state(state["rng"], device)
    log.info("resuming from step %d (%s)", state["step"], path)
    return int(state["step"]), list(state["epochs"]), dict(state["running"])


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    plan: TrainingPlan,
    step_fn: StepFn,
    work_dir: Path,
    device: torch.device,
    *,
    progress: bool = True,
) -> TrainingLog:
    """Run (or resume) the plan; checkpoints go to ``work_dir/train_state.pt``.

    Parameters
    ----------
    model : nn.Module
        Trained in place (its modes are set by the caller and left as they are).
    optimizer : torch.optim.Optimizer
        Over the trainable parameters of ``model``.
    plan : TrainingPlan
        Rows, epochs, batch size, seed, checkpoint interval.
    step_fn : StepFn
        Losses of one batch (``"loss"`` is back-propagated).
    work_dir : Path
        Where the resume checkpoint lives.
    device : torch.device
        Device of the model (for the random state).
    progress : bool
        Show a progress bar.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / STATE_NAME
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])  # kept in the optimiser's state, so a resume finds it
    start, epochs, running = _resume(path, model, optimizer, device, plan.seed)
    t0 = time.perf_counter()
    bar = tqdm(total=plan.total_steps, initial=start, desc=plan.desc, disable=not progress, leave=False)
    for step in range(start, plan.total_steps):
        terms = step_fn(plan.batch(step), step)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * plan.lr_factor(step)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        for k, v in terms.items():
            running[k] = running.get(k, 0.0) + float(v.detach())
        bar.update(1)
        if (step + 1) % plan.steps_per_epoch == 0:
            epochs.append({k: v / plan.steps_per_epoch for k, v in running.items()})
            log.info("%s: epoch %d, %s", plan.desc, len(epochs), _fmt(epochs[-1]))
            running = {}
        if (step + 1) % plan.checkpoint_every == 0 or step + 1 == plan.total_steps:
            _save_state(path, _state(step + 1, model, optimizer, device, epochs, running))
    bar.close()
    return TrainingLog(
        steps=plan.total_steps,
        samples=plan.epochs * len(plan.rows),
        resumed_from=start,
        seconds=time.perf_counter() - t0,
        epochs=epochs,
    )


def _state(
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    epochs: list[dict[str, float]],
    running: dict[str, float],
) -> dict[str, Any]:
    return {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": _rng_state(device),
        "epochs": epochs,
        "running": running,
    }


def _fmt(terms: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in sorted(terms.items()))

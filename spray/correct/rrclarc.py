"""RR-ClArC: fine-tune so that the output no longer responds to the artifact direction.

The loss of a batch is ``CE + λ · L_RR`` (Dreyer, Pahde et al., AAAI 2024): ``L_RR`` is the squared
component, along the artifact direction ``v``, of the gradient of an output ``y`` with respect to the
layer's activation ``a`` — how much the output would change if the artifact were added. Unlike P-ClArC
nothing is inserted into the model: the corrected model has the user's architecture and new weights.

The output ``y`` (``rr_target``) is a random-sign sum of all logits by default: in expectation its squared
gradient along ``v`` is the sum over classes of each logit's, so every class unlearns the artifact, not
only the one it pushed towards. The component is taken at every position of the feature map, squared and
summed (``rr_aggregation="position"``, the default: a position where the output still responds to the
artifact cannot be cancelled by another where it responds the other way), or of the whole gradient
(``"whole"``).

With ``rr_region_weight`` > 0 a *region term* is added (spray's, not the paper's): the share of the
layer's relevance (activation × gradient, summed over channels) at the positions whose relevance LRP
carries into the artifact region, weighted by the region's footprint (:mod:`spray.correct.footprint`).
The relevance is that of the true class's logit (``rr_region_target="label"``) or of the artifact class's
logit for every sample (``"artifact_class"``: only the class the shortcut drives is asked to stop drawing
on the region, the other classes keep what they find there), on every sample or only on the flagged ones
(``rr_region_scope``). The CAV term stops the output from
responding to the artifact; the region term also asks the model to draw less of its explanation from
where the artifact sits.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from spray.config.correction import CorrectionConfig
from spray.correct.activations import layer_activations, tap
from spray.correct.cav import ArtifactDirection
from spray.correct.samples import SampleSet
from spray.correct.scope import set_scope
from spray.correct.split import check_head, head_after
from spray.correct.task import CorrectionTask, MethodResult, finetune_rows
from spray.correct.training import TrainingPlan, make_optimizer, train
from spray.errors import ConfigError
from spray.lrp.canonizers import model_copy

log = logging.getLogger(__name__)


def rr_output(logits: torch.Tensor, labels: torch.Tensor, target: str, artifact_class: int) -> torch.Tensor:
    """The output whose gradient is penalised, ``(B,)``.

    Parameters
    ----------
    logits : torch.Tensor
        ``(B, K)``.
    labels : torch.Tensor
        ``(B,)`` true classes.
    target : {"random_sign", "artifact_class", "label"}
        Which output (see the module docstring); random signs come from the global (seeded) generator.
    artifact_class : int
        The class the artifact pushes towards.
    """
    if target == "artifact_class":
        return logits[:, artifact_class]
    if target == "label":
        return logits.gather(1, labels[:, None])[:, 0]
    signs = torch.randint(0, 2, logits.shape, device=logits.device).to(logits.dtype) * 2 - 1
    return (logits * signs).sum(1)


def rr_penalty(grad: torch.Tensor, vectors: torch.Tensor, aggregation: str) -> torch.Tensor:
    """Mean over the batch of the squared gradient components along the directions, summed over them.

    Parameters
    ----------
    grad : torch.Tensor
        ``(B, C, H, W)``, ``(B, N, D)`` (a transformer's tokens: ``D`` channels at ``N`` positions) or
        ``(B, D)`` gradient of the output w.r.t. the layer's activation.
    vectors : torch.Tensor
        ``(n, D)`` orthonormal directions (or one ``(D,)``): over a whole activation (``C·H·W``), or over
        channels (pooled directions).
    aggregation : {"position", "whole"}
        ``"position"``: the component at every position (the direction's channel vector there), squared
        and summed over positions, so that no position can make up for another; ``"whole"``: the
        component of the whole gradient (a channel direction: of the spatially averaged gradient), squared.
    """
    v = vectors.to(grad.dtype).reshape(-1, vectors.shape[-1])  # (n, D)
    if grad.dim() <= 2:
        return ((grad.flatten(1) @ v.T) ** 2).sum(1).mean()
    full = v.shape[1] == grad[0].numel()
    if aggregation == "whole":
        comp = (grad.flatten(1) @ v.T) if full else (_channels_first(grad).mean(2) @ v.T)
        return (comp**2).sum(1).mean()
    g = _channels_first(grad)  # (B, C, P)
    if full:
        comp = torch.einsum("bcp,ncp->bnp", g, _channels_first(v.view(len(v), *grad.shape[1:])))
    else:
        comp = torch.einsum("bcp,nc->bnp", g, v)
    return (comp**2).sum((1, 2)).mean()


def _channels_first(t: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` as ``(B, C, H·W)``; a transformer's ``(B, N, D)`` tokens as ``(B, D, N)``: the channel
    axis first, the positions last (tokens carry their channels last)."""
    return t.transpose(1, 2) if t.dim() == 3 else t.flatten(2)


def region_share(activation: torch.Tensor, grad: torch.Tensor, footprint: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the share of the layer's relevance on the footprint.

    Parameters
    ----------
    activation, grad : torch.Tensor
        ``(B, C, h, w)`` the layer's activation and the gradient of the explained logit with respect to it.
    footprint : torch.Tensor
        ``(h, w)`` weights in [0, 1] (:class:`spray.correct.footprint.RegionFootprint`).
    """
    r = (activation * grad).abs().sum(1)  # (B, h, w): relevance per position, every channel
    return ((r * footprint).sum((1, 2)) / r.sum((1, 2)).clamp_min(1e-12)).mean()


@dataclass
class LayerFeed:
    """The layer's activations of a fixed set of rows, computed once, and the model part after the layer.

    Attributes
    ----------
    rows : np.ndarray
        ``(n,)`` sorted rows.
    activations : torch.Tensor
        ``(n, ...)`` their activations at the layer (on the CPU).
    head : nn.Module
        ``head(activation) == model(x)``.
    """

    rows: np.ndarray
    activations: torch.Tensor
    head: nn.Module

    def __call__(self, rows: np.ndarray, device: torch.device) -> torch.Tensor:
        """Activations of ``rows`` (a leaf that requires grad)."""
        pos = np.searchsorted(self.rows, rows)
        return self.activations[torch.from_numpy(pos)].to(device).requires_grad_(True)


@dataclass
class RightReasonLoss:
    """The batch loss of RR-ClArC, as a ``step_fn`` of :func:`spray.correct.training.train`.

    Attributes
    ----------
    model : nn.Module
        The model being fine-tuned.
    samples : SampleSet
        Source of the batches' inputs and labels.
    direction : ArtifactDirection
        Layer and direction.
    vectors : np.ndarray
        ``(n, D)`` orthonormal directions penalised (the subspace; row 0 the direction's CAV).
    cfg : CorrectionConfig
        ``rr_lambda``, ``rr_target``, ``rr_aggregation``, ``rr_region_weight``, ``rr_region_target``.
    artifact_class : int
        The artifact group's class.
    device : torch.device
        Where the model runs.
    detach_layer : bool
        True when nothing before the layer trains: its output is cut from the graph (cheaper backward).
    feed : LayerFeed or None
        Precomputed activations and the model's head (the frozen part is then not run at all).
    footprint : np.ndarray or None
        ``(h, w)`` the region's footprint at the layer; None: no region term.
    flagged_rows : np.ndarray or None
        ``(m,)`` sorted rows of the flagged samples; with ``rr_region_scope="flagged"`` the region term is
        taken on them only.
    """

    model: nn.Module
    samples: SampleSet
    direction: ArtifactDirection
    vectors: np.ndarray
    cfg: CorrectionConfig
    artifact_class: int
    device: torch.device
    detach_layer: bool
    feed: LayerFeed | None = None
    footprint: np.ndarray | None = None
    flagged_rows: np.ndarray | None = None

    def __post_init__(self) -> None:
        self._vectors = torch.from_numpy(self.vectors).to(self.device)
        self._footprint = None if self.footprint is None else torch.from_numpy(self.footprint).to(self.device)

    def _forward(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if self.feed is not None:
            a = self.feed(rows, self.device)
            return self.feed.head(a.clone()), a  # a copy: the head may start with an in-place op
        x = self.samples.inputs(rows).to(self.device)
        replace = (lambda a: a.detach().requires_grad_(True)) if self.detach_layer else None
        with tap(self.model, self.direction.layer, replace=replace) as got:
            logits = self.model(x)
        return logits, got[0]

    def _region_rows(self, rows: np.ndarray) -> torch.Tensor:
        """``(B,)`` bool: the batch's samples the region term is taken on."""
        if self.cfg.rr_region_scope == "flagged" and self.flagged_rows is not None:
            keep = np.isin(rows, self.flagged_rows)
        else:
            keep = np.ones(len(rows), dtype=bool)
        return torch.from_numpy(keep).to(self.device)

    def __call__(self, rows: np.ndarray, step: int) -> dict[str, torch.Tensor]:
        """``{"loss", "ce", "rr"}`` of the batch ``rows`` (and ``"region"`` with a footprint)."""
        y = torch.from_numpy(self.samples.labels[rows]).to(self.device)
        with twice_differentiable():
            logits, a = self._forward(rows)
        ce = F.cross_entropy(logits, y)
        out = rr_output(logits, y, self.cfg.rr_target, self.artifact_class)
        (grad,) = torch.autograd.grad(out.sum(), a, create_graph=True)
        rr = rr_penalty(grad, self._vectors, self.cfg.rr_aggregation)
        if not rr.requires_grad:
            # a backward computed without a graph (an extension's once_differentiable op): the penalty would
            # be a constant, and the fine-tuning plain cross-entropy under RR-ClArC's name
            raise ConfigError(
                f"RR-ClArC cannot fine-tune after correction.layer {self.direction.layer!r}: the gradient its "
                "loss penalises does not depend on the trained weights, so the penalty would train nothing. "
                "Either the logit is a fixed function of that layer (the layer is the head itself, or nothing "
                "trainable follows it), or an operation after it computes its backward outside autograd (a "
                "custom extension's once_differentiable function). Choose another layer (--layer), or P-ClArC "
                "(--method pclarc)."
            )
        terms = {"loss": ce + self.cfg.rr_lambda * rr, "ce": ce.detach(), "rr": rr.detach()}
        if self._footprint is not None:
            explained_logit = rr_output(logits, y, self.cfg.rr_region_target, self.artifact_class)
            (explained,) = torch.autograd.grad(explained_logit.sum(), a, create_graph=True)
            keep = self._region_rows(rows)
            region = region_share(a[keep], explained[keep], self._footprint) if keep.any() else a.sum() * 0.0
            terms["loss"] = terms["loss"] + self.cfg.rr_region_weight * region
            terms["region"] = region.detach()
        return terms


def _hardsigmoid(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """``F.hardsigmoid``'s values through ``relu6``, whose backward has a derivative (``inplace`` is not needed:
    the result is what the caller uses)."""
    return F.relu6(x + 3.0) / 6.0


@contextmanager
def twice_differentiable() -> Iterator[None]:
    """A forward pass whose backward can itself be differentiated, as the right-reason loss needs (it
    differentiates a gradient): attention through its reference (math) kernel, not the fused ones, and
    ``F.hardsigmoid`` (MobileNetV3's squeeze-excitation gate) through ``relu6``, with the same values."""
    original = F.hardsigmoid
    F.hardsigmoid = _hardsigmoid  # type: ignore[assignment]
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        F.hardsigmoid = original


def not_twice_differentiable(err: RuntimeError, layer: str) -> ConfigError | None:
    """The error to give when ``err`` says an operation after ``layer`` has no second derivative (the loss
    differentiates a gradient); None for any other error."""
    text = str(err)
    if not (("derivative for" in text and "is not implemented" in text) or "once_differentiable" in text):
        return None
    return ConfigError(
        f"RR-ClArC cannot fine-tune after correction.layer {layer!r}: its loss differentiates a gradient, and "
        f"PyTorch cannot differentiate an operation after that layer twice ({text.splitlines()[0]}). Choose a "
        "later layer (--layer) after which that operation no longer runs, or P-ClArC (--method pclarc), which "
        "trains nothing."
    )


def layer_feed(model: nn.Module, task: CorrectionTask, rows: np.ndarray) -> LayerFeed | None:
    """Precompute the layer's activations of ``rows`` when the model can be cut there and they fit in
    ``activation_cache_mb`` (the frozen part runs in eval mode, as during fine-tuning)."""
    cfg = task.cfg.correction
    layer = task.direction.layer
    mb = math.prod(task.direction.reference_mean.shape) * 4 * len(rows) / 2**20
    if cfg.train_scope != "after_layer" or mb > cfg.activation_cache_mb:
        return None
    head = head_after(model, layer)
    if head is None or not check_head(model, head, layer, task.example):
        return None
    acts = layer_activations(model, layer, task.samples.batches(rows, task.cfg.batch.batch_size), task.device)
    log.info("RR-ClArC: the layer's activations of %d samples are kept (%.0f MB); the frozen part runs once",
             len(rows), mb)  # fmt: skip
    return LayerFeed(np.asarray(rows), acts, head)


def rrclarc(task: CorrectionTask) -> MethodResult:
    """Fine-tune a copy of the audited model with the right-reason loss (resumable, seeded).

    Parameters
    ----------
    task : CorrectionTask
        The model, data, group, direction, config, device and work folder.

    Returns
    -------
    MethodResult
        The fine-tuned copy (eval mode) and its training log.
    """
    cfg = task.cfg.correction
    model = model_copy(task.model)
    rows = finetune_rows(task)
    feed = layer_feed(model, task, rows)
    scope = set_scope(model, task.direction.layer, cfg.train_scope, task.example)
    log.info(
        "RR-ClArC: training %d parameter tensors in %s",
        len(scope.parameters),
        ", ".join(scope.trained_modules),
    )
    if not scope.parameters:
        raise ConfigError(
            f"correction.layer {task.direction.layer!r}: no parameters run after it, so RR-ClArC has nothing "
            "to fine-tune with train_scope 'after_layer'; choose an earlier layer or train_scope: all."
        )
    plan = TrainingPlan(rows, cfg.epochs, cfg.batch_size, task.cfg.seed, cfg.checkpoint_every, "RR-ClArC",
                        cfg.lr_schedule)  # fmt: skip
    vectors = task.direction.vector[None] if task.subspace is None else task.subspace.vectors
    footprint = None if task.footprint is None else task.footprint.weights
    step = RightReasonLoss(model, task.samples, task.direction, vectors, cfg, task.group.class_index,
                           task.device, scope.frozen_input, feed, footprint,
                           np.sort(task.group.flagged_rows))  # fmt: skip
    opt = make_optimizer(scope.parameters, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    try:
        trained = train(model, opt, plan, step, task.work_dir, task.device, progress=task.progress)
    except RuntimeError as err:
        refusal = not_twice_differentiable(err, task.direction.layer)
        if refusal is None:
            raise
        raise refusal from None
    return MethodResult(model.eval(), trained, scope.trained_modules)

"""The analysis stage of an audit: every class of the merged batch-stage result, with its paste test.

Runs on rank 0 after the batch stage. Per class (grouped by label or prediction): the spectral
relevance analysis of :func:`spray.analysis.classes.analyze_class`, with an
:class:`~spray.analysis.scoring.InterventionProbe` that pastes candidate regions into images of the
other classes and asks the model (predictions cached in the run's :class:`~spray.runs.cache.PasteCache`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spray.analysis.classes import analyze_class
from spray.analysis.scoring import InterventionProbe, rank_findings, stable_order
from spray.attribution import BatchStageResult
from spray.config import AuditConfig
from spray.data import AuditDataset
from spray.errors import ConfigError
from spray.records import ClassAnalysis, ClassSkipped, ClusterFinding
from spray.runs.cache import PasteCache

log = logging.getLogger(__name__)


@dataclass
class AnalysisResult:
    """What the analysis stage produced.

    Attributes
    ----------
    classes : list[ClassAnalysis]
        Analysed classes, by class index.
    findings : list[ClusterFinding]
        Every scored cluster of every class, most suspicious first.
    classes_skipped : list[ClassSkipped]
        Classes with fewer than ``analysis.min_class_size`` samples.
    n_paste_computed, n_paste_cached : int
        Pasted images predicted by the model vs taken from the paste cache.
    """

    classes: list[ClassAnalysis]
    findings: list[ClusterFinding]
    classes_skipped: list[ClassSkipped]
    n_paste_computed: int = 0
    n_paste_cached: int = 0


@dataclass
class _PasteContext:
    """What every class's probe shares: built once per run, not per class (a dict over a million samples
    per class adds up)."""

    cache: PasteCache
    #: :func:`stable_order` of every sample's content hash: the targets of class ``c`` are the first
    #: ``intervention_samples`` samples of other classes in that order, so new samples change only a
    #: few of them and the rest of the paste test comes from the cache.
    target_order: np.ndarray
    position_of: dict[str, int]
    content_keys: dict[str, str]


def select_classes(cfg: AuditConfig, n_classes: int) -> list[int]:
    """The class indices ``analysis.classes`` asks for (``"all"``: every class)."""
    if cfg.analysis.classes == "all":
        return list(range(n_classes))
    bad = [c for c in cfg.analysis.classes if not 0 <= c < n_classes]
    if bad:
        raise ConfigError(
            f"analysis.classes: {bad} are not class indices of this dataset (0..{n_classes - 1})."
        )
    return list(cfg.analysis.classes)


def make_probe(
    model: nn.Module,
    device: torch.device,
    dataset: AuditDataset,
    stage: BatchStageResult,
    class_index: int,
    cfg: AuditConfig,
    paste: _PasteContext,
) -> InterventionProbe | None:
    """The paste test's probe for one class (None when no other class has samples)."""
    labels = stage.batch.labels
    other = paste.target_order[labels[paste.target_order] != class_index]
    if len(other) == 0:
        return None
    pick = other[: cfg.scoring.intervention_samples]

    @torch.no_grad()
    def predict(x: torch.Tensor) -> torch.Tensor:
        out = [model(x[s : s + 256].to(device)).argmax(1).cpu() for s in range(0, len(x), 256)]
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)

    def load_inputs(sample_ids: list[str]) -> torch.Tensor:
        return torch.stack([dataset.load_input(paste.position_of[s]) for s in sample_ids])

    return InterventionProbe(
        predict=predict,
        load_inputs=load_inputs,
        other_ids=[stage.batch.sample_ids[i] for i in pick],
        other_labels=labels[pick],
        content_keys=paste.content_keys,
        cache=paste.cache,
    )


def _warm_up(cfg: AuditConfig, group: np.ndarray) -> None:
    if cfg.analysis.embedding == "umap":
        from spray.analysis.embedding import warm_up
        from spray.analysis.spectral import EXACT_KNN_BELOW

        # Compile UMAP (and pynndescent, only if some class is large enough to use it) up front.
        largest = int(np.bincount(group).max()) if len(group) else 0
        warm_up(approximate_knn=largest >= EXACT_KNN_BELOW)


def analyze_run(
    cfg: AuditConfig,
    model: nn.Module,
    device: torch.device,
    dataset: AuditDataset,
    stage: BatchStageResult,
    cache_dir: Path,
) -> AnalysisResult:
    """Analyse every selected class of the merged batch-stage result.

    Parameters
    ----------
    cfg : AuditConfig
        The audit config.
    model, device
        The audited model (for the paste test).
    dataset : AuditDataset
        Inputs of the paste test's images.
    stage : BatchStageResult
        Heatmaps and predictions of every readable sample.
    cache_dir : Path
        The run's cache directory (holds the paste test's prediction cache).
    """
    batch = stage.batch
    group = batch.labels if cfg.analysis.group_by == "label" else batch.predictions
    _warm_up(cfg, group)
    paste: _PasteContext | None = None
    if cfg.scoring.intervention:
        paste = _PasteContext(
            cache=PasteCache(cache_dir),
            target_order=stable_order(batch.content_hashes, f"target|{cfg.seed}"),
            position_of={s: i for i, s in enumerate(dataset.sample_ids)},
            content_keys=dict(zip(batch.sample_ids, batch.content_hashes, strict=True)),
        )
    classes: list[ClassAnalysis] = []
    too_small: list[ClassSkipped] = []
    for c in select_classes(cfg, len(dataset.class_names)):
        rows = np.flatnonzero(group == c)
        name = dataset.class_names[c]
        if len(rows) < cfg.analysis.min_class_size:
            too_small.append(ClassSkipped(c, name, len(rows)))
            log.warning("class %s has %d samples (< analysis.min_class_size): skipped", name, len(rows))
            continue
        log.info("analysing class %d (%s): %d samples", c, name, len(rows))
        probe = None if paste is None else make_probe(model, device, dataset, stage, c, cfg, paste)
        ids = [batch.sample_ids[i] for i in rows]
        classes.append(analyze_class(c, name, ids, batch.relevance[rows], cfg, probe=probe))
    result = AnalysisResult(classes, rank_findings([ca.clusters for ca in classes]), too_small)
    if paste is not None:
        result.n_paste_computed, result.n_paste_cached = paste.cache.misses, paste.cache.hits
        log.info(
            "paste test: %d pasted images predicted, %d taken from the cache",
            paste.cache.misses,
            paste.cache.hits,
            extra={"n_paste_computed": paste.cache.misses, "n_paste_cached": paste.cache.hits},
        )
        paste.cache.close()
    return result

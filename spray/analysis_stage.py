"""The analysis stage of an audit: every class of the merged batch-stage result, with its paste test.

Runs after the batch stage. Per class (grouped by label or prediction): the spectral relevance analysis
of :func:`spray.analysis.classes.analyze_class`, with an :class:`~spray.analysis.scoring.InterventionProbe`
that pastes candidate regions into images of the other classes and asks the model (predictions cached in
the run's :class:`~spray.runs.cache.PasteCache`, which every rank shares).

Under torchrun every rank analyses its share of the classes (:func:`spray.analysis_shards.assign_classes`)
and rank 0 gathers them in the order one process would produce, so the published run is the same.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spray.analysis.classes import analyze_class
from spray.analysis.scoring import InterventionProbe, rank_findings, stable_order
from spray.analysis_shards import (
    AnalysisInputs,
    assign_classes,
    class_rows,
    gather_classes,
    send_heatmaps,
    share_inputs,
)
from spray.config import AuditConfig
from spray.copies import members_line
from spray.data import AuditDataset
from spray.distributed import DistContext
from spray.errors import ConfigError
from spray.inference import Inference
from spray.records import (
    NO_SAMPLES,
    UNNAMED_OUTPUT,
    ZERO_HEATMAPS,
    ClassAnalysis,
    ClassSkipped,
    ClusterFinding,
)
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
    forward: Inference,
    dataset: AuditDataset,
    inputs: AnalysisInputs,
    class_index: int,
    cfg: AuditConfig,
    paste: _PasteContext,
    explainer: Any | None = None,
) -> InterventionProbe:
    """The interventions' probe for one class, asking ``forward``; with ``explainer`` (a
    :class:`spray.lrp.Explainer` with a concept layer) it also computes concept-conditional heatmaps. When
    no other class has samples (one class audited) it has no paste targets: the appearance and the removal
    test, which need only the class's own images, still run."""
    labels = inputs.labels
    other = paste.target_order[labels[paste.target_order] != class_index]
    pick = other[: cfg.scoring.intervention_samples]

    def load_inputs(sample_ids: list[str]) -> torch.Tensor:
        keys = paste.content_keys
        return torch.stack([dataset.load_input(paste.position_of[s], keys.get(s)) for s in sample_ids])

    return InterventionProbe(
        predict=forward.predict,
        load_inputs=load_inputs,
        other_ids=[inputs.sample_ids[i] for i in pick],
        other_labels=labels[pick],
        content_keys=paste.content_keys,
        cache=paste.cache,
        logits=forward.logits,
        concept_maps=None if explainer is None else _conditional(explainer, cfg),
    )


def _conditional(explainer: Any, cfg: AuditConfig) -> Any:
    """The probe's ``concept_maps``: concept-conditional heatmaps of a class logit, pooled to the grid."""
    from spray.attribution import pool_relevance
    from spray.lrp.concepts import concept_channels

    def maps(x: torch.Tensor, class_index: int, channels: list[int], n_channels: int) -> np.ndarray:
        dev = explainer.device
        out = []
        for s in range(0, len(x), cfg.batch.batch_size):
            xb = x[s : s + cfg.batch.batch_size].to(dev)
            mask = concept_channels([channels] * len(xb), n_channels, dev)
            target = torch.full((len(xb),), class_index, dtype=torch.long, device=dev)
            res = explainer(xb, target=target, concept_mask=mask)
            out.append(pool_relevance(res.relevance, cfg.batch.grid).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0, 0), dtype=np.float32)

    return maps


def _warm_up(cfg: AuditConfig, sizes: list[int]) -> None:
    if cfg.analysis.embedding == "umap" and sizes:
        from spray.analysis.embedding import warm_up

        # Import faiss up front (only if some class is large enough to use it), outside the first class's time.
        warm_up(approximate_knn=max(sizes) >= cfg.analysis.knn.exact_below)


def _zero_classes(inputs: AnalysisInputs | None, groups: np.ndarray) -> set[int]:
    """The classes whose every heatmap is exactly zero (rank 0 holds the heatmaps; None elsewhere)."""
    if inputs is None or inputs.relevance is None or not len(groups):
        return set()
    flat = np.asarray(inputs.relevance).reshape(len(groups), -1)
    empty = ~np.any(flat != 0, axis=1)
    size = np.bincount(groups)
    zero = np.bincount(groups[empty], minlength=len(size))
    return {int(c) for c in np.flatnonzero((size > 0) & (zero == size))}


def _classes_to_analyze(
    cfg: AuditConfig,
    class_names: list[str],
    groups: np.ndarray,
    zero: set[int],
    listed: np.ndarray | None = None,
) -> tuple[dict[int, int], list[ClassSkipped]]:
    """The selected classes with enough samples and some relevance (class -> size, in selection order), and
    the others (``zero``: the classes whose every heatmap is zero; ``listed``: the dataset's items per
    label, so that a class emptied by unreadable images says so)."""
    todo: dict[int, int] = {}
    too_small: list[ClassSkipped] = _unnamed_outputs(class_names, groups)
    for c in select_classes(cfg, len(class_names)):
        n = int(np.count_nonzero(groups == c))
        lost = 0 if listed is None or c >= len(listed) else int(listed[c]) - n
        if n < cfg.analysis.min_class_size and lost > 0:
            why = (
                f"{lost} of its {n + lost} samples were skipped (each with its reason under 'skipped'); the {n} "
                "left are fewer than analysis.min_class_size"
            )
            too_small.append(ClassSkipped(c, class_names[c], n, why))
            log.warning("class %s not analysed: %s", class_names[c], why)
        elif n < cfg.analysis.min_class_size:
            why = (
                NO_SAMPLES
                if n == 0
                else f"fewer than analysis.min_class_size ({cfg.analysis.min_class_size}) samples"
            )
            too_small.append(ClassSkipped(c, class_names[c], n, why))
            log.warning("class %s not analysed: %s", class_names[c], why if n else "it has no samples")
        elif c in zero:
            # k-means would split identical all-zero maps by index ties and describe the split as structure
            too_small.append(ClassSkipped(c, class_names[c], n, ZERO_HEATMAPS))
            log.warning(
                "class %s: every one of its %d heatmaps is zero, so its logit does not depend on the input (a "
                "dead output, or a bias alone): not analysed, and no finding can be made in it",
                class_names[c], n,
            )  # fmt: skip
        else:
            todo[c] = n
    named = [s for s in too_small if s.reason != UNNAMED_OUTPUT]
    if not todo and named and all(s.reason == ZERO_HEATMAPS for s in named):
        log.warning(
            "every class's heatmaps are all zero: nothing is analysed and the run can show no finding. The "
            "logits do not depend on the input as explained: check the weights (model.checkpoint) and the "
            "composite's epsilon (lrp.composite_kwargs)."
        )
    elif not todo and named:
        log.warning(
            "no class has analysis.min_class_size = %d samples (the largest has %d): nothing is analysed and the "
            "run can show no finding. Add images, or lower analysis.min_class_size.",
            cfg.analysis.min_class_size,
            max(s.n for s in named),
        )
    return todo, too_small


def _listed(cfg: AuditConfig, dataset: AuditDataset) -> np.ndarray | None:
    """The dataset's items per label (readable or not), when the classes are the labels."""
    return (
        np.bincount(np.asarray(dataset.labels, dtype=np.int64)) if cfg.analysis.group_by == "label" else None
    )


def _unnamed_outputs(class_names: list[str], groups: np.ndarray) -> list[ClassSkipped]:
    """The groups of model outputs beyond the dataset's classes (``group_by: prediction`` with a model of
    more outputs than class names): listed as not analysed, never dropped without a word."""
    out = []
    for c in sorted({int(g) for g in np.unique(groups)} - set(range(len(class_names)))):
        if c >= 0:
            out.append(ClassSkipped(c, f"output {c}", int(np.count_nonzero(groups == c)), UNNAMED_OUTPUT))
    if out:
        named = ", ".join(f"{s.n} as output {s.class_index}" for s in out[:5]) + (
            ", ..." if len(out) > 5 else ""
        )
        log.warning(
            "%d samples are predicted as model outputs that have no class name (the dataset names %d classes): "
            "%s. They are not analysed. Give the model's classes as data.class_names, or analyse by label "
            "(analysis.group_by: label)",
            sum(s.n for s in out), len(class_names), named,
        )  # fmt: skip
    return out


def _open_paste_cache(cfg: AuditConfig, cache_dir: Path, ctx: DistContext) -> PasteCache | None:
    """Every rank's connection to the one paste cache; rank 0 opens (creates) it before the others, so
    that the file and its WAL mode exist before several processes write to it.

    A rank on another node than rank 0 (torchrun's ``GROUP_RANK``) gets a private cache in memory: SQLite
    cannot share a WAL-mode file between hosts, and the cache only saves work, never changes a result.
    """
    if not cfg.scoring.intervention:
        return None
    if ctx.is_main:
        PasteCache.remove_older(cache_dir)
    cache = PasteCache(cache_dir) if ctx.is_main else None
    ctx.barrier()
    if cache is not None:
        return cache
    if os.environ.get("GROUP_RANK", "0") != "0":
        log.info(
            "paste cache: rank %d is on another node than rank 0; its paste predictions are not kept",
            ctx.rank,
        )
        return PasteCache.private()
    return PasteCache(cache_dir)


def analyze_run(
    cfg: AuditConfig,
    model: nn.Module,
    device: torch.device,
    dataset: AuditDataset,
    inputs: AnalysisInputs | None,
    cache_dir: Path,
    *,
    ctx: DistContext | None = None,
    explainer: Any | None = None,
) -> AnalysisResult | None:
    """Analyse every selected class; under torchrun each rank its share (:func:`assign_classes`).

    Parameters
    ----------
    cfg : AuditConfig
        The audit config.
    model, device
        The audited model (for the paste test).
    dataset : AuditDataset
        Inputs of the paste test's images.
    inputs : AnalysisInputs or None
        Heatmaps, labels and predictions of every readable sample (rank 0; None on the other ranks,
        which receive what they need from rank 0).
    cache_dir : Path
        The run's cache directory (holds the paste test's prediction cache).
    ctx : DistContext, optional
        Rank and world size (a single process when None).
    explainer : spray.lrp.Explainer, optional
        The batch stage's explainer: with a concept layer and ``concepts.enabled`` the concept-only
        findings get an intervention test at each image's concept-conditional hot pixels.

    Returns
    -------
    AnalysisResult or None
        On rank 0 every class, in selection order (the same result as one process computes); None on
        the other ranks.

    Raises
    ------
    SprayError
        On every rank when any rank failed (that rank raises its own error).
    """
    ctx = ctx or DistContext()
    shared = share_inputs(ctx, inputs)
    groups = shared.groups(cfg.analysis.group_by)
    zero = ctx.broadcast_object(_zero_classes(inputs if ctx.is_main else None, groups))
    todo, too_small = _classes_to_analyze(cfg, list(dataset.class_names), groups, zero, _listed(cfg, dataset))
    plan = assign_classes(todo, ctx.world_size)
    mine = plan[ctx.rank]
    if ctx.world_size > 1:
        n_mine = sum(todo[c] for c in mine)
        log.info(
            "analysis: rank %d takes %d of %d classes (%d samples)", ctx.rank, len(mine), len(todo), n_mine
        )
    heatmaps = send_heatmaps(ctx, shared, groups, plan)
    cache = _open_paste_cache(cfg, cache_dir, ctx)
    if cache is not None:
        cache.writes_allowed = lambda: not dataset.changed_since_read
    done: dict[int, ClassAnalysis] = {}
    failure: BaseException | None = None
    try:
        _warm_up(cfg, [todo[c] for c in mine])
        paste = None if cache is None else _paste_context(cfg, cache, shared, dataset)
        forward = Inference(model, device)
        for c in mine:
            sent = heatmaps.pop(c, None)
            done[c] = _analyze_one(cfg, c, dataset, shared, groups, sent, forward, paste, explainer)
    except Exception as err:  # every rank must hear of it, or the others wait in the next collective
        failure = err
    finally:
        if cache is not None:
            cache.close()
    ctx.gather_errors(failure)
    _warn_changed(dataset)
    paste_counts = ctx.sum_counts([0, 0] if cache is None else [cache.misses, cache.hits])
    every = gather_classes(ctx, done)
    if not ctx.is_main:
        return None
    return _result([every[c] for c in todo], too_small, None if cache is None else paste_counts)


def _warn_changed(dataset: AuditDataset) -> None:
    """A warning when files were rewritten between the batch stage and the paste test's reads."""
    changed = sorted(set(dataset.changed_since_read))
    if changed and dataset.raw_reader is None:
        log.warning(
            "%d samples of the dataset gave another input when read again than when they were explained "
            "(e.g. %s): its transform is random (augmentation such as RandomHorizontalFlip or "
            "RandomErasing), so heatmaps, paste and removal tests saw different images (the tests' results "
            "from then on were not cached); build the dataset with its evaluation transform and audit again",
            len(changed), ", ".join(changed[:3]),
        )  # fmt: skip
    elif changed:
        log.warning(
            "%d files changed on disk during the audit (e.g. %s): the paste and removal tests read them as they "
            "are now, not as their heatmaps explain them (their results from then on were not cached); audit "
            "again when the data is not being written",
            len(changed), ", ".join(changed[:3]),
        )  # fmt: skip


def _result(
    classes: list[ClassAnalysis], too_small: list[ClassSkipped], paste_counts: list[int] | None
) -> AnalysisResult:
    result = AnalysisResult(classes, rank_findings([ca.clusters for ca in classes]), too_small)
    if paste_counts is not None:
        result.n_paste_computed, result.n_paste_cached = paste_counts
        log.info(
            "paste test: %d pasted images run through the model, %d taken from the cache",
            *paste_counts,
            extra={"n_paste_computed": paste_counts[0], "n_paste_cached": paste_counts[1]},
        )
    return result


def _paste_context(
    cfg: AuditConfig, cache: PasteCache, inputs: AnalysisInputs, dataset: AuditDataset
) -> _PasteContext:
    return _PasteContext(
        cache=cache,
        target_order=stable_order(inputs.content_hashes, f"target|{cfg.seed}"),
        position_of={s: i for i, s in enumerate(dataset.sample_ids)},
        content_keys=dict(zip(inputs.sample_ids, inputs.content_hashes, strict=True)),
    )


def _analyze_one(
    cfg: AuditConfig,
    c: int,
    dataset: AuditDataset,
    inputs: AnalysisInputs,
    groups: np.ndarray,
    sent: tuple[np.ndarray, np.ndarray | None] | None,
    forward: Inference,
    paste: _PasteContext | None,
    explainer: Any | None = None,
) -> ClassAnalysis:
    """One class; ``sent`` is its ``(n, h, w)`` heatmaps and ``(n, C)`` concept vectors (or None) sent
    by rank 0, or None to take both from ``inputs``."""
    rows = class_rows(inputs, groups, c)
    name = dataset.class_names[c]
    log.info("analysing class %d (%s): %d samples", c, name, len(rows))
    conditional = explainer if cfg.concepts.enabled and cfg.concepts.intervention else None
    probe = None if paste is None else make_probe(forward, dataset, inputs, c, cfg, paste, conditional)
    ids = [inputs.sample_ids[i] for i in rows]
    if sent is None:
        assert inputs.relevance is not None
        relevance = inputs.relevance[rows]
        concepts = None if inputs.concepts is None else inputs.concepts[rows]
    else:
        relevance, concepts = sent
    analysed = analyze_class(c, name, ids, relevance, cfg, probe=probe, concepts=concepts)
    hashed = len(inputs.content_hashes) == len(inputs.sample_ids)
    content_of = {inputs.sample_ids[i]: inputs.content_hashes[i] for i in rows} if hashed else {}
    explained = dict(zip(ids, _explained_targets(cfg, inputs, rows).tolist(), strict=True))
    for cluster in analysed.clusters:
        # after the line that sizes the group: a share counted in copies is read with it
        if (line := members_line(cluster.member_ids, content_of)) is not None:
            cluster.evidence.insert(1, line)
        if (
            line := _other_target_line(cluster.member_ids, explained, c, dataset.class_names, cfg)
        ) is not None:
            cluster.evidence.insert(1, line)
    return analysed


def _explained_targets(cfg: AuditConfig, inputs: AnalysisInputs, rows: np.ndarray) -> np.ndarray:
    """``(n,)`` the class whose logit each of the class's samples ``rows`` was explained for (``lrp.target``)."""
    target = cfg.lrp.target
    if target == "pred":
        return np.asarray(inputs.predictions)[rows]
    if target == "label":
        return np.asarray(inputs.labels)[rows]
    return np.full(len(rows), int(target), dtype=np.int64)


def _other_target_line(
    member_ids: list[str], explained: dict[str, int], c: int, names: list[str], cfg: AuditConfig
) -> str | None:
    """A line saying how many members were explained for another class's logit than the analysed class
    ``c`` (``lrp.target: pred`` or a fixed class): their heatmaps show what speaks for that class; None when
    every member's was ``c``'s."""
    others = [t for t in (explained[s] for s in member_ids) if t != c]
    if not others:
        return None
    counts = np.bincount(np.asarray(others))
    top = int(counts.argmax())
    top_name = names[top] if top < len(names) else str(top)
    also = " and others" if int((counts > 0).sum()) > 1 else ""
    return (
        f"{len(others)} of its {len(member_ids)} members are explained for another class's logit "
        f"(lrp.target: {cfg.lrp.target}): {top_name}{also}"
    )

"""The analysis split over torchrun ranks: which rank analyses which class, and what the ranks exchange.

Under ``torchrun`` every rank analyses a share of the classes (:func:`assign_classes`: greedy, largest
class first, to the rank with the least work so far). Everything the ranks exchange goes through the
process group, as Python objects (no file besides the published run):

- **inputs** (rank 0 → every rank): after merging the shards, rank 0 broadcasts what every rank needs of
  every sample (ids, content hashes, labels, predictions: the paste test draws its targets from all
  classes), then sends each rank the heatmaps of that rank's classes only, one rank after the other
  (:func:`share_inputs`, :func:`send_heatmaps`).
- **classes** (every rank → rank 0): the analysed classes, one class per rank per round
  (:func:`gather_classes`); a class of 1,300 samples is about 440 KB pickled (measured,
  ``benchmarks/analysis_scale.py``), so rank 0 holds one round in transit besides the classes it keeps
  for the report anyway.

Pickles come only from the other ranks of the same job.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from spray.distributed import DistContext
from spray.records import AttributionBatch, ClassAnalysis


@dataclass
class AnalysisInputs:
    """What the analysis reads of the batch stage's result, for every readable sample (dataset order).

    Attributes
    ----------
    sample_ids, content_hashes : list[str]
        Length ``N``.
    labels, predictions : np.ndarray
        ``(N,)`` int64.
    relevance : np.ndarray or None
        ``(N, h, w)`` float16 pooled relevance; None on ranks other than 0, which receive the heatmaps
        of their own classes only (:func:`send_heatmaps`).
    concepts : np.ndarray or None
        ``(N, C)`` concept relevance (None without a concept layer, and on ranks other than 0, which
        receive those of their own classes: :func:`send_heatmaps`).
    """

    sample_ids: list[str]
    content_hashes: list[str]
    labels: np.ndarray
    predictions: np.ndarray
    relevance: np.ndarray | None
    concepts: np.ndarray | None = None

    @classmethod
    def of_batch(cls, batch: AttributionBatch) -> AnalysisInputs:
        """The inputs held by the merged batch-stage result (no copy)."""
        return cls(
            batch.sample_ids,
            batch.content_hashes,
            batch.labels,
            batch.predictions,
            batch.relevance,
            batch.concepts,
        )

    def groups(self, group_by: str) -> np.ndarray:
        """``(N,)`` the class each sample is analysed in: its label or its prediction."""
        return self.labels if group_by == "label" else self.predictions


def assign_classes(sizes: dict[int, int], world_size: int) -> list[list[int]]:
    """Classes per rank, balanced by size (the analysis of a class costs about linearly in its size).

    Greedy longest-processing-time: classes in descending size (ties: lower class index first), each to
    the rank with the fewest samples so far (ties: lower rank). Deterministic, so every rank computes
    the same assignment without talking to the others; at most 4/3 of the optimal makespan.

    Parameters
    ----------
    sizes : dict[int, int]
        Class index -> number of samples, for the classes to analyse.
    world_size : int
        Number of ranks.

    Returns
    -------
    list[list[int]]
        ``world_size`` lists of class indices, each in ascending order.
    """
    load = [0] * world_size
    out: list[list[int]] = [[] for _ in range(world_size)]
    for c in sorted(sizes, key=lambda c: (-sizes[c], c)):
        r = min(range(world_size), key=lambda r: (load[r], r))
        out[r].append(c)
        load[r] += sizes[c]
    return [sorted(cs) for cs in out]


def share_inputs(ctx: DistContext, inputs: AnalysisInputs | None) -> AnalysisInputs:
    """Rank 0's inputs on every rank, without the heatmaps (``inputs`` is None on the other ranks)."""
    if ctx.world_size == 1:
        assert inputs is not None
        return inputs
    meta = None if inputs is None else replace(inputs, relevance=None, concepts=None)
    shared: AnalysisInputs = ctx.broadcast_object(meta)
    return inputs if ctx.is_main and inputs is not None else shared


def send_heatmaps(
    ctx: DistContext, inputs: AnalysisInputs, groups: np.ndarray, plan: list[list[int]]
) -> dict[int, tuple[np.ndarray, np.ndarray | None]]:
    """The heatmaps and concept vectors of this rank's classes (``plan[rank]``), ``class -> ((n_c, h,
    w), (n_c, C) or None)``, sent by rank 0.

    Rank 0 keeps its own (``{}``: it reads them from ``inputs.relevance`` and ``inputs.concepts``).
    """
    if ctx.world_size == 1:
        return {}

    def share(rank: int) -> dict[int, tuple[np.ndarray, np.ndarray | None]]:
        if rank == 0:
            return {}
        assert inputs.relevance is not None
        con = inputs.concepts
        rows = {c: class_rows(inputs, groups, c) for c in plan[rank]}
        return {c: (inputs.relevance[rows[c]], None if con is None else con[rows[c]]) for c in plan[rank]}

    got: dict[int, tuple[np.ndarray, np.ndarray | None]] = ctx.scatter_objects(share)
    return got


def content_order(content_hashes: Sequence[str], sample_ids: Sequence[str], rows: Iterable[int]) -> list[int]:
    """``rows`` (positions in both sequences) ordered by content hash, then sample id: an order that renaming,
    moving or reordering files does not change."""
    return sorted(rows, key=lambda i: (content_hashes[i], sample_ids[i]))


def class_rows(inputs: AnalysisInputs, groups: np.ndarray, c: int) -> np.ndarray:
    """Positions in ``inputs`` of group ``c``'s samples, ordered by content hash, then sample id.

    A class is analysed in this order, not the dataset's: k-means' seeding and the resampled rows are drawn by
    position, so the same images listed in another order (renamed files, a reordered dataset) gave other
    clusters and keys; ordered by content, a renamed or moved file keeps its place.

    Returns
    -------
    np.ndarray
        ``(n_c,)`` int64.
    """
    rows = np.flatnonzero(groups == c)
    if len(inputs.content_hashes) != len(inputs.sample_ids):
        return rows
    return np.asarray(content_order(inputs.content_hashes, inputs.sample_ids, rows), dtype=np.int64)


def gather_classes(ctx: DistContext, done: dict[int, ClassAnalysis]) -> dict[int, ClassAnalysis]:
    """Every rank's analysed classes on rank 0 (``{}`` on the other ranks)."""
    if ctx.world_size == 1:
        return dict(done)
    every = ctx.gather_to_main([done[c] for c in sorted(done)])
    return {ca.class_index: ca for ca in every}

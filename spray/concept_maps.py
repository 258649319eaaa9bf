"""Where a concept finding sits in each image: its members' concept-conditional heatmaps, computed in the
audit (where the model is) and stored in the run (``concept_maps.npz``).

A concept-space cluster is a group of samples whose decision leans on the same channels of the concept
layer, wherever in the image they fired. The plain heatmap of a member shows all of its relevance; the
*concept-conditional* heatmap (CRP) propagates only the relevance of the finding's characteristic
channels to the input, so it shows where in *that* image the shared detector looked, even when the
shortcut moves from image to image. The dashboard's cluster page shows these maps for a concept finding.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from spray.attribution import pool_relevance
from spray.config import AuditConfig
from spray.data import AuditDataset
from spray.records import AttributionBatch, ClusterFinding, ConditionalMaps

log = logging.getLogger(__name__)


def channel_share(concepts: np.ndarray, channels: list[int]) -> np.ndarray:
    """``(n,)`` each row's share of positive concept relevance in ``channels`` (0 for a row without any)."""
    pos = np.clip(np.asarray(concepts, dtype=np.float32), 0.0, None)
    total = pos.sum(axis=1)
    part = pos[:, channels].sum(axis=1)
    return np.divide(part, total, out=np.zeros_like(part), where=total > 0)


def _pick(f: ClusterFinding, batch: AttributionBatch, row_of: dict[str, int], limit: int) -> np.ndarray:
    """Rows of the members to explain: the ``limit`` with the highest share in the finding's channels."""
    assert batch.concepts is not None
    rows = np.asarray([row_of[s] for s in f.member_ids], dtype=np.int64)
    share = channel_share(batch.concepts[rows], f.channels)
    return rows[np.argsort(-share, kind="stable")[:limit]]


def _explain(
    explainer: Any,
    x: torch.Tensor,
    targets: np.ndarray,
    channels: list[int],
    n_channels: int,
    grid: int,
) -> np.ndarray:
    """``(b, h, w)`` float16 pooled conditional heatmaps of one batch."""
    from spray.lrp.concepts import concept_channels

    device = explainer.device
    mask = concept_channels([channels] * len(x), n_channels, device)
    res = explainer(x.to(device), target=torch.as_tensor(targets, device=device), concept_mask=mask)
    pooled = pool_relevance(res.relevance, grid)
    return pooled.to(torch.float16).cpu().numpy()


def conditional_maps(
    findings: list[ClusterFinding],
    explainer: Any,
    dataset: AuditDataset,
    batch: AttributionBatch,
    cfg: AuditConfig,
    *,
    progress: bool = False,
) -> list[ConditionalMaps]:
    """The concept-conditional heatmaps of the members of every concept finding (``space`` ``concept``
    or ``both``), at most ``concepts.conditional_members`` per finding (those with the highest share of
    concept relevance in its channels first).

    Parameters
    ----------
    findings : list[ClusterFinding]
        The run's candidates (pixel ones are passed over).
    explainer : spray.lrp.Explainer
        The batch stage's explainer (with the concept layer ``concepts.npy`` was taken at).
    dataset : AuditDataset
        Loads the members' inputs.
    batch : AttributionBatch
        The merged batch stage: sample ids, targets and concept vectors.
    cfg : AuditConfig
        ``concepts``, ``batch.batch_size`` and ``batch.grid``.
    progress : bool
        Show a progress bar.

    Returns
    -------
    list[ConditionalMaps]
        One per concept finding, in the order of ``findings``; empty without concept vectors.
    """
    limit = cfg.concepts.conditional_members
    todo = [f for f in findings if f.space != "pixel" and f.channels]
    if batch.concepts is None or not todo or limit == 0:
        return []
    row_of = {s: i for i, s in enumerate(batch.sample_ids)}
    position_of = {s: i for i, s in enumerate(dataset.sample_ids)}
    n_channels = batch.concepts.shape[1]
    out = []
    for f in tqdm(todo, desc="concept maps", unit="finding", disable=not progress):
        rows = _pick(f, batch, row_of, limit)
        ids = [batch.sample_ids[r] for r in rows]
        parts = []
        for s in range(0, len(rows), cfg.batch.batch_size):
            chunk = ids[s : s + cfg.batch.batch_size]
            x = torch.stack([dataset.load_input(position_of[sid]) for sid in chunk])
            targets = batch.targets[rows[s : s + cfg.batch.batch_size]]
            parts.append(_explain(explainer, x, targets, f.channels, n_channels, cfg.batch.grid))
        maps = np.concatenate(parts) if parts else np.zeros((0, *batch.relevance.shape[1:]), np.float16)
        out.append(ConditionalMaps(f.key, ids, maps))
    log.info(
        "concept-conditional heatmaps: %d findings, %d maps", len(out), sum(len(m.sample_ids) for m in out)
    )
    return out

"""The batch stage: an LRP heatmap for every sample of a dataset, cached, resumable and shardable.

The dataset is cut into fixed, contiguous shards of ``batch.shard_size`` samples (the unit of resume
and of scale-out). For each shard, every sample is read and content-hashed; samples whose hash is in
the :class:`~spray.runs.cache.ShardCache` of this (model, LRP settings) pair are not recomputed, the rest
are explained in batches and written as one new shard file, atomically, by a background writer so the
device never waits for the disk. Relevance is channel-summed and sum-pooled to the analysis grid *on
the device*, so only ``h×w`` float16 values per sample travel back to the host.

Because shard boundaries depend only on the dataset order, a run killed at any moment and then re-run
recomputes exactly the unfinished shards with the same batch composition: the result is identical.
Under ``torchrun`` rank ``r`` of ``W`` takes shards ``r, r+W, r+2W, ...``: no padding, no duplicates.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from spray.config import AuditConfig
from spray.data import AuditDataset, SampleBatch, collate_samples
from spray.errors import ModelError
from spray.records import AttributionBatch, SkippedSample
from spray.runs.atomic import atomic_write_json, translate_write_errors
from spray.runs.cache import ShardCache
from spray.runs.errors import RunReadError
from spray.runs.layout import manifest_file

if TYPE_CHECKING:
    from spray.lrp import Explainer

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("batch.device is 'cuda' but no CUDA device is available. Use 'auto' or 'cpu'.")
    return torch.device(device)


def pool_relevance(relevance: torch.Tensor, grid: int) -> torch.Tensor:
    """Channel-sum and sum-pool relevance to the analysis grid.

    Parameters
    ----------
    relevance : torch.Tensor
        ``(B, C, H, W)`` input relevance.
    grid : int
        Target side; inputs no larger than ``grid`` keep their native size.

    Returns
    -------
    torch.Tensor
        ``(B, h, w)`` with ``h = min(H, grid)``: sum pooling by area, every pixel counted once, so the
        total relevance per sample is preserved (exactly when ``H`` and ``W`` are multiples of ``grid``,
        to rounding otherwise).
    """
    r = relevance.sum(1)
    b, h, w = r.shape
    if h <= grid and w <= grid:
        return r
    gh, gw = min(h, grid), min(w, grid)
    if h % gh == 0 and w % gw == 0:
        return r.reshape(b, gh, h // gh, gw, w // gw).sum((2, 4))
    # Area weights: a pixel split by a cell border gives each cell its overlap, so every pixel counts once
    # (adaptive pooling's windows overlap: a pixel counted 0.56-2.25 times at 48 → 32).
    a_h = _area_weights(h, gh, r)
    a_w = _area_weights(w, gw, r)
    return torch.einsum("ih,bhw,jw->bij", a_h, r, a_w)


def _area_weights(n: int, cells: int, like: torch.Tensor) -> torch.Tensor:
    """``(cells, n)``: the length of pixel ``p``'s interval ``[p, p+1)`` inside cell ``i``'s interval
    ``[i·n/cells, (i+1)·n/cells)``; every column sums to 1."""
    edges = torch.arange(cells + 1, dtype=torch.float64) * (n / cells)
    px = torch.arange(n, dtype=torch.float64)
    lo = torch.maximum(edges[:-1, None], px[None, :])
    hi = torch.minimum(edges[1:, None], px[None, :] + 1)
    return (hi - lo).clamp(min=0).to(dtype=like.dtype, device=like.device)


#: Heatmaps are stored as float16: beyond this magnitude they would become inf.
FLOAT16_MAX = 65504.0


def _stored_maps(pooled: torch.Tensor) -> np.ndarray:
    """``pooled`` ``(B, h, w)`` as the float16 the cache stores, or why it cannot be stored.

    Raises
    ------
    ModelError
        A value beyond float16's range (the maps would be inf). Maps that round to zero are warned about.
    """
    peak = pooled.abs().flatten(1).amax(1)
    if bool((peak > FLOAT16_MAX).any()):
        raise ModelError(
            f"Relevance values up to {float(peak.max()):.3g} exceed float16's range ({FLOAT16_MAX:g}), in which "
            "heatmaps are stored: the model's logits are far larger than a trained classifier's. Check the "
            "checkpoint and the normalisation (data.transform)."
        )
    half = pooled.to(torch.float16)
    lost = int(((peak > 0) & (half.flatten(1).abs().amax(1) == 0)).sum())
    if lost:
        log.warning(
            "%d relevance maps of a batch round to exactly 0 in float16 storage (their values are below 6e-8): "
            "the model's logits are tiny, as with untrained weights; such maps carry no evidence.",
            lost,
        )
    return half.cpu().numpy()


@dataclass
class ShardPlan:
    """Contiguous index ranges of the dataset, and which of them this rank handles."""

    starts: list[int]
    size: int
    n: int

    @classmethod
    def make(cls, n: int, shard_size: int) -> ShardPlan:
        return cls(list(range(0, n, shard_size)), shard_size, n)

    def for_rank(self, rank: int, world_size: int) -> list[int]:
        return self.starts[rank::world_size]

    def indices(self, start: int) -> list[int]:
        return list(range(start, min(start + self.size, self.n)))


@dataclass
class BatchStageResult:
    """What the batch stage produced for the whole dataset (in dataset order).

    Attributes
    ----------
    batch : AttributionBatch
        All readable samples.
    thumbs : np.ndarray | None
        ``(N, t, t, 3)`` uint8 thumbnails aligned with ``batch``.
    skipped : list[SkippedSample]
        Unreadable samples with reasons.
    n_computed, n_cached : int
        Samples explained in this run vs taken from the cache.
    """

    batch: AttributionBatch
    thumbs: np.ndarray | None
    skipped: list[SkippedSample]
    n_computed: int
    n_cached: int
    full_relevance: np.ndarray | None = None


@dataclass
class _Explained:
    """Samples of one shard explained in this run, accumulated batch by batch."""

    sample_ids: list[str] = field(default_factory=list)
    content_hashes: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    relevance: list[np.ndarray] = field(default_factory=list)
    probabilities: list[np.ndarray] = field(default_factory=list)
    predictions: list[np.ndarray] = field(default_factory=list)
    targets: list[np.ndarray] = field(default_factory=list)
    thumbs: list[np.ndarray] = field(default_factory=list)
    full: list[np.ndarray] = field(default_factory=list)
    concepts: list[np.ndarray] = field(default_factory=list)

    def batch(self) -> AttributionBatch:
        return AttributionBatch(
            sample_ids=self.sample_ids,
            labels=np.asarray(self.labels, dtype=np.int64),
            predictions=np.concatenate(self.predictions),
            probabilities=np.concatenate(self.probabilities),
            relevance=np.concatenate(self.relevance),
            targets=np.concatenate(self.targets),
            content_hashes=self.content_hashes,
            concepts=np.concatenate(self.concepts) if self.concepts else None,
        )


@dataclass
class _ShardState:
    """What one shard has accumulated so far: every readable sample, and the newly explained ones."""

    start: int
    sample_ids: list[str] = field(default_factory=list)
    content_hashes: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    skipped: list[SkippedSample] = field(default_factory=list)
    new: _Explained = field(default_factory=_Explained)

    def manifest(self) -> dict[str, Any]:
        """The shard manifest (``manifest-<start>.json``)."""
        return {
            "start": self.start,
            "sample_ids": self.sample_ids,
            "content_hashes": self.content_hashes,
            "labels": self.labels,
            "skipped": [[s.sample_id, s.reason] for s in self.skipped],
        }


@contextmanager
def _restore_known_hashes(dataset: AuditDataset) -> Iterator[None]:
    try:
        yield
    finally:
        dataset.known_hashes = frozenset()


def _nan_logits(rows: list[int], sample_ids: list[str] | None) -> ModelError:
    """The error for batch ``rows`` with NaN/inf logits, naming their samples when the ids are known."""
    which = [sample_ids[i] for i in rows[:5]] if sample_ids is not None else rows[:5]
    return ModelError(
        f"The model produced NaN/inf logits during the batch stage for {len(rows)} sample(s), e.g. {which}; "
        "check those inputs (data.transform) and the weights."
    )


class BatchStage:
    """Runs LRP over a dataset with caching.

    Parameters
    ----------
    explainer : callable
        A :class:`spray.lrp.Explainer` (``explainer(x, target=..., labels=...) -> LRPResult``).
    cfg : AuditConfig
        The audit config (``batch`` and ``lrp`` sections are used).
    cache : ShardCache
        Where finished shards go.
    work_dir : Path
        Per-run folder for shard manifests (ids, hashes, labels, skipped).
    device : torch.device
        Compute device.
    """

    def __init__(
        self, explainer: Any, cfg: AuditConfig, cache: ShardCache, work_dir: Path, device: torch.device
    ) -> None:
        self.explainer = explainer
        self.cfg = cfg
        self.cache = cache
        self.work_dir = work_dir
        self.device = device
        # Per-run counters for the log and the benchmark: shards whose every sample came from the cache
        # (finished by an earlier, possibly killed, run) vs shards that needed the device.
        self.shards_reused = 0
        self.shards_computed = 0
        self.n_computed = 0
        self.n_skipped = 0  # unreadable samples met by this process (neither computed nor cached)
        self._cached: frozenset[str] = frozenset()  # the cache's keys when run_shards started
        with translate_write_errors(work_dir):
            work_dir.mkdir(parents=True, exist_ok=True)

    def _explain(
        self, x: torch.Tensor, labels: torch.Tensor, sample_ids: list[str] | None = None
    ) -> tuple[np.ndarray, ...]:
        x = x.to(self.device, non_blocking=True)
        try:
            res = self.explainer(x, target=self.cfg.lrp.target, labels=labels.to(self.device))
        except ModelError as err:
            bad = getattr(err, "rows", None)
            if sample_ids is None or bad is None:
                raise
            raise _nan_logits(bad, sample_ids) from None  # the explainer knows batch rows only
        if not torch.isfinite(res.logits).all():
            raise _nan_logits(
                torch.nonzero(~torch.isfinite(res.logits).all(dim=1)).flatten().tolist(), sample_ids
            )
        rel = res.relevance
        if not torch.isfinite(rel).all():
            raise ModelError(
                "LRP produced NaN/inf relevance. Try a larger epsilon (lrp.composite_kwargs.epsilon) or fp32 precision."
            )
        pooled = pool_relevance(rel, self.cfg.batch.grid)
        half = _stored_maps(pooled)
        probs = torch.softmax(res.logits.float(), dim=1)
        full = rel.to(torch.float16).cpu().numpy() if self.cfg.batch.store_full_relevance else None
        concepts = getattr(res, "concepts", None)
        return (
            half,
            probs.cpu().numpy().astype(np.float32),
            res.logits.argmax(1).cpu().numpy(),
            res.targets.cpu().numpy(),
            full,  # type: ignore[return-value]
            None if concepts is None else concepts.float().cpu().numpy(),
        )

    def _loader(self, dataset: AuditDataset, batches: list[list[int]]) -> DataLoader[Any]:
        """One loader for all of this rank's shards, so workers keep prefetching across shard borders."""
        b = self.cfg.batch
        return DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=b.num_workers,
            collate_fn=collate_samples,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    def run_shards(
        self, dataset: AuditDataset, starts: list[int], plan: ShardPlan, *, progress: bool = True
    ) -> int:
        """Process the given shards; returns the number of samples computed (not cached)."""
        # Batches never cross a shard border, so a shard's batch composition (and hence its floating-point
        # result) depends only on the dataset order: a resumed shard is recomputed bit for bit.
        bs = self.cfg.batch.batch_size
        batches: list[list[int]] = []
        owner: list[int] = []
        for start in starts:
            idx = plan.indices(start)
            for s in range(0, len(idx), bs):
                batches.append(idx[s : s + bs])
                owner.append(start)
        computed_before = self.n_computed
        pending: list[Future[Any]] = []
        bar = tqdm(total=sum(len(b) for b in batches), desc="LRP", unit="img", disable=not progress)
        shard: _ShardState | None = None
        # Samples whose bytes hash to a cached result are not decoded (set before the loader forks its
        # workers, so they see it; restored afterwards so other readers get inputs again).
        dataset.known_hashes = self.cache.content_hashes()
        # What counts as cached is fixed at the start: shards this run writes in the background must not
        # decide whether a duplicate image later in the run is explained (a race that changed the batches).
        self._cached = self.cache.keys()
        # One background writer: the device keeps computing while the previous shard is saved.
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="spray-writer") as writer,
            _restore_known_hashes(dataset),
        ):
            for bi, collated in enumerate(self._loader(dataset, batches)):
                if shard is None or shard.start != owner[bi]:
                    if shard is not None:
                        self._finish_shard(shard, writer, pending)
                    shard = _ShardState(owner[bi])
                b = dataset.finish_batch(collated)  # decodes the JPEG files left for the device, if any
                if b.x is not None:  # the analysis's paste tests load many of them again
                    dataset.input_memo.put_batch([b.indices[p] for p in b.decoded], b.x, len(dataset))
                self._take_batch(dataset, shard, b)
                bar.update(len(b.sample_ids) + len(b.skipped))
            if shard is not None:
                self._finish_shard(shard, writer, pending)
            for f in pending:
                f.result()  # surface writer errors
        bar.close()
        return self.n_computed - computed_before

    def _take_batch(self, dataset: AuditDataset, shard: _ShardState, b: SampleBatch) -> None:
        """Add one loaded batch to its shard, explaining the samples the cache does not hold."""
        shard.skipped.extend(b.skipped)
        self.n_skipped += len(b.skipped)
        if not b.sample_ids:
            return
        labels = b.labels.tolist()
        shard.sample_ids.extend(b.sample_ids)
        shard.content_hashes.extend(b.content_hashes)
        shard.labels.extend(labels)
        miss = [
            i
            for i, (h, lab) in enumerate(zip(b.content_hashes, labels, strict=True))
            if self.cache.key_of(h, lab) not in self._cached
        ]
        if not miss:
            return
        x, thumbs = self._inputs(dataset, b, miss)
        ids = [b.sample_ids[i] for i in miss]
        rel, prob, pred, tgt, full, concepts = self._explain(x, b.labels[torch.tensor(miss)], ids)
        new = shard.new
        new.sample_ids.extend(b.sample_ids[i] for i in miss)
        new.content_hashes.extend(b.content_hashes[i] for i in miss)
        new.labels.extend(labels[i] for i in miss)
        new.relevance.append(rel)
        new.probabilities.append(prob)
        new.predictions.append(pred)
        new.targets.append(tgt)
        if thumbs is not None:
            new.thumbs.append(thumbs)
        if full is not None:
            new.full.append(full)
        if concepts is not None:
            new.concepts.append(concepts)

    @staticmethod
    def _inputs(
        dataset: AuditDataset, b: SampleBatch, miss: list[int]
    ) -> tuple[torch.Tensor, np.ndarray | None]:
        """Inputs and thumbnails of the samples to explain (positions ``miss`` of the batch)."""
        row = {pos: r for r, pos in enumerate(b.decoded)}
        if b.x is not None and all(i in row for i in miss):
            rows = [row[i] for i in miss]
            # Usually every decoded row is a miss, in order: then the (pinned) batch goes to the device as
            # it is. Indexing would copy it into unpinned memory first (at 128×224² a 77 MB copy, and a
            # synchronous host-to-device transfer).
            x = b.x if rows == list(range(len(b.x))) else b.x[torch.tensor(rows)]
            return x, None if b.thumbnails is None else b.thumbnails[rows]
        # Some miss was not decoded: its bytes are cached under another label only (rare; decode it here).
        xs, ths = [], []
        for i in miss:
            if b.x is not None and i in row:
                xs.append(b.x[row[i]])
                ths.append(None if b.thumbnails is None else b.thumbnails[row[i]])
            else:
                # its bytes are cached, but under another label (the same image in another class folder)
                xi, ti = dataset.decode(b.indices[i])
                xs.append(xi)
                ths.append(ti)
        thumbs = None if any(t is None for t in ths) else np.stack(ths)  # type: ignore[arg-type]
        return torch.stack(xs), thumbs

    def _finish_shard(
        self, shard: _ShardState, writer: ThreadPoolExecutor, pending: list[Future[Any]]
    ) -> None:
        """Hand a finished shard (its new samples, then its manifest) to the background writer."""
        new = shard.new
        n_new = len(new.sample_ids)
        if n_new:
            self.shards_computed += 1
            self.n_computed += n_new
            thumbs = np.concatenate(new.thumbs) if self.cfg.batch.thumbnails and new.thumbs else None
            full_arr = np.concatenate(new.full) if new.full else None
            pending.append(
                writer.submit(
                    self._write_shard,
                    shard.start,
                    new.batch(),
                    thumbs,
                    full_arr,
                    len(shard.sample_ids) - n_new,
                )
            )
        else:
            self.shards_reused += 1
            log.info(
                "shard %d: all %d samples cached, not recomputed",
                shard.start,
                len(shard.sample_ids),
                extra={"shard": shard.start, "n_computed": 0, "n_cached": len(shard.sample_ids)},
            )
        # The manifest is written after its shard so a manifest never points at a missing shard.
        pending.append(writer.submit(self._write_manifest, shard.start, shard.manifest(), list(pending)))

    def _write_shard(
        self,
        start: int,
        fresh: AttributionBatch,
        thumbs: np.ndarray | None,
        full: np.ndarray | None,
        n_cached: int,
    ) -> None:
        self.cache.write(start, fresh, thumbs, full)
        # Logged only once the shard file is in place: a line "shard N written" in the log of a killed run
        # is a promise that the next run will not recompute shard N.
        log.info(
            "shard %d written: %d samples computed, %d cached",
            start,
            len(fresh),
            n_cached,
            extra={"shard": start, "n_computed": len(fresh), "n_cached": n_cached},
        )

    def _write_manifest(self, start: int, manifest: dict[str, Any], wait_for: list[Future[Any]]) -> None:
        for f in wait_for:
            f.result()
        atomic_write_json(self.work_dir / manifest_file(start), manifest)

    def _read_manifest(self, start: int) -> dict[str, Any]:
        p = self.work_dir / manifest_file(start)
        if not p.exists():
            raise RuntimeError(f"shard manifest {p} is missing: a rank did not finish its shards")
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError) as err:
            raise RunReadError(p, f"damaged shard manifest ({err}); delete it and rerun") from None

    def merge(self, plan: ShardPlan, n_computed: int) -> BatchStageResult:
        """Read every shard manifest (all ranks) and gather results in dataset order."""
        sample_ids: list[str] = []
        hashes: list[str] = []
        labels: list[int] = []
        skipped: list[SkippedSample] = []
        for start in plan.starts:
            m = self._read_manifest(start)
            sample_ids += m["sample_ids"]
            hashes += m["content_hashes"]
            labels += m["labels"]
            skipped += [SkippedSample(a, b) for a, b in m["skipped"]]
        if len(set(sample_ids)) != len(sample_ids):
            raise RuntimeError("duplicate sample ids after merging shards")
        if not sample_ids:
            raise ModelError("No sample of the dataset could be read; see the skipped list for the reasons.")
        # Other ranks wrote shards this process has not indexed yet.
        self.cache.refresh()
        label_arr = np.asarray(labels, dtype=np.int64)
        batch, thumbs = self.cache.gather(sample_ids, hashes, label_arr)
        full = self.cache.gather_full(hashes, label_arr) if self.cfg.batch.store_full_relevance else None
        self.cache.release()
        return BatchStageResult(
            batch,
            thumbs if self.cfg.batch.thumbnails else None,
            skipped,
            n_computed,
            len(sample_ids) - n_computed,
            full,
        )


def audit_explainer(
    cfg: AuditConfig, model: nn.Module, dataset: AuditDataset, device: torch.device
) -> Explainer:
    """The LRP explainer the audit explains with (also ``spray init``'s check of one batch)."""
    from spray.correct.relevance import composite_kwargs
    from spray.lrp import Explainer

    return Explainer(
        model,
        cfg.lrp.composite,
        composite_kwargs=composite_kwargs(cfg.lrp, dataset.transform.input_bounds()),
        canonize=cfg.lrp.canonize,
        device=device,
        precision=cfg.lrp.precision,
        elementwise=cfg.lrp.elementwise,
        concept_layer=cfg.lrp.concept_layer,
    )

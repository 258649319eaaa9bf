"""The audit, end to end: dataset → heatmaps → spectral clusters → ranked findings → published run.

Python API::

    from spray.config import load_config
    from spray.audit import run_audit
    report = run_audit(load_config("configs/my_audit.yaml"))
    for f in report.findings[:5]:
        print(f.class_name, f.size, f.score, f.evidence)

The run id is a content hash of the model weights, the data fingerprint, every config section that can
change the result, and the code version: running the same audit twice is a no-op that returns the
published report.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

import spray
from spray.analysis.scoring import (
    InterventionProbe,
    rank_findings,
    sample_suspicion,
    score_class,
    stable_order,
)
from spray.attribution import BatchStage, BatchStageResult, ShardPlan, resolve_device
from spray.config import AuditConfig
from spray.data import AuditDataset, build_dataset, collate_samples
from spray.errors import ConfigError, DataError, LockedError, SprayError
from spray.models import build_model, check_model_output, model_hash
from spray.records import (
    AuditReport,
    ClassAnalysis,
    ClusterFinding,
    ClusteringResult,
    SkippedSample,
    SpectralResult,
)
from spray.runs.locking import RunLock
from spray.runs.storage import (
    CACHE_DIR,
    LAYOUT_VERSION,
    SUMMARY,
    PasteCache,
    ShardCache,
    atomic_save_npy,
    atomic_save_npz,
    atomic_write_json,
    clean_staging,
    find_run,
    prune_cache,
    prune_runs,
    publish,
    staging_dir,
    work_dir,
)

log = logging.getLogger(__name__)

CODE_VERSION = f"spray-{spray.__version__}-layout{LAYOUT_VERSION}"

# Config sections that change the result (output/nightly only change where and how it is published).
RESULT_SECTIONS = ("model", "data", "lrp", "batch", "analysis", "scoring")

# What the current run is doing, for log records: ``run_id`` (first 16 hex digits) and ``stage``.
# A module-level dict rather than a contextvar because the background shard writer logs from its own
# thread; one process runs one audit at a time (the runs-directory lock guarantees it).
RUN_CONTEXT: dict[str, Any] = {}


def set_stage(stage: str, **fields: Any) -> None:
    """Record the stage the audit is in (``setup``, ``check``, ``batch``, ``merge``, ``analysis``,
    ``compare``, ``write``, ``publish``, ``done``) so that every later log record carries it."""
    RUN_CONTEXT["stage"] = stage
    RUN_CONTEXT.update(fields)


class RunContextFilter(logging.Filter):
    """Logging filter that stamps every record with :data:`RUN_CONTEXT` (``run_id``, ``stage``).

    Install it on a handler (``handler.addFilter(RunContextFilter())``); JSON formatters then emit the
    fields. Attributes a record already has (``extra=...``) win.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in RUN_CONTEXT.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


# Called with the finished report (changes since the last run go into ``report.extra``) before any
# file of the run is written, so summary.json and report.html include what it adds.
BeforeWrite = Callable[[AuditReport], None]


# ---------------------------------------------------------------------------------------------------------
# Analysis of one class


def analyze_class(
    class_index: int,
    class_name: str,
    sample_ids: list[str],
    relevance: np.ndarray,
    cfg: AuditConfig,
    *,
    probe: InterventionProbe | None = None,
) -> ClassAnalysis:
    """Spectral relevance analysis of one class.

    Parameters
    ----------
    class_index, class_name
        The class.
    sample_ids : list[str]
        Ids of the ``n`` members, in row order.
    relevance : np.ndarray
        ``(n, h, w)`` pooled relevance (any float dtype).
    cfg : AuditConfig
        ``analysis``, ``scoring`` and ``seed`` are used.
    probe : InterventionProbe, optional
        Enables the paste test on the leading candidates.

    Returns
    -------
    ClassAnalysis
        Spectrum, every labelling, 2-D map and scored clusters (most suspicious first).
    """
    # Imported here, not at module level: scikit-learn and friends cost seconds to import, and the
    # up-to-date path of a scheduled run should answer at once without them.
    from spray.analysis.clustering import cluster_sweep
    from spray.analysis.embedding import embed_2d
    from spray.analysis.preprocess import normalize_heatmaps, reduce_dimension
    from spray.analysis.spectral import spectral_embedding

    a = cfg.analysis
    rel = np.asarray(relevance, dtype=np.float32)
    maps_flat = normalize_heatmaps(rel, absolute=False)
    # The clustering features differ from the signed maps only with abs or blur: don't normalise twice.
    if a.absolute or a.blur_sigma > 0:
        features = normalize_heatmaps(rel, absolute=a.absolute, blur_sigma=a.blur_sigma)
    else:
        features = maps_flat
    maps = maps_flat.reshape(rel.shape)
    reduced = reduce_dimension(features, n_components=a.pca_components, seed=cfg.seed)
    spectral = spectral_embedding(
        reduced, n_neighbors=a.n_neighbors, n_eigenvectors=a.n_eigenvectors, seed=cfg.seed
    )
    clustering = cluster_sweep(spectral, k_max=a.k_max, seed=cfg.seed)
    embedding = embed_2d(reduced, spectral, method=a.embedding, seed=cfg.seed, n_epochs=a.map_epochs)
    clusters = score_class(
        class_index,
        class_name,
        sample_ids,
        maps,
        spectral,
        clustering,
        config=cfg.scoring,
        probe=probe if cfg.scoring.intervention else None,
        seed=cfg.seed,
    )
    return ClassAnalysis(
        class_index=class_index,
        class_name=class_name,
        sample_ids=list(sample_ids),
        spectral=spectral,
        clustering=clustering,
        embedding=np.asarray(embedding, dtype=np.float32),
        embedding_method=a.embedding,
        clusters=clusters,
        sample_suspicion=sample_suspicion(maps, clusters, list(sample_ids)),
    )


# ---------------------------------------------------------------------------------------------------------
# Hashes


def data_fingerprint(cfg: AuditConfig, dataset: AuditDataset) -> str:
    """A cheap fingerprint of the dataset content that changes whenever a sample changes.

    IDX: the files' bytes. Image folder: every file's relative path, size and mtime. Factory: the
    dataset's own ``fingerprint`` attribute if it has one, else a content hash of every sample.
    """
    h = hashlib.sha256()
    d = cfg.data
    h.update(json.dumps({"kind": d.kind, "limit": d.limit, "n": len(dataset)}).encode())
    if d.kind == "idx":
        for p in (d.images, d.labels):
            assert p is not None
            h.update(Path(p).read_bytes())
    elif d.kind == "image_folder":
        assert d.path is not None
        root = Path(d.path)
        for sid in dataset.ids:
            st = (root / sid).stat()
            h.update(f"{sid}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    else:
        fp = getattr(dataset, "fingerprint", None)
        if fp is not None:
            h.update(str(fp).encode())
        else:
            for i in range(len(dataset)):
                item = dataset[i]
                h.update(f"{item['id']}\0{item.get('hash', item.get('reason'))}\n".encode())
    h.update("\n".join(dataset.class_names).encode())
    return h.hexdigest()


def lrp_hash(cfg: AuditConfig) -> str:
    """Hash of every setting that changes a sample's cached result (LRP, grid, transform, thumbnails)."""
    payload = {
        "lrp": cfg.lrp.model_dump(mode="json"),
        "grid": cfg.batch.grid,
        "transform": cfg.data.transform.model_dump(mode="json"),
        "thumbnails": [cfg.batch.thumbnails, cfg.batch.thumbnail_size],
        "full": cfg.batch.store_full_relevance,
        "code": CODE_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def compute_run_id(hashes: dict[str, str]) -> str:
    """The run id: a hash of model, data, config and code hashes."""
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------
# Distributed helpers (torchrun)


@dataclass
class DistContext:
    """Rank and world size; ``world_size == 1`` outside torchrun."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_errors(self, err: BaseException | None) -> None:
        """Collective check after a step that may fail on some ranks only.

        Every rank passes its own error (or None); if any rank failed, every rank raises, so no rank
        is left waiting in a later collective for a peer that has given up.
        """
        if self.world_size == 1:
            if err is not None:
                raise err
            return
        msgs: list[Any] = [None] * self.world_size
        mine = None if err is None else (type(err).__name__, str(err), getattr(err, "exit_code", 1))
        dist.all_gather_object(msgs, mine)
        if err is not None:
            raise err
        for rank, m in enumerate(msgs):
            if m is not None:
                e = SprayError(f"rank {rank} failed: {m[0]}: {m[1]}")
                e.exit_code = int(m[2])
                raise e


def dist_context(device: torch.device) -> DistContext:
    """Join the torchrun process group if launched under torchrun (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size())


# ---------------------------------------------------------------------------------------------------------
# Serialisation


def finding_to_dict(f: ClusterFinding, *, rank: int | None = None) -> dict[str, Any]:
    """JSON form of a finding (the mean heatmap lives in classes/<c>.npz, not in JSON)."""
    d: dict[str, Any] = {
        "key": f.key,
        "class_index": f.class_index,
        "class_name": f.class_name,
        "k": f.k,
        "cluster_id": f.cluster_id,
        "size": f.size,
        "fraction": round(float(f.fraction), 6),
        "score": round(float(f.score), 6),
        "suspicious": bool(f.suspicious),
        "evidence": list(f.evidence),
        "signals": {k: round(float(v), 6) for k, v in f.signals.items()},
        "member_ids": list(f.member_ids),
    }
    if f.carrier_ids:
        d["carrier_ids"] = list(f.carrier_ids)
    if rank is not None:
        d["rank"] = rank
    return d


def finding_from_dict(d: dict[str, Any], mean_heatmap: np.ndarray) -> ClusterFinding:
    """Inverse of :func:`finding_to_dict`."""
    return ClusterFinding(
        class_index=d["class_index"],
        class_name=d["class_name"],
        cluster_id=d["cluster_id"],
        k=d["k"],
        size=d["size"],
        fraction=d["fraction"],
        score=d["score"],
        suspicious=d["suspicious"],
        evidence=d["evidence"],
        signals=d["signals"],
        member_ids=d["member_ids"],
        mean_heatmap=mean_heatmap,
        carrier_ids=d.get("carrier_ids", []),
    )


def _class_summary(ca: ClassAnalysis) -> dict[str, Any]:
    cl = ca.clustering
    return {
        "class_index": ca.class_index,
        "class_name": ca.class_name,
        "n": len(ca.sample_ids),
        "eigenvalues": [round(float(v), 8) for v in ca.spectral.eigenvalues],
        "n_components": ca.spectral.n_components,
        "chosen_k": cl.chosen_k,
        "eigengap_k": cl.eigengap_k,
        "k_scores": {str(k): {n: round(float(v), 6) for n, v in s.items()} for k, s in cl.scores.items()},
        "embedding_method": ca.embedding_method,
        "clusters": [finding_to_dict(f) for f in ca.clusters],
    }


def write_run(
    out: Path,
    report: AuditReport,
    stage: BatchStageResult,
    class_names: list[str],
) -> None:
    """Write every file of a run into the (staging) folder ``out``."""
    import pandas as pd

    batch = stage.batch
    n = len(batch)
    row_of = {sid: i for i, sid in enumerate(batch.sample_ids)}
    cluster = np.full(n, -1, dtype=np.int32)
    xy = np.full((n, 2), np.nan, dtype=np.float32)
    score = np.zeros(n, dtype=np.float32)
    (out / "classes").mkdir(parents=True, exist_ok=True)
    for ca in report.classes:
        rows = np.asarray([row_of[s] for s in ca.sample_ids], dtype=np.int64)
        labels_k = ca.clustering.labellings[ca.clustering.chosen_k]
        cluster[rows] = labels_k
        xy[rows] = ca.embedding
        if len(ca.sample_suspicion) == len(rows):
            score[rows] = ca.sample_suspicion
        else:
            for f in ca.clusters:
                if f.k == ca.clustering.chosen_k:
                    score[rows[labels_k == f.cluster_id]] = f.score
        arrays: dict[str, np.ndarray] = {
            "rows": rows,
            "eigenvalues": ca.spectral.eigenvalues,
            "eigenvectors": ca.spectral.eigenvectors.astype(np.float32),
            "embedding": ca.embedding.astype(np.float32),
            "knn_indices": ca.spectral.knn_indices.astype(np.int32),
            "cluster_keys": np.asarray([f.key for f in ca.clusters], dtype=str),
            "mean_heatmaps": np.stack([f.mean_heatmap for f in ca.clusters]).astype(np.float32)
            if ca.clusters
            else np.zeros((0, *batch.relevance.shape[1:]), np.float32),
        }
        for k, lab in ca.clustering.labellings.items():
            arrays[f"labels_k{k}"] = lab.astype(np.int32)
        atomic_save_npz(out / "classes" / f"{ca.class_index}.npz", **arrays)
    confidence = batch.probabilities[np.arange(n), batch.predictions] if n else np.zeros(0)
    table = pd.DataFrame(
        {
            "sample_id": batch.sample_ids,
            "row": np.arange(n),
            "label": batch.labels,
            "label_name": [class_names[i] if i < len(class_names) else str(i) for i in batch.labels],
            "prediction": batch.predictions,
            "prediction_name": [
                class_names[i] if i < len(class_names) else str(i) for i in batch.predictions
            ],
            "confidence": confidence.astype(np.float32),
            "target": batch.targets,
            "cluster": cluster,
            "x": xy[:, 0],
            "y": xy[:, 1],
            "score": score,
        }
    )
    table.to_parquet(out / "samples.parquet", index=False)
    atomic_save_npy(out / "heatmaps.npy", batch.relevance.astype(np.float16))
    if stage.thumbs is not None:
        atomic_save_npy(out / "thumbs.npy", stage.thumbs)
    if stage.full_relevance is not None:
        atomic_save_npy(out / "relevance_full.npy", stage.full_relevance)
    atomic_write_json(out / SUMMARY, report_to_summary(report))


def report_to_summary(report: AuditReport) -> dict[str, Any]:
    """The JSON document written as summary.json (see docs/run_layout.md)."""
    return {
        "layout_version": LAYOUT_VERSION,
        "spray_version": spray.__version__,
        "run_id": report.run_id,
        "hashes": report.hashes,
        "timings": {k: round(v, 3) if isinstance(v, float) else v for k, v in report.timings.items()},
        "skipped": [{"sample_id": s.sample_id, "reason": s.reason} for s in report.skipped],
        "classes": [_class_summary(c) for c in report.classes],
        "findings": [finding_to_dict(f, rank=i + 1) for i, f in enumerate(report.findings)],
        **report.extra,
    }


def load_report(run_dir: str | Path) -> AuditReport:
    """Rebuild the typed report of a published run from its files."""
    p = Path(run_dir)
    s = json.loads((p / SUMMARY).read_text())
    classes: list[ClassAnalysis] = []
    heat: dict[str, np.ndarray] = {}
    samples_ids: list[str] | None = None
    for c in s["classes"]:
        with np.load(p / "classes" / f"{c['class_index']}.npz", allow_pickle=False) as z:
            arr = {k: z[k] for k in z.files}
        if samples_ids is None:
            import pandas as pd

            samples_ids = pd.read_parquet(p / "samples.parquet", columns=["sample_id"])["sample_id"].tolist()
        for key, mh in zip(arr["cluster_keys"].tolist(), arr["mean_heatmaps"], strict=True):
            heat[key] = mh
        labellings = {int(k[len("labels_k") :]): v for k, v in arr.items() if k.startswith("labels_k")}
        classes.append(
            ClassAnalysis(
                class_index=c["class_index"],
                class_name=c["class_name"],
                sample_ids=[samples_ids[i] for i in arr["rows"]],
                spectral=SpectralResult(
                    eigenvalues=arr["eigenvalues"],
                    eigenvectors=arr["eigenvectors"],
                    knn_indices=arr["knn_indices"].astype(np.int64),
                    knn_distances=np.zeros(arr["knn_indices"].shape, np.float32),
                    n_components=c["n_components"],
                ),
                clustering=ClusteringResult(
                    labellings=labellings,
                    chosen_k=c["chosen_k"],
                    eigengap_k=c["eigengap_k"],
                    scores={int(k): v for k, v in c["k_scores"].items()},
                ),
                embedding=arr["embedding"],
                embedding_method=c["embedding_method"],
                clusters=[finding_from_dict(f, heat[f["key"]]) for f in c["clusters"]],
            )
        )
    known = {
        "layout_version",
        "spray_version",
        "run_id",
        "hashes",
        "timings",
        "skipped",
        "classes",
        "findings",
    }
    return AuditReport(
        run_id=s["run_id"],
        run_dir=str(p),
        hashes=s["hashes"],
        timings=s["timings"],
        skipped=[SkippedSample(x["sample_id"], x["reason"]) for x in s["skipped"]],
        classes=classes,
        findings=[finding_from_dict(f, heat[f["key"]]) for f in s["findings"]],
        extra={k: v for k, v in s.items() if k not in known},
    )


# ---------------------------------------------------------------------------------------------------------
# The audit


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0


def _first_batch(dataset: AuditDataset, n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    items = []
    for i in range(len(dataset)):
        it = dataset[i]
        if it["ok"]:
            items.append(it)
            if len(items) == n:
                break
    if not items:
        raise DataError("No sample of the dataset could be read. Check the data section of the config.")
    b = collate_samples(items)
    return b["x"], b["label"]


def _composite_kwargs(cfg: AuditConfig, dataset: AuditDataset) -> dict[str, float]:
    kw = dict(cfg.lrp.composite_kwargs)
    if "Box" in cfg.lrp.composite:
        # The box rule needs the range of the normalised input: derive it from the transform.
        low, high = dataset.transform.input_bounds()
        kw.setdefault("low", low)
        kw.setdefault("high", high)
    return kw


def _make_probe(
    model: nn.Module,
    device: torch.device,
    dataset: AuditDataset,
    stage: BatchStageResult,
    class_index: int,
    cfg: AuditConfig,
    *,
    target_order: np.ndarray,
    cache: PasteCache | None,
    index_of: dict[str, int],
    content_keys: dict[str, str],
) -> InterventionProbe | None:
    """The paste test's probe for one class.

    ``target_order`` is :func:`spray.analysis.scoring.stable_order` of every sample's content hash: the targets
    of class ``c`` are the first ``intervention_samples`` samples of other classes in that order, so new
    samples change only a few of them and the rest of the paste test comes from ``cache``.
    ``index_of`` (sample id → dataset position) and ``content_keys`` (sample id → content hash) are
    built once per run, not per class (a dict over a million samples per class adds up).
    """
    labels = stage.batch.labels
    other = target_order[labels[target_order] != class_index]
    if len(other) == 0:
        return None
    pick = other[: cfg.scoring.intervention_samples]

    @torch.no_grad()
    def predict(x: torch.Tensor) -> torch.Tensor:
        out = [model(x[s : s + 256].to(device)).argmax(1).cpu() for s in range(0, len(x), 256)]
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)

    @torch.no_grad()
    def logits(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([model(x[s : s + 256].to(device)).float().cpu() for s in range(0, len(x), 256)])

    def load_inputs(ids: list[str]) -> torch.Tensor:
        return torch.stack([dataset.load_input(index_of[sid]) for sid in ids])

    return InterventionProbe(
        predict=predict,
        load_inputs=load_inputs,
        other_ids=[stage.batch.sample_ids[i] for i in pick],
        other_labels=labels[pick],
        content_keys=content_keys,
        cache=cache,
        logits=logits,
    )


def _select_classes(cfg: AuditConfig, n_classes: int) -> list[int]:
    if cfg.analysis.classes == "all":
        return list(range(n_classes))
    bad = [c for c in cfg.analysis.classes if not 0 <= c < n_classes]
    if bad:
        raise ConfigError(
            f"analysis.classes: {bad} are not class indices of this dataset (0..{n_classes - 1})."
        )
    return list(cfg.analysis.classes)


def run_audit(
    cfg: AuditConfig,
    *,
    device: str | None = None,
    progress: bool = True,
    force: bool = False,
    before_write: BeforeWrite | None = None,
    ctx: DistContext | None = None,
) -> AuditReport:
    """Run (or reuse) the audit described by ``cfg`` and publish it under ``cfg.output.runs_dir``.

    Parameters
    ----------
    cfg : AuditConfig
        Validated config.
    device : str, optional
        Overrides ``batch.device``.
    progress : bool
        Show progress bars.
    force : bool
        Recompute the analysis even if a run with the same id is published (the cache is still used).
    before_write : callable, optional
        ``before_write(report)`` runs on rank 0 after the analysis and before any file of the run is
        written; what it adds to ``report.extra`` ends up in summary.json (the nightly job puts the
        changes since the last run there).
    ctx : DistContext, optional
        Rank and world size; joined from the torchrun environment when None.

    Returns
    -------
    AuditReport
        ``extra["up_to_date"]`` is True when an identical published run was reused. Under torchrun,
        ranks other than 0 return a report without classes after the batch stage (rank 0 merges,
        analyses and publishes).
    """
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    runs_dir = Path(cfg.output.runs_dir)
    dev = resolve_device(device or cfg.batch.device)
    torch.manual_seed(cfg.seed)
    if ctx is None:
        ctx = dist_context(dev)

    set_stage("setup")
    failure: SprayError | None = None
    try:
        with _timed(timings, "setup_s"):
            dataset = build_dataset(cfg.data, thumbnail_size=cfg.batch.thumbnail_size)
            model = build_model(cfg.model).to(dev)
            x0, _ = _first_batch(dataset)
            k_out = check_model_output(model, x0.to(dev), len(dataset.class_names))
            if max(dataset.labels) >= k_out:
                raise DataError(
                    f"The dataset has label {max(dataset.labels)} but the model has only {k_out} outputs. "
                    "Check model.num_classes and the dataset's classes."
                )
            hashes = {
                "model": model_hash(model),
                "data": data_fingerprint(cfg, dataset),
                "config": cfg.section_hash(*RESULT_SECTIONS) + f"-seed{cfg.seed}",
                "code": CODE_VERSION,
            }
            run_id = compute_run_id(hashes)
    except SprayError as err:
        failure = err
    # Setup errors are the same on every rank in practice, but a rank must never wait in a collective
    # for a peer that has already given up.
    ctx.gather_errors(failure)

    set_stage("check", run_id=run_id[:16])
    log.info("run id %s (model %s, data %s)", run_id[:16], hashes["model"][:12], hashes["data"][:12])
    # Only rank 0 looks at the runs directory and tells the others: if each rank decided for itself, a run
    # published between two ranks' checks would leave one rank waiting forever for the other.
    existing: str | None = None
    if ctx.is_main and not force:
        found = find_run(runs_dir, run_id)
        existing = None if found is None else str(found)
    existing = ctx.broadcast_object(existing)
    if existing is not None:
        log.info("run %s is already published at %s: up to date, nothing to do", run_id[:12], existing)
        set_stage("done")
        if not ctx.is_main:
            return AuditReport(
                run_id, existing, hashes, timings, [], [], [], {"rank": ctx.rank, "up_to_date": True}
            )
        report = load_report(existing)
        report.extra["up_to_date"] = True
        return report

    from spray.lrp import Explainer  # imported late: torch-heavy and not needed for the up-to-date path

    explainer = Explainer(
        model,
        cfg.lrp.composite,
        composite_kwargs=_composite_kwargs(cfg, dataset),
        canonize=cfg.lrp.canonize,
        device=dev,
        precision=cfg.lrp.precision,
    )
    cache = ShardCache(runs_dir / CACHE_DIR, hashes["model"], lrp_hash(cfg))
    wdir = work_dir(runs_dir, run_id)
    stage_runner = BatchStage(explainer, cfg, cache, wdir, dev)
    plan = ShardPlan.make(len(dataset), cfg.batch.shard_size)
    set_stage("batch")
    with _timed(timings, "batch_s"):
        mine = plan.for_rank(ctx.rank, ctx.world_size)
        log.info(
            "batch stage: %d samples in %d shards; rank %d/%d takes %d shards (%d cached samples known)",
            len(dataset),
            len(plan.starts),
            ctx.rank,
            ctx.world_size,
            len(mine),
            len(cache),
        )
        n_computed = stage_runner.run_shards(dataset, mine, plan, progress=progress and ctx.is_main)
        counts = [n_computed, stage_runner.shards_computed, stage_runner.shards_reused]
        log.info(
            "batch stage on rank %d: %d samples computed, %d taken from the cache; %d shards computed, "
            "%d shards reused",
            ctx.rank,
            n_computed,
            sum(len(plan.indices(s)) for s in mine) - n_computed,
            counts[1],
            counts[2],
            extra={"n_computed": n_computed, "shards_computed": counts[1], "shards_reused": counts[2]},
        )
        if ctx.world_size > 1:
            every: list[Any] = [None] * ctx.world_size
            dist.all_gather_object(every, counts)
            counts = [int(sum(c[i] for c in every)) for i in range(3)]
            n_computed = counts[0]
        # Every rank's shards and manifests are on disk before rank 0 merges them.
        ctx.barrier()
    if not ctx.is_main:
        # Nothing more to do here: leave now instead of idling in a barrier while rank 0 analyses (a
        # long analysis would hit the process group's timeout).
        set_stage("done")
        return AuditReport(run_id, "", hashes, timings, [], [], [], {"rank": ctx.rank})

    set_stage("merge")
    stage = stage_runner.merge(plan, n_computed)
    log.info(
        "merged %d shards: %d samples computed in this run, %d taken from the cache",
        len(plan.starts),
        stage.n_computed,
        stage.n_cached,
        extra={
            "n_samples": len(stage.batch),
            "n_computed": stage.n_computed,
            "n_cached": stage.n_cached,
            "shards_computed": counts[1],
            "shards_reused": counts[2],
        },
    )
    skipped = list(dataset.pre_skipped) + stage.skipped
    for s in skipped:
        log.warning("skipped sample %s: %s", s.sample_id, s.reason)

    set_stage("analysis")
    with _timed(timings, "analysis_s"):
        group = stage.batch.labels if cfg.analysis.group_by == "label" else stage.batch.predictions
        if cfg.analysis.embedding == "umap":
            from spray.analysis.embedding import warm_up
            from spray.analysis.spectral import EXACT_KNN_BELOW

            # Compile UMAP (and pynndescent, only if some class is large enough to use it) up front.
            largest = int(np.bincount(group).max()) if len(group) else 0
            warm_up(approximate_knn=largest >= EXACT_KNN_BELOW)
        classes: list[ClassAnalysis] = []
        too_small: list[dict[str, Any]] = []
        paste_cache: PasteCache | None = None
        target_order = np.zeros(0, dtype=np.int64)
        index_of: dict[str, int] = {}
        content_keys: dict[str, str] = {}
        if cfg.scoring.intervention:
            paste_cache = PasteCache(cache.dir)
            target_order = stable_order(stage.batch.content_hashes, f"target|{cfg.seed}")
            index_of = {sid: i for i, sid in enumerate(dataset.ids)}
            content_keys = dict(zip(stage.batch.sample_ids, stage.batch.content_hashes, strict=True))
        for c in _select_classes(cfg, len(dataset.class_names)):
            rows = np.flatnonzero(group == c)
            name = dataset.class_names[c]
            if len(rows) < cfg.analysis.min_class_size:
                too_small.append({"class_index": c, "class_name": name, "n": len(rows)})
                log.warning("class %s has %d samples (< analysis.min_class_size): skipped", name, len(rows))
                continue
            log.info("analysing class %d (%s): %d samples", c, name, len(rows))
            probe = (
                _make_probe(
                    model,
                    dev,
                    dataset,
                    stage,
                    c,
                    cfg,
                    target_order=target_order,
                    cache=paste_cache,
                    index_of=index_of,
                    content_keys=content_keys,
                )
                if cfg.scoring.intervention
                else None
            )
            classes.append(
                analyze_class(
                    c,
                    name,
                    [stage.batch.sample_ids[i] for i in rows],
                    stage.batch.relevance[rows],
                    cfg,
                    probe=probe,
                )
            )
        findings = rank_findings([ca.clusters for ca in classes], cfg.scoring)
        if paste_cache is not None:
            log.info(
                "paste test: %d pasted images predicted, %d taken from the cache",
                paste_cache.misses,
                paste_cache.hits,
                extra={"n_paste_computed": paste_cache.misses, "n_paste_cached": paste_cache.hits},
            )
            paste_cache.close()

    timings["total_s"] = time.perf_counter() - t_start
    report = AuditReport(
        run_id=run_id,
        run_dir="",
        hashes=hashes,
        timings=timings,
        skipped=skipped,
        classes=classes,
        findings=findings,
        extra={
            "name": cfg.name,
            "dataset": cfg.dataset_key(),
            "n_samples": len(stage.batch),
            "classes_skipped": too_small,
            "class_names": dataset.class_names,
            # The cache directory (model and LRP settings) this run's heatmaps came from: cache
            # retention keeps the directories of kept runs only.
            "cache": cache.dir.name,
        },
    )
    # What varies between runs of the same inputs (clock, device, cache hits) lives under "timings", so
    # two runs with the same inputs and seed give summaries that are identical except for "timings".
    report.timings.update(
        {
            "n_computed": stage.n_computed,
            "n_cached": stage.n_cached,
            "shards_computed": counts[1],
            "shards_reused": counts[2],
            "device": str(dev),
            "world_size": ctx.world_size,
        }
    )
    if before_write is not None:
        set_stage("compare")
        before_write(report)

    set_stage("write")
    staged = staging_dir(runs_dir, run_id)
    write_run(staged, report, stage, dataset.class_names)
    if cfg.output.html_report:
        from spray.html_report import write_html_report

        write_html_report(staged)

    set_stage("publish")
    final = publish(runs_dir, staged, run_id)
    report.run_dir = str(final)
    prune_runs(runs_dir, cfg.output.keep_runs)
    prune_cache(runs_dir, cache.dir.name)
    # The manifests only serve a resume of this run id, which is now published.
    shutil.rmtree(wdir, ignore_errors=True)
    set_stage("done")
    return report


def audit(
    cfg: AuditConfig,
    *,
    device: str | None = None,
    progress: bool = True,
    force: bool = False,
    before_write: BeforeWrite | None = None,
) -> AuditReport:
    """Take the runs-directory lock, then :func:`run_audit` (the CLI's entry point).

    Under torchrun only rank 0 takes the lock and broadcasts the outcome, so that when another run holds
    it every rank raises :class:`~spray.errors.LockedError` (exit 75) instead of the other ranks waiting
    forever for rank 0.

    Raises
    ------
    LockedError
        Another run holds the lock; nothing was touched.
    """
    runs_dir = Path(cfg.output.runs_dir)
    dev = resolve_device(device or cfg.batch.device)
    ctx = dist_context(dev)
    if ctx.world_size > 1:
        RUN_CONTEXT["rank"] = ctx.rank
    lock = RunLock(runs_dir)
    held = False
    outcome: tuple[str, str] = ("ok", "")
    if ctx.is_main:
        try:
            lock.__enter__()
            held = True
        except LockedError as err:
            outcome = ("locked", str(err))
    outcome = ctx.broadcast_object(outcome)
    if outcome[0] == "locked":
        raise LockedError(outcome[1])
    try:
        if ctx.is_main:
            clean_staging(runs_dir)
        return run_audit(
            cfg, device=device, progress=progress, force=force, before_write=before_write, ctx=ctx
        )
    finally:
        if held:
            lock.__exit__(None, None, None)

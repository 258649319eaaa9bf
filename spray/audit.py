"""The audit, end to end: dataset → heatmaps → spectral clusters → ranked findings → published run.

Python API::

    from spray import load_config, run_audit, load_report
    report = run_audit(load_config("configs/my_audit.yaml"))
    for f in report.findings[:5]:
        print(f.class_name, f.size, f.score, f.evidence)
    again = load_report(report.run_dir)        # the same report, read back from the run folder

:func:`run_audit` reads as its phases: setup (dataset, model, run id), the up-to-date check, the batch
stage (:mod:`spray.attribution`), the analysis (:mod:`spray.analysis_stage`) and publishing
(:mod:`spray.runs`). The run id is a content hash of the model weights, the data fingerprint, every
config section that can change the result and the code versions (:mod:`spray.versions`): running the
same audit twice is a no-op that returns the published report.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spray.accuracy import model_accuracy, recorded_problems
from spray.analysis_shards import AnalysisInputs, content_order
from spray.analysis_stage import AnalysisResult, analyze_run
from spray.attribution import BatchStage, BatchStageResult, ShardPlan, audit_explainer, resolve_device
from spray.concept_maps import conditional_maps
from spray.config import AuditConfig
from spray.config.audit import pixel_only_reason
from spray.conservation import measure as measure_conservation
from spray.copies import find_copies
from spray.data import AuditDataset, build_dataset
from spray.data.jpeg import resolve_decode_device
from spray.data.memo import InputMemo
from spray.distributed import DistContext, dist_context
from spray.errors import ConfigError, DataError, LockedError, SprayError
from spray.export.source import CORRECTED_FACTORY
from spray.heatmap_contrast import heatmap_contrast
from spray.label_conflicts import find_label_conflicts
from spray.model_output import check_model_output
from spray.models import build_model, model_hash
from spray.records import AttributionBatch, AuditReport
from spray.runlog import RUN_CONTEXT, set_stage
from spray.runs.cache import ShardCache
from spray.runs.errors import RunReadError, RunWriteError
from spray.runs.identity import (
    cache_dir_name,
    check_unchanged,
    compute_run_id,
    data_fingerprint,
    order_digest,
    run_hashes,
)
from spray.runs.layout import RunsFolder
from spray.runs.locking import RunLock
from spray.runs.publish import (
    check_runs_dir,
    clean_staging,
    find_run,
    newer_run,
    prune_cache,
    prune_runs,
    publish,
    read_only_reason,
    staging_dir,
)
from spray.runs.reader import read_report
from spray.runs.upkeep import check_flags, check_run_arrays, up_to_date_upkeep, warn_settings_kept
from spray.runs.writer import write_run
from spray.versions import version_stamp

log = logging.getLogger(__name__)
#: Skipped samples named one per log line; the rest are counted in one line (all are in summary.json).
SKIPPED_LOGGED = 10

#: Called with the finished report before any file of the run is written, so what it sets (the nightly
#: job's ``report.changes``) is in summary.json and report.html.
BeforeWrite = Callable[[AuditReport], None]

#: ``spray.load_report(run_dir)``: the typed report of a published run.
load_report = read_report


@dataclass
class _Setup:
    """What the setup phase built: the dataset, the model and the run's identity."""

    dataset: AuditDataset
    model: nn.Module
    hashes: dict[str, str]
    run_id: str
    #: the content hash each sample entered the data fingerprint with (image folders, hashed factories)
    contents: dict[str, str] = field(default_factory=dict)


@dataclass
class _Batched:
    """What the batch stage left: its runner (for the merge), the cache and the counts of all ranks."""

    runner: BatchStage
    plan: ShardPlan
    cache: ShardCache
    n_computed: int
    shards_computed: int
    shards_reused: int
    n_device_decoded: int


class _Clock:
    """Seconds per phase, for ``summary.json`` → ``timings``."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.timings: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0


def run_audit(
    cfg: AuditConfig,
    *,
    device: str | None = None,
    progress: bool = True,
    force: bool = False,
    before_write: BeforeWrite | None = None,
    ctx: DistContext | None = None,
    read_only: bool = False,
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
        written (the nightly job sets ``report.changes``).
    ctx : DistContext, optional
        Rank and world size; joined from the torchrun environment when None.
    read_only : bool
        The runs directory cannot be written: only answer whether the run is already published.

    Returns
    -------
    AuditReport
        ``up_to_date`` is True when an identical published run was reused. Under torchrun, ranks other
        than 0 return a report without classes after their share of the analysis (rank 0 merges the
        batch stage, gathers the analysis and publishes).

    Raises
    ------
    RunWriteError
        ``read_only`` and the run is not published yet.
    """
    clock = _Clock()
    dev = resolve_device(device or cfg.batch.device)
    cfg = _with_decoder(cfg, dev)
    torch.manual_seed(cfg.seed)
    ctx = ctx or dist_context(dev, cfg.batch.dist_timeout_s)
    setup = _setup(cfg, dev, ctx, clock)
    published = _published_run(cfg, setup.run_id, ctx, force)
    if published is not None:
        return _up_to_date(cfg, published, setup, ctx, clock, read_only=read_only)
    if read_only:
        mine = {"name": cfg.audit_name(), "dataset": cfg.dataset_key()}
        raise RunWriteError(cfg.output.runs_dir, read_only_reason(cfg.output.runs_dir, setup.run_id, **mine))
    batched = _batch_stage(cfg, setup, dev, ctx, clock, progress)
    set_stage("merge")
    stage, inputs = _merge(batched, ctx, setup.contents, files=cfg.data.kind == "image_folder")
    set_stage("analysis")
    with clock.phase("analysis_s"):
        analysis = analyze_run(
            cfg, setup.model, dev, setup.dataset, inputs, batched.cache.dir, ctx=ctx,
            explainer=batched.runner.explainer,
        )  # fmt: skip
    if analysis is None or stage is None:
        # Ranks other than 0 have handed their classes to rank 0, which publishes the run.
        set_stage("done")
        return _empty_report(setup, clock, rank=ctx.rank)
    with clock.phase("concept_maps_s"):
        maps = conditional_maps(
            analysis.findings, batched.runner.explainer, setup.dataset, stage.batch, cfg, progress=progress
        )
    report = _report(cfg, setup, stage, analysis, batched, clock, dev, ctx)
    report.conditional_maps = maps
    if before_write is not None:
        set_stage("compare")
        before_write(report)
    return _publish(cfg, report, stage, batched)


def _setup(cfg: AuditConfig, dev: torch.device, ctx: DistContext, clock: _Clock) -> _Setup:
    """Build the dataset and the model, check they fit, and hash them into the run id (every rank)."""
    set_stage("setup")
    failure: SprayError | None = None
    setup: _Setup | None = None
    model_id = ""
    try:
        with clock.phase("setup_s"):
            jpeg_device = (dev if dev.type == "cuda" else torch.device("cuda")) if _on_gpu(cfg) else None
            dataset = build_dataset(
                cfg.data, thumbnail_size=cfg.batch.thumbnail_size, jpeg_device=jpeg_device
            )
            model = build_model(cfg.model).to(dev)
            dataset.match_model(model)
            dataset.input_memo = InputMemo(cfg.batch.input_memory_mb * 2**20)
            x0 = _first_inputs(dataset)
            k_out = check_model_output(model, x0.to(dev), len(dataset.class_names), dataset.empty_classes)
            cfg.check_class_count(len(dataset.class_names), k_out)
            if max(dataset.labels) >= k_out:
                raise DataError(
                    f"The dataset has label {max(dataset.labels)} but the model has only {k_out} outputs. "
                    "Check model.num_classes and the dataset's classes."
                )
            model_id = model_hash(model, cfg.model.factory, cfg.factory_dirs)
            setup = _Setup(dataset, model, {}, "")  # its identity once every rank has set up (below)
    except SprayError as err:
        failure = err
    # Setup errors are the same on every rank in practice, but a rank must never wait in a collective
    # for a peer that has already given up.
    ctx.gather_errors(failure)
    assert setup is not None
    # rank 0 reads a copied folder's files first, the others find their hashes in the runs folder's memo
    with clock.phase("setup_s"), ctx.main_first(cfg.data.kind == "image_folder"):
        setup.hashes = run_hashes(cfg, model_id, data_fingerprint(cfg, setup.dataset, setup.contents))
    setup.run_id = compute_run_id(setup.hashes)
    # ranks that read other files, or the same in another order, would each explain their shards of another run
    ctx.check_same(setup.hashes, order=lambda: order_digest(setup.dataset))
    set_stage("check", run_id=setup.run_id[:16])
    h = setup.hashes
    log.info("run id %s (model %s, data %s)", setup.run_id[:16], h["model"][:12], h["data"][:12])
    pixel_only = pixel_only_reason(cfg.model_dump(mode="json"))
    if pixel_only and ctx.is_main:
        log.info("concept space off (%s): pixel space only", pixel_only)
    return setup


def _with_decoder(cfg: AuditConfig, dev: torch.device) -> AuditConfig:
    """``cfg`` with ``data.transform.decode_device`` resolved (``auto`` → ``cpu`` or ``cuda``), so that
    the run id, the heatmap cache key and the recorded config name the decoder actually used."""
    t = cfg.data.transform
    resolved = resolve_decode_device(t.decode_device, cfg.data.kind, dev)
    if resolved == t.decode_device:
        return cfg
    out = cfg.model_copy(deep=True)
    out.data.transform.decode_device = resolved
    return out


def _on_gpu(cfg: AuditConfig) -> bool:
    return cfg.data.transform.decode_device == "cuda"


def _published_run(cfg: AuditConfig, run_id: str, ctx: DistContext, force: bool) -> str | None:
    """The published run with this id, decided by rank 0 and broadcast (if each rank decided for itself,
    a run published between two ranks' checks would leave one rank waiting forever for the other)."""
    existing: str | None = None
    if ctx.is_main and not force:
        found = find_run(Path(cfg.output.runs_dir), run_id)
        newest = None if found is None else newer_run(found, name=cfg.audit_name(), dataset=cfg.dataset_key())
        if found is not None and newest is not None:
            # The inputs went back to an earlier state: reusing that run would leave a newer run, of other
            # inputs, as the one the dashboard, `latest` and the next night's comparison take as current.
            log.info(
                "the inputs are those of run %s again, but run %s (other inputs, or spray) is newer: analysing again "
                "(heatmaps from the cache) so that the newest run describes the current inputs",
                found.name,
                newest.name,
            )
            found = None
        existing = None if found is None else str(found)
    return ctx.broadcast_object(existing)


def _up_to_date(
    cfg: AuditConfig, existing: str, setup: _Setup, ctx: DistContext, clock: _Clock, *, read_only: bool
) -> AuditReport:
    """The report of the published run ``existing``, checked against the flags; on a writable runs folder,
    what a job stopped after publishing left undone (``latest``, retention) is done."""
    log.info("run %s is already published at %s: up to date, nothing to do", setup.run_id[:12], existing)
    set_stage("done")
    if not ctx.is_main:
        report = _empty_report(setup, clock, rank=ctx.rank)
        report.run_dir = existing
    else:
        try:
            report = read_report(existing)
            check_run_arrays(existing)
        except RunReadError as err:
            raise RunReadError(
                err.path,
                f"{err.problem}; the published run {existing} cannot be reused: delete that folder, or rerun with --force",
            ) from None
    report.up_to_date = True
    for problem in recorded_problems(report.extra, corrected=cfg.model.factory == CORRECTED_FACTORY):
        log.warning("the published run's check of the model: %s", problem)
    if ctx.is_main:  # flags change between runs: a reused run is checked against them as a new one is
        check_flags(cfg, report.content_hashes, Path(existing))
        warn_settings_kept(cfg, report.config)
        if not read_only:
            up_to_date_upkeep(cfg)
    return report


def _empty_report(setup: _Setup, clock: _Clock, *, rank: int) -> AuditReport:
    return AuditReport(setup.run_id, "", setup.hashes, clock.timings, [], [], [], rank=rank)


def _batch_stage(
    cfg: AuditConfig, setup: _Setup, dev: torch.device, ctx: DistContext, clock: _Clock, progress: bool
) -> _Batched:
    """Explain every sample the cache lacks; rank ``r`` of ``W`` takes shards ``r, r+W, ...``."""
    runs = RunsFolder(Path(cfg.output.runs_dir))
    dataset = setup.dataset
    explainer = audit_explainer(cfg, setup.model, dataset, dev)
    name = cache_dir_name(cfg, setup.hashes["model"], dataset.input_size)
    cache = ShardCache(runs.cache_dir(name), by_label=cfg.lrp.target == "label")
    runner = BatchStage(explainer, cfg, cache, runs.work(setup.run_id), dev)
    plan = ShardPlan.make(len(dataset), cfg.batch.shard_size)
    set_stage("batch")
    with clock.phase("batch_s"):
        mine = plan.for_rank(ctx.rank, ctx.world_size)
        decoded_before = dataset.n_device_decoded
        log.info(
            "batch stage: %d samples in %d shards; rank %d/%d takes %d shards (%d cached samples known)",
            len(dataset),
            len(plan.starts),
            ctx.rank,
            ctx.world_size,
            len(mine),
            len(cache),
        )
        n_computed = runner.run_shards(dataset, mine, plan, progress=progress and ctx.is_main)
        decoded = dataset.n_device_decoded - decoded_before
        counts = [n_computed, runner.shards_computed, runner.shards_reused, decoded]
        # an unreadable sample is neither computed nor cached (the merge's count leaves it out too)
        n_cached = sum(len(plan.indices(s)) for s in mine) - n_computed - runner.n_skipped
        log.info(
            "batch stage on rank %d: %d samples computed, %d taken from the cache, %d unreadable (skipped; "
            "%d more were skipped before it, such as files that are not images); %d shards computed, %d shards "
            "reused",
            ctx.rank,
            n_computed,
            n_cached,
            runner.n_skipped,
            len(dataset.pre_skipped),
            counts[1],
            counts[2],
            extra={"n_computed": n_computed, "n_cached": n_cached, "n_skipped": runner.n_skipped,
                   "shards_computed": counts[1], "shards_reused": counts[2]},
        )  # fmt: skip
        counts = ctx.sum_counts(counts)
        # Every rank's shards and manifests are on disk before rank 0 merges them.
        ctx.barrier()
    return _Batched(runner, plan, cache, *counts)


def _merge(
    b: _Batched, ctx: DistContext, contents: dict[str, str], *, files: bool
) -> tuple[BatchStageResult | None, AnalysisInputs | None]:
    """Rank 0 merges every rank's shards (the other ranks get what they need in the analysis) and checks
    that they explain the bytes the run id was computed from (``contents``).

    Returns the merged result and the analysis inputs on rank 0, ``(None, None)`` on the other ranks.
    """
    stage: BatchStageResult | None = None
    failure: BaseException | None = None
    if ctx.is_main:
        try:
            stage = b.runner.merge(b.plan, b.n_computed)
            _log_merged(b, stage)
            check_unchanged(contents, stage.batch.sample_ids, stage.batch.content_hashes, files=files)
        except Exception as err:  # the other ranks wait for rank 0's inputs: they must hear of a failure
            failure = err
    ctx.gather_errors(failure)
    return (None, None) if stage is None else (stage, AnalysisInputs.of_batch(stage.batch))


def _log_merged(b: _Batched, stage: BatchStageResult) -> None:
    log.info(
        "merged %d shards: %d samples computed in this run, %d taken from the cache",
        len(b.plan.starts), stage.n_computed, stage.n_cached,
        extra={"n_samples": len(stage.batch), "n_computed": stage.n_computed, "n_cached": stage.n_cached,
               "shards_computed": b.shards_computed, "shards_reused": b.shards_reused},
    )  # fmt: skip


def _report(
    cfg: AuditConfig,
    setup: _Setup,
    stage: BatchStageResult,
    analysis: AnalysisResult,
    batched: _Batched,
    clock: _Clock,
    dev: torch.device,
    ctx: DistContext,
) -> AuditReport:
    skipped = list(setup.dataset.pre_skipped) + stage.skipped
    for s in skipped[:SKIPPED_LOGGED]:
        log.warning("skipped sample %s: %s", s.sample_id, s.reason)
    if len(skipped) > SKIPPED_LOGGED:  # a sidecar file in every folder would flood the log (also under -q)
        log.warning("... and %d more skipped samples (%d in all): each with its reason in the run's summary.json "
                    "('skipped') and report.html", len(skipped) - SKIPPED_LOGGED, len(skipped))  # fmt: skip
    accuracy = model_accuracy(
        np.asarray(stage.batch.labels), np.asarray(stage.batch.predictions), list(setup.dataset.class_names),
        corrected=cfg.model.factory == CORRECTED_FACTORY, probabilities=np.asarray(stage.batch.probabilities),
    )  # fmt: skip
    from spray.lrp.concepts import has_attention  # late: spray.lrp is not needed for an up-to-date run

    transformer = has_attention(setup.model)  # the checks' advice points a transformer at AttnLRP
    contrast = heatmap_contrast(stage.batch.relevance, cfg.lrp.composite, transformer)
    conflicts = find_label_conflicts(stage.batch.sample_ids, stage.batch.labels, stage.batch.content_hashes)
    copies = find_copies(stage.batch.sample_ids, stage.batch.labels, stage.batch.content_hashes)
    conservation = measure_conservation(
        batched.runner.explainer, setup.dataset, cfg.lrp.target, dev, frozenset(s.sample_id for s in skipped),
        transformer, _content_order(setup.dataset, stage.batch),
    )  # fmt: skip
    timings: dict[str, float | int | str] = dict(clock.timings)
    # What varies between runs of the same inputs (clock, device, cache hits) lives under "timings": two
    # runs of the same inputs and seed differ only there (and in the config's fields outside the run id).
    timings.update(
        total_s=time.perf_counter() - clock.start,
        n_computed=stage.n_computed,
        n_cached=stage.n_cached,
        shards_computed=batched.shards_computed,
        shards_reused=batched.shards_reused,
        device=str(dev),
        world_size=ctx.world_size,
        decode_device=cfg.data.transform.decode_device,
        n_device_decoded=batched.n_device_decoded,
    )
    return AuditReport(
        run_id=setup.run_id,
        run_dir="",
        hashes=setup.hashes,
        timings=timings,
        skipped=skipped,
        classes=analysis.classes,
        findings=analysis.findings,
        name=cfg.audit_name(),
        dataset=cfg.dataset_key(),
        class_names=list(setup.dataset.class_names),
        n_samples=len(stage.batch),
        content_hashes=_content_of(stage.batch),
        labels=dict(zip(stage.batch.sample_ids, map(int, stage.batch.labels), strict=True)),
        classes_skipped=analysis.classes_skipped,
        config=cfg.model_dump(mode="json"),
        # The cache directory (model and LRP settings) this run's heatmaps came from: cache retention
        # keeps the directories of kept runs only.
        cache=batched.cache.dir.name,
        versions=version_stamp(),
        extra={  # concept_layer: what lrp.concept_layer resolved to (concepts.npy holds its channels), or None
            "concept_layer": getattr(batched.runner.explainer, "concept_layer", None),
            "model_accuracy": None if accuracy is None else asdict(accuracy),
            "heatmap_contrast": None if contrast is None else asdict(contrast),
            "conservation": None if conservation is None else asdict(conservation),
            "label_conflicts": None if conflicts is None else asdict(conflicts),
            "copies": None if copies is None else asdict(copies),
            "loader_differences": list(setup.dataset.loader_notes),
        },
    )


def _content_order(dataset: AuditDataset, batch: AttributionBatch) -> list[int] | None:
    """Dataset positions of the batch's samples by content hash (then id): an order file names do not move."""
    if len(batch.content_hashes) != len(batch.sample_ids):
        return None
    position = {s: i for i, s in enumerate(dataset.sample_ids)}
    ordered = content_order(batch.content_hashes, batch.sample_ids, range(len(batch.sample_ids)))
    return [position[batch.sample_ids[i]] for i in ordered]


def _content_of(batch: AttributionBatch) -> dict[str, str]:
    """``sample_id -> content hash`` of the batch (empty when its hashes are not one per sample)."""
    if len(batch.content_hashes) != len(batch.sample_ids):
        return {}
    return dict(zip(batch.sample_ids, batch.content_hashes, strict=True))


def _publish(
    cfg: AuditConfig, report: AuditReport, stage: BatchStageResult, batched: _Batched
) -> AuditReport:
    """Write the run into staging, rename it into place, then apply retention."""
    runs_dir = Path(cfg.output.runs_dir)
    set_stage("write")
    staged = staging_dir(runs_dir, report.run_id)
    try:
        write_run(staged, report, stage)
        if cfg.output.html_report:
            from spray.html_report import write_html_report

            write_html_report(staged)
        set_stage("publish")
        final = publish(runs_dir, staged, report.run_id)
    except BaseException:
        # A half-written run (a full disk, a stop) is of no use; on a full disk it only takes space.
        shutil.rmtree(staged, ignore_errors=True)
        raise
    report.run_dir = str(final)
    check_flags(cfg, report.content_hashes, final)
    prune_runs(runs_dir, cfg.output.keep_runs, name=report.name, dataset=report.dataset)
    prune_cache(runs_dir, batched.cache.dir.name, entries=(len(batched.cache), len(stage.batch.sample_ids)))
    # The manifests only serve a resume of this run id, which is now published.
    shutil.rmtree(batched.runner.work_dir, ignore_errors=True)
    set_stage("done")
    return report


def _first_inputs(dataset: AuditDataset, n: int = 2) -> torch.Tensor:
    """Inputs of the first ``n`` readable samples (for the model's output check)."""
    b = dataset.first_batch(n)
    assert b.x is not None
    return b.x


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
    forever for rank 0. A runs directory this user cannot write is not locked: the audit then only
    answers whether the run is already published.

    Raises
    ------
    LockedError
        Another run holds the lock; nothing was touched.
    """
    runs_dir = Path(cfg.output.runs_dir)
    dev = resolve_device(device or cfg.batch.device)
    ctx = dist_context(dev, cfg.batch.dist_timeout_s)
    if ctx.world_size > 1:
        RUN_CONTEXT["rank"] = ctx.rank
    lock = RunLock(runs_dir)
    held = False
    outcome: tuple[str, str] = ("ok", "")
    if ctx.is_main:
        try:
            if not check_runs_dir(runs_dir):
                outcome = ("read_only", "")
            else:
                lock.__enter__()
                held = True
        except LockedError as err:
            outcome = ("locked", str(err))
        except ConfigError as err:  # runs_dir is a file or cannot be created
            outcome = ("config", str(err))
    outcome = ctx.broadcast_object(outcome)
    if outcome[0] == "locked":
        raise LockedError(outcome[1])
    if outcome[0] == "config":
        raise ConfigError(outcome[1])
    read_only = outcome[0] == "read_only"
    if read_only:
        log.warning("runs directory %s is not writable: only checking whether the run is published", runs_dir)
    try:
        if held:
            clean_staging(runs_dir, cfg.output.resume_days)
        return run_audit(
            cfg,
            device=device,
            progress=progress,
            force=force,
            before_write=before_write,
            ctx=ctx,
            read_only=read_only,
        )
    finally:
        if held:
            lock.__exit__(None, None, None)

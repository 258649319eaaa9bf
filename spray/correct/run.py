"""A correction run: planned, computed in a private work folder, published atomically, never twice.

Layout under the runs folder::

    runs/corrections/
      .lock                         held while a correction runs (another one exits 75)
      .work/<id16>/                 a correction in progress: resume checkpoints, out/ (what will be
                                    published), evaluation.json
      <UTC time>-<correction id12>/ a published correction (see :mod:`spray.correct.record`)

A published correction with the same id makes ``correct`` a no-op (the nightly job can run it every
night). A run killed at any point resumes: training from its last checkpoint, a finished corrected model
and evaluation are reused, and the re-audit resumes like any audit.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

import spray
from spray.config import AuditConfig, load_config
from spray.correct.activations import layer_activations
from spray.correct.cav import ArtifactDirection, GroupActivations, fit_direction
from spray.correct.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    save_corrected,
    saved_projection,
    write_corrected_config,
)
from spray.correct.evaluate import Evaluation, evaluate, evaluation_sets
from spray.correct.footprint import FootprintSummary, NoGridError, RegionFootprint, measure_footprint
from spray.correct.html import write_report
from spray.correct.lookalikes import lookalikes
from spray.correct.plan import CorrectionPlan, plan_correction
from spray.correct.reaudit import Reaudit, run_reaudit, slim_runs_dir
from spray.correct.record import (
    CORRECTION_VERSION,
    RECORD_NAME,
    CorrectionRecord,
    DirectionSummary,
    GroupSummary,
    from_dict,
)
from spray.correct.region import ArtifactRegion, box_region, estimate_region
from spray.correct.relevance import composite_kwargs, normalise, relevance_maps
from spray.correct.samples import seeded_subset
from spray.correct.source import match_finding
from spray.correct.subspace import ArtifactSubspace, SubspaceSummary, measure_subspace
from spray.correct.task import CorrectionTask, MethodResult
from spray.correct.training import TrainingLog
from spray.errors import ConfigError, SprayError
from spray.models import build_model
from spray.runs.atomic import atomic_save_npz, atomic_write_json
from spray.runs.errors import RunWriteError
from spray.runs.layout import CORRECTION_DIRECTION, CORRECTIONS_DIR, REAUDIT_DIR
from spray.runs.locking import RunLock, RunPin
from spray.runs.writer import rebase_recorded_paths

log = logging.getLogger(__name__)

WORK = ".work"


@dataclass
class CorrectionOutcome:
    """What :func:`correct` returns.

    Attributes
    ----------
    record : CorrectionRecord
        The correction's record.
    folder : Path
        Its published folder.
    up_to_date : bool
        True when an identical correction was already published (nothing was computed).
    """

    record: CorrectionRecord
    folder: Path
    up_to_date: bool


def corrections_dir(runs_dir: Path) -> Path:
    """``<runs_dir>/corrections``."""
    return Path(runs_dir) / CORRECTIONS_DIR


def list_corrections(runs_dir: Path) -> list[Path]:
    """Published correction folders, newest first."""
    root = corrections_dir(runs_dir)
    if not root.is_dir():
        return []
    found = [
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / RECORD_NAME).is_file()
    ]
    return sorted(found, key=lambda p: p.name, reverse=True)


@dataclass
class PublishedCorrection:
    """A published correction: its folder and its record."""

    folder: Path
    record: CorrectionRecord


def corrections_for(
    runs_dir: Path,
    source_run_id: str | None = None,
    *,
    dataset: str | None = None,
    unreadable: list[tuple[Path, str]] | None = None,
) -> list[PublishedCorrection]:
    """The published corrections made from one source run (or, with ``dataset``, from any run of that
    dataset: a source run removed by retention keeps its corrections), newest first. Folders whose
    ``correction.json`` cannot be read are added to ``unreadable`` with the reason (whatever their dataset)."""
    out = []
    for p in list_corrections(runs_dir):
        try:
            rec = CorrectionRecord.read(p)
        except (OSError, ValueError, TypeError, KeyError) as err:
            log.warning("correction %s has an unreadable correction.json; skipped", p)
            if unreadable is not None:
                unreadable.append((p, f"{type(err).__name__}: {err}"))
            continue
        if (source_run_id is not None and rec.source_run_id == source_run_id) or (
            dataset is not None and rec.dataset == dataset
        ):
            out.append(PublishedCorrection(p, rec))
    return out


def _say_earlier(runs_dir: Path, plan: CorrectionPlan) -> None:
    """Name the published corrections of the same class and method made from another source run: this one is
    computed anew because that run changed (new data, other weights or settings, a spray upgrade)."""
    method, cls = plan.cfg.correction.method, plan.group.class_index
    earlier = [
        c
        for c in corrections_for(runs_dir, dataset=plan.flags.dataset)
        if c.record.method == method
        and c.record.group.class_index == cls
        and c.record.source_run_id != plan.source.run_id
    ]
    if earlier:
        log.info(
            "correction %s of class %s is published from run %s; this one corrects from run %s, the newest audit "
            "of the data (new data, other weights or settings, or a spray upgrade that re-analysed it), so it is "
            "computed anew",
            earlier[0].folder.name,
            earlier[0].record.group.class_name,
            earlier[0].record.source_run_id[:12],
            plan.source.run_id[:12],
        )


def find_correction(runs_dir: Path, correction_id: str) -> Path | None:
    """The published correction with this id, if any."""
    for p in list_corrections(runs_dir):
        if p.name.endswith(correction_id[:12]):
            try:
                if json.loads((p / RECORD_NAME).read_text()).get("correction_id") == correction_id:
                    return p
            except (OSError, ValueError):
                continue
    return None


def correct(
    cfg: AuditConfig, *, device: str | None = None, progress: bool = True, force: bool = False
) -> CorrectionOutcome:
    """Correct the flagged shortcut of ``cfg`` (its ``correction`` section), or reuse the published result.

    Parameters
    ----------
    cfg : AuditConfig
        The audit config of the model to correct.
    device : str, optional
        Overrides ``batch.device``.
    progress : bool
        Progress bars.
    force : bool
        Recompute (and publish anew) even when this correction is published.

    Raises
    ------
    LockedError
        Another correction runs on this runs folder.
    RunWriteError
        The runs folder is read-only and the correction is not published there yet.
    SprayError
        Bad input (see :func:`spray.correct.plan.plan_correction`).
    """
    runs_dir = Path(cfg.output.runs_dir)
    if not runs_dir.is_dir():
        # Checked before the lock: taking it would create the folder of a runs directory that is a typo.
        raise ConfigError(
            f"The runs directory {runs_dir} does not exist: a correction starts from an audited run. Run "
            "spray audit (or spray run) first, or fix output.runs_dir / --runs-dir."
        )
    root = corrections_dir(runs_dir)
    if not _writable(root if root.exists() else runs_dir):
        # Like an audit on a read-only runs folder: answer from a published correction, or say why not.
        return _read_only(cfg, root, device=device, force=force)
    with RunLock(root):
        plan = plan_correction(cfg, device=device)
        found = find_correction(Path(cfg.output.runs_dir), plan.correction_id)
        work = root / WORK / plan.correction_id[:16]
        if found is not None and not force:
            log.info(
                "correction %s is already published at %s: nothing to do", plan.correction_id[:12], found
            )
            shutil.rmtree(work, ignore_errors=True)  # left by a run killed between publishing and cleaning up
            return CorrectionOutcome(CorrectionRecord.read(found), found, True)
        if found is None:
            _say_earlier(runs_dir, plan)
        final = root / _final_name(work, plan.correction_id)
        with RunPin(plan.source.path):  # a nightly spray run's retention must not delete it meanwhile
            folder, record = _execute(plan, work, final, device=device, progress=progress)
            _publish(folder, final)
        shutil.rmtree(work, ignore_errors=True)
        if cfg.output.keep_corrections is not None:
            prune_corrections(runs_dir, cfg.output.keep_corrections, record.dataset, keep_also=final)
        return CorrectionOutcome(record, final, False)


def prune_corrections(
    runs_dir: Path, keep: int, dataset: str, *, keep_also: Path | None = None
) -> list[Path]:
    """Retention (``output.keep_corrections``): delete all but the newest ``keep`` published corrections of
    ``dataset``; ``keep_also`` (the one just published) and corrections whose record cannot be read (so not
    attributed) are never deleted. Returns the deleted folders."""
    mine = [c.folder for c in corrections_for(runs_dir, dataset=dataset)]
    removed = []
    for p in mine[keep:]:
        if keep_also is not None and p.resolve() == keep_also.resolve():
            continue
        shutil.rmtree(p, ignore_errors=True)
        if p.exists():
            log.warning("retention: could not remove the old correction %s", p)
        else:
            removed.append(p)
    if removed:
        # a WARNING, shown under -q: deleting a corrected model must never pass unnoticed
        log.warning(
            "retention: deleted %d old corrections of %s (output.keep_corrections %d, counted over every class "
            "and method of the dataset): %s",
            len(removed), dataset, keep, ", ".join(p.name for p in removed),
        )  # fmt: skip
    return removed


def _writable(folder: Path) -> bool:
    """Whether this process may create files in ``folder`` (False on a read-only file system)."""
    return os.access(folder, os.W_OK | os.X_OK)


def _read_only(cfg: AuditConfig, root: Path, *, device: str | None, force: bool) -> CorrectionOutcome:
    """:func:`correct` on a runs folder this process cannot write: the published correction, if any.

    Raises
    ------
    RunWriteError
        The correction is not published yet (or ``force``), so it would have to be written.
    """
    runs_dir = Path(cfg.output.runs_dir)
    plan = plan_correction(cfg, device=device)  # no flags: NoFlagsError, as on a writable folder
    found = find_correction(runs_dir, plan.correction_id)
    if found is not None and not force:
        log.info("correction %s is already published at %s: nothing to do", plan.correction_id[:12], found)
        return CorrectionOutcome(CorrectionRecord.read(found), found, True)
    why = "--force recomputes it" if found is not None else "it is not published yet"
    raise RunWriteError(
        root,
        f"correction {plan.correction_id[:12]} cannot be written: {why} and {root} (under the runs "
        f"directory {runs_dir}) is not writable (a read-only file system or no permission). Point "
        "output.runs_dir (--runs-dir) at a folder this user can write to (for example a writable copy of "
        f"{runs_dir}).",
    )


def fit(plan: CorrectionPlan) -> ArtifactDirection:
    """The artifact direction at the plan's layer (fitted, scored on held-out samples, checked)."""
    g, s, c = plan.group, plan.samples, plan.cfg.correction
    bs = plan.cfg.batch.batch_size

    def acts(rows: np.ndarray) -> torch.Tensor:
        return layer_activations(plan.model, c.layer, s.batches(rows, bs), plan.device)

    direction = fit_direction(
        c.layer,
        GroupActivations(
            acts(g.fit_artifact), acts(g.fit_reference), acts(g.held_artifact), acts(g.held_reference)
        ),
        c.pooling,
        c.pooling_margin,
    )
    if direction.separation.auroc < c.min_separation:
        raise SprayError(
            f"The artifact direction at layer {c.layer!r} separates held-out flagged from unflagged {g.class_name} "
            f"samples with AUROC {direction.separation.auroc:.2f} only (correction.min_separation = "
            f"{c.min_separation}): correcting along it would change the model without removing the shortcut. "
            "Try another correction.layer (an earlier one for a small local artifact), or check the flags."
        )
    return direction


def locate(plan: CorrectionPlan) -> ArtifactRegion:
    """The artifact region: the configured box, or estimated from the audited model's relevance."""
    c, s, g = plan.cfg.correction, plan.samples, plan.group
    shape = tuple(plan.example.shape[-2:])
    if c.artifact_box is not None:
        return box_region(c.artifact_box, (int(shape[0]), int(shape[1])))
    a_rows, r_rows = g.fit_artifact[: c.region_samples], g.fit_reference[: c.region_samples]
    kw = composite_kwargs(plan.cfg.lrp, s.input_bounds())

    def maps(rows: np.ndarray) -> np.ndarray:
        return normalise(
            relevance_maps(
                plan.model,
                s.batches(rows, plan.cfg.batch.batch_size),
                s.labels[rows],
                plan.cfg.lrp,
                plan.device,
                kw,
            )
        )

    region = estimate_region(
        maps(a_rows), maps(r_rows), s.inputs(a_rows).numpy(), s.inputs(r_rows).numpy(), c
    )
    log.info(
        "artifact region (%s): %d pixels, box %s",
        region.source,
        int(region.mask.sum()),
        region.bounding_box(),
    )
    return region


def span(plan: CorrectionPlan, direction: ArtifactDirection, region: ArtifactRegion) -> ArtifactSubspace:
    """The directions RR-ClArC penalises, from the flagged pixels pasted into reference samples."""
    c, g = plan.cfg.correction, plan.group
    targets = seeded_subset(g.fit_reference, c.rr_direction_samples, plan.cfg.seed, "subspace")
    return measure_subspace(plan.model, direction, plan.samples, targets, g.fit_artifact, region.mask,
                            c.rr_directions, plan.device, plan.cfg.batch.batch_size)  # fmt: skip


def trace(
    plan: CorrectionPlan, direction: ArtifactDirection, region: ArtifactRegion
) -> RegionFootprint | None:
    """The region's footprint at the layer, for RR-ClArC's region term (None when it is off)."""
    c = plan.cfg.correction
    if c.method != "rrclarc" or c.rr_region_weight == 0:
        return None
    rows = seeded_subset(plan.group.fit_artifact, c.rr_region_samples, plan.cfg.seed, "footprint")
    try:
        return measure_footprint(plan.model, direction.layer, plan.samples, rows, region.mask, plan.cfg.lrp,
                                 plan.device, plan.cfg.batch.batch_size)  # fmt: skip
    except NoGridError as err:
        if "rr_region_weight" in c.model_fields_set:
            raise
        # the default must not stop a correction at a token or pooled layer: plain RR-ClArC, said aloud
        log.warning(
            "%s; RR-ClArC runs without its region term (the record has no footprint)", str(err).rstrip(". ")
        )
        return None


def _method(task: CorrectionTask) -> MethodResult:
    method = task.cfg.correction.method
    if method == "pclarc":
        from spray.correct.pclarc import check_projection_runs, pclarc

        corrected = pclarc(task.model, task.direction)
        check_projection_runs(corrected, task.example)
        return MethodResult(corrected)
    if method == "rrclarc":
        from spray.correct.rrclarc import rrclarc

        return rrclarc(task)
    from spray.correct.retrain import retrain

    return retrain(task)


def _corrected(task: CorrectionTask, out: Path, name: str) -> tuple[MethodResult, float, float | None]:
    """The corrected model and the seconds its method took (wall clock, and CPU of this process): rebuilt
    from ``out`` when a previous start finished it (with that start's training log and seconds), else
    computed and saved."""
    log_path = task.work_dir / "training.json"
    if (out / MODEL_FILE).is_file() and (out / CONFIG_FILE).is_file() and log_path.is_file():
        log.info("reusing the corrected model in %s", out)
        # the config is written again from this start's: the data or factories may have moved since
        write_corrected_config(task.cfg, out, REAUDIT_DIR, name, saved_projection(out))
        model = build_model(load_config(out / CONFIG_FILE).model).to(task.device).eval()
        saved = json.loads(log_path.read_text())
        training = None if saved["training"] is None else from_dict(TrainingLog, saved["training"])
        cpu = saved.get("method_cpu_s")
        return (MethodResult(model, training, saved["trained_modules"]), float(saved["method_s"]),
                None if cpu is None else float(cpu))  # fmt: skip
    t0, c0 = time.perf_counter(), time.process_time()
    result = _method(task)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    save_corrected(result.model, task.cfg, out, REAUDIT_DIR, name)
    saved_log = None if result.training is None else dataclasses.asdict(result.training)
    atomic_write_json(
        log_path,
        {"training": saved_log, "trained_modules": result.trained_modules, "method_s": seconds,
         "method_cpu_s": cpu_seconds},
    )  # fmt: skip
    result.model.eval()
    return result, seconds, cpu_seconds


def _execute(
    plan: CorrectionPlan, work: Path, final: Path, *, device: str | None, progress: bool
) -> tuple[Path, CorrectionRecord]:
    cfg, out = plan.cfg, work / "out"
    t0, c0 = time.perf_counter(), time.process_time()
    direction = fit(plan)
    region = locate(plan)
    subspace = span(plan, direction, region) if cfg.correction.method == "rrclarc" else None
    footprint = trace(plan, direction, region)
    t_prepare, c_prepare = time.perf_counter() - t0, time.process_time() - c0
    arrays = {} if subspace is None else {"subspace": subspace.vectors}
    if footprint is not None:
        arrays["footprint"] = footprint.weights
    atomic_save_npz(out / CORRECTION_DIRECTION, vector=direction.vector, reference_mean=direction.reference_mean,
                    region=region.mask, **arrays)  # fmt: skip
    task = CorrectionTask(cfg, plan.model, plan.samples, plan.group, direction, region, subspace, footprint,
                          plan.train_rows, plan.example, plan.device, work, progress)  # fmt: skip
    name = f"{cfg.name}-{cfg.correction.method}-{plan.correction_id[:8]}"
    result, method_s, method_cpu_s = _corrected(task, out, name)
    t1 = time.perf_counter()
    evaluation = _evaluation(plan, result.model, direction, region, work)
    t2 = time.perf_counter()
    reaudit = _reaudit(plan, out, final, device=device, progress=progress)
    timings = {
        "correction_s": t_prepare + method_s,
        "direction_region_s": t_prepare,
        "method_s": method_s,
        "evaluation_s": t2 - t1,
        "reaudit_s": time.perf_counter() - t2,
    }
    if method_cpu_s is not None:
        # CPU seconds of this process: a cost that other jobs on the machine do not inflate
        timings["correction_cpu_s"] = c_prepare + method_cpu_s
    summary = None if subspace is None else SubspaceSummary.of(subspace)
    record = _record(plan, direction, evaluation, reaudit, result, summary, timings)
    record.footprint = None if footprint is None else FootprintSummary.of(footprint)
    record.write(out)
    if reaudit is not None:
        from spray.html_report import write_html_report

        # rendered again now that correction.json is there: the re-audit's page then names its source run too
        write_html_report(out / reaudit.run_dir)
    write_report(record, out)
    return out, record


def _evaluation(plan: CorrectionPlan, corrected: torch.nn.Module, direction: ArtifactDirection,
                region: ArtifactRegion, work: Path) -> Evaluation:  # fmt: skip
    cached = work / "evaluation.json"
    if cached.is_file():
        return from_dict(Evaluation, json.loads(cached.read_text()))
    g = plan.group
    sets = evaluation_sets(
        plan.samples, plan.clean_samples, plan.clean_rows, g.flagged_rows,
        np.concatenate([g.fit_reference, g.held_reference]), np.concatenate([g.held_artifact, g.held_reference]),
        g.class_index, plan.cfg, "test_data" if plan.clean_samples is not plan.samples else "held-out part of the audited data",
    )  # fmt: skip
    result = evaluate(plan.model, corrected, plan.cfg, plan.samples, plan.clean_samples, sets, direction, region,
                      g.class_index, plan.device)  # fmt: skip
    if plan.clean_samples is not plan.samples:  # a held-out part of the audited data is the reference itself
        of_class = sets.clean[plan.clean_samples.labels[sets.clean] == g.class_index]
        result.lookalikes = lookalikes(plan.model, direction, plan.clean_samples, of_class, plan.samples,
                                       g.held_reference, plan.cfg.batch.batch_size, plan.device)  # fmt: skip
    atomic_write_json(cached, dataclasses.asdict(result))
    return result


def _reaudit(
    plan: CorrectionPlan, out: Path, final: Path, *, device: str | None, progress: bool
) -> Reaudit | None:
    if not plan.cfg.correction.reaudit:
        return None
    # the finding the flags were set from, when they were set on the source run (keys are per run)
    keys, same_run = plan.flags.cluster_keys, plan.flags.run_ids == [plan.source.run_id]
    prefer = keys[0] if len(keys) == 1 and same_run else None
    before = match_finding(plan.source.findings, plan.group.class_index, plan.flags.sample_ids, prefer=prefer)
    c = plan.cfg.correction
    result = run_reaudit(out / CONFIG_FILE, before, plan.group.class_index, plan.flags.sample_ids,
                         (c.reaudit_min_jaccard, c.reaudit_min_contained, c.reaudit_min_enrichment), device=device, progress=progress,
                         source_extra=plan.source.extra, no_worse=c.reaudit_no_worse)  # fmt: skip
    slim_runs_dir(out / REAUDIT_DIR)
    # its summary records the corrected checkpoint and runs folder where they will be, not in the work folder
    rebase_recorded_paths(out / REAUDIT_DIR, out, final)
    return result


def _record(plan: CorrectionPlan, direction: ArtifactDirection, evaluation: Evaluation, reaudit: Reaudit | None,
            result: MethodResult, subspace: SubspaceSummary | None, timings: dict[str, float]) -> CorrectionRecord:  # fmt: skip
    g, c = plan.group, plan.cfg.correction
    return CorrectionRecord(
        correction_id=plan.correction_id,
        method=c.method,
        dataset=plan.cfg.dataset_key(),
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        spray_version=spray.__version__,
        correction_version=CORRECTION_VERSION,
        source_run_id=plan.source.run_id,
        source_run_dir=str(plan.source.path),
        flags=plan.flags,
        group=GroupSummary(
            g.class_index,
            g.class_name,
            len(g.flagged_rows),
            len(g.fit_artifact),
            len(g.held_artifact),
            len(g.fit_reference),
            len(g.held_reference),
            g.other_class_flags,
            g.missing_ids,
        ),
        direction=DirectionSummary(
            direction.layer,
            direction.pooling,
            int(direction.vector.size),
            direction.separation,
            direction.candidates,
        ),
        parameters=c.model_dump(mode="json"),
        evaluation=evaluation,
        reaudit=reaudit,
        flag_notes=plan.flag_notes,
        training=result.training,
        trained_modules=result.trained_modules,
        subspace=subspace,
        files={
            "model": MODEL_FILE,
            "config": CONFIG_FILE,
            "direction": CORRECTION_DIRECTION,
            "report": "report.html",
            "reaudit": REAUDIT_DIR,
        },
        timings={k: round(v, 3) for k, v in timings.items()},
    )


def published_name(correction_id: str) -> str:
    """The folder name a correction is published under: the UTC time it started, then its id."""
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{correction_id[:12]}"


def _final_name(work: Path, correction_id: str) -> str:
    """The published name of the correction computed in ``work``: chosen once, so that a resumed correction
    publishes under the name its re-audit already records."""
    chosen = work / "published_name"
    if chosen.is_file():
        name = chosen.read_text().strip()
        log.info(
            "correction %s resumes the work an earlier, interrupted run began (%s): it is published as %s, the "
            "name its work already records",
            correction_id[:12], work, name,
        )  # fmt: skip
        return name
    name = published_name(correction_id)
    work.mkdir(parents=True, exist_ok=True)
    chosen.write_text(name)
    return name


def _publish(folder: Path, final: Path) -> None:
    """Move a finished correction folder into place (one atomic rename)."""
    os.chmod(folder, 0o755)
    for sub in folder.rglob("*"):
        if not sub.is_symlink():
            os.chmod(sub, 0o755 if sub.is_dir() else 0o644)
    os.rename(folder, final)
    log.info("published correction %s", final)

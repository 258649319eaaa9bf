"""Planning a correction: everything that is checked, built and hashed before any work is done.

The order puts the cheap checks first, so bad input fails in seconds: the flags (database, dataset key,
finding key), the data, the model and the layer, the artifact group, then the source run. The correction
id is a hash of the source run, the flags, the method and every parameter, and the code version: the same
request twice is the same correction (published once).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spray.accuracy import recorded_problems
from spray.attribution import resolve_device
from spray.config import AuditConfig
from spray.correct.activations import resolve_layer
from spray.correct.groups import (
    ArtifactGroup,
    FlagSelection,
    artifact_group,
    check_flag_content,
    read_flags,
    unflagged_members,
)
from spray.correct.held_out import check_held_out, held_out_config
from spray.correct.record import CORRECTION_VERSION
from spray.correct.samples import SampleSet, seeded_subset
from spray.correct.source import SourceRun, find_source_run
from spray.errors import SprayError
from spray.flags import default_db_path
from spray.model_output import check_model_output
from spray.models import build_model, model_hash
from spray.runs.identity import NOT_RESULT_FIELDS, RESULT_SECTIONS, data_fingerprint
from spray.versions import MODEL_HASH_VERSION, code_version

log = logging.getLogger(__name__)


@dataclass
class CorrectionPlan:
    """A checked correction request.

    Attributes
    ----------
    cfg : AuditConfig
        The config (``correction.layer`` resolved).
    correction_id : str
        Hash of what the correction depends on.
    flags : FlagSelection
        The flags used.
    samples : SampleSet
        The audited data.
    clean_samples : SampleSet
        Where clean accuracy and paste targets come from (``test_data`` or ``samples``).
    clean_rows : np.ndarray
        Rows of ``clean_samples`` for evaluation (without flagged samples).
    train_rows : np.ndarray
        Rows of ``samples`` a method may train on.
    group : ArtifactGroup
        The artifact group and its reference.
    model : nn.Module
        The audited model, eval mode, on ``device``.
    example : torch.Tensor
        ``(B, C, H, W)`` two real inputs on ``device``.
    source : SourceRun
        The published run the correction starts from.
    device : torch.device
        Where to compute.
    flag_notes : list of str
        Warnings about the runs the flags were set on (other or unknown weights), kept in the record.
    """

    cfg: AuditConfig
    correction_id: str
    flags: FlagSelection
    samples: SampleSet
    clean_samples: SampleSet
    clean_rows: np.ndarray
    train_rows: np.ndarray
    group: ArtifactGroup
    model: nn.Module
    example: torch.Tensor
    source: SourceRun
    device: torch.device
    flag_notes: list[str] = field(default_factory=list)


#: Fields that only one method reads: another method ignores them (a warning when set) and they are not
#: part of its correction id, so the same projection or retraining is not computed twice.
METHOD_FIELDS = {
    "rrclarc": (
        "rr_lambda",
        "rr_target",
        "rr_aggregation",
        "rr_directions",
        "rr_direction_samples",
        "rr_region_weight",
        "rr_region_target",
        "rr_region_scope",
        "rr_region_samples",
    ),
    "retrain": ("retrain_mode", "retrain_init", "retrain_epochs", "retrain_lr"),
}
#: Fields of the training loop, read by the methods that train (P-ClArC only projects).
TRAINING_FIELDS = (
    "train_scope",
    "epochs",
    "finetune_samples",
    "activation_cache_mb",
    "batch_size",
    "optimizer",
    "lr",
    "lr_schedule",
    "momentum",
    "weight_decay",
    "checkpoint_every",
)
TRAINING_METHODS = ("rrclarc", "retrain")


#: The retraining baseline from scratch trains every layer for its own epochs at its own rate; from the
#: checkpoint it fine-tunes like RR-ClArC (epochs, lr, train_scope).
SCRATCH_IGNORES = ("epochs", "lr", "train_scope")
CHECKPOINT_IGNORES = ("retrain_epochs", "retrain_lr")


def ignored_fields(method: str, retrain_init: str | None = None) -> set[str]:
    """The ``correction`` fields that ``method`` does not read (those of the other methods, the training
    loop's for a method that does not train, and for ``retrain`` with ``retrain_init`` given, those that
    start does not use)."""
    own = {f for m, fields in METHOD_FIELDS.items() if m != method for f in fields}
    if method == "retrain" and retrain_init is not None:
        own |= set(SCRATCH_IGNORES if retrain_init == "scratch" else CHECKPOINT_IGNORES)
    return own | (set(TRAINING_FIELDS) if method not in TRAINING_METHODS else set())


def _readers(fields: set[str]) -> str:
    """The methods that read any of ``fields``, for the warning."""
    users = [m for m, own in METHOD_FIELDS.items() if set(own) & fields]
    users += [m for m in TRAINING_METHODS if fields & set(TRAINING_FIELDS) and m not in users]
    return " / ".join(users)


def warn_ignored(cfg: AuditConfig) -> None:
    """Log a WARNING for fields set in the config that the chosen method does not read."""
    c = cfg.correction
    unused = sorted(ignored_fields(c.method, c.retrain_init) & c.model_fields_set)
    scratch = c.method == "retrain" and c.retrain_init == "scratch"
    if unused and scratch and set(unused) <= set(SCRATCH_IGNORES):
        log.warning(
            "correction.%s: set, but the baseline retrained from scratch does not use %s: it trains for "
            "correction.retrain_epochs (%d) at correction.retrain_lr (%g), every layer (--retrain-init "
            "checkpoint fine-tunes with them)",
            ", correction.".join(unused), "it" if len(unused) == 1 else "them", c.retrain_epochs, c.retrain_lr,
        )  # fmt: skip
    elif unused:
        log.warning(
            "correction.%s: set, but method %r does not use %s (only %s)",
            ", correction.".join(unused),
            c.method,
            "it" if len(unused) == 1 else "them",
            _readers(set(unused)),
        )


def correction_id(cfg: AuditConfig, source_run_id: str, flags: FlagSelection, inputs: dict[str, str]) -> str:
    """Hash of the source run, the flags, the inputs as they are now (``inputs``: the model's weights, the
    audited data's and the held-out data's fingerprints), the correction parameters, the config and the code
    version."""
    # where the flags come from, when to warn and what the method does not read do not change the result
    # (retrain's unused epochs / lr stay in: leaving them out changed the id of every published retraining)
    unused = {
        "flags_db",
        "source_run",
        "min_flip_over_null",
        "lookalike_alpha",
        "reaudit_no_worse",
    } | ignored_fields(cfg.correction.method)
    payload = {
        "source_run": source_run_id,
        "inputs": inputs,
        "flags": flags.digest,
        "parameters": cfg.correction.model_dump(mode="json", exclude=unused),
        "config": cfg.section_hash(*RESULT_SECTIONS, exclude=NOT_RESULT_FIELDS),
        "seed": cfg.seed,
        "code": f"{code_version()}-correction{CORRECTION_VERSION}",
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _evaluation_rows(cfg: AuditConfig, samples: SampleSet) -> tuple[SampleSet, np.ndarray, np.ndarray]:
    """``(clean samples, their evaluation rows, rows of the audited data held out of training)``."""
    c = cfg.correction
    if c.test_data is not None:
        test = SampleSet.build(held_out_config(cfg), "correction.test_data")
        return test, np.arange(len(test)), np.zeros(0, dtype=np.int64)
    n = max(1, round(c.eval_fraction * len(samples)))
    held = seeded_subset(np.arange(len(samples)), n, cfg.seed, "eval-split")
    return samples, held, held


def _inputs(cfg: AuditConfig, weights: str, samples: SampleSet, clean: SampleSet) -> dict[str, str]:
    """What the correction reads as it is now: the weights, the audited data and any held-out data (a source
    run given by name, images added since it, or held-out files replaced are another correction)."""
    out = {"model": weights, "data": data_fingerprint(cfg, samples.dataset)}
    if cfg.correction.test_data is not None:
        out["test_data"] = data_fingerprint(
            cfg.model_copy(update={"data": cfg.correction.test_data}), clean.dataset
        )
    return out


def _kept_out(
    samples: SampleSet,
    flags: FlagSelection,
    source: SourceRun,
    class_index: int,
    weights: str,
    where: str,
    notes: list[str],
) -> np.ndarray:
    """Rows that are neither reference nor clean data, each kind named in a warning: unflagged members of the
    flagged finding, the dataset's other flagged samples, and samples the source run did not see. ``where``
    says what they are kept out of ("the reference", with "and the clean evaluation" when it is drawn from
    the audited data). What the record must keep of the flags' runs is added to ``notes``."""
    name = samples.class_names[class_index] if class_index < len(samples.class_names) else str(class_index)
    key, suspects = unflagged_members(source.findings, flags.sample_ids, class_index, _seen_by(flags, source))
    members = samples.rows_of(suspects).rows
    if len(members):
        log.warning(
            "%d samples of finding %s in source run %s carry no flag (its carriers, which --finding flags only "
            "with --with-carriers, or members that joined it after the flags were set): they are kept out of %s, "
            "which must not hold the artifact; flag them (spray flags set --finding %s --with-carriers) to make "
            "them part of the artifact group",
            len(members), key, source.run_id[:12], where, key,
        )  # fmt: skip
    other = samples.rows_of(flags.other_flagged).rows
    if len(other):
        log.warning(
            "%d other samples are flagged (%d of class %s; from other findings, or as 'investigate'): they are "
            "kept out of %s", len(other), int((samples.labels[other] == class_index).sum()), name, where,
        )  # fmt: skip
    audited = set(source.sample_ids) | set(source.skipped_ids)
    unseen = np.asarray([i for i, s in enumerate(samples.sample_ids) if s not in audited], dtype=np.int64)
    if len(unseen) and source.sample_ids:
        log.warning(
            "%d samples (%d of class %s) are newer than source run %s, which did not see them: they are kept out "
            "of %s and the artifact group (whether they carry the shortcut is unknown); audit the data again "
            "(spray audit) and correct from that run to use them",
            len(unseen), int((samples.labels[unseen] == class_index).sum()), name, source.run_id[:12], where,
        )  # fmt: skip
    else:
        unseen = np.zeros(0, dtype=np.int64)
    notes += _warn_other_weights(flags, source, weights, key)
    return np.union1d(np.union1d(members, other), unseen)


def _seen_by(flags: FlagSelection, source: SourceRun) -> set[str] | None:
    """The samples of the runs the flags were set on (None when a flag names no run, or its run is gone)."""
    if not flags.run_ids or any(r not in source.run_paths for r in flags.run_ids):
        return None
    if flags.run_ids == [source.run_id]:
        return set(source.sample_ids)
    from spray.runs.reader import RunReader

    return {s for r in flags.run_ids for s in RunReader.open(source.run_paths[r]).sample_ids()}


def _warn_other_weights(flags: FlagSelection, source: SourceRun, weights: str, key: str | None) -> list[str]:
    """Warn (and return the warnings, which the record keeps) when the flags were set on runs of other weights
    than the corrected model's, or on runs this runs folder does not hold (whose weights cannot be told)."""
    current = str(MODEL_HASH_VERSION)
    said = []
    older = [
        r
        for r in flags.run_ids
        if source.run_hash_versions.get(r, current) != current
        and source.run_models.get(r, weights) != weights
    ]
    if older:  # another fingerprint of possibly the same weights: unknown, not "other weights"
        said.append(
            f"the flags were set on run {', '.join(r[:12] for r in older)}, audited by another spray version that "
            "fingerprinted models otherwise: whether it audited these weights cannot be told; this correction "
            f"takes them to run {source.run_id[:12]} ({f'finding {key}' if key else 'no finding holds half'})"
        )
    now = f"finding {key} holds most of them there" if key else "no finding there holds half of them"
    # a run not in this runs folder (flags from another folder's database) may have audited any model
    unknown = [r for r in flags.run_ids if r not in source.run_models]
    if unknown:
        own = Path(flags.db).resolve() == default_db_path(source.path.parent).resolve()
        # the folder's own database names only its runs: a run it lacks was removed (retention, by hand)
        where = (
            "which this runs folder no longer holds (removed since, e.g. by retention: output.keep_runs)"
            if own
            else f"which is not in this runs folder ({source.path.parent}; flags of another runs folder's "
            "database, or a run removed since)"
        )
        said.append(
            f"the flags were set on run {', '.join(r[:12] for r in unknown)}, {where}: whether it audited these "
            f"weights cannot be told; this correction takes them to run {source.run_id[:12]} ({now}): check that "
            "they mark this model's shortcut (spray flags check, or the dashboard)"
            + (
                ""
                if own
                else ", or use the flag database of this runs folder (correction.flags_db, --flags-db)"
            )
        )
    other = [r for r in flags.run_ids if source.run_models.get(r, weights) != weights and r not in older]
    if other:
        said.append(
            f"the flags were set on run {', '.join(r[:12] for r in other)}, which audited other model weights; this "
            f"correction takes them to run {source.run_id[:12]} of the current weights ({now}): check that they "
            "still mark this model's shortcut (spray flags check, or the dashboard)"
        )
    for text in said:
        log.warning("%s", text)
    return said


def _same_model(cfg: AuditConfig, source: SourceRun, weights: str) -> None:
    """Refuse a source run audited with another model than the configured one (``weights``: its hash), saying
    when an older spray's fingerprint is all that differs as far as can be told."""
    if (
        source.model_hash
        and source.model_hash != weights
        and source.run_hash_versions.get(source.run_id, "1") != str(MODEL_HASH_VERSION)
    ):
        raise SprayError(
            f"correction.source_run {source.path.name} was audited by another spray version, which fingerprinted models "
            "otherwise: whether it audited the configured model cannot be told. Audit with this spray (spray run, "
            "or spray audit --config ...) and correct from that run."
        )
    if source.model_hash and source.model_hash != weights:
        raise SprayError(
            f"correction.source_run {source.path.name} was audited with another model than the configured one "
            f"(model hash {source.model_hash[:12]} there, {weights[:12]} now: other weights in "
            f"{cfg.model.checkpoint or 'the checkpoint'}, or an edited file of the model's own code, which the "
            "hash covers too): its findings and flags belong to that model. Audit the current model (spray audit "
            "--config ...) and correct from that run, or point model.checkpoint at the audited weights and "
            "restore the code."
        )


def _same_geometry(cfg: AuditConfig, source: SourceRun) -> None:
    """Refuse a source run audited with another resize, crop or interpolation than the config's: its findings,
    flags and "before" figures are of other pixels than the correction would see."""
    from spray.runs.input_changes import config_changes

    if source.transform is None:
        return
    keys = ("resize", "center_crop", "interpolation")
    now = cfg.data.transform.model_dump(mode="json")
    was = {"data": {"transform": {k: source.transform.get(k) for k in keys if k in source.transform}}}
    other = config_changes(was, {"data": {"transform": {k: now.get(k) for k in keys if k in now}}})
    if other:
        raise SprayError(
            f"correction.source_run {source.path.name} was audited with another data.transform than this config's "
            f"({'; '.join(other)}): its findings, flags and 'before' figures are of other pixels than the "
            "correction would see. Audit with this config first (spray audit --config ...) and correct from that "
            "run, or set data.transform back to the audited one."
        )


def _source_problems(source: SourceRun) -> list[str]:
    """What the source run's checks found wrong with the model (near chance, classes out of order, flat
    heatmaps), each logged and kept as a note: the correction's numbers are measured on that model too."""
    out = [
        f"the source run {source.run_id[:12]}'s check of the model: {p}"
        for p in recorded_problems(source.extra)
    ]
    for note in out:
        log.warning("%s", note)
    return out


def plan_correction(cfg: AuditConfig, *, device: str | None = None) -> CorrectionPlan:
    """Check the request and build what the correction needs (see the module docstring for the order).

    Raises
    ------
    SprayError
        With the problem and the fix (no flags, wrong dataset, unknown layer, too small a group, no run).
    """
    c = cfg.correction
    warn_ignored(cfg)
    runs_dir = Path(cfg.output.runs_dir)
    db = cfg.flags_db_path()
    flags = read_flags(db, cfg.dataset_key(), c, runs_dir)
    samples = SampleSet.build(cfg.data)
    dev = resolve_device(device or cfg.batch.device)
    model = build_model(cfg.model).to(dev).eval()
    samples.match_model(model)
    check_flag_content(samples, flags, runs_dir, data_fingerprint(cfg, samples.dataset))
    first = samples.dataset.first_batch(2).x  # readable ones: the audit skipped the others with a reason
    assert first is not None
    example = first.to(dev)
    cfg.check_class_count(
        len(samples.class_names), check_model_output(model, example, len(samples.class_names))
    )
    cfg = cfg.model_copy(deep=True)
    cfg.correction.layer = resolve_layer(model, c.layer, example)
    clean_samples, clean_rows, held = _evaluation_rows(cfg, samples)
    clean_samples.match_model(model)
    if clean_samples is not samples:
        test_first = clean_samples.dataset.first_batch(1).x
        assert test_first is not None
        check_held_out(clean_samples, samples, tuple(test_first.shape[1:]), tuple(example.shape[1:]))
    group = artifact_group(samples, flags, cfg.correction, cfg.seed, held)
    weights = model_hash(model, cfg.model.factory, cfg.factory_dirs)
    source = find_source_run(runs_dir, cfg.dataset_key(), weights, c.source_run, cfg.audit_name())
    _same_model(cfg, source, weights)
    _same_geometry(cfg, source)
    unreadable = samples.rows_of(source.skipped_ids).rows
    where = "the reference and the clean evaluation" if clean_samples is samples else "the reference"
    notes = _source_problems(source)
    kept_out = _kept_out(samples, flags, source, group.class_index, weights, where, notes)
    if len(unreadable) or len(kept_out):
        group = artifact_group(
            samples, flags, cfg.correction, cfg.seed, np.union1d(np.union1d(held, unreadable), kept_out)
        )
    train_rows = np.setdiff1d(np.arange(len(samples)), np.union1d(held, unreadable))
    if clean_samples is samples:  # no flagged sample of any class is clean data
        flagged = samples.rows_of(flags.sample_ids).rows
        clean_rows = np.setdiff1d(clean_rows, np.union1d(np.union1d(flagged, unreadable), kept_out))
    log.info("correcting class %s at layer %s: %d flagged, %d reference samples (source run %s)",
             group.class_name, cfg.correction.layer, len(group.flagged_rows),
             len(group.fit_reference) + len(group.held_reference), source.run_id[:12])  # fmt: skip
    return CorrectionPlan(
        cfg=cfg,
        correction_id=correction_id(cfg, source.run_id, flags, _inputs(cfg, weights, samples, clean_samples)),
        flags=flags,
        samples=samples,
        clean_samples=clean_samples,
        clean_rows=clean_rows,
        train_rows=train_rows,
        group=group,
        model=model,
        example=example,
        source=source,
        device=dev,
        flag_notes=notes,
    )

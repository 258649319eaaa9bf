"""The writer of a run folder: every file of one run, from the typed report and the batch stage's result.

What each file holds is documented in ``docs/run_layout.md``. The rules the writer keeps:

- **One identity.** Everything a reader sees names samples by ``sample_id``. Row positions (into
  ``samples.parquet``, ``heatmaps.npy`` and ``thumbs.npy``) appear only inside the class files, where the
  reader turns them back into sample ids.
- **Everything once.** A cluster is described once (``findings`` in ``summary.json``; a class lists its
  clusters by key); its members are stored once, as the labelling they come from (``labels_k<k>`` of
  ``classes/<c>.npz``); arrays live in ``.npz``/``.npy`` files, not in JSON.
- **Exact values.** Floats are written as they are (JSON keeps a float's shortest exact form), so a
  written run reads back as the same report.
- **Canonical bytes.** Sorted JSON keys, fixed array dtypes: the same inputs and seed give identical
  files apart from ``summary.json``'s ``timings``.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spray.records import (
    AuditReport,
    ChangeSet,
    ClassAnalysis,
    ClusterChange,
    ClusterFinding,
    ConditionalMaps,
)
from spray.runs.atomic import atomic_file, atomic_save_npy, atomic_save_npz, atomic_write_json
from spray.runs.cache import compact_concepts
from spray.runs.layout import LAYOUT_VERSION, SAMPLE_ORDER, RunFiles, sample_order_digest

if TYPE_CHECKING:
    from spray.attribution import BatchStageResult


def finding_entry(f: ClusterFinding, rank: int) -> dict[str, Any]:
    """A finding as stored in ``summary.json`` → ``findings`` (its members and mean heatmap are in the
    class file)."""
    return {
        "key": f.key,
        "rank": rank,
        "class_index": f.class_index,
        "class_name": f.class_name,
        "k": f.k,
        "cluster_id": f.cluster_id,
        "size": f.size,
        "fraction": float(f.fraction),
        "score": float(f.score),
        "suspicious": bool(f.suspicious),
        "evidence": list(f.evidence),
        "signals": {k: float(v) for k, v in f.signals.items()},
        "carrier_ids": list(f.carrier_ids),
        "space": f.space,
        "channels": [int(c) for c in f.channels],
    }


def class_entry(ca: ClassAnalysis) -> dict[str, Any]:
    """A class as stored in ``summary.json`` → ``classes`` (arrays are in ``classes/<c>.npz``)."""
    cl = ca.clustering
    return {
        "class_index": ca.class_index,
        "class_name": ca.class_name,
        "n": len(ca.sample_ids),
        "n_components": int(ca.spectral.n_components),
        "chosen_k": cl.chosen_k,
        "eigengap_k": cl.eigengap_k,
        "k_scores": {str(k): {n: float(v) for n, v in s.items()} for k, s in cl.scores.items()},
        "embedding_method": ca.embedding_method,
        "cluster_keys": [f.key for f in ca.clusters],
    }


def change_entry(c: ClusterChange) -> dict[str, Any]:
    """One entry of ``changes.new`` / ``grown`` / ``persisting`` / ``resolved``."""
    return {
        "key": c.key,
        "class_index": c.class_index,
        "class_name": c.class_name,
        "size": c.size,
        "score": c.score,
        "rank": c.rank,
        "previous_key": c.previous_key,
        "previous_size": c.previous_size,
        "previous_score": c.previous_score,
        "jaccard": c.jaccard,
        "correlation": c.correlation,
        "note": c.note,
    }


def changes_entry(ch: ChangeSet) -> dict[str, Any]:
    """``summary.json`` → ``changes``."""
    return {
        "previous_run_id": ch.previous_run_id,
        "previous_run": ch.previous_run,
        "new": [change_entry(c) for c in ch.new],
        "grown": [change_entry(c) for c in ch.grown],
        "persisting": [change_entry(c) for c in ch.persisting],
        "resolved": [change_entry(c) for c in ch.resolved],
        "n_new": ch.n_new,
        "n_grown": ch.n_grown,
        "n_resolved": ch.n_resolved,
        "n_suspicious": ch.n_suspicious,
        "matching": {
            "jaccard_min": ch.rule.jaccard_min,
            "correlation_min": ch.rule.correlation_min,
            "grow_min": ch.rule.grow_min,
            "contained_min": ch.rule.contained_min,
        },
        "unreadable": [{"run": u.run, "reason": u.reason} for u in ch.unreadable],
        "not_analysed": [change_entry(c) for c in ch.not_analysed],
        "model_changed": ch.model_changed,
        "data": None if ch.data is None else asdict(ch.data),
        "config_changed": list(ch.config_changed),
    }


def summary_document(report: AuditReport) -> dict[str, Any]:
    """The JSON document written as ``summary.json`` (layout :data:`LAYOUT_VERSION`)."""
    doc: dict[str, Any] = {
        "layout_version": LAYOUT_VERSION,
        "versions": dict(report.versions),
        "run_id": report.run_id,
        "name": report.name,
        "dataset": report.dataset,
        "hashes": dict(report.hashes),
        "config": report.config,
        "cache": report.cache,
        "n_samples": report.n_samples,
        "class_names": list(report.class_names),
        "timings": dict(report.timings),
        "skipped": [{"sample_id": s.sample_id, "reason": s.reason} for s in report.skipped],
        "classes_skipped": [
            {"class_index": c.class_index, "class_name": c.class_name, "n": c.n, "reason": c.reason}
            for c in report.classes_skipped
        ],
        "classes": [class_entry(c) for c in report.classes],
        "findings": [finding_entry(f, i + 1) for i, f in enumerate(report.findings)],
        "changes": None if report.changes is None else changes_entry(report.changes),
        "extra": dict(report.extra),
    }
    return doc


def _check_members(ca: ClassAnalysis) -> None:
    """Members are stored once, as a labelling: every finding must be one cluster of one stored labelling
    (a concept-only finding: of a concept labelling)."""
    members = np.asarray(ca.sample_ids, dtype=object)
    for f in ca.clusters:
        labellings = ca.concept_labellings if f.space == "concept" else ca.clustering.labellings
        lab = labellings.get(f.k)
        if lab is None or list(members[lab == f.cluster_id]) != list(f.member_ids):
            raise ValueError(
                f"finding {f.key}: its members are not cluster {f.cluster_id} of the stored {f.space} "
                f"labelling k={f.k} of class {ca.class_index}; a run stores a cluster's members only as its "
                "labelling (spray/runs/writer.py), so a finding must be one of them"
            )


def class_arrays(ca: ClassAnalysis, rows: np.ndarray, grid: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The arrays of ``classes/<c>.npz``.

    Parameters
    ----------
    ca : ClassAnalysis
        The class.
    rows : np.ndarray
        ``(n,)`` int64 positions of ``ca.sample_ids`` in ``samples.parquet``.
    grid : tuple
        ``(h, w)`` of the heatmaps (the shape of an empty ``mean_heatmaps``).
    """
    _check_members(ca)
    sp = ca.spectral
    arrays: dict[str, np.ndarray] = {
        "rows": rows.astype(np.int64),
        "eigenvalues": np.asarray(sp.eigenvalues, dtype=np.float64),
        "eigenvectors": np.asarray(sp.eigenvectors, dtype=np.float32),
        "embedding": np.asarray(ca.embedding, dtype=np.float32),
        "knn_indices": np.asarray(sp.knn_indices, dtype=np.int32),
        "knn_distances": np.asarray(sp.knn_distances, dtype=np.float32),
        "cluster_keys": np.asarray([f.key for f in ca.clusters], dtype=str),
        "mean_heatmaps": np.stack([f.mean_heatmap for f in ca.clusters]).astype(np.float32)
        if ca.clusters
        else np.zeros((0, *grid), np.float32),
    }
    for k, lab in ca.clustering.labellings.items():
        arrays[f"labels_k{k}"] = np.asarray(lab, dtype=np.int32)
    for k, lab in ca.concept_labellings.items():
        arrays[f"concept_labels_k{k}"] = np.asarray(lab, dtype=np.int32)
    return arrays


def concept_map_arrays(
    found: list[ConditionalMaps], row_of: dict[str, int], grid: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """The arrays of ``concept_maps.npz``: ``keys``, ``offsets``, ``rows`` (positions in
    ``samples.parquet``) and ``maps`` (float16), every finding's maps one after the other."""
    sizes = [len(m.sample_ids) for m in found]
    return {
        "keys": np.asarray([m.key for m in found], dtype=str),
        "offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        "rows": np.asarray([row_of[s] for m in found for s in m.sample_ids], dtype=np.int64),
        "maps": np.concatenate([np.asarray(m.maps, np.float16) for m in found])
        if sum(sizes)
        else np.zeros((0, *grid), np.float16),
    }


def samples_table(report: AuditReport, stage: BatchStageResult) -> Any:
    """``samples.parquet`` as a pandas DataFrame: one row per sample, in the order of ``heatmaps.npy``."""
    import pandas as pd

    batch = stage.batch
    n = len(batch)
    names = report.class_names
    row_of = {sample_id: i for i, sample_id in enumerate(batch.sample_ids)}
    # NaN for a sample of a class not analysed (too small, only zero heatmaps): 0 would read "analysed, clean"
    score = np.full(n, np.nan, dtype=np.float32)
    for ca in report.classes:
        rows = np.asarray([row_of[s] for s in ca.sample_ids], dtype=np.int64)
        # 0 for a report built without scores (tests)
        score[rows] = ca.sample_suspicion if len(ca.sample_suspicion) == len(rows) else 0.0
    confidence = batch.probabilities[np.arange(n), batch.predictions] if n else np.zeros(0)
    # Every batch stage hashes every sample; a record built without hashes (tests) gets nulls, never a guess.
    hashes = batch.content_hashes if len(batch.content_hashes) == n else [None] * n
    return pd.DataFrame(
        {
            "sample_id": batch.sample_ids,
            "label": batch.labels.astype(np.int64),
            "label_name": [names[i] if i < len(names) else str(i) for i in batch.labels],
            "prediction": batch.predictions.astype(np.int64),
            "prediction_name": [names[i] if i < len(names) else str(i) for i in batch.predictions],
            "confidence": confidence.astype(np.float32),
            "target": batch.targets.astype(np.int64),
            "score": score,
            "content_hash": pd.Series(hashes, dtype="string"),
        }
    )


def write_run(out: Path, report: AuditReport, stage: BatchStageResult) -> None:
    """Write every file of a run into the (staging) folder ``out``; ``summary.json`` last.

    Parameters
    ----------
    out : Path
        The run folder being written (see :func:`spray.runs.publish.staging_dir`).
    report : AuditReport
        The analysed run.
    stage : BatchStageResult
        The batch stage's merged result (heatmaps, thumbnails, predictions of every sample).
    """
    files = RunFiles(Path(out))
    batch = stage.batch
    row_of = {sample_id: i for i, sample_id in enumerate(batch.sample_ids)}
    grid = tuple(batch.relevance.shape[1:])
    for ca in report.classes:
        rows = np.asarray([row_of[s] for s in ca.sample_ids], dtype=np.int64)
        atomic_save_npz(files.class_file(ca.class_index), **class_arrays(ca, rows, grid))
    with atomic_file(files.samples) as fh:
        samples_table(report, stage).to_parquet(fh, index=False)
    atomic_save_npy(files.heatmaps, batch.relevance.astype(np.float16))
    if stage.thumbs is not None:
        atomic_save_npy(files.thumbs, stage.thumbs)
    if stage.full_relevance is not None:
        atomic_save_npy(files.full_relevance, stage.full_relevance)
    if batch.concepts is not None:
        atomic_save_npy(files.concepts, compact_concepts(batch.concepts))
    if report.conditional_maps:
        atomic_save_npz(files.concept_maps, **concept_map_arrays(report.conditional_maps, row_of, grid))
    # Last: a folder with a summary.json is a complete run; it records the rows' order, which readers check.
    report.extra[SAMPLE_ORDER] = sample_order_digest(list(batch.sample_ids))
    atomic_write_json(files.summary, summary_document(report))


def rebase_recorded_paths(runs_dir: Path, old: Path, new: Path) -> int:
    """Rewrite the paths under ``old`` in the recorded config of every run in ``runs_dir`` to lie under
    ``new``, the place the folder holding them is about to be moved to (a correction's re-audit audits the
    corrected model in the correction's work folder, which is then published elsewhere); returns how many
    runs changed.

    Parameters
    ----------
    runs_dir : Path
        A runs folder (its published runs are rewritten in place, atomically each).
    old, new : Path
        The folder as it is and as it will be.
    """
    from spray.runs.publish import list_runs
    from spray.runs.reader import read_json

    # a config's paths are recorded resolved: the folder may be named through a symlink
    pairs = [(str(old.resolve()), str(new.resolve())), (str(old), str(new))]

    def moved(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: moved(v) for k, v in value.items()}
        if isinstance(value, list):
            return [moved(v) for v in value]
        for before, after in pairs if isinstance(value, str) else ():
            if value == before or value.startswith(before + "/"):
                return after + value[len(before) :]
        return value

    changed = 0
    for run in list_runs(runs_dir):
        doc = read_json(RunFiles(run).summary)
        config = moved(doc.get("config")) if isinstance(doc, dict) else None
        if config is not None and config != doc.get("config"):
            atomic_write_json(RunFiles(run).summary, {**doc, "config": config})
            changed += 1
    return changed

"""What a run and a cache directory are: hashes of everything their content depends on.

- The **run id** hashes the model weights, the data fingerprint, every config section that changes the
  result (:data:`RESULT_SECTIONS` without :data:`NOT_RESULT_FIELDS`, and the seed) and the
  code versions (:func:`spray.versions.code_version`: LRP, analysis and layout versions, not the package
  version). A published run with the same id is up to date.
- A **cache directory** (``runs/.cache/<model16>-<lrp16>``) holds the per-sample results of one model
  and one setting of everything else a heatmap depends on (:func:`heatmap_settings`), including
  :data:`~spray.versions.LRP_VERSION` but not the analysis version: a scoring change re-analyses
  cached heatmaps, an LRP change recomputes them. Inside it a sample's key adds the explained target
  where that is the label (:func:`spray.runs.cache.sample_key`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spray import versions
from spray.errors import DataError
from spray.runs.file_hashes import folder_hashes

if TYPE_CHECKING:
    from spray.config import AuditConfig
    from spray.data import AuditDataset

#: Config sections that change the result (``output`` and ``nightly`` only change where and how a run is
#: published, and ``name`` what it is called).
RESULT_SECTIONS = ("model", "data", "lrp", "batch", "analysis", "scoring", "concepts")

#: Fields of those sections that say where the inputs are, not what they are: their content is hashed on its
#: own (the checkpoint's weights in the model hash, the files in :func:`data_fingerprint`), so a moved
#: checkpoint, or a moved data folder with a ``data.name``, is the same run (without one, the dataset key is
#: the folder's path, which the run id holds).
LOCATION_FIELDS: dict[str, set[str]] = {"model": {"checkpoint"}, "data": {"path", "images", "labels"}}

#: Fields of those sections that change how a run is computed, not its result (loader processes, the input
#: memo, how long ranks wait for each other, which the timeout's own message advises raising).
OPERATIONAL_FIELDS: dict[str, set[str]] = {"batch": {"num_workers", "input_memory_mb", "dist_timeout_s"}}

#: Fields outside the run id whose value a published run keeps from when it was made: a run found up to date
#: is reused as it is, so a new value shows only in the next run that analyses (or with ``--force``). The
#: report page, the comparison with the previous run (stored in the run), and the dashboard's reference count.
KEPT_BY_RUN_FIELDS: dict[str, tuple[str, ...]] = {
    "output": ("html_report",),
    "nightly": ("match_jaccard", "match_correlation", "grown_min", "match_contained"),
    "concepts": ("references",),
}

#: Both: left out of the run id and of the settings a run's changes name.
NOT_RESULT_FIELDS: dict[str, set[str]] = {
    s: LOCATION_FIELDS.get(s, set()) | OPERATIONAL_FIELDS.get(s, set()) | set(KEPT_BY_RUN_FIELDS.get(s, ()))
    for s in {*LOCATION_FIELDS, *OPERATIONAL_FIELDS, *KEPT_BY_RUN_FIELDS}
}


def _item_fields(item: Any) -> tuple[str, str]:
    """``(sample id, content hash or reason)`` of a dataset item (a dict or a record)."""
    get = item.get if isinstance(item, dict) else lambda k, d=None: getattr(item, k, d)
    sample_id = get("sample_id", get("id"))
    return str(sample_id), str(get("hash", get("content_hash", get("reason"))))


def data_fingerprint(cfg: AuditConfig, dataset: AuditDataset, contents: dict[str, str] | None = None) -> str:
    """A cheap fingerprint of the dataset content that changes whenever a sample changes.

    IDX: the files' bytes, as the dataset read them. Image folder: every file's relative path and content hash, each file read only
    when its size, mtime or ctime changed since the runs folder last hashed it (:mod:`spray.runs.file_hashes`:
    a chmod, copy or restore reads the files once and is the same run). Factory: the dataset's own
    ``fingerprint`` attribute if it has one, else a content hash of every sample. ``contents``, when given,
    receives the per-sample content hash each sample entered the fingerprint with (image folders and
    factories hashed sample by sample), for :func:`check_unchanged`.
    """
    h = hashlib.sha256()
    d = cfg.data
    h.update(json.dumps({"kind": d.kind, "limit": d.limit, "n": len(dataset)}).encode())
    if d.kind == "idx":
        # the bytes the samples were read from: a file rewritten since then must not lend the run its id
        for raw in dataset.file_bytes or [
            Path(p).read_bytes() for p in (d.images, d.labels) if p is not None
        ]:
            h.update(raw)
    elif d.kind == "image_folder":
        assert d.path is not None
        ids = list(dataset.sample_ids)
        for sample_id, content in zip(
            ids,
            folder_hashes(Path(d.path), ids, Path(cfg.output.runs_dir), complete=d.limit is None),
            strict=True,
        ):
            h.update(f"{sample_id}\0{content}\n".encode())
            if contents is not None:
                contents[sample_id] = content
    else:
        fp = getattr(dataset, "fingerprint", None)
        if fp is not None:
            h.update(str(fp).encode())
        else:
            for i in range(len(dataset)):
                sample_id, content = _item_fields(dataset[i])
                h.update(f"{sample_id}\0{content}\n".encode())
                if contents is not None:
                    contents[sample_id] = content
    h.update("\n".join(dataset.class_names).encode())
    return h.hexdigest()


def order_digest(dataset: AuditDataset) -> str:
    """A hash of the samples' ids and labels in dataset order: ranks whose factory lists the same samples in
    another order share a fingerprint but would each explain other samples under the same positions."""
    h = hashlib.sha256()
    for sample_id, label in zip(dataset.sample_ids, dataset.labels, strict=True):
        h.update(f"{sample_id}\0{int(label)}\n".encode())
    return h.hexdigest()


def check_unchanged(
    contents: dict[str, str], sample_ids: list[str], content_hashes: list[str], *, files: bool = True
) -> None:
    """Refuse a batch stage that explained other bytes than the run id was computed from.

    Parameters
    ----------
    contents : dict of str to str
        Sample id to the content hash it entered :func:`data_fingerprint` with.
    sample_ids, content_hashes : list of str
        The samples the batch stage explained and the content hash of the bytes it read for each.
    files : bool
        The samples are files (an image folder); else a factory's items, hashed by their inputs.

    Raises
    ------
    DataError
        When a sample was rewritten between the fingerprint and its read: the run would be published
        under the old files' id with the new files' heatmaps, and a later restore would reuse it as up to date.
    """
    changed = [s for s, h in zip(sample_ids, content_hashes, strict=True) if contents.get(s, h) != h]
    if not changed:
        return
    e_g = ", ".join(changed[:3])
    what = (
        f"{len(changed)} files changed on disk while the batch stage read them (e.g. {e_g})"
        if files
        else f"{len(changed)} samples of the factory dataset gave other inputs in the batch stage than when the "
        f"run id was computed (e.g. {e_g}): its data changed, or its transform is random (augmentation such as "
        "RandomHorizontalFlip: build it with its evaluation transform)"
    )
    raise DataError(
        f"{what}: the run would describe inputs that are not those its id was computed from, so it is not "
        "published. The heatmaps computed so far are cached; run again when the data is not being written."
    )


#: Model settings that change what the same weights compute (the checkpoint's path does not: its weights are
#: in the model hash).
MODEL_SETTINGS = ("architecture", "architecture_kwargs", "factory", "factory_kwargs", "output", "num_classes")


def heatmap_settings(cfg: AuditConfig) -> dict[str, Any]:
    """Every setting besides the model weights that changes a sample's cached result.

    The model's construction (:data:`MODEL_SETTINGS`: the same weights under another output, pooling or
    factory argument compute something else), the LRP section (composite and its parameters, target
    rule, precision, canonization), the analysis grid, the input transform, how files decode
    (``data.max_image_pixels`` and :data:`~spray.data.decoding.DECODER_VERSION`), the thumbnails,
    full-resolution storage and :data:`LRP_VERSION`. The Box composites' input bounds derive from the
    transform, which is in here.
    """
    from spray.data.decoding import DECODER_VERSION

    return {
        "model": cfg.model.model_dump(mode="json", include=set(MODEL_SETTINGS)),
        "lrp": cfg.lrp.model_dump(mode="json"),
        "grid": cfg.batch.grid,
        "transform": cfg.data.transform.model_dump(mode="json"),
        # a JPEG above the limit decodes at reduced scale, and an image above it is skipped
        "decoding": [cfg.data.max_image_pixels, DECODER_VERSION],
        "thumbnails": [cfg.batch.thumbnails, cfg.batch.thumbnail_size],
        "full": cfg.batch.store_full_relevance,
        "lrp_version": versions.LRP_VERSION,
    }


def lrp_hash(cfg: AuditConfig, input_size: tuple[int, int] | None = None) -> str:
    """SHA-256 of :func:`heatmap_settings`, with the dataset's model-input size ``(H, W)`` when given."""
    settings = heatmap_settings(cfg)
    if input_size is not None:
        settings["input_size"] = list(input_size)
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def cache_dir_name(cfg: AuditConfig, model_hash: str, input_size: tuple[int, int] | None = None) -> str:
    """``<model16>-<lrp16>``: the cache directory of this model, these heatmap settings and the dataset's
    model-input size ``(H, W)`` (the size most of its images have after the transform; None: not fixed).

    A folder whose images mostly came to have another size gets another directory: its cached heatmaps and
    thumbnails have the old size and would be taken without a decode, so the size check never saw them.
    """
    return f"{model_hash[:16]}-{lrp_hash(cfg, input_size)[:16]}"


def run_hashes(cfg: AuditConfig, model_hash: str, data_hash: str) -> dict[str, str]:
    """What the run id hashes: ``model``, ``data``, ``config`` (result sections and seed), ``code`` and how the model
    was fingerprinted (``model_hash_version``)."""
    return {
        "model": model_hash,
        "data": data_hash,
        # the dataset key names the run's flags and previous runs: a moved folder without data.name has a new one
        # the audit's name too: an audit finds its previous runs by name, and two audits sharing a runs
        # folder must not take each other's run as their own up-to-date one
        "config": cfg.section_hash(*RESULT_SECTIONS, exclude=NOT_RESULT_FIELDS)
        + f"-seed{cfg.seed}-dataset{cfg.dataset_key()}-name{cfg.name}",
        "code": versions.code_version(),
        "model_hash_version": str(versions.MODEL_HASH_VERSION),
    }


def compute_run_id(hashes: dict[str, str]) -> str:
    """The run id: a hash of :func:`run_hashes`."""
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()


def settings_not_applied(cfg: AuditConfig, recorded: dict[str, Any]) -> list[str]:
    """The :data:`KEPT_BY_RUN_FIELDS` whose value in ``cfg`` differs from the one a published run recorded
    (``recorded``: its resolved config), as ``section.field (old → new)``; a run that recorded none gives none."""
    now = cfg.model_dump(mode="json")
    out = []
    for section, fields in KEPT_BY_RUN_FIELDS.items():
        before = recorded.get(section)
        if not isinstance(before, dict):
            continue
        for name in fields:
            if name in before and before[name] != now[section][name]:
                out.append(f"{section}.{name} ({before[name]!r} → {now[section][name]!r})")
    return out

"""Export a run as a ViRelAy project (Fraunhofer's relevance-analysis viewer, ``pip install virelay``).

Written (all paths relative to the project file, as ViRelAy resolves them)::

    project.yaml      project: name, model, label_map, dataset, attributions, analyses
    label-map.json    [{index, word_net_id, name}] — word_net_id is the class index as text, so ViRelAy
                      names each analysis category (the class index) by its class name
    dataset.h5        data (N, 3, t, t) uint8 thumbnails; label (N,); sample_id (N,) UTF-8 strings (spray's own)
    attribution.h5    attribution (N, 2, h, w) float32, two halves of heatmaps.npy; prediction (N, classes);
                      label (N,)
    analysis.h5       one group per analysed class "<class index>": index (n,) uint32 rows into the two
                      files above; embedding/spectral (n, d) with attribute eigenvalue (d,); embedding/<2-D
                      method> (n, 2), the map spray shows; cluster/spray-k<kk> (n,) for every stored k
                      and cluster/spray-concept-k<kk> for every k of the concept-space sweep

ViRelAy 0.6.1 lists the clusterings of the first category only and answers 404 for a category without the
one chosen, so every category holds every clustering of the run, in one order: pixel k ascending (k00 the
hot-spot groups), then the concept-space ones. A class for which spray stored no labelling at that k (a
hot-spot labelling in another class only, a class too small for that k, no concept sweep) gets every sample
in no cluster (-1), with the HDF5 attribute ``spray_note`` saying so. A finding ``<c>/k<k>/c<id>`` is cluster
``<id>`` of ``spray-k<kk>`` in category ``<c>``; a concept-space finding ``<c>/concept/k<k>/c<id>`` is
cluster ``<id>`` of ``spray-concept-k<kk>`` (the pixel labelling at that k is another grouping).

Facts about the format are from virelay 0.6.1's own loader (``virelay.model.Project``); the tests load the
export with it and check that samples, attributions and clusterings come back unchanged. spray stores only
the predicted class's probability, so ``prediction`` holds it at the predicted index and 0 elsewhere (an
attribute of the dataset says so). The run must have thumbnails: ViRelAy needs an input image per sample.
"""

from __future__ import annotations

import json
import logging
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from spray.errors import ConfigError, DataError
from spray.export.source import ExportSource, open_source, require_space, staged_output

log = logging.getLogger(__name__)

PROJECT_FILE = "project.yaml"
LABEL_MAP = "label-map.json"
DATASET = "dataset.h5"
ATTRIBUTION = "attribution.h5"
ANALYSIS = "analysis.h5"
ANALYSIS_METHOD = "spectral"
# Rows per HDF5 chunk: ~1 MB of 56×56 thumbnails, small enough for ViRelAy's per-sample reads.
CHUNK = 128


def clustering_name(k: int, space: str = "pixel") -> str:
    """The name of the labelling at ``k`` in ``space`` (``"concept"``: the concept-space sweep's), zero-padded
    so that names sort by k."""
    return f"spray-concept-k{k:02d}" if space == "concept" else f"spray-k{k:02d}"


def _strategy(src: ExportSource) -> str:
    """ViRelAy's attribution strategy: which output the heatmaps explain."""
    t = src.samples
    if len(t) and (t["target"] == t["label"]).all():
        return "true_label"
    if len(t) and (t["target"] == t["prediction"]).all():
        return "predicted_label"
    return "true_label"


def _project(src: ExportSource, size: int) -> dict[str, Any]:
    hashes = src.summary.hashes
    return {
        "project": {
            "name": f"{src.summary.name or 'spray'} ({src.run_id[:12]})",
            "model": f"model {str(hashes.get('model', ''))[:16] or 'unknown'}",
            "label_map": LABEL_MAP,
            "dataset": {
                "name": src.dataset,
                "type": "hdf5",
                "path": DATASET,
                "input_width": size,
                "input_height": size,
                "up_sampling_method": "none",
                "down_sampling_method": "none",
            },
            "attributions": {
                "attribution_method": f"LRP (spray {src.summary.versions.get('spray', '')})".strip(),
                "attribution_strategy": _strategy(src),
                "sources": [ATTRIBUTION],
            },
            "analyses": [{"analysis_method": ANALYSIS_METHOD, "sources": [ANALYSIS]}],
        }
    }


def _write_inputs(h5: Any, src: ExportSource, dst: Path) -> None:
    """dataset.h5 and attribution.h5, streamed in chunks (memory stays at one chunk)."""
    assert src.thumbs is not None
    n, t = len(src.samples), src.thumbs.shape[1]
    h, w = src.heatmaps.shape[1:]
    labels = src.samples["label"].to_numpy(dtype=np.int64)
    preds = src.samples["prediction"].to_numpy(dtype=np.int64)
    n_classes = max(len(src.class_names), int(preds.max(initial=0)) + 1, int(labels.max(initial=0)) + 1)
    prob = np.zeros((n, n_classes), np.float32)
    prob[np.arange(n), preds] = src.samples["confidence"].to_numpy(dtype=np.float32)
    opts = {"compression": "gzip", "compression_opts": 4}
    with h5.File(dst / DATASET, "w") as f:
        data = f.create_dataset(
            "data", (n, 3, t, t), np.uint8, chunks=(min(CHUNK, max(n, 1)), 3, t, t), **opts
        )
        for lo in tqdm(range(0, n, CHUNK), desc="virelay inputs", unit="chunk", disable=None):
            data[lo : lo + CHUNK] = _thumb_chunk(src, lo)
        f.create_dataset("label", data=labels)
        # ViRelAy reads data and label only; this row's sample id lets a sample seen there be traced to its
        # file and flag
        f.create_dataset("sample_id", data=list(src.sample_ids), dtype=h5.string_dtype(encoding="utf-8"))
    with h5.File(dst / ATTRIBUTION, "w") as f:
        att = f.create_dataset(
            "attribution", (n, 2, h, w), np.float32, chunks=(min(CHUNK, max(n, 1)), 2, h, w), **opts
        )
        for lo in tqdm(range(0, n, CHUNK), desc="virelay attributions", unit="chunk", disable=None):
            att[lo : lo + CHUNK] = _attribution_chunk(src, lo)
        pred = f.create_dataset("prediction", data=prob)
        pred.attrs["spray_note"] = (
            "only the predicted class's probability is stored by spray; other entries are 0"
        )
        f.create_dataset("label", data=labels)


def map_name(src: ExportSource) -> str:
    """The name of the 2-D map in every category (ViRelAy lists the first category's names only)."""
    methods = {c.embedding_method or "map" for c in src.classes()}
    one = methods.pop() if len(methods) == 1 else "map"
    return one if one != "spectral" else "map"


def _clusterings(src: ExportSource) -> list[tuple[int, str]]:
    """``(k, space)`` of every labelling any class stored: pixel ones by k, then concept-space ones by k."""
    found: set[tuple[int, str]] = set()
    for entry in src.classes():
        data = src.class_data(entry.class_index)
        found |= {(k, "pixel") for k in data.labellings} | {(k, "concept") for k in data.concept_labellings}
    return sorted(found, key=lambda ks: (ks[1] == "concept", ks[0]))


def _write_clusterings(group: Any, data: Any, clusterings: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Every clustering of the run into one class's ``cluster`` group, in ``clusterings``' order (ViRelAy
    lists the first class's and asks every class for the one chosen); returns those the class lacked."""
    missing = []
    for k, space in clusterings:
        lab = data.labelling(k, space)
        ds = group.create_dataset(
            clustering_name(k, space),
            data=(np.full(len(data.sample_ids), -1) if lab is None else lab).astype(np.int64),
        )
        if lab is None:
            missing.append((k, space))
            ds.attrs["spray_note"] = (
                f"spray stored no {space} labelling at k={k} for this class: every sample is in no cluster (-1)"
            )
    return missing


def _thumb_chunk(src: ExportSource, lo: int) -> np.ndarray:
    """Rows ``lo`` to ``lo + CHUNK`` of dataset.h5's ``data``: thumbnails channel-first."""
    assert src.thumbs is not None
    return np.moveaxis(np.asarray(src.thumbs[lo : lo + CHUNK]), -1, 1)


def _attribution_chunk(src: ExportSource, lo: int) -> np.ndarray:
    """Rows ``lo`` to ``lo + CHUNK`` of attribution.h5's ``attribution``: two halves of each heatmap."""
    half = np.asarray(src.heatmaps[lo : lo + CHUNK], dtype=np.float32) / 2
    return np.stack([half, half], axis=1)


def _gzip_ratio(chunk: np.ndarray) -> float:
    """How much gzip (level 4, as the export writes) shrinks this chunk: compressed / raw bytes."""
    raw = np.ascontiguousarray(chunk).tobytes()
    return len(zlib.compress(raw, 4)) / max(len(raw), 1)


def _needed_bytes(src: ExportSource, clusterings: list[tuple[int, str]]) -> int:
    """About the project's size: the big arrays at the compression their first chunk gets, with a quarter
    and 1 MB to spare (the rest of the data may compress less)."""
    assert src.thumbs is not None
    n, t = len(src.sample_ids), int(src.thumbs.shape[1])
    h, w = src.heatmaps.shape[1:]
    images = n * 3 * t * t * _gzip_ratio(_thumb_chunk(src, 0))
    maps = n * 2 * h * w * 4 * _gzip_ratio(_attribution_chunk(src, 0))
    small = n * (8 + 16 + 8 + 4 * max(len(src.class_names), 1)) + sum(len(s.encode()) for s in src.sample_ids)
    for entry in src.classes():
        data = src.class_data(entry.class_index)
        rows, m = len(data.sample_ids), int(np.asarray(data.eigenvectors).shape[-1])
        small += rows * (4 + 4 * m + 8 + 8 * len(clusterings))
    return int(1.25 * (images + maps + small)) + 1_000_000


def _write_analyses(h5: Any, src: ExportSource, dst: Path, clusterings: list[tuple[int, str]]) -> None:
    name = map_name(src)
    lacking: dict[tuple[int, str], int] = {}  # clustering -> classes that lack it
    with h5.File(dst / ANALYSIS, "w") as f:
        for entry in src.classes():
            data = src.class_data(entry.class_index)
            g = f.create_group(str(entry.class_index))
            g.create_dataset("index", data=src.positions(data.sample_ids).astype(np.uint32))
            emb = g.create_group("embedding")
            spec = emb.create_dataset("spectral", data=np.asarray(data.eigenvectors, dtype=np.float32))
            spec.attrs["eigenvalue"] = np.asarray(data.eigenvalues, dtype=np.float32)
            emb.create_dataset(name, data=np.asarray(data.embedding, dtype=np.float32))
            # creation order, not name order: ViRelAy lists the pixel clusterings first, by k
            for ks in _write_clusterings(g.create_group("cluster", track_order=True), data, clusterings):
                lacking[ks] = lacking.get(ks, 0) + 1
    if lacking:
        log.info(
            "%d of %d clusterings are not stored for every class (%s): written with every sample in no cluster "
            "(-1) where missing, so that ViRelAy can show each of them for every class",
            len(lacking),
            len(clusterings),
            ", ".join(f"{clustering_name(k, sp)} in {n} classes" for (k, sp), n in sorted(lacking.items())),
        )


def write_virelay_project(run: str | Path, out: str | Path) -> Path:
    """Write the ViRelAy project of a run into the new folder ``out``; returns its ``project.yaml``.

    Parameters
    ----------
    run : str or Path
        A run folder, or a runs folder (its newest run).
    out : str or Path
        Folder to create (must not exist).

    Raises
    ------
    DataError
        The run has no thumbnails, or a run file cannot be read.
    RunWriteError
        The folder of ``out`` is read-only, not ours, or has too little free space (named, with the fix).
    """
    try:
        import h5py
    except ImportError:
        raise ConfigError(
            "spray export virelay writes HDF5 files: pip install h5py (or spray-audit[export])."
        ) from None

    src = open_source(run)
    if src.thumbs is None:
        raise DataError(
            f"{src.path} has no thumbs.npy: ViRelAy needs an input image for every sample. Re-run the audit "
            "with thumbnails (the default) to export it."
        )
    if not src.classes():
        raise DataError(f"{src.path} analysed no class: there is nothing for ViRelAy to show.")
    # HDF5 cannot recover from a disk that fills while it writes (h5py crashes the process on exit):
    # refuse before writing instead
    clusterings = _clusterings(src)
    require_space(out, _needed_bytes(src, clusterings), "the ViRelAy project")
    with staged_output(out) as tmp:
        labels = [{"index": i, "word_net_id": str(i), "name": name} for i, name in enumerate(src.class_names)]
        (tmp / LABEL_MAP).write_text(json.dumps(labels, indent=1, ensure_ascii=False))
        _write_inputs(h5py, src, tmp)
        _write_analyses(h5py, src, tmp, clusterings)
        project = _project(src, int(src.thumbs.shape[1]))
        (tmp / PROJECT_FILE).write_text(yaml.safe_dump(project, sort_keys=False, allow_unicode=True))
    log.info("wrote the ViRelAy project of run %s to %s", src.run_id[:12], out)
    return Path(out) / PROJECT_FILE

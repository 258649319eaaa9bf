"""The analysis split over torchrun ranks: which rank analyses which class, and the files between ranks.

Under ``torchrun`` every rank analyses a share of the classes (:func:`assign_classes`: greedy, largest
class first, to the rank with the least work so far). Two kinds of file carry the data between ranks,
inside the run's work folder (``runs/.cache/work/<run16>/analysis``, removed when the run is published):

- **inputs** (rank 0 → every rank): after merging the shards, rank 0 writes the analysis' inputs of
  every sample (ids, content hashes, labels, predictions and the pooled heatmaps). The heatmaps are a
  ``.npy`` file the other ranks memory-map, so each reads only the rows of its own classes; the
  thumbnails and probabilities the analysis does not need are not copied at all.
- **class files** (every rank → rank 0): each analysed class as ``class-<c>.npz``, its arrays with their
  dtypes and everything else as exact JSON, so rank 0 reads back the very :class:`ClassAnalysis` the
  other rank computed. Files, not pickles sent through the process group: a class of 1,300 samples
  is about 470 KB (measured, benchmarks/analysis_scale.py), an ImageNet run about 0.47 GB in all, which
  would otherwise sit in rank 0's memory twice (pickled and unpickled) at the end of the analysis.

Both file kinds are written atomically and read with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spray.records import AttributionBatch, ClassAnalysis, ClusterFinding, ClusteringResult, SpectralResult
from spray.runs.atomic import atomic_save_npy, atomic_save_npz, atomic_write_bytes

#: File names inside the analysis work folder.
INPUTS_FILE = "inputs.npz"
RELEVANCE_FILE = "relevance.npy"
META_FILE = "inputs.json"


@dataclass
class AnalysisInputs:
    """What the analysis reads of the batch stage's result, for every readable sample (dataset order).

    Attributes
    ----------
    sample_ids, content_hashes : list[str]
        Length ``N``.
    labels, predictions : np.ndarray
        ``(N,)`` int64.
    relevance : np.ndarray
        ``(N, h, w)`` float16 pooled relevance (memory-mapped on ranks other than 0).
    """

    sample_ids: list[str]
    content_hashes: list[str]
    labels: np.ndarray
    predictions: np.ndarray
    relevance: np.ndarray

    @classmethod
    def of_batch(cls, batch: AttributionBatch) -> AnalysisInputs:
        """The inputs held by the merged batch-stage result (no copy)."""
        return cls(batch.sample_ids, batch.content_hashes, batch.labels, batch.predictions, batch.relevance)

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


def write_inputs(folder: Path, inputs: AnalysisInputs) -> None:
    """Rank 0: write the analysis inputs for the other ranks (who read them after a collective)."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(folder / RELEVANCE_FILE, np.ascontiguousarray(inputs.relevance, dtype=np.float16))
    atomic_write_bytes(
        folder / META_FILE,
        json.dumps({"sample_ids": inputs.sample_ids, "content_hashes": inputs.content_hashes}).encode(),
    )
    atomic_save_npz(
        folder / INPUTS_FILE,
        labels=inputs.labels.astype(np.int64),
        predictions=inputs.predictions.astype(np.int64),
    )


def read_inputs(folder: Path) -> AnalysisInputs:
    """The inputs rank 0 wrote; the heatmaps memory-mapped (read-only)."""
    meta = json.loads((folder / META_FILE).read_text())
    with np.load(folder / INPUTS_FILE, allow_pickle=False) as z:
        labels, predictions = z["labels"], z["predictions"]
    relevance = np.load(folder / RELEVANCE_FILE, mmap_mode="r", allow_pickle=False)
    return AnalysisInputs(meta["sample_ids"], meta["content_hashes"], labels, predictions, relevance)


def class_file(folder: Path, class_index: int) -> Path:
    """``class-<c>.npz`` in the analysis work folder."""
    return folder / f"class-{class_index}.npz"


def _finding_meta(f: ClusterFinding) -> dict[str, Any]:
    return {
        "class_index": f.class_index,
        "class_name": f.class_name,
        "cluster_id": f.cluster_id,
        "k": f.k,
        "size": f.size,
        "fraction": f.fraction,
        "score": f.score,
        "suspicious": f.suspicious,
        "evidence": f.evidence,
        "signals": f.signals,
        "member_ids": f.member_ids,
        "carrier_ids": f.carrier_ids,
    }


def _plain(o: Any) -> Any:
    """JSON for numpy scalars (their exact value: a float's shortest repr reads back to the same bits)."""
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_class(path: Path, ca: ClassAnalysis) -> None:
    """Write one analysed class so that :func:`load_class` gives it back exactly (values and dtypes)."""
    sp, cl = ca.spectral, ca.clustering
    meta = {
        "class_index": ca.class_index,
        "class_name": ca.class_name,
        "sample_ids": ca.sample_ids,
        "embedding_method": ca.embedding_method,
        "n_components": sp.n_components,
        "chosen_k": cl.chosen_k,
        "eigengap_k": cl.eigengap_k,
        "scores": [[k, s] for k, s in cl.scores.items()],
        "labelling_ks": list(cl.labellings),
        "clusters": [_finding_meta(f) for f in ca.clusters],
    }
    arrays = {
        "meta": np.frombuffer(json.dumps(meta, default=_plain).encode(), dtype=np.uint8),
        "eigenvalues": sp.eigenvalues,
        "eigenvectors": sp.eigenvectors,
        "knn_indices": sp.knn_indices,
        "knn_distances": sp.knn_distances,
        "embedding": ca.embedding,
    }
    for k, lab in cl.labellings.items():
        arrays[f"labels_k{k}"] = lab
    for i, f in enumerate(ca.clusters):
        arrays[f"mean_heatmap_{i}"] = f.mean_heatmap
    atomic_save_npz(path, **{k: np.asarray(v) for k, v in arrays.items()})


def load_class(path: Path) -> ClassAnalysis:
    """Read a class written by :func:`save_class`."""
    with np.load(path, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    meta = json.loads(a["meta"].tobytes().decode())
    clusters = [
        ClusterFinding(**f, mean_heatmap=a[f"mean_heatmap_{i}"]) for i, f in enumerate(meta["clusters"])
    ]
    return ClassAnalysis(
        class_index=meta["class_index"],
        class_name=meta["class_name"],
        sample_ids=meta["sample_ids"],
        spectral=SpectralResult(
            a["eigenvalues"], a["eigenvectors"], a["knn_indices"], a["knn_distances"], meta["n_components"]
        ),
        clustering=ClusteringResult(
            {k: a[f"labels_k{k}"] for k in meta["labelling_ks"]},
            meta["chosen_k"],
            meta["eigengap_k"],
            {int(k): s for k, s in meta["scores"]},
        ),
        embedding=a["embedding"],
        embedding_method=meta["embedding_method"],
        clusters=clusters,
    )

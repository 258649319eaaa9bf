"""Synthetic but structurally real runs for the dashboard's tests and benchmark.

The run is written by spray's own writer (:func:`spray.runs.writer.write_run` + :func:`spray.runs.publish.publish`), so
it has exactly the files and fields of a real audit; only the numbers are made up:

- every class has a few "strategy" groups; one class (``planted_class``) has a planted group whose inputs
  carry a 4×4 white square at the top left and whose relevance sits on it (a Clever Hans);
- the 2-D map places groups as separate blobs (the planted one far away), the k-means labellings for
  every k merge / split those groups, and the planted cluster gets the highest score.

Building 100k samples takes a few seconds (everything is vectorised).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from spray.attribution import BatchStageResult
from spray.data import content_hash
from spray.lab.demo import FASHION_CLASSES
from spray.records import (
    AttributionBatch,
    AuditReport,
    ClassAnalysis,
    ClusterFinding,
    ClusteringResult,
    SkippedSample,
    SpectralResult,
)
from spray.runs.publish import publish, staging_dir
from spray.runs.writer import write_run

CLASS_NAMES = FASHION_CLASSES


def _images(rng: np.random.Generator, cls: int, n: int, size: int, planted: np.ndarray) -> np.ndarray:
    """Grey blobs whose shape depends on the class, plus a white corner square on planted samples."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    rx, ry = 0.18 + 0.03 * (cls % 4), 0.22 + 0.02 * (cls % 5)
    base = np.exp(-(((xx / rx) ** 2 + (yy / ry) ** 2) ** 2))
    img = base[None] * rng.uniform(120, 220, size=(n, 1, 1)) + rng.normal(0, 12, size=(n, size, size))
    img = np.clip(img, 0, 255).astype(np.uint8)
    s = max(2, size // 7)
    m = max(1, size // 28)
    img[planted, m : m + s, m : m + s] = 255
    return np.repeat(img[..., None], 3, axis=-1)


def _heatmaps(rng: np.random.Generator, group: np.ndarray, planted: np.ndarray, grid: int) -> np.ndarray:
    """Relevance: a central bump that shifts with the group; planted samples light up the top-left corner."""
    n = len(group)
    yy, xx = np.mgrid[0:grid, 0:grid] / (grid - 1) - 0.5
    out = np.empty((n, grid, grid), np.float32)
    for g in np.unique(group):
        idx = np.flatnonzero(group == g)
        cy, cx = 0.15 * np.sin(g), 0.15 * np.cos(g)
        bump = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.03)
        out[idx] = bump[None] * rng.uniform(0.5, 1.5, (len(idx), 1, 1))
    out += rng.normal(0, 0.05, out.shape).astype(np.float32)
    s = max(2, grid // 7)
    m = max(1, grid // 28)
    out[planted] *= 0.2
    out[planted, m : m + s, m : m + s] += 3.0
    return out


def make_synthetic_run(
    runs_dir: str | Path,
    *,
    class_sizes: list[int] | None = None,
    n_groups: int = 4,
    planted_class: int = 6,
    planted_fraction: float = 0.15,
    grid: int = 28,
    thumb: int = 28,
    k_max: int = 6,
    dataset: str = "synthetic-fashion",
    run_id: str | None = None,
    seed: int = 0,
    thumbs: bool = True,
    skipped: list[SkippedSample] | None = None,
) -> Path:
    """Write one published run into ``runs_dir`` and return its directory.

    Parameters
    ----------
    runs_dir : str or Path
        Runs directory (created).
    class_sizes : list[int], optional
        Samples per class (default 60 for each of 10 classes).
    n_groups : int
        Non-planted groups per class (the chosen k is ``n_groups``, +1 in the planted class).
    planted_class : int
        Class with the planted Clever Hans (ignored when out of range).
    planted_fraction : float
        Fraction of that class carrying the artifact.
    grid, thumb : int
        Heatmap grid and thumbnail edge.
    k_max : int
        Labellings ``labels_k2..labels_k<k_max>`` are stored.
    dataset : str
        ``summary["dataset"]`` (the flag key).
    run_id : str, optional
        Default: derived from the seed and sizes.
    seed : int
    thumbs : bool
        Store thumbs.npy.
    skipped : list[SkippedSample], optional
        Unreadable samples the run records (none by default).
    """
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    sizes = class_sizes or [60] * 10
    names = [CLASS_NAMES[i] if i < len(CLASS_NAMES) else f"class {i}" for i in range(len(sizes))]
    rng = np.random.default_rng(seed)
    n = int(sum(sizes))
    labels = np.repeat(np.arange(len(sizes)), sizes)
    ids = [str(i) for i in range(n)]
    probs = rng.dirichlet(np.full(len(sizes), 0.3), size=n).astype(np.float32)
    # Mostly correct predictions with a realistic mix of confusions.
    correct = rng.random(n) < 0.85
    probs[correct, labels[correct]] += 1.5
    probs /= probs.sum(1, keepdims=True)
    preds = probs.argmax(1)
    rel = np.empty((n, grid, grid), np.float16)
    images = np.empty((n, thumb, thumb, 3), np.uint8) if thumbs else None
    classes: list[ClassAnalysis] = []
    start = 0
    for c, nc in enumerate(sizes):
        rows = np.arange(start, start + nc)
        start += nc
        planted = np.zeros(nc, bool)
        if c == planted_class:
            planted[rng.choice(nc, size=max(1, round(planted_fraction * nc)), replace=False)] = True
        group = rng.integers(0, n_groups, nc)
        group[planted] = n_groups
        rel[rows] = _heatmaps(rng, group, planted, grid).astype(np.float16)
        if images is not None:
            images[rows] = _images(rng, c, nc, thumb, planted)
        n_true = n_groups + int(planted.any())
        # Blobs on a circle; the planted group far out.
        angle = 2 * np.pi * group / max(1, n_groups)
        radius = np.where(planted, 9.0, 4.0)
        emb = np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1) + rng.normal(0, 0.8, (nc, 2))
        emb[planted] = np.array([8.0, 8.0]) + rng.normal(0, 0.5, (int(planted.sum()), 2))
        labellings: dict[int, np.ndarray] = {}
        for k in range(2, k_max + 1):
            if k <= n_true:
                # Merging: the planted group keeps its own label as long as k allows (it separates first).
                lab = np.where(planted, k - 1, group % max(1, k - 1)) if k >= 2 else np.zeros(nc)
            else:
                lab = group.copy()
                extra = rng.random(nc) < 0.5
                lab[extra & (group == 0)] = n_true + (rows[extra & (group == 0)] % (k - n_true))
            labellings[k] = lab.astype(np.int32)
        chosen = min(n_true, k_max)
        lab = labellings[chosen]
        eig = np.concatenate(
            [np.ones(1), 1 - np.linspace(0.02, 0.05, chosen - 1), np.linspace(0.7, 0.5, 8 - chosen)]
        )
        findings: list[ClusterFinding] = []
        relc = rel[rows].astype(np.float32)
        relc /= np.maximum(np.abs(relc).sum((1, 2), keepdims=True), 1e-6)
        for cid in np.unique(lab):
            members = np.flatnonzero(lab == cid)
            is_planted = bool(planted[members].mean() > 0.5)
            score = 4.0 + rng.random() if is_planted else float(rng.random() * 1.5)
            evidence = (
                [
                    f"{round(100 * 0.71)} % of its relevance lies in a 4×4 region at the top left",
                    "pasting that region into other classes flips 62 % of them to this class",
                ]
                if is_planted
                else [f"relevance spread over the object ({100 * len(members) / nc:.0f} % of the class)"]
            )
            findings.append(
                ClusterFinding(
                    class_index=c,
                    class_name=names[c],
                    cluster_id=int(cid),
                    k=chosen,
                    size=len(members),
                    fraction=len(members) / nc,
                    score=score,
                    suspicious=is_planted,
                    evidence=evidence,
                    signals={"concentration": 0.71 if is_planted else 0.2, "rarity": 1 - len(members) / nc},
                    member_ids=[ids[r] for r in rows[members]],
                    mean_heatmap=relc[members].mean(0),
                    # A flagged finding lists samples outside the cluster that repeat its stamp.
                    carrier_ids=[ids[r] for r in rows[lab != cid][:7]] if is_planted else [],
                )
            )
        findings.sort(key=lambda f: -f.score)
        classes.append(
            ClassAnalysis(
                class_index=c,
                class_name=names[c],
                sample_ids=[ids[r] for r in rows],
                spectral=SpectralResult(
                    eigenvalues=eig,
                    eigenvectors=rng.normal(size=(nc, 8)).astype(np.float32),
                    knn_indices=rng.integers(0, nc, (nc, 5)),
                    knn_distances=np.zeros((nc, 5), np.float32),
                    n_components=1,
                ),
                clustering=ClusteringResult(
                    labellings=labellings,
                    chosen_k=chosen,
                    eigengap_k=chosen,
                    scores={k: {"silhouette": 0.3 + 0.1 * (k == chosen)} for k in labellings},
                ),
                embedding=emb.astype(np.float32),
                embedding_method="umap",
                clusters=findings,
            )
        )
    all_findings = sorted((f for ca in classes for f in ca.clusters), key=lambda f: -f.score)
    rid = run_id or f"{seed:04d}{n:012d}".ljust(64, "0")
    report = AuditReport(
        rid,
        "",
        {"model": "m", "data": "d", "config": "c", "code": "x"},
        {"total_s": 1.0},
        list(skipped or []),
        classes,
        all_findings,
        name="synthetic",
        dataset=dataset,
        class_names=names,
        n_samples=n,
    )
    batch = AttributionBatch(
        ids, labels.astype(np.int64), preds.astype(np.int64), probs, rel, labels.astype(np.int64),
        content_hashes=[content_hash(x.tobytes()) for x in (rel if images is None else images)],
    )  # fmt: skip
    stage = BatchStageResult(
        batch=batch, thumbs=images, skipped=list(skipped or []), n_computed=n, n_cached=0
    )
    staged = staging_dir(runs_dir, rid)
    write_run(staged, report, stage)
    return publish(runs_dir, staged, rid)


@contextmanager
def pointed_at(runs_dir: Path, flags_db: Path) -> Iterator[None]:
    """The dashboard's runs folder and flag database (its environment variables), restored afterwards."""
    saved = {k: os.environ.get(k) for k in ("SPRAY_RUNS_DIR", "SPRAY_FLAGS_DB")}
    os.environ["SPRAY_RUNS_DIR"] = str(runs_dir)
    os.environ["SPRAY_FLAGS_DB"] = str(flags_db)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

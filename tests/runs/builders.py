"""A small, fully populated run (every field of the report set) for the runs package's tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from spray.attribution import BatchStageResult
from spray.records import (
    AttributionBatch,
    AuditReport,
    ChangeRule,
    ChangeSet,
    ClassAnalysis,
    ClassSkipped,
    ClusterChange,
    ClusterFinding,
    ClusteringResult,
    ConditionalMaps,
    SkippedSample,
    SpectralResult,
    UnreadableRun,
)
from spray.runs.publish import publish, staging_dir
from spray.runs.writer import write_run
from spray.versions import version_stamp

NAMES = ["cat", "dog", "owl"]
GRID = (4, 4)


def _class(c: int, ids: list[str], rng: np.random.Generator) -> ClassAnalysis:
    n = len(ids)
    labellings = {k: (np.arange(n) % k).astype(np.int32) for k in (2, 3)}
    chosen = 3
    clusters = []
    for cid in range(chosen):
        members = np.flatnonzero(labellings[chosen] == cid)
        clusters.append(
            ClusterFinding(
                class_index=c,
                class_name=NAMES[c],
                cluster_id=cid,
                k=chosen,
                size=len(members),
                fraction=len(members) / n,
                score=float(rng.random()) + (2.0 if (c, cid) == (1, 2) else 0.0),
                suspicious=(c, cid) == (1, 2),
                evidence=[f"sentence {cid} of class {NAMES[c]}", "second ‘sentence’ with ünïcode"],
                signals={"concentration": float(rng.random()), "rarity": 1 / 3},
                member_ids=[ids[i] for i in members],
                mean_heatmap=rng.standard_normal(GRID).astype(np.float32),
                carrier_ids=[ids[0]] if (c, cid) == (1, 2) else [],
            )
        )
    concept_labellings: dict[int, np.ndarray] = {}
    if c == 1:  # a concept-only finding, and a pixel finding a concept cluster matched
        concept_labellings = {2: (np.arange(n) >= n // 2).astype(np.int32)}
        members = np.flatnonzero(concept_labellings[2] == 1)
        clusters.append(
            ClusterFinding(
                class_index=c,
                class_name=NAMES[c],
                cluster_id=1,
                k=2,
                size=len(members),
                fraction=len(members) / n,
                score=0.25,
                suspicious=False,
                evidence=["In concept space its members put 61 % of their relevance on channels 3 and 7."],
                signals={"size": float(len(members)), "concept_score": 0.4},
                member_ids=[ids[i] for i in members],
                mean_heatmap=rng.standard_normal(GRID).astype(np.float32),
                space="concept",
                channels=[3, 7],
            )
        )
        clusters[0].space, clusters[0].channels = "both", [5]
    clusters.sort(key=lambda f: -f.score)
    return ClassAnalysis(
        class_index=c,
        class_name=NAMES[c],
        sample_ids=ids,
        spectral=SpectralResult(
            eigenvalues=np.sort(rng.random(5))[::-1].copy(),
            eigenvectors=rng.standard_normal((n, 5)).astype(np.float32),
            knn_indices=rng.integers(0, n, (n, 4)).astype(np.int64),
            knn_distances=rng.random((n, 4)).astype(np.float32),
            n_components=1,
        ),
        clustering=ClusteringResult(
            labellings=labellings,
            chosen_k=chosen,
            eigengap_k=2,
            scores={2: {"silhouette": 0.25, "stability": 1 / 7}, 3: {"silhouette": 0.5, "stability": 0.9}},
        ),
        embedding=rng.standard_normal((n, 2)).astype(np.float32),
        embedding_method="spectral",
        clusters=clusters,
        sample_suspicion=rng.random(n).astype(np.float32),
        concept_labellings=concept_labellings,
    )


def make_report(n_per_class: int = 12, seed: int = 0) -> tuple[AuditReport, BatchStageResult]:
    """A report of classes 0 and 1 (class 2 too small) and the batch stage result it was made from."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), [n_per_class, n_per_class, 2])
    # Storage order is not class order: interleave the classes.
    order = rng.permutation(len(labels))
    labels = labels[order]
    ids = [f"{NAMES[lab]}/img{i:03d}.png" for i, lab in enumerate(labels)]
    n = len(ids)
    probs = rng.dirichlet(np.ones(3), size=n).astype(np.float32)
    batch = AttributionBatch(
        sample_ids=ids,
        labels=labels.astype(np.int64),
        predictions=probs.argmax(1).astype(np.int64),
        probabilities=probs,
        relevance=rng.standard_normal((n, *GRID)).astype(np.float16),
        targets=labels.astype(np.int64),
        content_hashes=[f"h{i}" for i in range(n)],
    )
    stage = BatchStageResult(
        batch=batch,
        thumbs=rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8),
        skipped=[SkippedSample("cat/broken.png", "corrupt image")],
        n_computed=n,
        n_cached=0,
    )
    classes = [_class(c, [s for s, lab in zip(ids, labels, strict=True) if lab == c], rng) for c in (0, 1)]
    findings = sorted((f for ca in classes for f in ca.clusters), key=lambda f: (-f.score, f.class_index))
    top = findings[0]
    concept = [f for f in findings if f.space != "pixel"]
    maps = [
        ConditionalMaps(f.key, f.member_ids[:3], rng.standard_normal((3, *GRID)).astype(np.float16))
        for f in concept
    ]
    changes = ChangeSet(
        previous_run_id="p" * 64,
        previous_run="20260101T000000000000Z-pppppppppppp",
        new=[ClusterChange(top.key, top.class_index, top.class_name, top.size, top.score, 1)],
        grown=[],
        persisting=[],
        resolved=[ClusterChange(None, 0, "cat", previous_key="0/k2/c1", previous_size=5, previous_score=1.5)],
        n_suspicious=1,
        rule=ChangeRule(0.3, 0.8, 0.1),
        unreadable=[UnreadableRun("20250101T000000000000Z-qqqqqqqqqqqq", "summary.json: damaged")],
    )
    report = AuditReport(
        run_id="r" * 64,
        run_dir="",
        hashes={"model": "m" * 64, "data": "d" * 64, "config": "c" * 64, "code": "lrp1-analysis1-layout2"},
        timings={"total_s": 1.25, "device": "cpu", "n_computed": n},
        skipped=list(stage.skipped),
        classes=classes,
        findings=findings,
        extra={"note": "made by tests/runs/builders.py"},
        name="unit",
        dataset="unit-data",
        class_names=list(NAMES),
        n_samples=n,
        classes_skipped=[ClassSkipped(2, "owl", 2)],
        config={"seed": 0, "scoring": {"flip_margin": 0.05}, "nightly": {"match_jaccard": 0.3}},
        cache="mmmmmmmmmmmmmmmm-llllllllllllllll",
        versions=version_stamp(),
        changes=changes,
        conditional_maps=maps,
        content_hashes=dict(zip(ids, batch.content_hashes, strict=True)),
    )
    return report, stage


def write_published(runs_dir: Path, report: AuditReport, stage: BatchStageResult) -> Path:
    """Write and publish ``report``; returns the run folder."""
    staged = staging_dir(runs_dir, report.run_id)
    write_run(staged, report, stage)
    return publish(runs_dir, staged, report.run_id)


def assert_same(a: Any, b: Any, where: str = "report") -> None:
    """Deep equality of records, dicts, lists and arrays (arrays: same dtype, shape and values)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), f"{where}: {type(a).__name__} vs {type(b).__name__}"
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), f"{where}: {a!r} vs {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert type(a) is type(b) and a == b, (
            f"{where}: {a!r} ({type(a).__name__}) vs {b!r} ({type(b).__name__})"
        )


def tiny_config(tmp_path: Path, *, n_per_class: int = 10, **sections: Any) -> Any:
    """A real audit config over a tiny RGB image folder (cat/, dog/; 16×16 PNGs) and a seeded random CNN.

    ``sections`` update the raw config's sections (e.g. ``lrp={"target": "pred"}``).
    """
    import yaml

    from spray.config import load_config
    from tests.helpers import make_image_folder

    if not (tmp_path / "imgs").exists():
        make_image_folder(tmp_path / "imgs", n_per_class=n_per_class, size=16)
    raw: dict[str, Any] = {
        "name": "tiny",
        "model": {
            "factory": "spray.lab.cnn:small_cnn",
            "factory_kwargs": {"in_channels": 3, "num_classes": 2, "width": 4},
        },
        "data": {"kind": "image_folder", "path": str(tmp_path / "imgs"), "transform": {"resize": 28}},
        "batch": {"batch_size": 8, "shard_size": 8, "grid": 7, "thumbnail_size": 8, "device": "cpu"},
        "analysis": {"embedding": "spectral", "min_class_size": 4, "n_neighbors": 3, "k_max": 3},
        "scoring": {"intervention_samples": 4},
        "output": {"runs_dir": str(tmp_path / "runs"), "html_report": False},
    }
    for name, value in sections.items():
        raw.setdefault(name, {}).update(value)
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(raw))
    return load_config(p)

"""spray.analysis.concept_findings: concept clusters become findings of the run beside the pixel ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spray.analysis.concept_findings import merge_concept_findings
from spray.analysis.concepts import analyze_concepts
from spray.config import ConceptsConfig
from spray.records import ClusterFinding
from spray.runs.layout import LAYOUT_VERSION
from spray.runs.reader import RunReader, key_space, parse_cluster_key
from tests.test_concepts_analysis import _cfg, _vectors


def _pixel(
    ids: list[str], members: np.ndarray, score: float, cid: int, flagged: bool = False
) -> ClusterFinding:
    return ClusterFinding(
        class_index=3, class_name="c", cluster_id=cid, k=4, size=int(members.sum()),
        fraction=float(members.mean()), score=score, suspicious=flagged, evidence=["pixel sentence"],
        signals={"size": float(members.sum())}, member_ids=[ids[i] for i in np.flatnonzero(members)],
        mean_heatmap=np.zeros((2, 2), np.float32),
    )  # fmt: skip


def _setup(seed: int = 0) -> tuple[list[str], np.ndarray, object, np.ndarray]:
    v, truth = _vectors(seed=seed)
    ids = [f"s{i}" for i in range(len(v))]
    return ids, truth, analyze_concepts(3, "c", ids, v, _cfg()), np.ones((len(v), 2, 2), np.float32) / 4  # type: ignore[arg-type]


def test_a_group_found_in_both_spaces_is_one_finding_with_both_evidences() -> None:
    ids, truth, concepts, maps = _setup()
    # the pixel space found the planted group too (one sample missing), and an unrelated half of the class
    pixel_members = truth.copy()
    pixel_members[np.flatnonzero(truth)[0]] = False
    other = np.arange(len(ids)) < len(ids) // 2
    pixel = [_pixel(ids, pixel_members, 0.7, 0, flagged=True), _pixel(ids, other & ~truth, 0.2, 1)]
    out = merge_concept_findings(pixel, concepts, maps, ConceptsConfig())  # type: ignore[arg-type]
    both = [f for f in out if f.space == "both" and f.k == 4 and f.cluster_id == 0]
    assert len(both) == 1 and both[0].score == 0.7 and both[0].suspicious
    assert both[0].channels[0] == 27 and len(out) >= 2
    assert both[0].signals["concept_jaccard"] >= 0.5 and "Also found in concept space" in both[0].evidence[-1]
    # the planted group is not reported a second time as a concept-only finding
    concept = [f for f in out if f.space == "concept"]
    for f in concept:
        assert (
            len(set(f.member_ids) & set(both[0].member_ids))
            / len(set(f.member_ids) | set(both[0].member_ids))
            < 0.5
        )
    assert [f.score for f in out] == sorted((f.score for f in out), reverse=True)


def test_a_group_only_concept_space_sees_ranks_unflagged_until_tested() -> None:
    ids, truth, concepts, maps = _setup()
    pixel = [_pixel(ids, np.arange(len(ids)) % 2 == 0, 0.1, 0)]
    cfg = ConceptsConfig(candidates=2)
    out = merge_concept_findings(pixel, concepts, maps, cfg)  # type: ignore[arg-type]
    concept = [f for f in out if f.space == "concept"]
    assert 1 <= len(concept) <= 2
    top = concept[0]
    assert top.key.startswith("3/concept/k") and parse_cluster_key(top.key)[1:] == (top.k, top.cluster_id)
    assert key_space(top.key) == "concept" and key_space(pixel[0].key) == "pixel"
    hit = np.isin(ids, top.member_ids)
    assert (hit & truth).sum() / hit.sum() >= 0.9 and top.channels[0] == 27
    assert not top.suspicious and 0 < top.score < 0.5
    assert "not flagged" in top.evidence[-1]
    # kept concept findings never repeat each other
    if len(concept) == 2:
        a, b = (set(f.member_ids) for f in concept)
        assert len(a & b) / len(a | b) < cfg.nest_overlap
    none = merge_concept_findings(pixel, concepts, maps, ConceptsConfig(candidates=0))  # type: ignore[arg-type]
    assert [f.space for f in none] == ["pixel"]


def test_the_audit_stores_concept_findings_that_the_reader_reads_back(tmp_path: Path) -> None:
    from spray.audit import audit
    from tests.runs.builders import tiny_config

    cfg = tiny_config(
        tmp_path, n_per_class=14, concepts={"enabled": True, "candidates": 2, "min_cluster_size": 2}
    )
    report = audit(cfg, progress=False)
    run = RunReader.open(report.run_dir)
    raw = json.loads(run.files.summary.read_text())
    assert raw["layout_version"] == LAYOUT_VERSION and raw["config"]["concepts"]["candidates"] == 2
    concept = [f for f in run.findings() if f.space == "concept"]
    assert concept, [f.key for f in run.findings()]
    for f in concept:
        # Tested at each member's concept-conditional hot pixels (the audit hands its explainer over).
        assert f.channels and f.signals.get("concept_tested") == 1.0, f.signals
        assert f.suspicious == (f.score >= 0.5)
        assert "concept-conditional heatmap" in " ".join(f.evidence)
        assert run.members(f.key) == f.member_ids
        c, k, cid = parse_cluster_key(f.key)
        assert run.class_data(c).members(k, cid, "concept") == f.member_ids
    by_key = {f.key: f for f in report.findings}
    assert {f.key: f.member_ids for f in concept} == {f.key: by_key[f.key].member_ids for f in concept}


def test_without_concepts_the_pixel_findings_do_not_change(tmp_path: Path) -> None:
    from spray.audit import audit
    from tests.runs.builders import tiny_config

    on = audit(tiny_config(tmp_path / "on", concepts={"enabled": True}), progress=False)
    off = audit(tiny_config(tmp_path / "off", concepts={"enabled": False}), progress=False)
    pixel_on = [(f.key, f.score, f.member_ids) for f in on.findings if f.space != "concept"]
    assert pixel_on == [(f.key, f.score, f.member_ids) for f in off.findings]
    assert all(f.space == "pixel" for f in off.findings)


def test_a_layout3_summary_reads_every_finding_as_pixel(tmp_path: Path) -> None:
    from tests.runs.builders import make_report, write_published

    report, stage = make_report()
    run = write_published(tmp_path / "runs", report, stage)
    doc = json.loads((run / "summary.json").read_text())
    doc["layout_version"] = 3
    for f in doc["findings"]:
        f.pop("space"), f.pop("channels")
    (run / "summary.json").write_text(json.dumps(doc))
    assert {f.space for f in RunReader.open(run).summary.findings} == {"pixel"}
    doc["findings"][0]["space"] = "elsewhere"
    (run / "summary.json").write_text(json.dumps(doc))
    from spray.runs.errors import RunReadError

    with pytest.raises(RunReadError, match="space"):
        RunReader.open(run)


def test_conditional_maps_and_references_round_trip(tmp_path: Path) -> None:
    from tests.runs.builders import make_report, write_published

    report, stage = make_report()
    rng = np.random.default_rng(1)
    stage.batch.concepts = rng.random((len(stage.batch), 9)).astype(np.float32)
    run = RunReader.open(write_published(tmp_path / "runs", report, stage))
    for m in report.conditional_maps:
        got = run.conditional_maps(m.key)
        assert got is not None and got.sample_ids == m.sample_ids
        np.testing.assert_array_equal(got.maps, m.maps)
    assert (
        run.conditional_maps(report.findings[-1].key if report.findings[-1].space == "pixel" else "0/k9/c9")
        is None
    )
    col = stage.batch.concepts[:, 4]
    want = [
        stage.batch.sample_ids[i]
        for i in np.argsort(-col.astype(np.float16).astype(np.float32), kind="stable")[:5]
    ]
    assert run.concept_references(4, 5) == want
    with pytest.raises(ValueError, match="not one of the 9"):
        run.concept_references(9, 5)
    (run.path / "concept_maps.npz").write_bytes(b"garbage")
    from spray.runs.errors import RunReadError

    with pytest.raises(RunReadError, match=r"concept_maps\.npz"):
        RunReader.open(run.path).conditional_maps(report.conditional_maps[0].key)


def test_the_audit_stores_each_members_conditional_heatmap(tmp_path: Path) -> None:
    """Oracle: the stored map of a member is the explainer's own conditional heatmap of that member,
    pooled; the members with the highest share in the channels come first."""
    import torch

    from spray.attribution import pool_relevance
    from spray.audit import audit
    from spray.concept_maps import channel_share
    from spray.data import build_dataset
    from spray.lrp.concepts import concept_channels
    from spray.models import build_model
    from tests.runs.builders import tiny_config

    cfg = tiny_config(
        tmp_path,
        n_per_class=14,
        concepts={"enabled": True, "candidates": 2, "min_cluster_size": 2, "conditional_members": 4},
    )
    report = audit(cfg, progress=False)
    run = RunReader.open(report.run_dir)
    concept = [f for f in run.findings() if f.space != "pixel"]
    assert concept
    f = concept[0]
    got = run.conditional_maps(f.key)
    assert (
        got is not None and len(got.sample_ids) == min(4, f.size) and set(got.sample_ids) <= set(f.member_ids)
    )
    share = channel_share(np.asarray(run.concepts(got.sample_ids), np.float32), f.channels)
    assert np.all(np.diff(share) <= 1e-3)
    from spray.attribution import audit_explainer

    dataset = build_dataset(cfg.data, thumbnail_size=cfg.batch.thumbnail_size)
    torch.manual_seed(cfg.seed)  # the audit's seeded random weights
    model = build_model(cfg.model)
    explainer = audit_explainer(cfg, model, dataset, torch.device("cpu"))
    pos = dataset.sample_ids.index(got.sample_ids[0])
    x = dataset.load_input(pos)[None]
    target = torch.as_tensor(run.samples().loc[got.sample_ids[0], "target"]).reshape(1)
    mask = concept_channels([f.channels], run.concepts().shape[1], torch.device("cpu"))
    want = pool_relevance(explainer(x, target=target, concept_mask=mask).relevance, cfg.batch.grid)[0].numpy()
    np.testing.assert_allclose(
        got.maps[0].astype(np.float32), want, rtol=2e-2, atol=2e-3 * np.abs(want).max()
    )

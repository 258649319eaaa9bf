"""``spray export virelay|fiftyone``: runs written by spray's own writer, read back by the other tool's code.

ViRelAy is the oracle for its format (test-only dependency ``virelay``, its loader ``virelay.model.Project``
and its Flask server's REST API). FiftyOne does not install into the shared environment without changing
other packages (it pins an older python-dateutil and plotly, and its database package downloads MongoDB
while installing), so its export is checked against the structure FiftyOne's legacy importer reads, and by
that importer itself when fiftyone is importable (see docs/dashboard.md, Interop).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from spray.errors import ConfigError, DataError
from spray.export.fiftyone import write_fiftyone_dataset
from spray.export.virelay import clustering_name, write_virelay_project
from spray.flags import FlagStore
from spray.runs.reader import RunReader
from tests.dashboard_fixtures import make_synthetic_run
from tests.faults.cli import assert_clean_failure, run_main

SIZES = [40, 40, 40, 40, 40, 40, 120, 40, 40, 40]
# virelay 0.6.1 pins pillow<11 (spray's environment has a newer pillow its loader works with), so it is not in
# the `test` extra. Its loader also needs h5py and matplotlib (test extra, via mlxtend), its server flask.
VIRELAY_MISSING = "pip install --no-deps virelay==0.6.1 && pip install flask flask-cors (test-only oracle)"


@pytest.fixture(autouse=True)
def _fresh_log_handlers() -> Iterator[None]:
    """``spray.cli.main`` points the root logger at this test's captured stderr: drop it afterwards, so a
    later test's log lines do not go to a closed stream (a "Logging error" traceback in its output)."""
    yield
    logging.getLogger().handlers[:] = []


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("runs")
    return make_synthetic_run(d, class_sizes=SIZES, seed=4, dataset="synthetic-fashion", k_max=5)


@pytest.fixture(scope="module")
def hot_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run written by spray's own writer: class 0's top finding is a hot-spot group (a labelling k = 0 in
    class 0 only, -1 outside the group); class 1 has a concept-space sweep at k = 3 whose cluster 2 is a
    finding (key ``1/concept/k3/c2``), a group unlike pixel cluster 2 at k = 3."""
    from spray.analysis.scoring.candidates import HOTSPOT_K
    from tests.runs.builders import make_report, write_published

    report, stage = make_report(n_per_class=20)
    top = max(report.findings, key=lambda f: f.score)
    for c, k, labels, space in (
        (0, HOTSPOT_K, np.array([0] * 4 + [-1] * 16, np.int32), "pixel"),
        (1, 3, (np.arange(20) // 7).astype(np.int32), "concept"),
    ):
        ca = next(a for a in report.classes if a.class_index == c)
        (ca.concept_labellings if space == "concept" else ca.clustering.labellings)[k] = labels
        found = type(top)(
            class_index=c, class_name=ca.class_name, cluster_id=int(labels.max()), k=k, space=space,
            size=int((labels == labels.max()).sum()), fraction=0.2, score=top.score + 1.0, suspicious=True,
            evidence=["planted"], signals={"size": 4.0}, mean_heatmap=top.mean_heatmap,
            member_ids=[s for s, v in zip(ca.sample_ids, labels, strict=True) if v == labels.max()],
        )  # fmt: skip
        ca.clusters.insert(0, found)
        report.findings.insert(0, found)
    return write_published(tmp_path_factory.mktemp("hot") / "runs", report, stage)


def _run_files(run: Path) -> tuple[RunReader, pd.DataFrame, np.ndarray, np.ndarray]:
    """The run through spray's reader, and its sample table and arrays straight from the files (the oracle)."""
    return (
        RunReader.open(run),
        pd.read_parquet(run / "samples.parquet"),
        np.load(run / "heatmaps.npy"),
        np.load(run / "thumbs.npy"),
    )


def test_virelay_project_round_trips_through_virelays_own_loader(run: Path, tmp_path: Path) -> None:
    model = pytest.importorskip("virelay.model", reason=VIRELAY_MISSING)
    reader, samples, heat, thumbs = _run_files(run)
    summary = reader.summary
    project_file = write_virelay_project(run, tmp_path / "vr")
    project = model.Project(str(project_file))
    try:
        assert project.name.endswith(f"({summary.run_id[:12]})")
        assert len(project.dataset) == len(samples)
        for i in (0, 7, len(samples) - 1):
            sample = project.get_sample(i)
            assert np.array_equal(sample.data, thumbs[i])  # uint8 HWC, unchanged
            assert [label.name for label in sample.labels] == [samples["label_name"][i]]
            att = project.get_attribution(i)
            # ViRelAy sums an attribution over its channels: exactly spray's heatmap.
            assert np.array_equal(att.data.sum(axis=-1), heat[i].astype(np.float32))
            assert int(np.argmax(att.prediction)) == samples["prediction"][i]
            assert att.prediction.max() == pytest.approx(samples["confidence"][i])
        assert project.get_analysis_methods() == ["spectral"]
        categories = {c.name: c.human_readable_name for c in project.get_analysis_categories("spectral")}
        assert categories == {str(c.class_index): c.class_name for c in summary.classes}
        assert project.get_analysis_clustering_names("spectral") == [clustering_name(k) for k in range(2, 6)]
        assert set(project.get_analysis_embedding_names("spectral")) == {"spectral", "umap"}
        for entry in summary.classes:
            c = entry.class_index
            arrays = np.load(run / "classes" / f"{c}.npz")
            for k in range(2, 6):
                an = project.get_analysis("spectral", str(c), clustering_name(k), "umap")
                assert np.array_equal(an.clustering, arrays[f"labels_k{k}"])
                assert np.array_equal(an.attribution_indices, arrays["rows"])
                assert np.allclose(an.embedding, arrays["embedding"])
            spec = project.get_analysis("spectral", str(c), clustering_name(entry.chosen_k), "spectral")
            assert np.allclose(spec.eigenvalues, arrays["eigenvalues"])
            assert np.allclose(spec.embedding, arrays["eigenvectors"])
            # The finding's members are exactly the samples of its cluster in ViRelAy.
            for f in reader.findings():
                if f.class_index != c:
                    continue
                an = project.get_analysis("spectral", str(c), clustering_name(f.k), "umap")
                rows = an.attribution_indices[an.clustering == f.cluster_id]
                assert set(samples["sample_id"].to_numpy()[rows]) == set(f.member_ids)
    finally:
        project.close()
    # spray's own column: each row's sample id, to trace a sample seen in ViRelAy to its file and flag
    import h5py

    with h5py.File(project_file.parent / "dataset.h5", "r") as f:
        ids = [v.decode() for v in f["sample_id"][:]]
    assert ids == [str(v) for v in samples["sample_id"]]


def test_virelay_server_opens_the_project(run: Path, tmp_path: Path) -> None:
    model = pytest.importorskip("virelay.model", reason=VIRELAY_MISSING)
    server = pytest.importorskip("virelay.server", reason=VIRELAY_MISSING)
    reader, samples, _, _ = _run_files(run)
    project_file = write_virelay_project(run, tmp_path / "vr")
    workspace = model.Workspace()
    workspace.add_project(str(project_file))
    try:
        client = server.Server(workspace).app.test_client()
        projects = client.get("/api/projects").get_json()
        assert [p["dataset"] for p in projects] == ["synthetic-fashion"]
        top = reader.findings()[0]
        cat, k = str(top.class_index), top.k
        res = client.get(
            f"/api/projects/0/analyses/spectral?category={cat}&clustering={clustering_name(k)}&embedding=umap"
        )
        assert res.status_code == 200
        points = res.get_json()["embedding"]
        members = {p["attributionIndex"] for p in points if p["cluster"] == top.cluster_id}
        assert set(samples["sample_id"].to_numpy()[sorted(members)]) == set(top.member_ids)
        i = int(sorted(members)[0])
        for url in (
            f"/api/projects/0/dataset/{i}/image?imageMode=overlay&colorMap=blue-white-red",
            f"/api/projects/0/attributions/{i}/heatmap?colorMap=blue-white-red",
        ):
            res = client.get(url)
            assert res.status_code == 200 and res.content_type.startswith("image/"), url
    finally:
        workspace.close()


def test_virelay_export_of_a_run_without_thumbnails_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = make_synthetic_run(tmp_path / "runs", class_sizes=[30] * 3, planted_class=1, thumbs=False, seed=5)
    res = run_main(["export", "virelay", str(run), "-o", str(tmp_path / "vr")], capsys)
    assert_clean_failure(res, 1, "thumbs.npy", str(run))
    assert not (tmp_path / "vr").exists()


def test_export_refuses_an_existing_folder_and_a_missing_parent(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "there").mkdir()
    for target in ("virelay", "fiftyone"):
        res = run_main(["export", target, str(run), "-o", str(tmp_path / "there")], capsys)
        assert_clean_failure(res, 2, str(tmp_path / "there"), "exists already")
        res = run_main(["export", target, str(run), "-o", str(tmp_path / "no" / "out")], capsys)
        assert_clean_failure(res, 2, str(tmp_path / "no"), "does not exist")


def test_export_of_something_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = run_main(["export", "virelay", str(tmp_path), "-o", str(tmp_path / "vr")], capsys)
    assert_clean_failure(res, 2, str(tmp_path), "summary.json")
    res = run_main(["export", "fiftyone", str(tmp_path / "nope"), "-o", str(tmp_path / "fo")], capsys)
    assert_clean_failure(res, 2, str(tmp_path / "nope"), "does not exist")


def test_export_takes_runs_dir_like_the_other_commands(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    res = run_main(["export", "fiftyone", "--runs-dir", str(run.parent), "-o", str(tmp_path / "fo")], capsys)
    assert res.code == 0, res.output
    assert (tmp_path / "fo").is_dir()
    res = run_main(["export", "fiftyone", "-o", str(tmp_path / "fo2")], capsys)
    assert_clean_failure(res, 2, "Give the run to export")
    res = run_main(
        ["export", "fiftyone", str(run), "--runs-dir", str(run.parent), "-o", str(tmp_path / "f3")], capsys
    )
    assert_clean_failure(res, 2, "one of them")


def test_export_of_a_damaged_run_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_synthetic_run(tmp_path / "runs", class_sizes=[30] * 3, planted_class=1, seed=6)
    f = run / "heatmaps.npy"
    f.write_bytes(f.read_bytes()[:500])
    for target in ("virelay", "fiftyone"):
        res = run_main(["export", target, str(run), "-o", str(tmp_path / target)], capsys)
        assert_clean_failure(res, 1, "heatmaps.npy")
        assert not (tmp_path / target).exists()


def test_export_takes_the_newest_run_of_a_runs_folder(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    res = run_main(["export", "fiftyone", str(run.parent), "-o", str(tmp_path / "fo")], capsys)
    assert res.code == 0, res.output
    meta = json.loads((tmp_path / "fo" / "metadata.json").read_text())
    assert meta["info"]["spray_run_id"] == RunReader.open(run).summary.run_id


def test_export_of_a_runs_folder_takes_the_full_run_as_the_flag_commands_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check: a data.limit trial newer than the full audit was exported (its 120 samples, not 550),
    where the flag commands on the same folder use the full run; a folder of two datasets took either."""
    runs = tmp_path / "runs"
    full = make_synthetic_run(runs, class_sizes=[30] * 3, planted_class=1, seed=1)
    trial = make_synthetic_run(runs, class_sizes=[30] * 3, planted_class=1, seed=2, run_id="b" * 64)
    summary = json.loads((trial / "summary.json").read_text())
    summary["config"].setdefault("data", {})["limit"] = 40
    (trial / "summary.json").write_text(json.dumps(summary))
    assert trial.name > full.name
    res = run_main(["export", "fiftyone", str(runs), "-o", str(tmp_path / "fo")], capsys)
    assert res.code == 0, res.output
    meta = json.loads((tmp_path / "fo" / "metadata.json").read_text())
    assert meta["info"]["spray_run_id"] == RunReader.open(full).summary.run_id
    make_synthetic_run(runs, class_sizes=[30] * 3, planted_class=1, seed=3, dataset="other", run_id="c" * 64)
    res = run_main(["export", "virelay", str(runs), "-o", str(tmp_path / "vr")], capsys)
    assert_clean_failure(res, 2, "holds runs of 2 datasets", "give the run folder")


def test_fiftyone_dataset_has_cluster_suspicion_and_flag_per_sample(run: Path, tmp_path: Path) -> None:
    reader, samples, heat, thumbs = _run_files(run)
    summary = reader.summary
    db = tmp_path / "flags.sqlite"
    top = reader.findings()[0]
    FlagStore(db).flag("synthetic-fashion", top.member_ids[:5], "unlearn", "corner stamp", author="ana")
    FlagStore(db).flag("other-dataset", top.member_ids[5:6], "ok")
    # Flagged on an image that this id no longer names (a file replaced): left out, never on the new image.
    FlagStore(db).flag(
        "synthetic-fashion", top.member_ids[6:7], "unlearn", content_hashes={top.member_ids[6]: "0" * 32}
    )
    out = write_fiftyone_dataset(run, tmp_path / "fo", flags_db=db)
    meta = json.loads((out / "metadata.json").read_text())
    assert "version" not in meta and meta["media_type"] == "image"  # FiftyOneDataset → its legacy importer
    assert meta["info"]["classes"] == summary.class_names
    docs = json.loads((out / "samples.json").read_text())["samples"]
    assert len(docs) == len(samples)
    by_id = {d["spray_sample_id"]: d for d in docs}
    assert set(by_id) == set(samples["sample_id"])
    for d in docs:
        path = out / d["filepath"]
        assert path.is_file() and (out / d["relevance"]["map_path"]).is_file()
        assert d["ground_truth"]["_cls"] == d["prediction"]["_cls"] == "Classification"
        assert d["relevance"]["_cls"] == "Heatmap" and d["relevance"]["range"] == [0, 255]
        assert isinstance(d["tags"], list) and d["metadata"] is None
    # Media and labels come from the run.
    r = 17
    d = by_id[samples["sample_id"][r]]
    assert np.array_equal(np.asarray(Image.open(out / d["filepath"])), thumbs[r])
    grey = np.asarray(Image.open(out / d["relevance"]["map_path"])).astype(np.float32)
    assert np.corrcoef(grey.ravel(), heat[r].astype(np.float32).ravel())[0, 1] > 0.999
    assert d["ground_truth"]["label"] == samples["label_name"][r]
    assert d["prediction"]["confidence"] == pytest.approx(float(samples["confidence"][r]))
    assert d["spray_suspicion"] == pytest.approx(float(samples["score"][r]))
    # The top finding's members carry its cluster key, its score, the suspicious tag; flags where set.
    for i, sid in enumerate(top.member_ids):
        m = by_id[sid]
        assert m["spray_cluster"] == top.key and m["spray_cluster_score"] == pytest.approx(top.score)
        assert m["spray_suspicious"] is True and "suspicious" in m["tags"]
        assert m["spray_flag"] == ("unlearn" if i < 5 else None)  # the other dataset's flag does not apply
        if i < 5:
            assert m["spray_flag_note"] == "corner stamp" and m["spray_flag_author"] == "ana"
            assert "flag:unlearn" in m["tags"]
    others = [d for d in docs if d["spray_sample_id"] not in set(top.member_ids)]
    assert not any(d["spray_suspicious"] for d in others if d["spray_cluster"] != top.key)
    json.dumps(docs, allow_nan=False)  # strict JSON: no NaN for FiftyOne's parser


def _grey(heat: np.ndarray) -> np.ndarray:
    """The documented 8-bit map of a heatmap: 128 + 127 · R / max|R|, rounded (the oracle, written out)."""
    h = heat.astype(np.float32)
    return np.clip(np.round(128 + 127 * h / (float(np.abs(h).max()) or 1.0)), 0, 255).astype(np.uint8)


def test_a_moved_fiftyone_export_shows_its_own_heatmaps(run: Path, tmp_path: Path) -> None:
    """Exported, moved, and another run exported where it was: every map path of the moved folder is
    relative and resolves inside it, to the map of its own sample (an absolute path showed the newer run's)."""
    heat = np.load(run / "heatmaps.npy")
    first = write_fiftyone_dataset(run, tmp_path / "fo")
    moved = first.rename(tmp_path / "fo_run1")
    other = make_synthetic_run(tmp_path / "runs2", class_sizes=[30] * 3, planted_class=1, seed=9)
    write_fiftyone_dataset(other, tmp_path / "fo")
    docs = json.loads((moved / "samples.json").read_text())["samples"]
    assert len(docs) == len(heat)
    for r, d in enumerate(docs):
        rel = d["relevance"]["map_path"]
        # What FiftyOne's importer does with it: a relative path under fields/<field>/ joins the dataset folder.
        assert not Path(rel).is_absolute() and rel.startswith("fields/relevance/"), rel
        path = (moved / rel).resolve()
        assert path.is_relative_to(moved.resolve()) and path.is_file(), rel
        assert np.array_equal(np.asarray(Image.open(path)), _grey(heat[r])), rel
        assert not Path(d["filepath"]).is_absolute() and (moved / d["filepath"]).is_file()


def test_fiftyone_dataset_points_at_original_files_under_the_data_root(run: Path, tmp_path: Path) -> None:
    _, samples, _, thumbs = _run_files(run)
    root = tmp_path / "data"
    root.mkdir()
    sid = samples["sample_id"][3]
    Image.fromarray(thumbs[3]).save(root / sid, format="PNG")
    out = write_fiftyone_dataset(run, tmp_path / "fo", data_root=root)
    docs = {d["spray_sample_id"]: d for d in json.loads((out / "samples.json").read_text())["samples"]}
    assert docs[sid]["filepath"] == str((root / sid).resolve())
    assert docs[samples["sample_id"][4]]["filepath"].startswith("data/")


def test_a_data_root_that_names_no_file_is_refused_or_said(
    run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An outside check: ``--data-root nosuch``, or the folder one level too high, exported every sample's
    thumbnail with exit 0 and no word, while ``spray dashboard`` refuses the same value."""
    with pytest.raises(ConfigError, match="is not a folder"):
        write_fiftyone_dataset(run, tmp_path / "fo", data_root=tmp_path / "nosuch")
    (tmp_path / "data").mkdir()
    with caplog.at_level("WARNING"):
        write_fiftyone_dataset(run, tmp_path / "fo", data_root=tmp_path / "data")
    n = len(_run_files(run)[1])
    assert f"{n} of {n} sample ids name no file under --data-root" in caplog.text


def test_export_modules_never_write_into_the_run(run: Path, tmp_path: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    write_virelay_project(run, tmp_path / "vr") if _has_h5py() else None
    write_fiftyone_dataset(run, tmp_path / "fo")
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before
    with pytest.raises(ConfigError):
        write_fiftyone_dataset(run, tmp_path / "fo")  # never overwrites
    with pytest.raises(DataError):
        write_fiftyone_dataset(_broken(tmp_path), tmp_path / "fo2")


def _has_h5py() -> bool:
    try:
        import h5py  # noqa: F401
    except ImportError:
        return False
    return True


def _broken(tmp_path: Path) -> Path:
    run = make_synthetic_run(tmp_path / "broken", class_sizes=[30] * 3, planted_class=1, seed=7)
    (run / "samples.parquet").write_bytes(b"not parquet")
    return run


def test_fiftyones_own_importer_reads_the_export(run: Path, tmp_path: Path) -> None:
    """FiftyOne's importer for this format (what ``fo.Dataset.from_dir(..., FiftyOneDataset)`` defers to).

    Skips in the shared environment (FiftyOne is not installed there, see the module docstring); run in an
    environment with ``pip install fiftyone`` it reads the samples without a database.
    """
    importers = pytest.importorskip("fiftyone.utils.data.importers", reason="pip install fiftyone (oracle)")
    reader, samples, _, _ = _run_files(run)
    summary = reader.summary
    out = write_fiftyone_dataset(run, tmp_path / "fo")
    importer = importers.FiftyOneDatasetImporter(str(out))
    assert importer._is_legacy_format_data()
    legacy = importer._to_legacy_importer()
    with legacy:
        got = list(legacy)
        assert legacy.get_dataset_info()["spray_run_id"] == summary.run_id
    assert len(got) == len(samples)
    top = reader.findings()[0]
    member = next(s for s in got if s.spray_sample_id == top.member_ids[0])
    assert type(member.ground_truth).__name__ == "Classification" and "suspicious" in member.tags
    assert member.spray_cluster == top.key and Path(member.filepath).is_file()
    assert member.relevance.get_map().shape == tuple(np.load(run / "heatmaps.npy", mmap_mode="r").shape[1:])
    # the importer resolved the relative map path against the export folder
    assert Path(member.relevance.map_path).parent == out.resolve() / "fields" / "relevance"


def test_fiftyone_tags_the_members_of_a_suspicious_concept_only_finding(tmp_path: Path) -> None:
    """A concept-only finding's members are not a pixel cluster: the tag follows the finding's own members,
    and the class's cluster key is read from the space of its top finding."""
    from spray.audit import audit
    from tests.runs.builders import tiny_config

    cfg = tiny_config(tmp_path, n_per_class=14, concepts={"candidates": 2, "min_cluster_size": 2})
    run_dir = Path(audit(cfg, progress=False).run_dir)
    summary = run_dir / "summary.json"
    raw = json.loads(summary.read_text())
    concept = [f for f in raw["findings"] if f["space"] == "concept"]
    assert concept, [f["key"] for f in raw["findings"]]
    # The verdict is the run's to give; here one concept-only finding is marked suspicious and put first
    # in its class, so that the export's reading of it can be checked.
    target = concept[0]
    for f in raw["findings"]:
        f["suspicious"] = f is target
        if f["class_index"] == target["class_index"] and f is not target:
            f["rank"] = f["rank"] + 1000
    summary.write_text(json.dumps(raw))
    own = set(RunReader.open(run_dir).members(target["key"]))
    docs = json.loads((write_fiftyone_dataset(run_dir, tmp_path / "fo") / "samples.json").read_text())[
        "samples"
    ]
    tagged = {d["spray_sample_id"] for d in docs if "suspicious" in d["tags"]}
    assert own and tagged == {d["spray_sample_id"] for d in docs if d["spray_suspicious"]} == own
    members = [d for d in docs if d["spray_sample_id"] in own]
    assert {d["spray_cluster"] for d in members} == {target["key"]}
    assert all(d["spray_cluster_score"] == pytest.approx(target["score"]) for d in members)


def test_fiftyone_exports_grey_thumbnails(tmp_path: Path) -> None:
    run = make_synthetic_run(tmp_path / "runs", class_sizes=[20, 20], seed=1)
    thumbs = np.load(run / "thumbs.npy")
    np.save(run / "thumbs.npy", thumbs[..., :1])  # a grey dataset's thumbnails: (N, h, w, 1)
    out = write_fiftyone_dataset(run, tmp_path / "fo")
    docs = json.loads((out / "samples.json").read_text())["samples"]
    picture = np.asarray(Image.open(out / docs[3]["filepath"]))
    assert picture.shape == thumbs.shape[1:3] and np.array_equal(picture, thumbs[3, ..., 0])


def test_fiftyone_exports_originals_a_viewer_would_turn_as_the_audit_decoded_them(tmp_path: Path) -> None:
    """An outside check: a linked JPEG with an EXIF rotation was shown upright by FiftyOne (as browsers do)
    under a heatmap in the stored orientation the model saw; a file with transparency was shown composited.
    Such originals are exported as the audit decoded them; plain ones stay linked."""
    from spray.audit import audit
    from spray.data.originals import decode_original
    from tests.runs.builders import tiny_config

    root = tmp_path / "imgs"
    cfg = tiny_config(tmp_path)  # makes the folder
    rng = np.random.default_rng(0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to show"
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
        root / "cat" / "005.png", format="JPEG", exif=exif
    )
    rgba = rng.integers(0, 255, (16, 16, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(root / "cat" / "006.png")
    run_dir = audit(cfg, progress=False).run_dir
    out = write_fiftyone_dataset(run_dir, tmp_path / "fo", data_root=root)
    docs = {d["spray_sample_id"]: d for d in json.loads((out / "samples.json").read_text())["samples"]}
    config = RunReader.open(run_dir).summary.config
    for sid in ("cat/005.png", "cat/006.png"):
        assert docs[sid]["filepath"].startswith("data/"), sid
        shown = np.asarray(Image.open(out / docs[sid]["filepath"]))
        assert np.array_equal(shown, decode_original(root / sid, config)), sid
    assert docs["cat/004.png"]["filepath"] == str((root / "cat" / "004.png").resolve())


def test_fiftyone_export_of_an_image_folder_run_leaves_out_files_changed_since(tmp_path: Path) -> None:
    """A file replaced after the audit is not the image the run explained: its thumbnail is exported."""
    from spray.audit import audit
    from tests.runs.builders import tiny_config

    cfg = tiny_config(tmp_path)
    run_dir = audit(cfg, progress=False).run_dir
    root = tmp_path / "imgs"
    Image.fromarray(np.full((40, 30, 3), 255, np.uint8)).save(root / "cat" / "003.png")
    out = write_fiftyone_dataset(run_dir, tmp_path / "fo", data_root=root)
    docs = {d["spray_sample_id"]: d for d in json.loads((out / "samples.json").read_text())["samples"]}
    assert docs["cat/003.png"]["filepath"].startswith("data/")
    assert docs["cat/004.png"]["filepath"] == str((root / "cat" / "004.png").resolve())
    # without the check (large data) every existing file is linked, the replaced one too
    out = write_fiftyone_dataset(run_dir, tmp_path / "fo2", data_root=root, check_originals=False)
    docs = {d["spray_sample_id"]: d for d in json.loads((out / "samples.json").read_text())["samples"]}
    assert docs["cat/003.png"]["filepath"] == str((root / "cat" / "003.png").resolve())


def test_fiftyone_export_of_a_reaudit_carries_the_projects_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A correction's re-audit (RUNS/corrections/C/reaudit/<run>) has no flags.sqlite of its own: the
    project's RUNS/flags.sqlite holds its flags."""
    runs = tmp_path / "runs"
    reaudit = make_synthetic_run(
        runs / "corrections" / "c1" / "reaudit", class_sizes=[30] * 3, planted_class=1
    )
    ids = list(pd.read_parquet(reaudit / "samples.parquet")["sample_id"][:4])
    FlagStore(runs / "flags.sqlite").flag("synthetic-fashion", ids, "unlearn", "stamp")
    res = run_main(["export", "fiftyone", str(reaudit.parent), "-o", str(tmp_path / "fo")], capsys)
    assert res.code == 0, res.output
    docs = json.loads((tmp_path / "fo" / "samples.json").read_text())["samples"]
    assert {d["spray_sample_id"] for d in docs if d["spray_flag"] == "unlearn"} == set(ids)


def test_fiftyone_export_says_when_the_flag_database_holds_other_datasets_only(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "flags.sqlite"
    FlagStore(db).flag("mnist", ["a.png"], "unlearn")
    FlagStore(db).flag("cifar", ["b.png"], "ok")
    res = run_main(
        ["export", "fiftyone", str(run), "--flags-db", str(db), "-o", str(tmp_path / "fo")], capsys
    )
    assert_clean_failure(res, 2, str(db), "'synthetic-fashion'", "cifar, mnist", "leave out --flags-db")
    assert not (tmp_path / "fo").exists()
    # the runs folder's own database (not asked for by name): exported without flags, said aloud
    runs = tmp_path / "runs"
    other = make_synthetic_run(runs, class_sizes=[30] * 3, planted_class=1)
    FlagStore(runs / "flags.sqlite").flag("mnist", ["a.png"], "unlearn")
    res = run_main(["export", "fiftyone", str(other), "-o", str(tmp_path / "fo2")], capsys)
    assert res.code == 0 and "holds no flags of this run's dataset key 'synthetic-fashion'" in res.output
    assert "mnist" in res.output


def test_fiftyone_gives_samples_outside_every_hot_spot_group_no_cluster(
    hot_run: Path, tmp_path: Path
) -> None:
    """Class 0's top finding is hot-spot group 0/k0/c0: its members carry that key, the rest of the class
    no cluster (the -1 of the labelling names none), never ``0/k0/c-1``."""
    reader = RunReader.open(hot_run)
    members = set(reader.members("0/k0/c0"))
    class0 = set(reader.class_data(0).sample_ids)
    docs = json.loads((write_fiftyone_dataset(hot_run, tmp_path / "fo") / "samples.json").read_text())[
        "samples"
    ]
    cluster = {d["spray_sample_id"]: d["spray_cluster"] for d in docs}
    assert len(members) == 4 and {cluster[s] for s in members} == {"0/k0/c0"}
    assert {cluster[s] for s in class0 - members} == {None}
    assert not any(str(v).endswith("c-1") for v in cluster.values())
    score = {d["spray_sample_id"]: d["spray_cluster_score"] for d in docs}
    assert {score[s] for s in class0 - members} == {None}


def _name(k: int, space: str = "pixel") -> str:
    """ViRelAy's name of spray's labelling at ``k`` in ``space``, as the export's documentation gives it."""
    return f"spray-concept-k{k:02d}" if space == "concept" else f"spray-k{k:02d}"


def test_virelay_reaches_every_clustering_of_every_class(
    hot_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ViRelAy lists the first class's clusterings and asks every class for the one chosen: each name it
    lists opens for every class (through its loader and its server), and every finding, pixel, hot-spot and
    concept-space, is exactly one cluster of the clustering named for it."""
    model = pytest.importorskip("virelay.model", reason=VIRELAY_MISSING)
    server = pytest.importorskip("virelay.server", reason=VIRELAY_MISSING)
    reader = RunReader.open(hot_run)
    ids = np.asarray(reader.sample_ids(), dtype=object)
    with caplog.at_level("INFO", logger="spray.export.virelay"):
        project_file = write_virelay_project(hot_run, tmp_path / "vr")
    workspace = model.Workspace()
    workspace.add_project(str(project_file))
    project = workspace.projects[0]
    try:
        names = project.get_analysis_clustering_names("spectral")
        data = [reader.class_data(c.class_index) for c in reader.summary.classes]
        pixel = sorted({k for d in data for k in d.labellings})
        concept = sorted({k for d in data for k in d.concept_labellings})
        assert pixel[0] == 0 and 3 in concept
        assert names == [_name(k) for k in pixel] + [_name(k, "concept") for k in concept]
        # an outside check: the log counted one missing clustering once per class that lacked it
        lacking = {(k, "pixel") for k in pixel for d in data if k not in d.labellings} | {
            (k, "concept") for k in concept for d in data if k not in d.concept_labellings
        }
        assert f"{len(lacking)} of {len(names)} clusterings are not stored for every class" in caplog.text
        client = server.Server(workspace).app.test_client()
        for entry in reader.summary.classes:
            for name in names:
                url = f"/api/projects/0/analyses/spectral?category={entry.class_index}&clustering={name}&embedding=spectral"
                assert client.get(url).status_code == 200, url
        # a clustering a class did not store: every sample in no cluster
        assert set(project.get_analysis("spectral", "1", "spray-k00", "spectral").clustering) == {-1}
        assert set(project.get_analysis("spectral", "0", "spray-concept-k03", "spectral").clustering) == {-1}
        spaces = set()
        for f in reader.findings():
            an = project.get_analysis("spectral", str(f.class_index), _name(f.k, f.space), "spectral")
            assert set(ids[an.attribution_indices[an.clustering == f.cluster_id]]) == set(f.member_ids), f.key
            spaces.add((f.space, f.k == 0))
        assert spaces >= {("pixel", True), ("pixel", False), ("concept", False)}
        # the concept group is not the pixel cluster of the same k and id (reading one as the other misleads)
        pixel = project.get_analysis("spectral", "1", _name(3), "spectral")
        assert set(ids[pixel.attribution_indices[pixel.clustering == 2]]) != set(
            reader.members("1/concept/k3/c2")
        )
    finally:
        workspace.close()


def test_export_into_a_read_only_folder_names_it_and_the_fix(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root writes into a chmod-ed folder: the file system's answer is simulated

        def refused(*args: object, **kwargs: object) -> str:
            raise OSError(errno.EROFS, "Read-only file system", str(ro))

        monkeypatch.setattr(tempfile, "mkdtemp", refused)
    else:
        ro.chmod(0o555)
    for target in ("virelay", "fiftyone"):
        res = run_main(["export", target, str(run), "-o", str(ro / "x")], capsys)
        assert_clean_failure(res, 1, f"{ro} is ", "Point -o at a folder this user can write to")
    assert list(ro.iterdir()) == []


def test_export_onto_a_full_disk_names_the_folder_and_leaves_nothing(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills while the FiftyOne export writes its pictures; a ViRelAy project (HDF5, which cannot
    recover from a full disk: h5py crashed the process) is refused before writing when it would not fit."""
    out = tmp_path / "out"
    out.mkdir()
    real_save = Image.Image.save
    written = []

    def filling(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        if len(written) == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(fp)
        real_save(self, fp, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "save", filling)
    res = run_main(["export", "fiftyone", str(run), "-o", str(out / "fo")], capsys)
    assert_clean_failure(res, 1, f"no space left on {out}", "point -o at a larger disk")
    assert list(out.iterdir()) == []  # the half-written folder is removed
    free = shutil.disk_usage(out)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: free._replace(free=500_000))
    res = run_main(["export", "virelay", str(run), "-o", str(out / "vr")], capsys)
    assert_clean_failure(res, 1, f"no space for the ViRelAy project on {out}", "0.5 MB are free", "-o")
    assert list(out.iterdir()) == []


def test_export_of_a_correction_folder_points_at_its_reaudit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    correction = tmp_path / "runs" / "corrections" / "c1"
    make_synthetic_run(correction / "reaudit", class_sizes=[30] * 3, planted_class=1)
    res = run_main(["export", "fiftyone", str(correction), "-o", str(tmp_path / "fo")], capsys)
    assert_clean_failure(res, 2, f"{correction} is a correction's folder", f"give {correction / 'reaudit'}")
    res = run_main(["export", "fiftyone", str(correction / "reaudit"), "-o", str(tmp_path / "fo")], capsys)
    assert res.code == 0, res.output


def test_a_fiftyone_export_of_a_run_without_thumbnails_says_what_stands_in_for_the_images(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An outside check: every sample's image was its own relevance map without a word, and with a data root
    that named no file the warning promised the stored thumbnails, which the run does not have."""
    run = make_synthetic_run(tmp_path / "runs", class_sizes=[30] * 3, planted_class=1, thumbs=False, seed=5)
    with caplog.at_level("WARNING", logger="spray"):
        out = write_fiftyone_dataset(run, tmp_path / "fo", data_root=tmp_path)
    docs = json.loads((out / "samples.json").read_text())["samples"]
    assert all(d["filepath"].startswith("fields/relevance/") for d in docs)
    assert (
        f"{len(docs)} of {len(docs)} samples have neither an original file nor a stored thumbnail"
        in caplog.text
    )
    assert "exported with their relevance maps (no thumbnails)" in caplog.text
    assert "stored thumbnails;" not in caplog.text

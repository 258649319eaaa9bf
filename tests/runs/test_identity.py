"""The cache key holds everything a heatmap depends on: with ``lrp.target: label`` the same bytes in two
class folders are two heatmaps, and an image moved to another class is recomputed (real audits)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from spray.attribution import pool_relevance
from spray.audit import audit
from spray.data import build_dataset
from spray.lrp import Explainer
from spray.models import build_model
from spray.runs.identity import cache_dir_name, heatmap_settings, lrp_hash
from spray.runs.reader import RunReader
from tests.runs.builders import tiny_config


def _fresh(cfg, sample_id: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The heatmap of one sample computed from scratch (same seeded model, same settings)."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model)
    ds = build_dataset(cfg.data, thumbnail_size=cfg.batch.thumbnail_size)
    i = ds.sample_ids.index(sample_id)
    x = ds.load_input(i)[None]
    res = Explainer(model, cfg.lrp.composite, canonize=cfg.lrp.canonize)(
        x, target=cfg.lrp.target, labels=torch.tensor([ds.labels[i]])
    )
    return pool_relevance(res.relevance, cfg.batch.grid).to(torch.float16).numpy()[0]


def test_same_bytes_in_two_class_folders_are_two_heatmaps(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    shutil.copy(tmp_path / "imgs" / "cat" / "003.png", tmp_path / "imgs" / "dog" / "twin.png")
    run = RunReader.open(audit(cfg, progress=False).run_dir)
    a, b = run.heatmaps(["cat/003.png", "dog/twin.png"])
    assert not np.array_equal(a, b)  # each explains its own label
    for sample_id, got in (("cat/003.png", a), ("dog/twin.png", b)):
        np.testing.assert_allclose(got, _fresh(cfg, sample_id), rtol=1e-2, atol=1e-3)
    assert run.summary.timings["n_computed"] == 21


def test_an_image_moved_to_another_class_is_recomputed(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    first = audit(cfg, progress=False)
    assert first.timings["n_computed"] == 20
    shutil.move(tmp_path / "imgs" / "cat" / "004.png", tmp_path / "imgs" / "dog" / "moved.png")
    second = audit(cfg, progress=False)
    assert second.run_id != first.run_id
    assert (second.timings["n_computed"], second.timings["n_cached"]) == (1, 19)
    got = RunReader.open(second.run_dir).heatmaps(["dog/moved.png"])[0]
    np.testing.assert_allclose(got, _fresh(cfg, "dog/moved.png"), rtol=1e-2, atol=1e-3)
    before = RunReader.open(first.run_dir).heatmaps(["cat/004.png"])[0]
    assert not np.array_equal(got, before)


def test_the_cache_directory_changes_with_every_heatmap_setting(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    base = cache_dir_name(cfg, "m" * 64)
    assert base.startswith("m" * 16) and cache_dir_name(cfg, "n" * 64) != base
    assert set(heatmap_settings(cfg)) == {
        "model",
        "lrp",
        "grid",
        "transform",
        "decoding",
        "thumbnails",
        "full",
        "lrp_version",
    }
    for section, field, value in (
        ("lrp", "composite", "EpsilonGammaBox"),
        ("lrp", "composite_kwargs", {"epsilon": 0.5}),
        ("lrp", "target", "pred"),
        ("lrp", "precision", "bf16"),
        ("lrp", "canonize", False),
        ("batch", "grid", 4),
        ("batch", "thumbnail_size", 16),
        ("batch", "store_full_relevance", True),
    ):
        other = cfg.model_copy(deep=True)
        setattr(getattr(other, section), field, value)
        assert lrp_hash(other) != lrp_hash(cfg), (section, field)
    other = cfg.model_copy(deep=True)
    other.data.transform.resize = 32
    assert lrp_hash(other) != lrp_hash(cfg)
    other = cfg.model_copy(deep=True)
    other.data.max_image_pixels = 2000  # a JPEG above it decodes at reduced scale: other inputs
    assert lrp_hash(other) != lrp_hash(cfg)
    # The same weights computing something else: another output, another factory argument.
    for field, value in (("output", 1), ("factory_kwargs", {"width": 8})):
        other = cfg.model_copy(deep=True)
        setattr(other.model, field, value)
        assert lrp_hash(other) != lrp_hash(cfg), field
    other = cfg.model_copy(deep=True)
    other.model.checkpoint = tmp_path / "elsewhere.pt"  # its weights are in the model hash, not its path
    assert lrp_hash(other) == lrp_hash(cfg)
    # What only changes the analysis does not open a new cache.
    other = cfg.model_copy(deep=True)
    other.scoring.flip_margin = 0.2
    other.analysis.k_max = 5
    other.batch.batch_size = 3
    assert lrp_hash(other) == lrp_hash(cfg)


def test_a_file_rewritten_with_its_size_and_mtime_restored_is_seen(tmp_path: Path) -> None:
    """``cp -p``, ``rsync -a`` or ``touch -r`` keep a file's mtime; its ctime still moves, so the run is not
    taken as up to date and the image is explained again."""
    import os

    cfg = tiny_config(tmp_path)
    first = audit(cfg, progress=False)
    f = tmp_path / "imgs" / "cat" / "003.png"
    st = f.stat()
    data = bytearray(f.read_bytes())
    other = (tmp_path / "imgs" / "cat" / "004.png").read_bytes()
    if len(other) == len(data):
        data = bytearray(other)  # another image of the same size
    else:
        data[-13] ^= 0xFF  # a flipped byte in the PNG's last chunk's CRC region: same size, other bytes
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    second = audit(cfg, progress=False)
    assert not second.up_to_date and second.run_id != first.run_id


def test_a_chmod_or_a_restore_with_new_file_times_is_the_same_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outside check: the ctime was in the run id, so a chmod of the image folder, ``cp -r`` or a restore
    from a backup published the same run again (and gave its corrections new ids); the files' content is the
    run's now, each file read again only when its status changed."""
    import os

    from spray.runs import file_hashes

    cfg = tiny_config(tmp_path)
    first = audit(cfg, progress=False)
    files = sorted((tmp_path / "imgs").rglob("*.png"))
    for f in files:
        os.chmod(f, 0o600)  # a new ctime for every file
    shutil.copytree(tmp_path / "imgs", tmp_path / "restored")  # new mtimes and ctimes
    shutil.rmtree(tmp_path / "imgs")
    (tmp_path / "restored").rename(tmp_path / "imgs")
    hashed: list[bytes] = []
    real = file_hashes.content_hash

    def counted(data: bytes) -> str:
        hashed.append(data)
        return real(data)

    monkeypatch.setattr(file_hashes, "content_hash", counted)
    again = audit(cfg, progress=False)
    assert again.up_to_date and again.run_id == first.run_id
    assert len(hashed) == len(files)  # each file read once to hash it, then remembered
    hashed.clear()
    assert audit(cfg, progress=False).up_to_date and hashed == []


def test_the_run_id_holds_the_dataset_key(tmp_path: Path) -> None:
    """A data folder moved without ``data.name`` has another dataset key (its flags and previous runs are
    another dataset's), so it is another run; with a name it is the same run."""
    from spray.runs.identity import run_hashes

    cfg = tiny_config(tmp_path)
    moved = cfg.model_copy(deep=True)
    moved.data.path = tmp_path / "elsewhere"
    assert cfg.data.name is None and moved.dataset_key() != cfg.dataset_key()
    assert run_hashes(moved, "m", "d") != run_hashes(cfg, "m", "d")
    named, named_moved = cfg.model_copy(deep=True), moved.model_copy(deep=True)
    named.data.name = named_moved.data.name = "my-data"
    assert run_hashes(named, "m", "d") == run_hashes(named_moved, "m", "d")


def test_settings_of_how_a_run_is_computed_leave_its_id(tmp_path: Path) -> None:
    """An outside check: raising batch.dist_timeout_s, as the timeout's message advises (or num_workers, the
    input memo), made the next night a new run, re-analysed, its changes naming the setting."""
    from spray.runs.identity import run_hashes
    from spray.runs.input_changes import config_changes

    cfg = tiny_config(tmp_path)
    ops = cfg.model_copy(deep=True)
    ops.batch.dist_timeout_s, ops.batch.num_workers, ops.batch.input_memory_mb = 3600, 2, 64
    assert run_hashes(ops, "m", "d") == run_hashes(cfg, "m", "d")
    assert config_changes(cfg.model_dump(mode="json"), ops.model_dump(mode="json")) == []
    sized = cfg.model_copy(deep=True)
    sized.batch.batch_size = 7  # float results may move with the batch: still part of the run
    assert run_hashes(sized, "m", "d") != run_hashes(cfg, "m", "d")


def test_a_file_rewritten_during_the_batch_stage_is_not_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outside check rewrote a file after the run id was computed and before the batch stage read it: the
    run was published under the old bytes' id with the new bytes' heatmap, and once the file was restored
    the next night reused it as up to date. The run is refused instead, and the next one is computed."""
    from spray.attribution import BatchStage
    from spray.errors import DataError

    cfg = tiny_config(tmp_path)
    f = tmp_path / "imgs" / "cat" / "003.png"
    original = f.read_bytes()
    run_shards = BatchStage.run_shards

    def rewrite_first(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        f.write_bytes((tmp_path / "imgs" / "dog" / "003.png").read_bytes())
        return run_shards(self, *args, **kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(BatchStage, "run_shards", rewrite_first)
        with pytest.raises(
            DataError,
            match=r"1 files changed on disk while the batch stage read them \(e\.g\. cat/003\.png\)",
        ):
            audit(cfg, progress=False)
    f.write_bytes(original)
    report = audit(cfg, progress=False)
    assert not report.up_to_date and Path(report.run_dir).is_dir()
    run = RunReader.open(report.run_dir)
    table = run.samples().set_index("sample_id")
    from spray.data import content_hash

    assert table.loc["cat/003.png", "content_hash"] == content_hash(original)
    np.testing.assert_array_equal(run.heatmaps(["cat/003.png"])[0], _fresh(cfg, "cat/003.png"))


def test_paste_results_of_files_rewritten_during_the_analysis_are_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outside check rewrote files while the analysis ran (no input memo): the paste test's predictions
    of the new pixels were cached under the old bytes' hashes, and after a restore a later run took them
    from the cache without a word. A later run now gives what a fresh runs folder gives."""
    import spray.audit as audit_module

    # every candidate is pasted (no appearance gate), so the cat files are paste targets of the dog class
    gates = {"flag_min_appearance": 0.0, "flag_min_relative_appearance": 0.0}
    cfg = tiny_config(
        tmp_path,
        batch={"input_memory_mb": 0},
        scoring={**gates, "flag_min_relative_appearance_two_routes": 0.0},
    )
    files = sorted((tmp_path / "imgs" / "cat").iterdir())
    originals = {f: f.read_bytes() for f in files}
    analyze = audit_module.analyze_run

    def rewrite_then_analyze(*args, **kwargs):  # type: ignore[no-untyped-def]
        for f, g in zip(files, sorted((tmp_path / "imgs" / "dog").iterdir()), strict=False):
            f.write_bytes(g.read_bytes())
        return analyze(*args, **kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(audit_module, "analyze_run", rewrite_then_analyze)
        audit(cfg, progress=False)
    for f, data in originals.items():
        f.write_bytes(data)
    again = cfg.model_copy(deep=True)
    again.scoring.flip_margin = 0.06  # an analysis-only change: the heatmaps and the paste cache are reused
    later = RunReader.open(audit(again, progress=False).run_dir)
    fresh = again.model_copy(deep=True)
    fresh.output.runs_dir = tmp_path / "fresh-runs"
    oracle = RunReader.open(audit(fresh, progress=False).run_dir)
    got = {f.key: f.signals for f in later.findings()}
    want = {f.key: f.signals for f in oracle.findings()}
    assert any("paste_gain" in s for s in want.values()), "no finding was pasted: the check would be empty"
    assert got == want


def test_a_factory_item_that_changed_before_the_batch_stage_names_both_causes() -> None:
    """A factory dataset hashed item by item: another input in the batch stage than in the fingerprint is
    a data change or a random transform, and the message says both (a file message would mislead)."""
    from spray.errors import DataError
    from spray.runs.identity import check_unchanged

    check_unchanged({"a": "h1", "b": "h2"}, ["a", "b", "c"], ["h1", "h2", "h3"], files=False)  # c is new
    with pytest.raises(
        DataError, match=r"1 samples of the factory dataset gave other inputs .*\(e\.g\. b\): .*random"
    ):
        check_unchanged({"a": "h1", "b": "h2"}, ["a", "b"], ["h1", "hx"], files=False)
    with pytest.raises(
        DataError, match=r"^1 files changed on disk while the batch stage read them \(e\.g\. b\)"
    ):
        check_unchanged({"a": "h1", "b": "h2"}, ["a", "b"], ["h1", "hx"])


def test_an_idx_file_rewritten_while_the_audit_sets_up_does_not_lend_the_run_its_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The IDX fingerprint re-read the files after the dataset had read them: a file rewritten in between (here
    while the model is built) gave the run the new bytes' id over heatmaps of the old bytes, and once the old
    file was back the next audit recomputed a run that was already published. The id is of the bytes read."""
    import spray.audit
    from spray.data import read_idx, write_idx

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 16, 16), dtype=np.uint8)
    write_idx(tmp_path / "i.gz", images)
    write_idx(tmp_path / "l.gz", np.repeat(np.arange(2, dtype=np.uint8), 12))
    data = {
        "kind": "idx",
        "images": str(tmp_path / "i.gz"),
        "labels": str(tmp_path / "l.gz"),
        "class_names": ["a", "b"],
        "path": None,
    }
    cfg = tiny_config(
        tmp_path, data=data, model={"factory_kwargs": {"in_channels": 1, "num_classes": 2, "width": 4}}
    )
    original = (tmp_path / "i.gz").read_bytes()
    real_build = spray.audit.build_model

    def rewrite_then_build(*args, **kwargs):  # type: ignore[no-untyped-def]
        write_idx(tmp_path / "i.gz", 255 - images)
        return real_build(*args, **kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(spray.audit, "build_model", rewrite_then_build)
        first = audit(cfg, progress=False)
    (tmp_path / "i.gz").write_bytes(original)
    assert np.array_equal(read_idx(tmp_path / "i.gz"), images)
    again = audit(cfg, progress=False)
    assert again.up_to_date and again.run_id == first.run_id

"""Planning a correction: the command line's config, held-out data, and what the correction id depends on."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from spray.cli import build_parser, main
from spray.cli.correct import _config
from spray.correct.plan import plan_correction
from spray.data import write_idx
from spray.errors import SprayError
from spray.flags import FlagStore
from tests.test_correct_world import DATASET, World, build_world


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> World:
    world = build_world(tmp_path_factory.mktemp("plan"))
    from spray.audit import audit
    from spray.config import load_config

    audit(load_config(world.config), progress=False)
    return world


def _args(world: World, *extra: str) -> argparse.Namespace:
    return build_parser().parse_args(["correct", "--config", str(world.config), *extra])


def test_test_data_gets_the_data_transform_through_the_command_line(audited: World, tmp_path: Path) -> None:
    root = tmp_path / "w"
    shutil.copytree(audited.root, root, symlinks=True)
    write_idx(root / "test-images.idx", audited.images[:30])
    write_idx(root / "test-labels.idx", audited.labels[:30].astype(np.uint8))
    raw = yaml.safe_load((root / "audit.yaml").read_text())
    raw["data"]["transform"] = {"mean": [0.2], "std": [0.4]}
    raw["correction"]["test_data"] = {"kind": "idx", "images": "test-images.idx", "labels": "test-labels.idx"}
    (root / "audit.yaml").write_text(yaml.safe_dump(raw))
    world = World(root, root / "audit.yaml", root / "runs" / "flags.sqlite", root / "runs", audited.images,
                  audited.labels, audited.planted, audited.model)  # fmt: skip
    cfg = _config(_args(world, "--method", "pclarc", "--lambda", "5"))
    assert cfg.correction.method == "pclarc" and cfg.correction.rr_lambda == 5.0
    assert cfg.correction.test_data.images == root / "test-images.idx"  # resolved against the config's folder
    assert cfg.correction.epochs == 4  # set in the file, kept
    # the model sees the audited data's normalisation on the held-out data too
    plan = plan_correction(cfg)
    assert plan.clean_samples.dataset.transform.cfg == cfg.data.transform
    assert len(plan.clean_rows) == 30 and len(plan.train_rows) == len(audited.labels)


def test_held_out_data_must_mean_what_the_audited_data_means(audited: World, tmp_path: Path) -> None:
    """An outside check, three silent wrong evaluations: a test folder without one class folder re-indexed
    the later classes, a test transform that set one option dropped the audited mean and std, and test
    images of another size ended in a raw matrix-shape error."""
    from PIL import Image

    from spray.correct.held_out import held_out_config
    from spray.errors import ConfigError

    world = _copy_world(audited, tmp_path / "w")

    def folder(name: str, classes: list[int], size: int = 12) -> str:
        for c in classes:
            (world.root / name / str(c)).mkdir(parents=True)
            for i in np.flatnonzero(audited.labels == c)[:5]:
                img = Image.fromarray(audited.images[i]).resize((size, size))
                img.save(world.root / name / str(c) / f"{i}.png")
        return name

    def plan_with(test_data: dict) -> object:
        raw = yaml.safe_load(world.config.read_text())
        raw["data"]["transform"] = {"mean": [0.2], "std": [0.4]}
        raw["correction"]["test_data"] = test_data
        world.config.write_text(yaml.safe_dump(raw))
        return plan_correction(_config(_args(world)))

    # class folder "1" missing: its images would be labelled 1 = "2"
    with pytest.raises(ConfigError, match=r"other classes than the audited data \(missing \['1'\]\)"):
        plan_with({"kind": "image_folder", "path": folder("gap", [0, 2])})
    # the last class missing keeps every label: accepted
    assert len(plan_with({"kind": "image_folder", "path": folder("head", [0, 1])}).clean_rows) == 10
    with pytest.raises(
        ConfigError, match=r"reach the model as \(1, 16, 16\).*audited data's as \(1, 12, 12\)"
    ):
        plan_with({"kind": "image_folder", "path": folder("big", [0, 1, 2], size=16)})
    # a test transform setting one option keeps the audited normalisation
    plan = plan_with({"kind": "image_folder", "path": "head", "transform": {"colour_to_grey": "luma"}})
    got = plan.clean_samples.dataset.transform.cfg
    assert (got.mean, got.std, got.colour_to_grey) == ([0.2], [0.4], "luma")
    cfg = _config(_args(world))
    assert held_out_config(cfg).transform.mean == [0.2]
    # a review: a completed transform that contradicts itself is a config error naming test_data, not pydantic's
    cfg.data.transform = cfg.data.transform.model_copy(update={"mean": [0.2] * 3, "std": [0.4] * 3})
    assert cfg.correction.test_data is not None
    cfg.correction.test_data = cfg.correction.test_data.model_validate(
        {**cfg.correction.test_data.model_dump(exclude={"transform"}), "transform": {"channels": 1}}
    )
    with pytest.raises(ConfigError, match=r"correction.test_data.transform, completed with data.transform"):
        held_out_config(cfg)


def test_correction_id_follows_flags_method_and_parameters(
    audited: World, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _config(_args(audited))
    first = plan_correction(cfg)
    assert plan_correction(cfg).correction_id == first.correction_id
    assert plan_correction(_config(_args(audited, "--method", "pclarc"))).correction_id != first.correction_id
    assert plan_correction(_config(_args(audited, "--lambda", "10"))).correction_id != first.correction_id
    one = str(np.flatnonzero(audited.planted)[0])
    FlagStore(audited.flags_db).unflag(DATASET, [one])
    try:
        caplog.clear()
        fewer = plan_correction(cfg)
        assert fewer.correction_id != first.correction_id
        # an outside check: the advice was --finding alone, which flags the members but not the carriers
        assert "carry no flag" in caplog.text and "--with-carriers) to make them part" in caplog.text
        # the unflagged sample is still a member of the flagged finding: it carries the artifact, so it is
        # kept out of the reference (and of the clean evaluation) instead of weakening the direction
        row = int(one)
        reference = np.concatenate([fewer.group.fit_reference, fewer.group.held_reference])
        assert row not in reference and row not in fewer.clean_rows and row not in fewer.group.flagged_rows
    finally:
        FlagStore(audited.flags_db).flag(DATASET, [one], "unlearn", cluster_key="1/k2/c0")
    assert plan_correction(cfg).correction_id == first.correction_id
    assert first.source.run_id and first.cfg.correction.layer == "features"


def test_fields_of_another_method_are_warned_about_and_left_out_of_the_id(
    audited: World, caplog: pytest.LogCaptureFixture
) -> None:
    pclarc = plan_correction(_config(_args(audited, "--method", "pclarc")))
    caplog.clear()
    with_rr = _config(_args(audited, "--method", "pclarc", "--lambda", "10"))
    with_rr.correction.rr_directions = 4
    assert plan_correction(with_rr).correction_id == pclarc.correction_id  # the same projection
    assert (
        "correction.rr_directions, correction.rr_lambda: set, but method 'pclarc' does not use them"
        in caplog.text
    )
    rr = _config(_args(audited))
    rr.correction.rr_directions = 4
    assert plan_correction(rr).correction_id != plan_correction(_config(_args(audited))).correction_id
    # the training loop's fields too (an outside check: --epochs 7 with P-ClArC, no warning, a new id and the
    # same projection computed again)
    caplog.clear()
    assert plan_correction(_config(_args(audited, "--method", "pclarc", "--epochs", "7"))).correction_id == (
        pclarc.correction_id
    )
    assert "correction.epochs" in caplog.text and "does not use them (only rrclarc / retrain)" in caplog.text
    assert plan_correction(_config(_args(audited, "--epochs", "7"))).correction_id != (
        plan_correction(_config(_args(audited))).correction_id
    )
    # an outside check: --epochs 1 with the baseline retrained from scratch trained its 3 retrain_epochs,
    # unsaid (its correction id keeps every field, as before: a review found that leaving them out changed the
    # id of every published retraining)
    caplog.clear()
    plan_correction(_config(_args(audited, "--method", "retrain", "--epochs", "1")))
    said = "correction.epochs, correction.lr: set, but the baseline retrained from scratch does not use them: it "
    assert said + "trains for correction.retrain_epochs (3)" in caplog.text  # the world's config sets lr too


def test_a_runs_directory_that_does_not_exist_is_named_and_not_created(tmp_path: Path) -> None:
    from spray.config import config_from_dict
    from spray.correct.run import correct
    from spray.errors import ConfigError

    cfg = config_from_dict(
        {
            "model": {"architecture": "resnet18", "num_classes": 2},
            "data": {"kind": "image_folder", "path": str(tmp_path)},
            "output": {"runs_dir": str(tmp_path / "typo" / "runs")},
        },
        base_dir=tmp_path,
    )
    with pytest.raises(ConfigError, match="does not exist: a correction starts from an audited run"):
        correct(cfg, progress=False)
    assert not (tmp_path / "typo").exists()


def test_a_run_id_published_twice_is_said_aloud_and_the_newest_taken(
    audited: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--force` publishes a run id again (found in an outside check: correct --source-run took one of
    the two silently)."""
    import spray.correct.source as source_module
    from spray.correct.source import find_source_run
    from spray.runs.publish import list_runs

    runs = tmp_path / "runs"
    runs.mkdir()
    (old,) = list_runs(audited.runs_dir)[:1]
    shutil.copytree(old, runs / old.name)
    newer = runs / ("29991231T000000000000Z-" + old.name.split("-", 1)[1])
    shutil.copytree(old, newer)
    said: list[str] = []
    monkeypatch.setattr(source_module.log, "warning", lambda msg, *a: said.append(msg % a))
    rid = old.name.split("-", 1)[1]
    got = find_source_run(runs, DATASET, "", rid)
    assert got.path == newer
    assert said and "published more than once" in said[0] and old.name in said[0]
    # a named run of another dataset (an outside check: accepted, and the re-audit then compared the
    # correction with that dataset's findings: "not flagged before either")
    with pytest.raises(
        SprayError, match=r"is run .* of dataset '.*', not of this config's dataset 'other-data'"
    ):
        find_source_run(runs, "other-data", "", rid)


def _copy_world(audited: World, root: Path) -> World:
    shutil.copytree(audited.root, root, symlinks=True)
    return World(root, root / "audit.yaml", root / "runs" / "flags.sqlite", root / "runs", audited.images,
                 audited.labels, audited.planted, audited.model)  # fmt: skip


def test_the_correction_id_follows_the_held_out_files_content(audited: World, tmp_path: Path) -> None:
    """Held-out files replaced under the same names are another correction, not the old evaluation."""
    world = _copy_world(audited, tmp_path / "w")
    write_idx(world.root / "test-images.idx", audited.images[:30])
    write_idx(world.root / "test-labels.idx", audited.labels[:30].astype(np.uint8))
    raw = yaml.safe_load(world.config.read_text())
    raw["correction"]["test_data"] = {"kind": "idx", "images": "test-images.idx", "labels": "test-labels.idx"}
    world.config.write_text(yaml.safe_dump(raw))
    first = plan_correction(_config(_args(world)))
    write_idx(world.root / "test-images.idx", audited.images[30:70])
    write_idx(world.root / "test-labels.idx", audited.labels[30:70].astype(np.uint8))
    assert plan_correction(_config(_args(world))).correction_id != first.correction_id


def test_a_named_source_run_of_other_weights_is_refused(audited: World, tmp_path: Path) -> None:
    """correction.source_run names a run audited with the old weights; model.pt now holds a retrained model."""
    import torch

    from spray.errors import SprayError
    from tests.test_correct_world import train_tiny

    world = _copy_world(audited, tmp_path / "w")
    run = next(p for p in sorted(world.runs_dir.iterdir()) if (p / "summary.json").is_file())
    torch.save(train_tiny(audited.images, audited.labels, 7).state_dict(), world.root / "model.pt")
    with pytest.raises(SprayError, match="audited with another model than the configured one"):
        plan_correction(_config(_args(world, "--source-run", run.name)))


def test_a_source_run_of_an_older_model_fingerprint_is_not_called_other_weights(
    audited: World, tmp_path: Path
) -> None:
    """An outside check (an upgrade): a model with a non-persistent buffer got another hash from the new spray
    with the same weights, and spray correct from the older run blamed the weights in model.pt."""
    import json

    from spray.errors import SprayError

    world = _copy_world(audited, tmp_path / "w")
    run = next(p for p in sorted(world.runs_dir.iterdir()) if (p / "summary.json").is_file())
    summary = json.loads((run / "summary.json").read_text())
    summary["hashes"].pop("model_hash_version", None)  # as an older spray wrote it
    summary["hashes"]["model"] = "0" * 64  # its fingerprint of the same model
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(
        SprayError, match="audited by another spray version, which fingerprinted models otherwise"
    ):
        plan_correction(_config(_args(world, "--source-run", run.name)))


def test_unseen_samples_and_other_flags_never_stand_for_the_clean_class(
    audited: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found in an outside check: images added after the audit (stamped ones among them) and samples flagged
    from another finding or as 'investigate' went into the reference and the clean evaluation in silence."""
    world = _copy_world(audited, tmp_path / "w")
    n = len(audited.labels)
    stamped = np.flatnonzero(audited.planted)[:12]  # new copies of stamped images, after the audit
    write_idx(world.root / "images.idx", np.concatenate([audited.images, audited.images[stamped]]))
    write_idx(
        world.root / "labels.idx", np.concatenate([audited.labels, audited.labels[stamped]]).astype(np.uint8)
    )
    clean_of_class = np.flatnonzero((audited.labels == 1) & ~audited.planted)
    store = FlagStore(world.flags_db)
    store.flag(DATASET, [str(i) for i in clean_of_class[:3]], "investigate")
    store.flag(DATASET, [str(i) for i in clean_of_class[3:6]], "unlearn", cluster_key="1/k9/c9")
    store.flag(DATASET, [str(i) for i in clean_of_class[6:8]], "ok")
    with caplog.at_level("WARNING", logger="spray.correct.plan"):
        plan = plan_correction(_config(_args(world, "--cluster-key", "1/k2/c0", "--method", "pclarc")))
    g = plan.group
    reference = set(np.concatenate([g.fit_reference, g.held_reference]).tolist())
    kept_out = set(range(n, n + len(stamped))) | set(clean_of_class[:6].tolist())
    assert not kept_out & reference
    assert not kept_out & set(plan.clean_rows.tolist())
    assert set(clean_of_class[6:8].tolist()) & (reference | set(plan.clean_rows.tolist()))  # 'ok' stays clean
    assert (
        f"{len(stamped)} samples ({len(stamped)} of class" in caplog.text
        and "newer than source run" in caplog.text
    )
    assert "6 other samples are flagged (6 of class" in caplog.text
    # the correction id follows the other flags too: they change the reference
    FlagStore(world.flags_db).unflag(DATASET, [str(i) for i in clean_of_class[:3]])
    again = plan_correction(_config(_args(world, "--cluster-key", "1/k2/c0", "--method", "pclarc")))
    assert again.correction_id != plan.correction_id


def test_flags_of_a_run_of_other_weights_are_pointed_out(caplog: pytest.LogCaptureFixture) -> None:
    from spray.correct.groups import FlagSelection
    from spray.correct.plan import _warn_other_weights
    from spray.correct.source import SourceRun

    flags = FlagSelection("db", DATASET, "unlearn", ["1/k2/c0"], ["1", "2"], "d", run_ids=["oldrun123456789"])
    source = SourceRun(
        "newrun", Path("runs/newrun"), "w1", [], [], run_models={"oldrun123456789": "w0", "newrun": "w1"}
    )
    with caplog.at_level("WARNING", logger="spray.correct.plan"):
        said = _warn_other_weights(flags, source, "w1", "1/k3/c2")
    assert "set on run oldrun123456" in caplog.text and "other model weights" in caplog.text
    # an outside check: the warning was only logged; the record keeps it for report.html and the dashboard
    assert len(said) == 1 and said[0] in caplog.text
    assert "finding 1/k3/c2 holds most of them there" in caplog.text
    caplog.clear()
    _warn_other_weights(  # the same weights: nothing to say
        flags, SourceRun("newrun", Path("x"), "w1", [], [], run_models={"oldrun123456789": "w1"}), "w1", None
    )
    assert not caplog.text
    # an outside check: flags of another runs folder (--flags-db other/flags.sqlite, another model) were used
    # without a word, since their run is not in this runs folder
    elsewhere = SourceRun("newrun", Path("runs/newrun"), "w1", [], [], run_models={"newrun": "w1"})
    with caplog.at_level("WARNING", logger="spray.correct.plan"):
        _warn_other_weights(flags, elsewhere, "w1", None)
    assert "set on run oldrun123456, which is not in this runs folder (runs; flags of another" in caplog.text
    assert "whether it audited these weights cannot be told" in caplog.text
    assert "other model weights" not in caplog.text
    # an outside check: with the runs folder's own database the run was removed (retention), which every
    # correction after routine retention called "flags of another runs folder's database"
    caplog.clear()
    own = FlagSelection(str(Path("runs/flags.sqlite")), DATASET, "unlearn", ["1/k2/c0"], ["1", "2"], "d",
                        run_ids=["oldrun123456789"])  # fmt: skip
    with caplog.at_level("WARNING", logger="spray.correct.plan"):
        _warn_other_weights(own, elsewhere, "w1", None)
    assert "which this runs folder no longer holds (removed since, e.g. by retention" in caplog.text
    assert "another runs folder" not in caplog.text and "--flags-db" not in caplog.text


def test_source_run_by_folder_prefix_and_class_out_of_range(audited: World) -> None:
    from spray.errors import SprayError

    run = next(p for p in sorted(audited.runs_dir.iterdir()) if (p / "summary.json").is_file())
    plan = plan_correction(_config(_args(audited, "--source-run", run.name[:6], "--method", "pclarc")))
    assert plan.source.path.name == run.name
    # an outside check: the run folder's path (as spray flags set --run takes it) was 'no published run'
    plan = plan_correction(_config(_args(audited, "--source-run", str(run) + "/", "--method", "pclarc")))
    assert plan.source.path.name == run.name
    with pytest.raises(SprayError, match="no such class; the dataset has 3 classes"):
        plan_correction(_config(_args(audited, "--class", "99")))


def test_flags_of_another_class_are_no_clean_data_whatever_selects_the_flags(
    audited: World, tmp_path: Path
) -> None:
    """A review found another class's flags in the clean evaluation under --class, not under --cluster-key."""
    world = _copy_world(audited, tmp_path / "w")
    other = np.flatnonzero(audited.labels == 2)[:5]
    FlagStore(world.flags_db).flag(DATASET, [str(i) for i in other], "unlearn", cluster_key="2/k2/c1")
    for extra in (["--class", "1"], ["--cluster-key", "1/k2/c0"]):
        plan = plan_correction(_config(_args(world, *extra, "--method", "pclarc")))
        assert not set(other.tolist()) & set(plan.clean_rows.tolist()), extra


def test_the_samples_the_flags_were_set_on_come_from_their_runs() -> None:
    from spray.correct.groups import FlagSelection
    from spray.correct.plan import _seen_by
    from spray.correct.source import SourceRun

    source = SourceRun("run1", Path("r1"), "w", [], [], sample_ids=["a", "b"], run_paths={"run1": Path("r1")})

    def flags(run_ids: list[str]) -> FlagSelection:
        return FlagSelection("db", DATASET, "unlearn", [], ["a"], "d", run_ids=run_ids)

    assert _seen_by(flags(["run1"]), source) == {"a", "b"}
    assert _seen_by(flags([]), source) is None  # flags set without a run (older databases, scripts)
    assert _seen_by(flags(["gone"]), source) is None  # the run they were set on was pruned


def test_colour_test_images_for_a_grey_model_name_the_test_datas_setting(
    audited: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check: colour PNGs as correction.test_data for a grey model; the refusal said "became
    unreadable during the audit" and told to set data.transform.colour_to_grey, which the audit reads."""
    from PIL import Image

    from tests.faults.cli import assert_clean_failure, run_main

    world = _copy_world(audited, tmp_path / "w")
    for c in range(3):
        folder = world.root / "test" / str(c)
        folder.mkdir(parents=True)
        for i in np.flatnonzero(audited.labels == c)[:5]:
            g = audited.images[i]
            Image.fromarray(np.stack([g, g // 2, g], -1).astype(np.uint8)).save(folder / f"{i}.png")
    raw = yaml.safe_load(world.config.read_text())
    raw["correction"]["test_data"] = {"kind": "image_folder", "path": "test"}
    world.config.write_text(yaml.safe_dump(raw))
    res = run_main(["correct", "--config", str(world.config), "--method", "pclarc", "--no-reaudit"], capsys)
    assert_clean_failure(res, 1, "of correction.test_data", "correction.test_data.transform.colour_to_grey")
    assert "during the audit" not in res.output and " data.transform" not in res.output


def test_an_image_the_audit_skipped_first_in_the_folder_does_not_stop_the_correction(
    audited: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check: the audit skipped an image of another size with a reason, and `spray correct` stopped
    on it ("became unreadable during the audit"): it read the first two samples to check the model."""
    from PIL import Image

    from tests.faults.cli import run_main

    world = _copy_world(audited, tmp_path / "w")
    for i, (g, c) in enumerate(zip(audited.images, audited.labels, strict=True)):
        folder = world.root / "train" / str(c)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(g).save(folder / f"{i:04d}.png")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(
        world.root / "train" / "0" / "0000_big.png"
    )  # sorts first
    raw = yaml.safe_load(world.config.read_text())
    raw["data"] = {"kind": "image_folder", "name": "folder-world", "path": "train"}
    world.config.write_text(yaml.safe_dump(raw))
    assert main(["audit", "--config", str(world.config), "-q"]) == 0
    planted = ",".join(f"{c}/{i:04d}.png" for i, c in enumerate(audited.labels) if audited.planted[i])
    runs = str(world.runs_dir)
    assert (
        main(["flags", "set", "--runs-dir", runs, "--dataset", "folder-world", "--sample-ids", planted]) == 0
    )
    res = run_main(["correct", "--config", str(world.config), "--method", "pclarc", "--no-reaudit"], capsys)
    assert res.code == 0, res.output


def test_a_source_run_of_another_resize_is_refused(audited: World) -> None:
    """An outside check: a correction whose config resized otherwise than the audited run (crop instead of a
    squash, bilinear instead of bicubic) ran on other pixels than the findings and flags were made on: it
    failed with advice about the layer, or reported 'before' and 'after' figures of different inputs."""
    cfg = _config(_args(audited))
    cfg.data.transform = cfg.data.transform.model_copy(update={"interpolation": "bicubic"})
    with pytest.raises(SprayError, match=r"another data.transform.*interpolation: 'bilinear' → 'bicubic'"):
        plan_correction(cfg)


def test_the_settings_shown_are_those_the_method_read() -> None:
    """An outside check: the Corrections page showed "epochs 1" for a retraining from scratch, which trained
    its 3 retrain_epochs."""
    from spray.correct.record import settings_text

    params = {"retrain_mode": "drop", "retrain_init": "scratch", "retrain_epochs": 3, "retrain_lr": 0.002,
              "epochs": 1, "lr": 0.01, "rr_lambda": 3000.0}  # fmt: skip
    assert (
        settings_text("retrain", params)
        == "retrain_mode drop, retrain_init scratch, retrain_epochs 3, retrain_lr 0.002"
    )
    checkpoint = {**params, "retrain_init": "checkpoint"}
    assert (
        settings_text("retrain", checkpoint)
        == "retrain_mode drop, retrain_init checkpoint, epochs 1, lr 0.01"
    )
    assert settings_text("rrclarc", params) == "rr_lambda 3000, lr 0.01, epochs 1"
    # an outside check: a correction with the region term off looked like any other RR-ClArC
    off = settings_text("rrclarc", {**params, "rr_region_weight": 0.0})
    assert off == "rr_lambda 3000, rr_region_weight 0, lr 0.01, epochs 1"
    assert settings_text("pclarc", params) == "–"


def test_the_source_runs_checks_of_the_model_are_carried_into_the_correction(
    audited: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An outside check: the audit warned that the model's classes were probably in another order (26 %
    accuracy), and the correction published "the flagged region acts no more than any pixels; check the
    flags" without a word of it. The source run's problems are warned of and kept in the record's notes."""
    import json
    import logging

    from spray.accuracy import recorded_problems

    world = _copy_world(audited, tmp_path / "w")
    run = next(p for p in sorted(world.runs_dir.iterdir()) if (p / "summary.json").is_file())
    summary = json.loads((run / "summary.json").read_text())
    assert not recorded_problems(summary.get("extra", {}))
    plain = plan_correction(_config(_args(world)))
    assert not any("check of the model" in n for n in plain.flag_notes)
    summary.setdefault("extra", {})["conservation"] = {
        "low": True,
        "median_share": -0.02,
        "low_share": -0.08,
        "high_share": 0.01,
        "n_samples": 20,
    }
    problems = recorded_problems(summary["extra"])
    assert problems, "the injected record must read as a problem"
    (run / "summary.json").write_text(json.dumps(summary))
    with caplog.at_level(logging.WARNING, logger="spray.correct.plan"):
        plan = plan_correction(_config(_args(world)))
    note = f"the source run {plan.source.run_id[:12]}'s check of the model: {problems[0]}"
    assert note in plan.flag_notes and note in caplog.text


def test_a_test_data_error_names_the_test_datas_own_keys(tmp_path: Path) -> None:
    """An outside check: correction.test_data.class_names in another order than its folders was refused as
    "data.class_names names the folders in another order", a key the user had not set."""
    from spray.config import DataConfig
    from spray.correct.samples import SampleSet
    from spray.errors import ConfigError
    from tests.helpers import make_image_folder

    root = make_image_folder(tmp_path / "test", n_per_class=2, size=8)
    cfg = DataConfig(kind="image_folder", path=root, class_names=["dog", "cat"])
    with pytest.raises(ConfigError) as got:
        SampleSet.build(cfg, "correction.test_data")
    assert str(got.value).startswith("correction.test_data.class_names names the folders in another order")
    assert "data.class_names" not in str(got.value).replace("correction.test_data.class_names", "")
    with pytest.raises(ConfigError, match=r"^data\.class_names names the folders"):
        SampleSet.build(cfg)

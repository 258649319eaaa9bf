"""A correction run end to end on the tiny world: published once, idempotent, resumable, readable back."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from spray.cli.correct import _table
from spray.config import AuditConfig, load_config
from spray.correct.evaluate import CleanChanges
from spray.correct.html import render_correction_html
from spray.correct.record import CorrectionRecord
from spray.correct.rrclarc import RightReasonLoss
from spray.correct.run import correct, corrections_for, list_corrections
from spray.correct.subspace import SubspaceSummary
from spray.errors import ConfigError
from spray.models import build_model
from spray.runs.reader import RunReader
from tests.test_correct_world import TARGET, World, build_world, flip_rate, to_input

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> World:
    world = build_world(tmp_path_factory.mktemp("run"))
    from spray.audit import audit

    audit(load_config(world.config), progress=False)
    return world


def _copy(world: World, dest: Path) -> World:
    shutil.copytree(world.root, dest, symlinks=True)
    return World(dest, dest / "audit.yaml", dest / "runs" / "flags.sqlite", dest / "runs", world.images,
                 world.labels, world.planted, world.model)  # fmt: skip


def _rrclarc_configs(world: World, tmp_path: Path, *names: str) -> list[AuditConfig]:
    """RR-ClArC configs without re-audit, one per copy of the world (``tmp_path / name``)."""
    configs = []
    for name in names:
        cfg = load_config(_copy(world, tmp_path / name).config)
        cfg.correction.method = "rrclarc"
        cfg.correction.reaudit = False
        configs.append(cfg)
    return configs


def test_pclarc_run_is_published_once_and_reads_back(audited: World, tmp_path: Path) -> None:
    world = _copy(audited, tmp_path / "w")
    cfg = load_config(world.config)
    cfg.correction.method = "pclarc"
    first = correct(cfg, progress=False)
    assert not first.up_to_date and first.folder.parent == world.runs_dir / "corrections"
    rec = first.record
    assert rec.group.class_index == TARGET and rec.group.n_flagged == int(world.planted.sum())
    assert rec.direction.separation.auroc > 0.95
    assert rec.evaluation.before.flip_rate > 0.5 and rec.evaluation.after.flip_rate < 0.1
    # the class's own images are measured too (a model that stops answering it also stops flipping to it)
    b_class, a_class = rec.evaluation.before.class_accuracy, rec.evaluation.after.class_accuracy
    assert b_class is not None and a_class is not None and 0.0 <= a_class <= 1.0
    assert CorrectionRecord.read(first.folder).evaluation.after.class_accuracy == a_class
    assert rec.evaluation.region_source == "stamp" and rec.evaluation.region_box == [0, 0, 3, 3]
    assert rec.reaudit is not None and rec.reaudit.before.suspicious and rec.reaudit.before.jaccard > 0.9
    assert rec.verdict.finding_cleared is True
    # the accuracy change is the images gained minus those lost, with its interval around it
    ch = rec.evaluation.clean_changes
    assert ch is not None and ch.n == rec.evaluation.n_clean
    assert (ch.gained - ch.lost) / ch.n == pytest.approx(rec.verdict.accuracy_change)
    assert rec.verdict.accuracy_interval is not None
    low, high = rec.verdict.accuracy_interval
    assert low <= rec.verdict.accuracy_change <= high
    # the record round-trips through its JSON, typed
    assert CorrectionRecord.read(first.folder) == rec
    # the written config rebuilds the corrected model (user's checkpoint untouched)
    corrected = build_model(load_config(first.folder / "config.yaml").model)
    assert flip_rate(corrected, world.images, world.labels) < 0.1
    assert flip_rate(world.model, world.images, world.labels) > 0.5
    assert (first.folder / "reaudit" / "latest" / "summary.json").is_file()
    # an outside check: the re-audit's summary recorded its checkpoint in the deleted work folder
    reaudit = json.loads((first.folder / "reaudit" / "latest" / "summary.json").read_text())
    assert ".work" not in json.dumps(reaudit["config"])
    assert Path(reaudit["config"]["model"]["checkpoint"]) == first.folder / "model.pt"
    assert Path(reaudit["config"]["output"]["runs_dir"]) == first.folder / "reaudit"
    assert not (first.folder / "reaudit" / ".cache").exists()
    # its page is rendered again once correction.json exists: it names the correction's source run
    page = (first.folder / "reaudit" / "latest" / "report.html").read_text()
    assert f"from run {rec.source_run_id[:12]}" in page
    assert "P-ClArC" in (first.folder / "report.html").read_text()
    assert "paste flip rate" in render_correction_html(rec, first.folder)
    _check_share_note(rec)
    assert (
        f"held-out AUROC of each pooling: none {rec.direction.candidates['none']:.3f}"
        in render_correction_html(rec)
    )
    # the same request again is a no-op; other flags make another correction
    again = correct(cfg, progress=False)
    assert again.up_to_date and again.folder == first.folder
    assert len(list_corrections(world.runs_dir)) == 1
    found = corrections_for(world.runs_dir, rec.source_run_id)
    assert [(c.folder, c.record) for c in found] == [(first.folder, rec)]
    assert corrections_for(world.runs_dir, "another run") == []
    _dashboard_shows(world.runs_dir, first.folder)
    _command_line_warns_of_lost_accuracy(first)


def test_if_flagged_is_quiet_about_a_correction_already_published(
    audited: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check: --if-flagged printed the whole 20-line table every night for the same correction;
    the docs say it exits 0 quietly."""
    from spray.cli import main

    world = _copy(audited, tmp_path / "w")
    argv = ["correct", "--config", str(world.config), "--method", "pclarc", "--no-reaudit", "-q"]
    assert main(argv) == 0
    assert "Correction " in capsys.readouterr().out
    assert main([*argv, "--if-flagged"]) == 0
    assert capsys.readouterr().out == ""
    assert main(argv) == 0 and "already published, nothing to do" in capsys.readouterr().out


def _command_line_warns_of_lost_accuracy(outcome: Any) -> None:
    """The printed comparison warns when the corrected model lost more than a point of clean accuracy."""
    from spray.cli.correct import _table

    ev = outcome.record.evaluation
    assert "WARNING" not in _table(outcome) or ev.after.clean_accuracy < ev.before.clean_accuracy - 0.01
    assert f"clean accuracy {outcome.record.verdict.accuracy_text()}" in _table(outcome)
    assert "95 % interval" in _table(outcome)
    worse = dataclasses.replace(ev.after, clean_accuracy=ev.before.clean_accuracy - 0.03)
    n = ev.n_clean
    lost = CleanChanges(n, gained=0, lost=max(4, round(0.03 * n)))  # only losses, enough to exclude 0
    rec = dataclasses.replace(
        outcome.record, evaluation=dataclasses.replace(ev, after=worse, clean_changes=lost)
    )
    text = _table(dataclasses.replace(outcome, record=rec))
    assert "WARNING: the corrected model lost 3.00 points of clean accuracy" in text
    assert "P-ClArC trains nothing" in text and "rr_lambda" not in text  # the method's own advice
    assert "acts no more than any pixels" not in text
    # the same 3 points from many gains and more losses: the interval holds 0, no warning
    noisy = CleanChanges(n, gained=n // 4, lost=n // 4 + round(0.03 * n))
    rec = dataclasses.replace(
        outcome.record, evaluation=dataclasses.replace(ev, after=worse, clean_changes=noisy)
    )
    assert rec.verdict.accuracy_interval is not None and rec.verdict.accuracy_interval[1] > 0
    assert "lost 3.00 points" not in _table(dataclasses.replace(outcome, record=rec))
    # flags whose pixels flip no more than the reference's pixels in the same region
    before = dataclasses.replace(ev.before, flip_null=ev.before.flip_rate - 0.01)
    rec = dataclasses.replace(outcome.record, evaluation=dataclasses.replace(ev, before=before))
    assert "acts no more than any pixels" in _table(dataclasses.replace(outcome, record=rec))


def _dashboard_shows(runs_dir: Path, folder: Path) -> None:
    """The dashboard's Corrections page lists the published correction and shows its comparison."""
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    app = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
    saved = os.environ.get("SPRAY_RUNS_DIR")
    os.environ["SPRAY_RUNS_DIR"] = str(runs_dir)
    try:
        at = AppTest.from_file(app, default_timeout=60).run()
        at.switch_page("views/corrections.py").run()
    finally:
        if saved is None:
            os.environ.pop("SPRAY_RUNS_DIR", None)
        else:
            os.environ["SPRAY_RUNS_DIR"] = saved
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="corr_pick").value == folder.name
    table = at.dataframe[0].value
    assert list(table["method"]) == ["pclarc"] and list(table["re-audit"]) == ["no longer flagged"]
    # two corrections of one method differ in their layer and settings: both are columns
    assert list(table["layer"]) == [CorrectionRecord.read(folder).direction.layer]
    assert list(table["settings"]) == ["–"]  # P-ClArC has no setting beyond its layer
    ev = CorrectionRecord.read(folder).evaluation  # which measurement: test data or a held-out part
    assert list(table["evaluated on"]) == [f"{ev.split} ({ev.n_clean:,})"]
    page = "\n".join(str(h.value) for h in at.get("html"))
    assert "paste flip rate" in page and "P-ClArC" in page


def _check_share_note(rec: CorrectionRecord) -> None:
    """The report explains a missed relevance-share goal only when the behaviour is gone."""
    assert rec.reaudit is not None and rec.verdict.flip_drop is not None and rec.verdict.flip_drop >= 0.9
    ev = rec.evaluation
    note = "would be there in a model that never learned the artifact"

    def with_share(drop: float, still_flagged: bool) -> CorrectionRecord:
        after = dataclasses.replace(ev.after, relevance_share=(1 - drop) * ev.before.relevance_share)
        reaudit = dataclasses.replace(rec.reaudit, still_flagged=still_flagged) if rec.reaudit else None
        return dataclasses.replace(rec, evaluation=dataclasses.replace(ev, after=after), reaudit=reaudit)

    page = render_correction_html(with_share(0.5, False))
    assert note in page  # share goal missed, behaviour gone
    assert "(goal: no loss over 1 percentage point)" in page  # an outside check: "over 1" had no unit
    assert note not in render_correction_html(with_share(0.9, False))  # share goal met
    assert note not in render_correction_html(with_share(0.5, True))  # the re-audit still flags it


def _killing_step(at: int) -> object:
    original = RightReasonLoss.__call__

    def step(self: RightReasonLoss, rows: np.ndarray, i: int) -> dict[str, torch.Tensor]:
        if i == at:
            raise KeyboardInterrupt
        return original(self, rows, i)

    return step


def test_a_killed_rrclarc_run_resumes_to_the_same_model(
    audited: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg_a, cfg_b = _rrclarc_configs(audited, tmp_path, "a", "b")
    b_runs = tmp_path / "b" / "runs"
    straight = correct(cfg_a, progress=False)
    with monkeypatch.context() as m:
        m.setattr(RightReasonLoss, "__call__", _killing_step(12))
        with pytest.raises(KeyboardInterrupt):
            correct(cfg_b, progress=False)
    assert list_corrections(b_runs) == []  # nothing half-done is published
    resumed = correct(cfg_b, progress=False)
    assert resumed.record.training is not None and resumed.record.training.resumed_from == 10
    sa = torch.load(straight.folder / "model.pt")
    sb = torch.load(resumed.folder / "model.pt")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    rec = straight.record
    assert (
        rec.training is not None and rec.training.steps == 4 * 6
    )  # the world: 4 epochs, 192 samples, batch 32
    assert rec.trained_modules == ["classifier.1", "classifier.3"]
    assert rec.evaluation.after.flip_rate < 0.25 * rec.evaluation.before.flip_rate
    # the penalised subspace (the CAV alone by default) and its share of the paste's effect are kept
    assert rec.subspace is not None and rec.subspace.n_directions == 1 and rec.subspace.n_pairs > 0
    assert 0.0 < rec.subspace.cav_captured == rec.subspace.captured <= 1.0
    saved = np.load(straight.folder / "cav.npz")
    np.testing.assert_array_equal(saved["subspace"], saved["vector"][None])
    assert CorrectionRecord.read(straight.folder).subspace == rec.subspace
    share = f"{100 * rec.subspace.cav_captured:.0f} %"
    assert f"Penalised: the CAV, holding {share}" in render_correction_html(rec, straight.folder)
    assert f"penalised: the CAV, holding {share}" in _table(straight)
    three = dataclasses.replace(rec, subspace=SubspaceSummary(3, 0.95, 0.8, 100))
    # an accuracy loss with several directions names them among the settings to try
    worse = dataclasses.replace(
        rec.evaluation.after, clean_accuracy=rec.evaluation.before.clean_accuracy - 0.05
    )
    lossy = dataclasses.replace(rec, evaluation=dataclasses.replace(rec.evaluation, after=worse))
    assert "or correction.rr_directions 1 " not in _table(dataclasses.replace(straight, record=lossy))
    lossy4 = dataclasses.replace(lossy, parameters={**rec.parameters, "rr_directions": 4})
    assert "or correction.rr_directions 1 " in _table(dataclasses.replace(straight, record=lossy4))
    assert "Penalised: 3 directions, holding 95 %" in render_correction_html(three)
    assert "(100 pastes; the CAV alone 80 %)" in _table(dataclasses.replace(straight, record=three))
    with torch.no_grad():
        corrected = build_model(load_config(straight.folder / "config.yaml").model)
        assert corrected(to_input(audited.images[:4])).shape == (4, 3)


def test_retrain_baseline_drops_the_flagged_samples(audited: World, tmp_path: Path) -> None:
    world = _copy(audited, tmp_path / "r")
    cfg = load_config(world.config)
    cfg.correction.method = "retrain"
    cfg.correction.reaudit = False
    cfg.correction.retrain_epochs = 10
    cfg.correction.retrain_lr = 5e-3
    out = correct(cfg, progress=False)
    rec = out.record
    from spray.correct.plan import plan_correction

    plan = plan_correction(cfg)
    kept = np.setdiff1d(plan.train_rows, plan.group.flagged_rows)
    assert rec.training is not None and rec.training.samples == 10 * len(kept)
    assert not np.isin(kept, np.flatnonzero(world.planted)).any()
    assert rec.evaluation.after.flip_rate < 0.25 * rec.evaluation.before.flip_rate
    # a model retrained from scratch has other features at the layer: no sensitivity or TCAV score along the
    # audited model's direction (an outside check: "TCAV 100 % -> 100 %" read as a response to the artifact)
    text = _table(out)
    assert "n/a: the direction was fitted on the audited model's features" in text
    assert [line.split()[-1] for line in text.splitlines() if "TCAV score" in line] == ["n/a"]
    assert "n/a: the direction was fitted" in render_correction_html(rec, out.folder)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_rrclarc_on_the_gpu_matches_the_cpu(audited: World, tmp_path: Path) -> None:
    outs = {}
    for device in ("cpu", "cuda"):
        world = _copy(audited, tmp_path / device)
        cfg = load_config(world.config)
        cfg.correction.reaudit = False
        outs[device] = correct(cfg, device=device, progress=False).record.evaluation.after
    assert abs(outs["cpu"].flip_rate - outs["cuda"].flip_rate) < 0.05
    assert abs(outs["cpu"].relevance_share - outs["cuda"].relevance_share) < 0.02


def test_the_region_term_is_recorded_and_takes_relevance_off_the_region(
    audited: World, tmp_path: Path
) -> None:
    cfg_plain, cfg_region = _rrclarc_configs(audited, tmp_path, "plain", "region")
    cfg_plain.correction.rr_region_weight = 0.0
    cfg_region.correction.rr_region_weight = 100.0
    without = correct(cfg_plain, progress=False)
    done = correct(cfg_region, progress=False)
    rec = done.record
    assert without.record.footprint is None and "region term" not in _table(without)
    assert rec.footprint is not None and rec.footprint.n_samples > 0 and 0.0 < rec.footprint.peak <= 1.0
    saved = np.load(done.folder / "cav.npz")
    assert saved["footprint"].shape == tuple(rec.footprint.tiles)  # the tiny model's grid has ≤ 8 per side
    assert CorrectionRecord.read(done.folder).footprint == rec.footprint
    assert "and: region term 100 on the artifact class's relevance (the footprint of" in _table(done)
    worse = dataclasses.replace(
        rec.evaluation.after, clean_accuracy=rec.evaluation.before.clean_accuracy - 0.05
    )
    lossy = dataclasses.replace(rec, evaluation=dataclasses.replace(rec.evaluation, after=worse))
    assert "or a lower correction.rr_region_weight before" in _table(dataclasses.replace(done, record=lossy))
    assert (
        "With a region term 100 on the artifact class&#x27;s relevance (the footprint of"
        in render_correction_html(rec)
    )
    assert rec.training is not None and all("region" in e for e in rec.training.epochs)
    # the term draws relevance off the artifact region, beyond what the CAV term alone does
    share = rec.evaluation.after.relevance_share
    assert share < without.record.evaluation.after.relevance_share
    assert done.folder != without.folder  # a field of RR-ClArC: part of the correction id


def test_the_region_term_can_take_only_the_artifact_class_relevance_off_the_region(
    audited: World, tmp_path: Path
) -> None:
    cfg_plain, cfg_label, cfg_class = _rrclarc_configs(audited, tmp_path, "plain", "label", "class")
    cfg_plain.correction.rr_region_weight = 0.0
    cfg_label.correction.rr_region_weight = cfg_class.correction.rr_region_weight = 100.0
    cfg_label.correction.rr_region_target = "label"
    cfg_class.correction.rr_region_target = "artifact_class"
    without = correct(cfg_plain, progress=False).record
    label = correct(cfg_label, progress=False).record
    rec = correct(cfg_class, progress=False).record
    # the other classes' samples explain another logit: the term, and so the training, differ
    assert label.training is not None and rec.training is not None
    assert label.training.epochs[-1]["region"] != pytest.approx(rec.training.epochs[-1]["region"], rel=1e-3)
    assert rec.parameters["rr_region_target"] == "artifact_class" and rec.footprint is not None
    assert all("region" in e for e in rec.training.epochs)
    # the evaluation explains the flagged samples' own class, the artifact class: its share falls too
    assert rec.evaluation.after.relevance_share < without.evaluation.after.relevance_share
    assert rec.correction_id != without.correction_id


def test_a_layer_without_a_grid_runs_without_the_region_term_unless_it_was_asked_for(
    audited: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (cfg,) = _rrclarc_configs(audited, tmp_path, "dense")
    cfg.correction.layer = "classifier.2"  # (B, 16): no positions to weigh
    asked = cfg.model_copy(deep=True)
    asked.correction.rr_region_weight = 30.0  # the default's value, but set by the user
    with pytest.raises(ConfigError, match=r"needs a layer with a \(B, C, H, W\) output; 'classifier.2'"):
        correct(asked, progress=False)
    done = correct(cfg, progress=False)
    assert done.record.footprint is None and done.record.parameters["rr_region_weight"] == 30.0
    assert "RR-ClArC runs without its region term" in caplog.text


def test_keep_corrections_prunes_the_older_corrections_of_the_dataset_only(
    audited: World, tmp_path: Path
) -> None:
    """output.keep_corrections: the newest N of this dataset stay; another dataset's correction is untouched."""
    import json

    from spray.correct.record import RECORD_NAME

    world = _copy(audited, tmp_path / "w")
    cfg = load_config(world.config)
    cfg.correction.method = "pclarc"
    cfg.correction.reaudit = False
    first = correct(cfg, progress=False)
    other = first.folder.with_name("19990101T000000000000Z-0123456789ab")
    shutil.copytree(first.folder, other)
    raw = json.loads((other / RECORD_NAME).read_text())
    raw["dataset"] = "another-dataset"
    (other / RECORD_NAME).write_text(json.dumps(raw))
    assert CorrectionRecord.read(other).dataset == "another-dataset"
    again = correct(cfg, progress=False, force=True)  # published anew: two corrections of this dataset
    assert len(list_corrections(world.runs_dir)) == 3
    cfg.output.keep_corrections = 1
    third = correct(cfg, progress=False, force=True)
    assert sorted(list_corrections(world.runs_dir)) == sorted([third.folder, other])
    assert not first.folder.exists() and not again.folder.exists()
    # a page of a newer run (its source run pruned) finds them by the dataset; another dataset's stays out
    assert corrections_for(world.runs_dir, "a newer run") == []
    by_dataset = corrections_for(world.runs_dir, "a newer run", dataset=third.record.dataset)
    assert [c.folder for c in by_dataset] == [third.folder]


def test_a_correction_pins_its_source_run_while_it_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review: the pin was not checked inside spray correct, and was let go before publishing."""
    import spray.correct.run as run_module
    from spray.runs.locking import pinned
    from spray.runs.publish import list_runs

    seen: list[bool] = []
    real_execute, real_publish = run_module._execute, run_module._publish

    def execute(plan, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(pinned(plan.source.path))
        return real_execute(plan, *args, **kwargs)

    def publish(folder, final):  # type: ignore[no-untyped-def]
        seen.append(any(pinned(p) for p in list_runs(final.parent.parent)))  # the runs folder
        return real_publish(folder, final)

    monkeypatch.setattr(run_module, "_execute", execute)
    monkeypatch.setattr(run_module, "_publish", publish)
    from spray.config import load_config
    from tests.test_correct_world import build_world

    world = build_world(tmp_path / "w")
    from spray.cli import main

    assert main(["audit", "--config", str(world.config), "-q"]) == 0
    cfg = load_config(world.config)
    cfg.correction.method, cfg.correction.reaudit = "pclarc", False
    run_module.correct(cfg, progress=False)
    assert seen == [True, True]


def test_a_resumed_correction_publishes_under_the_name_its_first_start_chose(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A review: the name was taken at each start, so a correction killed after its re-audit recorded the
    published paths resumed under another name, and the re-audit kept pointing at a folder never made. An
    outside check: the resumed run's folder carried the first start's time without a word."""
    import time

    from spray.correct.run import _final_name

    first = _final_name(tmp_path / "work", "c" * 64)
    assert "resumes the work" not in caplog.text
    time.sleep(0.002)
    with caplog.at_level("INFO", logger="spray.correct.run"):
        assert _final_name(tmp_path / "work", "c" * 64) == first and first.endswith("-" + "c" * 12)
    assert "resumes the work an earlier, interrupted run began" in caplog.text and first in caplog.text


def test_a_correction_resumed_after_the_project_moved_reaudits_the_data_its_config_names_now(
    audited: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outside check: killed in its re-audit, the project moved, a copy left at the old place; the resumed
    correction re-audited the old place's data and published a config naming it, without a word."""
    import spray.correct.run as correct_run

    world = _copy(audited, tmp_path / "old" / "w")
    cfg = load_config(world.config)
    cfg.correction.method = "pclarc"
    with monkeypatch.context() as m:
        m.setattr(correct_run, "_reaudit", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            correct(cfg, progress=False)
    shutil.move(tmp_path / "old", tmp_path / "new")
    shutil.copytree(tmp_path / "new" / "w", tmp_path / "old" / "w")  # a stale copy at the old place
    moved = load_config(tmp_path / "new" / "w" / "audit.yaml")
    moved.correction.method = "pclarc"
    done = correct(moved, progress=False)
    published = yaml.safe_load((done.folder / "config.yaml").read_text())
    assert Path(published["data"]["images"]) == tmp_path / "new" / "w" / "images.idx"
    reaudit = RunReader.open(done.folder / done.record.reaudit.run_dir)  # type: ignore[union-attr]
    assert Path(reaudit.summary.config["data"]["images"]) == tmp_path / "new" / "w" / "images.idx"


def test_a_runs_folder_behind_a_symlink_is_corrected(audited: World, tmp_path: Path) -> None:
    """An outside check: the re-audit's folder came back resolved and the correction stopped with a raw
    ValueError (not in the subpath), every time."""
    world = _copy(audited, tmp_path / "w")
    shutil.move(world.runs_dir, tmp_path / "disk-runs")
    world.runs_dir.symlink_to(tmp_path / "disk-runs", target_is_directory=True)
    cfg = load_config(world.config)
    cfg.correction.method = "pclarc"
    done = correct(cfg, progress=False)
    assert done.record.reaudit is not None and (done.folder / done.record.reaudit.run_dir).is_dir()


def test_a_correction_computed_anew_for_a_newer_source_run_names_the_earlier_one(
    audited: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An outside check: after an upgrade re-analysed the data (a new source run id), spray correct computed
    the same correction again and listed two, without a word on why."""
    from spray.audit import audit

    world = _copy(audited, tmp_path / "w")
    cfg = load_config(world.config)
    cfg.correction.method, cfg.correction.reaudit = "pclarc", False
    first = correct(cfg, progress=False)
    again = cfg.model_copy(deep=True)
    again.scoring.flip_margin = 0.06  # another analysis of the same data: a new newest run
    audit(again, progress=False)
    with caplog.at_level("INFO", logger="spray.correct.run"):
        second = correct(again, progress=False)
    assert second.folder != first.folder
    assert f"correction {first.folder.name} of class" in caplog.text and "computed anew" in caplog.text

"""A correction's re-audit is known as one: its checks blame the correction, not the inputs, and its report
names the correction. An outside check found the re-audit of a collapsed corrected model warning that "its
inputs probably differ from training ... or the weights are not the trained ones (model.checkpoint)" in
report.html and the dashboard, while correction.json said the correction collapsed the model; the report
named no correction and printed "weights model.pt" for the original and the corrected model alike."""

from __future__ import annotations

import json
from pathlib import Path

from spray.accuracy import problems, recorded_problems
from spray.export.source import CORRECTED_FACTORY, corrected_from
from spray.flags import default_db_path
from spray.html_report import render_html_report
from spray.runs.layout import CORRECTION_RECORD, project_root
from tests.runs.builders import make_report, write_published

CORRECTION_ID = "4248c89aa700" + "9" * 52
SOURCE_RUN = "9436e75897b7" + "8" * 52
#: What the near-chance check said of any model, the inputs and checkpoint blamed.
BLAMES_INPUTS = "its inputs probably differ from training"
NEAR_CHANCE = {"accuracy": 0.1, "majority_share": 0.1, "n_samples": 600, "near_chance": True}
SHIFTED = {"accuracy": 0.7, "majority_share": 0.1, "n_samples": 600, "near_chance": False,
           "shifted": {"Sneaker": "Sandal"}}  # fmt: skip


def corrected_config(checkpoint: Path) -> dict:
    """The model section a correction's config.yaml records (spray.correct.checkpoint.save_corrected)."""
    base = {"factory": "spray.lab.cnn:small_cnn", "factory_kwargs": {"in_channels": 1}}
    return {"factory": CORRECTED_FACTORY, "factory_kwargs": {"base": base}, "checkpoint": str(checkpoint)}


def write_reaudit(runs: Path, extra: dict, *, record: bool = True) -> Path:
    """A published run in ``runs/corrections/<time>-<id12>/reaudit/`` whose config is a corrected model's."""
    folder = runs / "corrections" / f"20261206T224605936806Z-{CORRECTION_ID[:12]}"
    report, stage = make_report()
    report.name = report.config["name"] = f"demo-pclarc-{CORRECTION_ID[:8]}"
    report.config["model"] = corrected_config(folder / "model.pt")
    report.extra = extra
    run = write_published(folder / "reaudit", report, stage)
    if record:
        rec = {"correction_id": CORRECTION_ID, "method": "pclarc", "source_run_id": SOURCE_RUN}
        (folder / CORRECTION_RECORD).write_text(json.dumps(rec))
    return run


def test_the_names_spelled_for_speed_are_the_correction_modules_own() -> None:
    from spray.correct.checkpoint import FACTORY
    from spray.correct.record import RECORD_NAME

    assert (CORRECTED_FACTORY, CORRECTION_RECORD) == (FACTORY, RECORD_NAME)


def test_a_corrected_models_checks_blame_the_correction() -> None:
    assert BLAMES_INPUTS in recorded_problems({"model_accuracy": NEAR_CHANCE})[0]
    (collapsed,) = recorded_problems({"model_accuracy": NEAR_CHANCE}, corrected=True)
    assert "the correction itself did this" in collapsed and BLAMES_INPUTS not in collapsed
    # one class moved to another: the same data in the same order was read, so not "classes out of order"
    (plain,) = problems(SHIFTED)
    (moved,) = problems(SHIFTED, corrected=True)
    assert "not in the same order" in plain and "not in the same order" not in moved
    assert "Sneaker as Sandal" in moved and "the correction moved those classes" in moved


def test_a_run_knows_it_is_a_corrections_reaudit(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run = write_reaudit(runs, {})
    cfg = json.loads((run / "summary.json").read_text())["config"]
    got = corrected_from(run, cfg)
    assert got is not None and got.folder == run.parent.parent
    assert (
        got.sentence()
        == f"the re-audit of correction {CORRECTION_ID[:12]} (pclarc, from run {SOURCE_RUN[:12]})"
    )
    # written before correction.json (the re-audit's own report.html): from the config the correction wrote
    (run.parent.parent / CORRECTION_RECORD).unlink()
    assert corrected_from(run, cfg).sentence() == f"the re-audit of correction {CORRECTION_ID[:8]} (pclarc)"
    # a damaged record falls back the same way
    (run.parent.parent / CORRECTION_RECORD).write_text("{")
    assert corrected_from(run, cfg).correction_id == CORRECTION_ID[:8]
    other = write_published(tmp_path / "other", *make_report())
    assert corrected_from(other, {"model": {"factory": "spray.lab.cnn:small_cnn"}}) is None
    assert project_root(run.parent) == runs and project_root(runs) == runs
    # every default flag database of the re-audit (spray flags, the server, the dashboard) is the project's
    assert default_db_path(run.parent) == runs / "flags.sqlite" == default_db_path(runs)


def test_the_reaudits_report_names_its_correction_and_blames_no_input(tmp_path: Path) -> None:
    run = write_reaudit(tmp_path / "runs", {"model_accuracy": NEAR_CHANCE})
    page = render_html_report(run)
    assert f"the re-audit of correction {CORRECTION_ID[:12]} (pclarc, from run {SOURCE_RUN[:12]})" in page
    assert "the correction itself did this" in page and BLAMES_INPUTS not in page
    # the original's checkpoint is model.pt as well: the corrected one is told apart
    assert (
        f"model spray.lab.cnn:small_cnn corrected by pclarc, weights model.pt of correction {CORRECTION_ID[:12]}"
        in page
    )

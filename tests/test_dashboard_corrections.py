"""The dashboard's Corrections page on correction records written next to synthetic runs: which corrections it
lists for a run, and what it says of each."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

from spray.correct.record import CorrectionRecord
from spray.correct.run import corrections_dir
from spray.runs.reader import RunReader
from tests.correction_records import reaudit, record, scores
from tests.dashboard_fixtures import make_synthetic_run, pointed_at

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
DATASET = "synthetic-fashion"


def _publish(runs_dir: Path, name: str, source_run_id: str, **changes: object) -> Path:
    rec = dataclasses.replace(
        record(**changes),  # type: ignore[arg-type]
        dataset=DATASET,
        source_run_id=source_run_id,
        correction_id=name[-12:] * 5,
    )
    folder = corrections_dir(runs_dir) / name
    folder.mkdir(parents=True)
    rec.write(folder)
    return folder


def test_every_correction_of_the_dataset_is_listed_with_its_source_run(tmp_path: Path) -> None:
    """An outside check: the page of an older run said its dataset's corrections came from "earlier runs" (they
    came from the newer one); with one correction of its own a run hid the dataset's other six; an unreadable
    correction.json vanished without a word; a correction published again with --force was listed twice alike;
    a correction without a re-audit pointed at a re-audit folder that does not exist."""
    old = make_synthetic_run(tmp_path, seed=1, dataset=DATASET)
    new = make_synthetic_run(tmp_path, seed=2, dataset=DATASET)
    old_id, new_id = RunReader.open(old).summary.run_id, RunReader.open(new).summary.run_id
    _publish(tmp_path, "20261206T100000000000Z-cccccccccccc", new_id, rea=reaudit(True, False))
    again = _publish(tmp_path, "20261206T110000000000Z-cccccccccccc", new_id, rea=reaudit(True, False))
    _publish(tmp_path, "20261206T120000000000Z-dddddddddddd", old_id, method="pclarc")
    broken = corrections_dir(tmp_path) / "20261206T130000000000Z-eeeeeeeeeeee"
    broken.mkdir()
    (broken / "correction.json").write_text('{"correction_id": "e')
    with pointed_at(tmp_path, tmp_path / "flags.sqlite"):
        at = AppTest.from_file(APP, default_timeout=60).run()
        at.query_params["run"] = old.name
        at.switch_page("views/corrections.py").run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert list(table["correction"]) == [
        "20261206T120000000000Z-dddddddddddd",  # of this run first
        "20261206T110000000000Z-cccccccccccc",
        "20261206T100000000000Z-cccccccccccc",
    ]
    assert list(table["source run"]) == [f"{old_id[:12]} (this run)", new_id[:12], new_id[:12]]
    assert list(table["replaced by"]) == ["–", "–", f"{again.name} (published again)"]
    captions = " ".join(c.value for c in at.caption)
    assert "1 correction(s) of run" in captions and "2 made from other runs of dataset" in captions
    assert "earlier runs" not in captions
    assert any("20261206T130000000000Z-eeeeeeeeeeee" in w.value for w in at.warning)
    assert "It has no re-audit folder." in captions  # the P-ClArC record of the old run has none


def test_a_shortcut_that_still_acts_is_said_in_the_table(tmp_path: Path) -> None:
    """The re-audit column says when the re-audit no longer flags a finding whose shortcut still acts, and the
    warnings column counts the record's warnings."""
    from dataclasses import replace

    run = make_synthetic_run(tmp_path, seed=1, dataset=DATASET)
    run_id = RunReader.open(run).summary.run_id
    before = replace(scores(flip=0.978), flip_null=0.02)
    after = replace(scores(flip=0.523), flip_null=0.02)
    _publish(tmp_path, "20261206T100000000000Z-cccccccccccc", run_id, method="pclarc", before=before,
             after=after, rea=reaudit(True, False))  # fmt: skip
    with pointed_at(tmp_path, tmp_path / "flags.sqlite"):
        at = AppTest.from_file(APP, default_timeout=60).run()
        at.switch_page("views/corrections.py").run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert list(table["re-audit"]) == ["no longer flagged, but the shortcut still acts"]
    assert table["warnings"][0].startswith("1: the re-audit no longer flags the finding, but pasting")


def test_the_cluster_and_sample_pages_name_the_corrections_of_their_samples(tmp_path: Path) -> None:
    """A corrected finding looked untouched on its Cluster page and its members' Sample pages; a dashboard shown
    a correction's re-audit folder listed no correction at all."""
    run = make_synthetic_run(tmp_path, seed=1, dataset=DATASET)
    summary = RunReader.open(run).summary
    top = summary.findings[0]
    members = RunReader.open(run).members(top.key) or []
    folder = _publish(
        tmp_path, "20261206T100000000000Z-cccccccccccc", summary.run_id, rea=reaudit(True, False)
    )
    rec = CorrectionRecord.read(folder)
    dataclasses.replace(rec, flags=dataclasses.replace(rec.flags, sample_ids=sorted(members[:3]))).write(
        folder
    )

    def shown(page: str, **params: str) -> str:
        with pointed_at(tmp_path, tmp_path / "flags.sqlite"):
            at = AppTest.from_file(APP, default_timeout=60).run()
            for k, v in {"run": run.name, **params}.items():
                at.query_params[k] = v
            at.switch_page(page).run()
        assert not at.exception, [e.value for e in at.exception]
        return "\n".join(m.value for m in at.markdown)

    # published again with --force: the newer folder replaces it (a review finding: both were listed)
    again = _publish(
        tmp_path, "20261206T110000000000Z-cccccccccccc", summary.run_id, rea=reaudit(True, False)
    )
    dataclasses.replace(rec, flags=dataclasses.replace(rec.flags, sample_ids=sorted(members[:3]))).write(
        again
    )
    cluster = shown("views/cluster.py", cluster=top.key)
    assert f"{again.name}" in cluster and "flags of this run) 3 of these" in cluster
    assert folder.name not in cluster
    first, folder = folder, again
    assert "re-audit: no longer flagged" in cluster
    assert folder.name in shown("views/sample.py", sample=str(members[0]))
    outside = next(s for s in RunReader.open(run).samples().index if s not in members)
    assert "Corrections" not in shown("views/sample.py", sample=str(outside))
    # the re-audit's own dashboard lists the project's corrections
    reaudit_run = make_synthetic_run(folder / "reaudit", seed=2, dataset=DATASET)
    with pointed_at(folder / "reaudit", tmp_path / "flags.sqlite"):
        at = AppTest.from_file(APP, default_timeout=60).run()
        at.query_params["run"] = reaudit_run.name
        at.switch_page("views/corrections.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert list(at.dataframe[0].value["correction"]) == [folder.name, first.name]

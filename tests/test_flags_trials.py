"""Flags checked against a ``data.limit`` trial newer than the full run: the trial read the files as they are
now, so a flagged file it read as other content is left out of the export and named by ``spray flags check``
(an outside-in check: both went by the older full run alone and exported the flag on the replaced file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spray.audit import audit
from spray.flags import FlagStore
from spray.runs.publish import flag_check_runs, list_runs
from spray.runs.reader import RunReader
from tests.dashboard_fixtures import pointed_at
from tests.faults.cli import run_main
from tests.runs.builders import tiny_config

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


def test_a_file_replaced_since_the_full_run_and_read_by_a_newer_trial_is_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tiny_config(tmp_path)
    full = audit(cfg, progress=False)
    runs = tmp_path / "runs"
    reader = RunReader.open(full.run_dir)
    hashes = reader.content_hashes() or {}
    dataset = reader.summary.dataset
    flagged = ["cat/001.png", "cat/002.png"]
    FlagStore(runs / "flags.sqlite").flag(
        dataset, flagged, "unlearn", content_hashes={s: hashes[s] for s in flagged}
    )
    imgs = tmp_path / "imgs"
    (imgs / "cat" / "001.png").write_bytes((imgs / "dog" / "001.png").read_bytes())
    trial_cfg = tiny_config(tmp_path, data={"limit": 6})
    trial = audit(trial_cfg, progress=False)
    assert Path(trial.run_dir).name > Path(full.run_dir).name
    assert flag_check_runs(runs) == {dataset: [Path(full.run_dir), Path(trial.run_dir)]}
    out = tmp_path / "flags.csv"
    res = run_main(["flags", "export", "--runs-dir", str(runs), "--fail-if-left-out", "-o", str(out)], capsys)
    assert res.code == 1, res.output
    assert "left out of the export: 1 flags" in res.output, res.output
    assert [line.split(",")[1] for line in out.read_text().splitlines()[1:]] == ["cat/002.png"]
    res = run_main(["flags", "check", "--runs-dir", str(runs)], capsys)
    assert res.code == 1, res.output
    lines = res.output.splitlines()
    assert any(str(full.run_dir) in line and "0 on ids that now name other content" in line for line in lines)
    assert any(
        str(trial.run_dir) in line and "1 on ids that now name other content" in line for line in lines
    )
    res = run_main(["flags", "list", "--runs-dir", str(runs)], capsys)
    assert "(1 of them no longer name the images they were set on" in res.output, res.output
    # the dashboard's Flags page leaves out what `spray flags export --runs-dir` does
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    with pointed_at(runs, runs / "flags.sqlite"):
        at = AppTest.from_file(APP, default_timeout=60).run()
        at = at.switch_page("views/flags.py").run()
    assert not at.exception
    said = " ".join(c.value for c in at.caption)
    assert "1 samples." in said and "**1 flags are left out:**" in said, said
    # a full run after the change is the newest: the trial is not checked again, and the flag stays left out
    last = audit(cfg, progress=False)
    assert flag_check_runs(runs) == {dataset: [Path(last.run_dir)]}
    res = run_main(["flags", "export", "--runs-dir", str(runs), "-o", str(out)], capsys)
    assert res.code == 0 and "left out of the export: 1 flags" in res.output, res.output
    assert len(list_runs(runs)) == 3


def test_an_export_of_a_dataset_without_flags_is_refused_before_any_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check: ``--dataset nosuch`` first warned that its flags were exported unchecked, then
    failed because the database holds no flags of it."""
    runs = tmp_path / "runs"
    runs.mkdir()
    FlagStore(runs / "flags.sqlite").flag("data", ["a"], "unlearn")
    res = run_main(["flags", "export", "--runs-dir", str(runs), "--dataset", "nosuch"], capsys)
    assert res.code == 2 and "holds no flags of that dataset key" in res.output, res.output
    assert "exported without checking" not in res.output

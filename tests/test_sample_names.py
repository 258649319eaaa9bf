"""Sample ids as a person types them: a class folder whose name begins with a space, and file names stored
in Unicode's decomposed form (macOS, zips made there), through the CLI's flags and the dashboard's sample
page, on a real audit. From an outside check: both were "not in run" / "Not found"."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from streamlit.testing.v1 import AppTest

from spray.cli import main
from spray.flags import FlagStore
from spray.report import cluster_label
from spray.runs.keys import sample_id_in
from spray.runs.reader import RunReader
from tests.dashboard_fixtures import pointed_at
from tests.faults.cli import run_main
from tests.helpers import small_folder_config

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
LEAD = " Lead space"
DECOMPOSED = unicodedata.normalize("NFD", "café_0.png")


def test_sample_id_in_finds_the_id_as_typed_trimmed_or_composed() -> None:
    known = {f"{LEAD}/a.png", f"dog/{DECOMPOSED}", "dog/b.png"}
    assert sample_id_in(f"{LEAD}/a.png", known) == f"{LEAD}/a.png"
    assert sample_id_in("  dog/b.png ", known) == "dog/b.png"
    assert sample_id_in("dog/café_0.png", known) == f"dog/{DECOMPOSED}"
    assert sample_id_in("Lead space/a.png", known) is None and sample_id_in("dog/c.png", known) is None
    # a review: many typed ids compose the run's ids once (k x n normalisations before)
    from spray.runs.keys import sample_ids_in

    typed = ["dog/café_0.png", " dog/b.png", "nope/é.png"]
    assert sample_ids_in(typed, known) == {
        typed[0]: f"dog/{DECOMPOSED}",
        typed[1]: "dog/b.png",
        typed[2]: None,
    }


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("names")
    raw = small_folder_config(root, classes=(LEAD, "dog"))
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)).save(
        root / "imgs" / "dog" / DECOMPOSED
    )
    (root / "cfg.yaml").write_text(yaml.safe_dump(raw))
    assert main(["audit", "--config", str(root / "cfg.yaml"), "-q"]) == 0
    return root


def test_flags_set_finds_ids_and_findings_as_typed(audited: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs, db = audited / "runs", audited / "flags.sqlite"
    base = ["flags", "set", "--runs-dir", str(runs), "--db", str(db)]
    res = run_main([*base, "--sample-ids", f"{LEAD}/000.png,dog/café_0.png"], capsys)
    assert res.code == 0, res.output
    reader = RunReader.open(runs / "latest")
    flagged = {f.sample_id for f in FlagStore(db).current(reader.summary.dataset, "unlearn")}
    assert flagged == {f"{LEAD}/000.png", f"dog/{DECOMPOSED}"}  # stored under the run's own ids
    lead = next(f for f in reader.findings() if f.class_name == LEAD)
    res = run_main([*base, "--status", "ok", "--finding", f"{LEAD}/{cluster_label(lead)}"], capsys)
    assert res.code == 0, res.output


def test_the_dashboards_sample_page_opens_such_ids(audited: Path, tmp_path: Path) -> None:
    with pointed_at(audited / "runs", tmp_path / "flags.sqlite"):
        for typed in (f"{LEAD}/001.png", "dog/café_0.png"):
            at = AppTest.from_file(APP, default_timeout=60)
            at.switch_page("views/sample.py")
            at.query_params["sample"] = typed
            at.run()
            assert not at.exception, [e.value for e in at.exception]
            assert [t.value for t in at.title] == ["Sample"] and not at.error, typed

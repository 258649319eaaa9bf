"""The dashboard opened on a correction's re-audit, or on a correction's folder. An outside check found the
re-audit's overview blaming the inputs and model.checkpoint for a collapse the correction caused, never saying
whose re-audit the run is, reading an empty flag database inside the correction folder ("Flagged 0", and a
flag set there went where ``spray correct`` never looks), and, given a correction's folder, suggesting
``spray demo --runs-dir <correction folder>``."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
pytest.importorskip("plotly")
from streamlit.testing.v1 import AppTest

from spray.flags import FlagStore
from tests.dashboard_fixtures import make_synthetic_run
from tests.faults.cli import assert_clean_failure, run_main
from tests.test_reaudit_identity import (
    BLAMES_INPUTS,
    CORRECTION_ID,
    NEAR_CHANCE,
    SOURCE_RUN,
    corrected_config,
)

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
DATASET = "synthetic-fashion"


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """``runs/`` with one correction whose re-audit collapsed (near chance); the app pointed at the re-audit's
    runs folder with no flag database named (its default applies)."""
    runs = tmp_path / "runs"
    folder = runs / "corrections" / f"20261206T224605936806Z-{CORRECTION_ID[:12]}"
    run = make_synthetic_run(folder / "reaudit", seed=5, dataset=DATASET)
    s = json.loads((run / "summary.json").read_text())
    s["config"] = {"name": f"demo-pclarc-{CORRECTION_ID[:8]}", "model": corrected_config(folder / "model.pt")}
    s.setdefault("extra", {})["model_accuracy"] = NEAR_CHANCE
    (run / "summary.json").write_text(json.dumps(s))
    rec = {"correction_id": CORRECTION_ID, "method": "pclarc", "source_run_id": SOURCE_RUN}
    (folder / "correction.json").write_text(json.dumps(rec))
    saved = {k: os.environ.pop(k, None) for k in ("SPRAY_RUNS_DIR", "SPRAY_FLAGS_DB")}
    os.environ["SPRAY_RUNS_DIR"] = str(folder / "reaudit")
    try:
        yield runs
    finally:
        os.environ.pop("SPRAY_RUNS_DIR", None)
        os.environ.update({k: v for k, v in saved.items() if v is not None})


@pytest.fixture(autouse=True)
def _fresh_log_handlers() -> Iterator[None]:
    """``spray.cli.main`` points the root logger at this test's captured stderr: drop it afterwards, so a
    later test's log lines do not go to a closed stream (a "Logging error" traceback in its output)."""
    yield
    logging.getLogger().handlers[:] = []


def texts(at: AppTest) -> str:
    """Every text element, with Markdown escapes removed (what the browser shows)."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
    parts += [e.value for e in at.error] + [w.value for w in at.warning] + [s.value for s in at.success]
    text = re.sub(r"(`+) (.*?) \1", r"\2", "\n".join(map(str, parts)))
    return re.sub(r"\\(.)", r"\1", text)


def test_the_reaudits_overview_names_the_correction_blames_it_and_counts_the_projects_flags(
    project: Path,
) -> None:
    FlagStore(project / "flags.sqlite").flag(DATASET, ["1", "2", "3"], "unlearn", "stamp")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    shown = texts(at)
    assert f"the re-audit of correction {CORRECTION_ID[:12]} (pclarc, from run {SOURCE_RUN[:12]})" in shown
    assert "the correction itself did this" in shown and BLAMES_INPUTS not in shown
    strip = str(at.get("html")[0].proto)
    figures = dict(re.findall(r'data-figure=\\?"([^"\\]+)\\?">.*?2.25rem[^>]*>([^<]*)<', strip))
    assert figures["Flagged (unlearn)"] == "3", figures
    assert not list((project / "corrections").glob("*/reaudit/flags.sqlite"))  # none made in there


def test_the_reaudits_flags_are_the_projects_in_the_server_command_too(project: Path) -> None:
    from spray import serve

    reaudit = Path(os.environ["SPRAY_RUNS_DIR"])
    _, env = serve.build_command(reaudit)
    assert env["SPRAY_FLAGS_DB"] == str(project / "flags.sqlite")


def test_a_correction_folder_is_answered_with_its_reaudit_not_a_demo(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spray import serve

    reaudit = Path(os.environ["SPRAY_RUNS_DIR"])
    folder = reaudit.parent
    with socket.socket() as busy:  # a port in use: a dashboard that took the folder stops there, not serving
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        res = run_main(["dashboard", "--runs-dir", str(folder), "--port", port], capsys)
    assert_clean_failure(res, 2, "is a correction's folder", f"--runs-dir {reaudit}")
    assert "spray demo" not in res.output
    os.environ["SPRAY_RUNS_DIR"] = str(folder)  # the app started on it all the same (streamlit run)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert "is a correction's folder" in texts(at) and "spray demo" not in texts(at)
    # its re-audit emptied (the run removed): no demo suggested there either
    for entry in list(reaudit.iterdir()):
        entry.unlink() if entry.is_symlink() or entry.is_file() else shutil.rmtree(entry)
    msg = serve.no_runs_message(reaudit)
    assert "re-audit folder" in msg and f"--runs-dir {project}" in msg and "spray demo" not in msg
    os.environ["SPRAY_RUNS_DIR"] = str(reaudit)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert "re-audit folder" in texts(at) and "spray demo" not in texts(at)


def test_the_reaudits_pages_check_flags_against_the_projects_newest_data(project: Path) -> None:
    """An outside check: a re-audit's dashboard checked the project's flags against the data the re-audit read
    (before later changes), advised unsetting flags that name their images in the project's newest run, and
    left those flags out of an export labelled as `spray flags export --runs-dir`'s."""
    from spray.runs.reader import RunReader

    newest = make_synthetic_run(project, seed=6, dataset=DATASET)
    hashes = RunReader.open(newest).content_hashes() or {}
    ids = sorted(hashes)[:3]
    FlagStore(project / "flags.sqlite").flag(
        DATASET, ids, "unlearn", "stamp", content_hashes={s: hashes[s] for s in ids}
    )
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    said = texts(at)
    assert "a correction's re-audit, which read the data as it was then" in said and newest.name in said
    assert "spray flags unset" not in said
    at.switch_page("views/flags.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "3 samples. Same output as" in texts(at)
    assert "flags are left out" not in texts(at)

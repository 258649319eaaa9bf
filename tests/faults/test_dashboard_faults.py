"""Fault cases of ``spray dashboard`` and its pages: bad folders, damaged runs, hostile strings, dead links.

Each case asserts the exit code or what the page shows, that there is no traceback, and that the message
names the file, key or value to fix. Pages run under Streamlit's AppTest on runs written by spray's own
writer; signal handling runs a real ``spray dashboard`` process on a real port.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

pytest.importorskip("streamlit")
pytest.importorskip("plotly")
from streamlit.testing.v1 import AppTest

from spray.flags import FlagStore
from spray.runs.layout import sample_order_digest
from tests.dashboard_fixtures import make_synthetic_run
from tests.dashboard_runinfo import first_key
from tests.dashboard_tables import html_table
from tests.faults.cli import assert_clean_failure, run_main, spray_env

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
DATASET = "synthetic-fashion"
SIZES = [30, 30, 30, 30, 30, 30, 200, 30, 30, 30]
PAGES = ("views/overview.py", "views/class_view.py", "views/cluster.py", "views/sample.py", "views/flags.py")


# ---------------------------------------------------------------------------------------------------------
# Helpers


@pytest.fixture(autouse=True)
def _fresh_log_handlers() -> Iterator[None]:
    """``spray.cli.main`` points the root logger at this test's captured stderr: drop it afterwards, so a
    later test's log lines do not go to a closed stream (a "Logging error" traceback in its output)."""
    yield
    logging.getLogger().handlers[:] = []


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runs folder with two runs of the same dataset; the app pointed at it and at a fresh flag DB."""
    d = tmp_path / "runs"
    make_synthetic_run(d, class_sizes=SIZES, seed=1, dataset=DATASET, planted_fraction=0.1)
    make_synthetic_run(d, class_sizes=SIZES, seed=2, dataset=DATASET, planted_fraction=0.15)
    monkeypatch.setenv("SPRAY_RUNS_DIR", str(d))
    monkeypatch.setenv("SPRAY_FLAGS_DB", str(tmp_path / "flags.sqlite"))
    for name in ("SPRAY_READ_ONLY", "SPRAY_DASHBOARD_TOKEN", "SPRAY_DATA_ROOT"):
        monkeypatch.delenv(name, raising=False)
    return d


def run_dirs(runs: Path) -> list[Path]:
    """Published runs, newest first."""
    return sorted(
        (p for p in runs.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")),
        reverse=True,
    )


def page(name: str = "views/overview.py", **query: str) -> AppTest:
    """Run one page (after the app's own first run) with these URL parameters."""
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    if name != "views/overview.py":
        at.switch_page(name).run()
    return at


def as_shown(markdown: str) -> str:
    """Markdown source → roughly the text a browser shows (escapes and code-span fences removed)."""
    return re.sub(r"\\(.)", r"\1", re.sub(r"(`+) (.*?) \1", r"\2", markdown))


def shown(at: AppTest) -> str:
    """What the page shows as text."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
    parts += [e.value for e in at.error] + [w.value for w in at.warning] + [t.value for t in at.title]
    return as_shown("\n".join(map(str, parts)))


def no_traceback(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def errors(at: AppTest) -> str:
    return as_shown("\n".join(str(e.value) for e in at.error))


# ---------------------------------------------------------------------------------------------------------
# The command: folders and options


def test_mistyped_runs_dir_is_refused_and_nothing_is_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "rnus"
    res = run_main(["dashboard", "--runs-dir", str(typo)], capsys)
    assert_clean_failure(res, 2, str(typo), "does not exist")
    assert not typo.exists()


def test_runs_dir_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "runs"
    f.write_text("x")
    assert_clean_failure(run_main(["dashboard", "--runs-dir", str(f)], capsys), 2, str(f), "is a file")


def test_flags_db_that_is_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = run_main(["dashboard", "--runs-dir", str(tmp_path), "--flags-db", str(tmp_path)], capsys)
    assert_clean_failure(res, 2, "--flags-db", "is a folder")


def test_flags_db_in_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "nope" / "flags.sqlite"
    res = run_main(["dashboard", "--runs-dir", str(tmp_path), "--flags-db", str(db)], capsys)
    assert_clean_failure(res, 2, str(db.parent), "does not exist")
    assert not db.parent.exists()


def test_data_root_that_is_not_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = run_main(["dashboard", "--runs-dir", str(tmp_path), "--data-root", str(tmp_path / "x")], capsys)
    assert_clean_failure(res, 2, "--data-root")


def test_app_on_a_missing_runs_dir_says_so_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    typo = tmp_path / "rnus"
    monkeypatch.setenv("SPRAY_RUNS_DIR", str(typo))
    monkeypatch.delenv("SPRAY_FLAGS_DB", raising=False)
    at = no_traceback(page())
    assert str(typo) in errors(at) and "does not exist" in errors(at)
    assert not typo.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serving(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _start(tmp_path: Path, port: int, **popen: Any) -> subprocess.Popen[bytes]:
    (tmp_path / "runs").mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spray.cli",
            "dashboard",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--port",
            str(port),
        ],
        env=spray_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **popen,
    )
    deadline = time.monotonic() + 90
    while not _serving(port):
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        assert time.monotonic() < deadline, "the dashboard did not start"
        time.sleep(0.3)
    return proc


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_terminating_spray_dashboard_stops_the_server(tmp_path: Path, sig: signal.Signals) -> None:
    port = _free_port()
    proc = _start(tmp_path, port)
    proc.send_signal(sig)
    code = proc.wait(timeout=30)
    out = proc.stdout.read().decode() if proc.stdout else ""
    assert code == 128 + sig, out
    assert "stopping the dashboard" in out and "Traceback" not in out
    deadline = time.monotonic() + 15
    while not _port_free(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _serving(port) and _port_free(port), "the Streamlit server still serves the port"


@pytest.mark.slow
def test_a_supervisor_signalling_the_whole_group_twice_gets_a_clean_stop(tmp_path: Path) -> None:
    """timeout(1), systemd and a terminal's Ctrl-C signal every process of the group, often repeatedly."""
    port = _free_port()
    proc = _start(tmp_path, port, start_new_session=True)
    os.killpg(proc.pid, signal.SIGTERM)
    time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    code = proc.wait(timeout=30)
    out = proc.stdout.read().decode() if proc.stdout else ""
    assert code == 128 + signal.SIGTERM and "Traceback" not in out, out
    assert not _serving(port)


@pytest.mark.slow
def test_killing_spray_dashboard_with_sigkill_still_stops_the_server(tmp_path: Path) -> None:
    port = _free_port()
    proc = _start(tmp_path, port)
    proc.kill()  # no handler runs: the child's parent-death signal must stop it
    proc.wait(timeout=10)
    deadline = time.monotonic() + 20
    while _serving(port) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not _serving(port), "the Streamlit server outlived a SIGKILLed spray dashboard"


# ---------------------------------------------------------------------------------------------------------
# Damaged runs


def test_truncated_summary_lists_that_run_as_unreadable_and_the_others_work(runs: Path) -> None:
    newest, older = run_dirs(runs)
    text = (newest / "summary.json").read_text()
    (newest / "summary.json").write_text(text[: len(text) // 2])
    at = no_traceback(page())
    assert at.title[0].value == "Suspicious clusters"
    assert at.query_params["run"] == older.name  # the readable run is shown
    sidebar = as_shown("\n".join(str(c.value) for c in at.sidebar.caption))
    assert newest.name in sidebar and "summary.json" in sidebar and "damaged or truncated JSON" in sidebar
    assert str(runs) not in errors(at)
    # Addressed directly, the damaged run says what is wrong with it, without server paths.
    at = no_traceback(page(run=newest.name))
    assert "summary.json" in errors(at) and "cannot be read" in errors(at)
    assert str(runs) not in errors(at)


def test_summary_that_is_not_a_spray_summary(runs: Path) -> None:
    newest, older = run_dirs(runs)
    (newest / "summary.json").write_text("[1, 2, 3]")
    at = no_traceback(page())
    assert at.query_params["run"] == older.name
    at = no_traceback(page(run=newest.name))
    assert "summary.json" in errors(at) and "not a JSON object" in errors(at)


def test_missing_class_arrays_break_only_the_views_that_need_them(runs: Path) -> None:
    run = run_dirs(runs)[0]
    (run / "classes" / "6.npz").unlink()
    at = no_traceback(page(run=run.name))  # the overview still lists every finding
    rows = html_table(at, "findings")
    assert rows and "classes/6.npz" in "\n".join(str(w.value) for w in at.warning)
    assert all(r["mean heatmap"] == "" for r in rows if r["class"].startswith("6 ·"))  # listed, no picture
    at = no_traceback(page("views/class_view.py", run=run.name, cls="6"))
    assert "classes/6.npz" in errors(at) and "missing" in errors(at)
    at = no_traceback(page("views/class_view.py", run=run.name, cls="1"))
    assert not at.error  # other classes work


def test_truncated_class_arrays(runs: Path) -> None:
    run = run_dirs(runs)[0]
    f = run / "classes" / "6.npz"
    f.write_bytes(f.read_bytes()[:200])
    at = no_traceback(page("views/class_view.py", run=run.name, cls="6"))
    assert "classes/6.npz" in errors(at)
    # the fix named is one that works: a plain audit refuses to reuse the damaged run (an outside check)
    assert "spray audit --force" in errors(at)


def test_truncated_heatmaps_are_named_on_the_pages_that_draw_them(runs: Path) -> None:
    run = run_dirs(runs)[0]
    f = run / "heatmaps.npy"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    key = first_key(run)
    at = no_traceback(page("views/cluster.py", run=run.name, cluster=key))
    assert "heatmaps.npy" in errors(at) and str(runs) not in errors(at)
    at = no_traceback(page(run=run.name))  # stored mean heatmaps: the overview needs no heatmaps.npy
    assert not at.error


def test_missing_samples_table(runs: Path) -> None:
    run = run_dirs(runs)[0]
    (run / "samples.parquet").unlink()
    for name in ("views/class_view.py", "views/cluster.py"):
        at = no_traceback(page(name, run=run.name))
        assert "samples.parquet" in errors(at)


def test_missing_thumbnails_say_so_instead_of_showing_heatmaps_silently(runs: Path) -> None:
    run = run_dirs(runs)[0]
    (run / "thumbs.npy").unlink()
    key = first_key(run)
    at = no_traceback(page("views/cluster.py", run=run.name, cluster=key, mode="input"))
    assert "no thumbs.npy" in "\n".join(str(i.value) for i in at.info)
    at = no_traceback(page("views/sample.py", run=run.name, sample="0"))
    assert "no thumbs.npy" in shown(at)


# ---------------------------------------------------------------------------------------------------------
# Flag database


def test_garbage_flag_database_is_named_on_the_page(runs: Path, tmp_path: Path) -> None:
    db = tmp_path / "flags.sqlite"
    db.write_bytes(b"garbage" * 100)
    before = db.read_bytes()
    for name in ("views/overview.py", "views/flags.py"):
        at = no_traceback(page(name))
        assert str(db) in errors(at) and "damaged or not a SQLite file" in errors(at)
    assert db.read_bytes() == before


def test_flag_database_that_is_a_folder(runs: Path, tmp_path: Path) -> None:
    (tmp_path / "flags.sqlite").mkdir()
    at = no_traceback(page())
    assert "is a folder" in errors(at)


def test_browsing_creates_no_flag_database(runs: Path, tmp_path: Path) -> None:
    for name in PAGES:
        no_traceback(page(name))
    assert not (tmp_path / "flags.sqlite").exists()


def test_read_only_dashboard_has_no_flag_form_and_writes_nothing(
    runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    FlagStore(tmp_path / "flags.sqlite").flag(DATASET, ["1"], "unlearn")
    before = (tmp_path / "flags.sqlite").read_bytes()
    monkeypatch.setenv("SPRAY_READ_ONLY", "1")
    key = first_key(run_dirs(runs)[0])
    at = no_traceback(page("views/cluster.py", cluster=key))
    assert not [
        r for r in at.radio if str(r.key).startswith("flag_status")
    ] and "Read-only dashboard" in shown(at)
    at = no_traceback(page("views/flags.py"))
    assert {m.label: m.value for m in at.metric}["unlearn"] == "1"
    assert (tmp_path / "flags.sqlite").read_bytes() == before


def test_dashboard_csv_download_is_neutralised(
    runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    evil = '=HYPERLINK("http://evil.example","x")'
    FlagStore(tmp_path / "flags.sqlite").flag(DATASET, ["1"], "unlearn", evil)
    served: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def record(self, data, mimetype, kind, filename=None):  # type: ignore[no-untyped-def]
        if filename:
            served[filename] = data
        return original(self, data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)
    no_traceback(page("views/flags.py"))
    csv = next(v for k, v in served.items() if k.endswith(".csv"))
    js = next(v for k, v in served.items() if k.endswith(".json"))
    assert b"'=HYPERLINK" in csv and b',"=HYPERLINK' not in csv and b",=HYPERLINK" not in csv
    assert json.loads(js)[0]["note"] == evil  # JSON keeps the exact value


# ---------------------------------------------------------------------------------------------------------
# Links that do not resolve


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"cluster": "6/k99/c0"}, "k=99"),
        ({"cluster": "6/k2/c77"}, "c77"),
        ({"cluster": "99/k2/c0"}, "class 99"),
        ({"cluster": "rubbish"}, "not a cluster key"),
    ],
)
def test_link_to_a_cluster_that_does_not_exist(runs: Path, query: dict[str, str], named: str) -> None:
    at = no_traceback(page("views/cluster.py", **query))
    assert "Not found" in errors(at) and named in errors(at)
    assert not at.get("imgs") and not any("Members" in str(s.value) for s in at.subheader)


@pytest.mark.parametrize(("query", "named"), [({"cls": "99"}, "class 99"), ({"cls": "6", "k": "99"}, "k=99")])
def test_link_to_a_class_or_k_that_does_not_exist(runs: Path, query: dict[str, str], named: str) -> None:
    at = no_traceback(page("views/class_view.py", **query))
    assert "Not found" in errors(at) and named in errors(at)


def test_link_to_a_run_that_does_not_exist(runs: Path) -> None:
    at = no_traceback(page(run="20990101T000000000000Z-deadbeef0000"))
    assert "Not found" in errors(at) and "deadbeef0000" in errors(at)


def test_link_to_a_sample_that_does_not_exist(runs: Path) -> None:
    at = no_traceback(page("views/sample.py", sample="no-such-id"))
    assert "Not found" in errors(at) and "no-such-id" in errors(at)


def test_link_to_a_selection_that_cannot_be_read(runs: Path) -> None:
    at = no_traceback(page("views/cluster.py", view="selection", sel="i!!garbage"))
    assert "Not found" in errors(at) and "selection" in errors(at)
    at = no_traceback(page("views/cluster.py", view="selection"))
    assert "Not found" in errors(at)


def test_link_to_a_dataset_without_flags(runs: Path, tmp_path: Path) -> None:
    FlagStore(tmp_path / "flags.sqlite").flag(DATASET, ["1"], "ok")
    at = no_traceback(page("views/flags.py", dataset="other-data"))
    assert "Not found" in errors(at) and "other-data" in errors(at)


# ---------------------------------------------------------------------------------------------------------
# Hostile strings in run data


HOSTILE = [
    '<img src="http://127.0.0.1:9/x.png" onerror="alert(1)">',
    "![t](http://127.0.0.1:9/track.png)",
    "[click](javascript:alert(1))",
    ":red[red] :material/home: $x^2$ **bold** `code`",
]


def _hostile_run(tmp_path: Path) -> Path:
    d = tmp_path / "runs"
    run = make_synthetic_run(
        d, class_sizes=[30] * 4, planted_class=2, seed=3, dataset="<b>data</b> ![d](http://127.0.0.1:9/d.png)"
    )
    s = json.loads((run / "summary.json").read_text())
    names = {i: HOSTILE[i] for i in range(4)}
    for c in s["classes"]:
        c["class_name"] = names[int(c["class_index"])]
    for f in s["findings"]:
        f["class_name"] = names[int(f["class_index"])]
        f["evidence"] = [*f["evidence"], "![e](http://127.0.0.1:9/evidence.png) <script>alert(2)</script>"]
    s["class_names"] = [names[i] for i in range(4)]
    t = pd.read_parquet(run / "samples.parquet")
    t["label_name"] = [names[int(i)] for i in t["label"]]
    t["prediction_name"] = [names[int(i)] for i in t["prediction"]]
    t.loc[0, "sample_id"] = "![s](http://127.0.0.1:9/sample.png)"
    t.to_parquet(run / "samples.parquet", index=False)
    # a run written with that id records it in its rows' order, which the reader checks
    s["extra"]["sample_order"] = sample_order_digest([str(i) for i in t["sample_id"]])
    (run / "summary.json").write_text(json.dumps(s))
    return d


# An unescaped Markdown image, link or HTML tag in the Markdown source a page sends.
_ACTIVE = re.compile(
    r"(?<!\\)!(?<!\\)\[|(?<!\\)\[[^\]]*(?<!\\)\]\((?!\\)|(?<!\\)<(?:img|script|b)\b|(?<!\\):red\["
)


def _markdown_sources(at: AppTest) -> list[str]:
    out = (
        [str(m.value) for m in at.markdown]
        + [str(c.value) for c in at.caption]
        + [str(t.value) for t in at.title]
    )
    out += (
        [str(e.value) for e in at.error]
        + [str(w.value) for w in at.warning]
        + [str(s.value) for s in at.subheader]
    )
    out += [str(p.proto.label) for p in at.get("page_link")]
    return out


@pytest.mark.parametrize("name", PAGES)
def test_hostile_class_dataset_and_sample_names_are_shown_as_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    d = _hostile_run(tmp_path)
    monkeypatch.setenv("SPRAY_RUNS_DIR", str(d))
    monkeypatch.setenv("SPRAY_FLAGS_DB", str(tmp_path / "flags.sqlite"))
    FlagStore(tmp_path / "flags.sqlite").flag(
        "<b>data</b> ![d](http://127.0.0.1:9/d.png)", ["1"], "unlearn", "![n](http://127.0.0.1:9/note.png)"
    )
    run = run_dirs(d)[0]
    key = first_key(run)
    at = no_traceback(page(name, cluster=key, cls="2", sample="![s](http://127.0.0.1:9/sample.png)"))
    for src in _markdown_sources(at):
        # Code spans show their content verbatim (data strings are fenced by safetext.code).
        assert not _ACTIVE.search(re.sub(r"(`+) .*? \1", "", src)), src
    html = [str(h.proto.body) for h in at.get("html")]
    for body in html:
        # The only markup is the dashboard's own: pictures as data URIs, the tables' and grids' static
        # click script, links to the app's own views; every data string is escaped text.
        for tag in re.findall(r"<img\b[^>]*>", body):
            assert re.fullmatch(
                r'<img (data-\w+="\w+" )?src="data:image/(png|svg\+xml);base64,[A-Za-z0-9+/=]+"[^<>]*>', tag
            ), tag
            assert "onerror" not in tag and "127.0.0.1" not in tag, tag
        scripts = re.findall(r"<script>(.*?)</script>", body, re.S)
        assert all("127.0.0.1" not in sc and "alert" not in sc for sc in scripts), scripts
        assert body.count("<script") == len(scripts), body
        assert all(h.startswith(("cluster?", "sample?")) for h in re.findall(r'href="([^"]*)"', body)), body
        assert "javascript:" not in "".join(re.findall(r'(?:href|src)="([^"]*)"', body)), body

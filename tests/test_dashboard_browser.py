"""The dashboard in a real browser (headless Debian chromium through Playwright).

- ``test_an_auditors_task_from_overview_to_export``: a person's task on a fresh run (the synthetic fixture,
  and a fresh ``spray demo`` run: planted stamp, trained CNN, real audit), served exactly as
  ``spray dashboard`` serves it: open the overview, open the top finding by clicking its row, see its
  members and full evidence, select members with the lasso, flag them with a reason and an author (with
  the confirmation), watch the counts refresh when another session flags, search a sample id, reload and
  see the same view, and export the flags;
- ``test_hostile_strings_never_become_markup``: class, dataset, sample names and evidence holding HTML and
  Markdown images are shown as text; the browser fetches none of their URLs.

Needs Debian's chromium (/usr/bin/chromium) and the playwright package (never `playwright install`);
skips with the reason when either is missing. Screenshots go to test-artifacts/ (gitignored).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spray.flags import FlagStore
from spray.runs.reader import RunReader
from tests.dashboard_runinfo import first_key, top_finding

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
DATASET = "synthetic-fashion"
CONFIRM_ABOVE = 20  # dashboard/flagform.py: flagging more samples than this asks for a confirmation
LASSO_GROW = 1.15  # the demo's lasso: the members' convex hull grown by 15 % about its centroid
EDGE = 0.03  # the lasso's edge in the oracle: points within 3 % of it may fall either way (pixel rounding)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"streamlit did not become healthy within {timeout} s")


def _needs_browser() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium fonts-liberation)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    pytest.importorskip("streamlit")


def _serve(runs: Path, db: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start the dashboard exactly as ``spray dashboard`` does (its command line and environment)."""
    from spray import serve

    port = _free_port()
    argv, env = serve.build_command(runs, options=serve.ServeOptions(runs_dir=runs, port=port, flags_db=db))
    env = {**env, "PYTHONPATH": str(ROOT), "SPRAY_AUTHOR": "server-user"}
    # Started directly (no shell) so that we hold its own PID and can always stop it.
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
    except BaseException:
        proc.kill()
        raise
    return proc, url


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@dataclass
class Walk:
    """A served run to walk: its URL, run folder, flag database, flag dataset key, and the lasso to draw
    (data coordinates of the class map, a convex polygon around the top finding's members)."""

    url: str
    run: Path
    db: Path
    dataset: str
    lasso: list[tuple[float, float]]


def _hull_around(points: np.ndarray, grow: float) -> list[tuple[float, float]]:
    """The convex hull of ``points`` ``(n, 2)``, grown by ``grow`` about its centroid."""
    from scipy.spatial import ConvexHull

    hull = points[ConvexHull(points).vertices]
    centre = hull.mean(axis=0)
    return [(float(x), float(y)) for x, y in centre + (hull - centre) * grow]


def _inside(points: np.ndarray, polygon: list[tuple[float, float]], scale: float) -> np.ndarray:
    """Oracle: which ``points`` lie in the convex ``polygon`` scaled by ``scale`` about its centroid."""
    from scipy.spatial import Delaunay

    poly = np.asarray(polygon)
    centre = poly.mean(axis=0)
    return np.asarray(Delaunay(centre + (poly - centre) * scale).find_simplex(points) >= 0)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    _needs_browser()
    from tests.dashboard_fixtures import make_synthetic_run

    d = tmp_path_factory.mktemp("browser-runs")
    run = make_synthetic_run(d, class_sizes=[60] * 6 + [400] + [60] * 3, seed=5, dataset=DATASET)
    db = d / "flags.sqlite"
    proc, url = _serve(d, db)
    try:
        # The fixture's planted blob sits at (8, 8): a rectangle around it holds exactly its members.
        yield Walk(url, run, db, DATASET, [(6.0, 6.0), (10.5, 6.0), (10.5, 10.5), (6.0, 10.5)])
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    """A fresh ``spray demo`` run (200 training images per class, 3 epochs), served by ``spray dashboard``."""
    _needs_browser()
    from spray.runs.publish import list_runs

    d = tmp_path_factory.mktemp("browser-demo")
    runs = d / "runs"
    argv = [sys.executable, "-m", "spray.cli", "demo", "--work-dir", str(d / "work"), "--runs-dir", str(runs)]
    argv += ["--per-class", "200", "--epochs", "3", "--strict", "-q"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    run = list_runs(runs)[0]
    reader = RunReader.open(run)
    top = reader.findings()[0]
    data = reader.class_data(top.class_index)
    members = np.isin(np.asarray(data.sample_ids), top.member_ids)
    db = runs / "flags.sqlite"
    proc, url = _serve(runs, db)
    try:
        dataset = str(reader.summary.dataset or reader.summary.name)
        yield Walk(url, run, db, dataset, _hull_around(data.embedding[members], LASSO_GROW))
    finally:
        _stop(proc)


def _browser(p: Any) -> Any:
    return p.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=["--disable-dev-shm-usage", "--disable-gpu", "--no-sandbox", "--disable-background-networking"],
    )


def _lasso(page: Any, chart: int, polygon: list[tuple[float, float]]) -> None:
    """Draw a lasso (the map's default drag mode) along ``polygon`` (data coordinates), closing it."""
    drag = page.locator(".stPlotlyChart .nsewdrag").nth(chart)
    drag.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    (rx0, rx1), (ry0, ry1) = page.evaluate(
        f"() => {{ const g = document.querySelectorAll('.stPlotlyChart .js-plotly-plot')[{chart}];"
        " const L = g._fullLayout; return [L.xaxis.range, L.yaxis.range]; }"
    )
    box = drag.bounding_box()
    assert box is not None

    def px(x: float, y: float) -> tuple[float, float]:
        return (
            box["x"] + (x - rx0) / (rx1 - rx0) * box["width"],
            box["y"] + (ry1 - y) / (ry1 - ry0) * box["height"],
        )

    x0, y0 = polygon[0]
    page.mouse.move(*px(x0, y0))
    page.mouse.down()
    for c in [*polygon[1:], (x0, y0)]:
        page.mouse.move(*px(*c), steps=8)
    page.mouse.up()


@pytest.mark.parametrize("served", ["server", "demo_server"])
def test_an_auditors_task_from_overview_to_export(served: str, request: pytest.FixtureRequest) -> None:
    """The walk on the synthetic fixture (a rectangle holds exactly the planted members) and on a fresh
    ``spray demo`` run (a lasso along the grown hull of the top finding's members)."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)  # a loaded 2-core machine can need long for the first chart
    walk: Walk = request.getfixturevalue(served)
    url, run, db = walk.url, walk.run, walk.db
    top = top_finding(run)
    reader = RunReader.open(run)
    cls = reader.class_data(top.class_index)
    others = [i for i in reader.sample_ids() if i not in set(cls.sample_ids)][:3]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            page.set_default_timeout(60_000)

            # 1. The overview; the top finding opens with a click on its row (any cell, not a checkbox).
            page.goto(url + "/")
            expect(page.get_by_text("Suspicious clusters")).to_be_visible()
            table = page.locator("table[data-table=findings]")
            expect(table).to_be_visible()
            session_url = page.url
            page.evaluate("() => { window.__same_document = true; }")
            table.locator("tbody tr").first.locator("td").nth(3).click()  # row 1, the "class" column
            page.wait_for_url("**/cluster?**")
            assert f"cluster={top.key.replace('/', '%2F')}" in page.url or f"cluster={top.key}" in page.url
            # In the app (the session and its access kept), not a new document.
            assert page.evaluate("() => window.__same_document === true"), session_url

            # 2. Its members and its full evidence.
            expect(page.get_by_role("heading", name=f"Members ({top.size})")).to_be_visible()
            for line in top.evidence:
                expect(page.get_by_text(line, exact=False).first).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / f"walk-{served}-1-cluster.png"), full_page=True)
            # A picture of the members' grid opens that sample's view, in the app; back returns.
            picture = page.locator("[data-grid=samples] figure").first
            sid0 = picture.get_attribute("data-key")
            assert sid0 in top.member_ids
            picture.locator("img").click()
            page.wait_for_url("**/sample?**")
            expect(page.get_by_text("Its clusters")).to_be_visible()
            assert page.evaluate("() => window.__same_document === true")
            page.go_back()
            expect(page.get_by_role("heading", name=f"Members ({top.size})")).to_be_visible()

            # 3. Its class; select the members with the lasso (the tool is the default drag mode).
            page.get_by_role("link", name="Class").first.click()
            page.wait_for_url(f"**cls={top.class_index}**")
            expect(page.get_by_text("Eigenvalues of the normalised kNN affinity")).to_be_visible()
            # First paint: the spectrum and a picture of every point, no plotly; the lasso is one switch away.
            expect(page.locator("img[data-chart=spectrum]")).to_be_visible()
            expect(page.locator("img[data-map=picture]")).to_be_visible()
            expect(page.locator(".stPlotlyChart")).to_have_count(0)
            page.get_by_text("Select on the map (lasso").click()
            page.wait_for_url("**draw=1**")
            expect(page.locator(".stPlotlyChart")).to_have_count(1)
            expect(
                page.locator(".stPlotlyChart .modebar-btn[data-title='Lasso Select']").first
            ).to_be_visible()
            _lasso(page, 0, walk.lasso)
            heading = page.get_by_role("heading", name="Selection:")
            expect(heading).to_be_visible()
            n_sel = int(heading.inner_text().split(":")[1].split()[0].replace(",", ""))
            assert n_sel >= top.size, (n_sel, top.size)
            page.wait_for_url("**sel=**")
            selection_url = page.url

            # 4. Flag them with a reason and an author; many samples ask for a confirmation.
            author = page.get_by_role("textbox", name="Flag as")
            author.fill("auditor-ana")
            author.press("Enter")
            page.wait_for_timeout(800)
            form = page.locator("[data-testid=stForm]").filter(has_text="Flag").first
            form.get_by_text("unlearn", exact=True).click()
            form.locator("textarea").fill("corner stamp (browser walk)")
            form.get_by_role("button", name="Apply").click()
            if n_sel > CONFIRM_ABOVE:
                page.get_by_role("button", name=f"Yes, unlearn {n_sel:,} samples").click()
            expect(page.get_by_text("Saved — unlearn")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / f"walk-{served}-2-flagged.png"), full_page=True)

            # 5. Another session flags meanwhile: the open page's counts follow within seconds.
            FlagStore(db).flag(walk.dataset, others, "investigate", author="bo")
            expect(page.get_by_text("investigate 3").first).to_be_visible(timeout=30_000)

            # 6. Search a sample id from the sidebar.
            sid = top.member_ids[0]
            page.get_by_role("textbox", name="Find a sample id").fill(sid)
            page.get_by_role("button", name="Find").click()
            page.wait_for_url(f"**sample={sid}**")
            expect(page.get_by_text("Its clusters")).to_be_visible()
            expect(page.get_by_text("unlearn").first).to_be_visible()

            # 7. Reload: the same view (and the same author), here and on the class page with its selection.
            page.reload()
            expect(page.get_by_text("Its clusters")).to_be_visible()
            assert f"sample={sid}" in page.url
            expect(page.get_by_role("textbox", name="Flag as")).to_have_value("auditor-ana")
            page.goto(selection_url)
            expect(page.get_by_role("heading", name=f"Selection: {n_sel:,} samples")).to_be_visible()
            page.reload()
            expect(page.get_by_role("heading", name=f"Selection: {n_sel:,} samples")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / f"walk-{served}-3-reloaded.png"), full_page=True)

            # 8. Export the flags for unlearning.
            page.get_by_role("link", name="Flags").first.click()
            expect(page.get_by_role("heading", name="Export for unlearning")).to_be_visible()
            with page.expect_download() as dl:
                page.get_by_role("button", name="Download CSV").click()
            exported = Path(dl.value.path()).read_text()
        finally:
            browser.close()

    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT sample_id, status, note, author FROM current WHERE dataset = ? AND status = 'unlearn'",
            (walk.dataset,),
        ).fetchall()
    finally:
        con.close()
    flagged = {r[0] for r in rows}
    # Every member, and exactly the class's points inside the drawn lasso (up to a pixel at its edge).
    ids = np.asarray(cls.sample_ids)
    assert set(top.member_ids) <= flagged and len(flagged) == n_sel
    assert set(ids[_inside(cls.embedding, walk.lasso, 1 - EDGE)]) <= flagged
    assert flagged <= set(ids[_inside(cls.embedding, walk.lasso, 1 + EDGE)])
    assert {(r[1], r[2], r[3]) for r in rows} == {("unlearn", "corner stamp (browser walk)", "auditor-ana")}
    lines = exported.strip().splitlines()
    assert lines[0].startswith("dataset,sample_id,status") and len(lines) == 1 + n_sel
    assert all("auditor-ana" in line for line in lines[1:])


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    _needs_browser()
    from tests.faults.test_dashboard_faults import _hostile_run

    d = _hostile_run(tmp_path_factory.mktemp("hostile"))
    db = d / "flags.sqlite"
    FlagStore(db).flag(
        "<b>data</b> ![d](http://127.0.0.1:9/d.png)", ["1"], "unlearn", "![n](http://127.0.0.1:9/n.png)"
    )
    proc, url = _serve(d, db)
    try:
        yield url, d
    finally:
        _stop(proc)


def test_hostile_strings_never_become_markup(hostile_server: tuple[str, Path]) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, d = hostile_server
    run = sorted(p for p in d.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))[
        -1
    ]
    key = first_key(run)
    # The cluster page with its table of the page's samples (behind a switch since the grid is static HTML).
    pages = [
        "/",
        "/class?cls=0",
        "/class?cls=1",
        f"/cluster?cluster={key}&table=1",
        "/sample?sample=1",
        "/flags",
    ]
    fetched: list[str] = []
    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.on("request", lambda r: fetched.append(r.url))
            dialogs: list[str] = []
            page.on("dialog", lambda dlg: (dialogs.append(dlg.message), dlg.dismiss()))
            for path in pages:
                page.goto(url + path)
                page.locator("[data-testid=stMain] h1").first.wait_for()
                if path.startswith(("/cluster", "/sample")):
                    # Names are on the page as their literal characters (a data grid's cells are hidden
                    # text behind its canvas); waited for, so a loaded machine's slower render is no miss.
                    page.get_by_text("http://127.0.0.1:9/", exact=False).first.wait_for(state="attached")
                page.wait_for_timeout(2500)
                main = page.locator("[data-testid=stApp]")
                assert main.locator("img[src*='127.0.0.1:9']").count() == 0, path
                assert main.locator("[onerror]").count() == 0, path
                assert main.locator("a[href^='javascript']").count() == 0, path
                assert main.locator("a[href*='127.0.0.1:9']").count() == 0, path  # no autolinks either
                assert main.locator("b:text-is('data')").count() == 0, path  # <b>data</b> not bold
                page.screenshot(path=str(ARTIFACTS / f"hostile-{len(fetched)}.png"), full_page=True)
            # A hostile author name is stored in the browser and comes back exactly, as text.
            evil = '</script><img src="http://127.0.0.1:9/author.png" onerror="alert(3)">\'"'
            author = page.get_by_role("textbox", name="Flag as")
            author.fill(evil)
            author.press("Enter")
            page.wait_for_timeout(2000)
            page.reload()
            expect(page.get_by_role("textbox", name="Flag as")).to_have_value(evil)
        finally:
            browser.close()
    assert not [u for u in fetched if "127.0.0.1:9/" in u], fetched
    assert not dialogs


def test_spray_dashboard_command_serves_the_app(tmp_path: Path) -> None:
    """``spray dashboard`` itself (not only its command line) serves the pages, and stops cleanly."""
    _needs_browser()
    from tests.dashboard_fixtures import make_synthetic_run

    runs = tmp_path / "runs"
    make_synthetic_run(runs, class_sizes=[30] * 4, planted_class=1, seed=9)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spray.cli",
            "dashboard",
            "--runs-dir",
            str(runs),
            "--port",
            str(port),
            "--read-only",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", proc)
        from playwright.sync_api import expect, sync_playwright

        with sync_playwright() as p:
            browser = _browser(p)
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{port}/")
                expect(page.get_by_text("Suspicious clusters")).to_be_visible(timeout=60_000)
                expect(page.get_by_text("Read-only dashboard").first).to_be_visible(timeout=30_000)
            finally:
                browser.close()
    finally:
        _stop(proc)
    assert not (runs / "flags.sqlite").exists()  # read-only: nothing created

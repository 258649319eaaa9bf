"""The dashboard in a real browser: overview → top cluster's class → box-select → flag → rows in SQLite.

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
from pathlib import Path

import pytest

from spray.runs.storage import RunData

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "dashboard" / "app.py"
ARTIFACTS = ROOT / "test-artifacts"
DATASET = "synthetic-fashion"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 45.0) -> None:
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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium fonts-liberation)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    pytest.importorskip("streamlit")
    from tests.dashboard_fixtures import make_synthetic_run

    d = tmp_path_factory.mktemp("browser-runs")
    run = make_synthetic_run(d, class_sizes=[60] * 6 + [400] + [60] * 3, seed=5, dataset=DATASET)
    db = d / "flags.sqlite"
    port = _free_port()
    # Started directly (no shell) so that we hold streamlit's own PID and can always stop it.
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "streamlit", "run", str(APP),
            "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
            "--", "--runs-dir", str(d), "--flags-db", str(db),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "SPRAY_RUNS_DIR": str(d), "SPRAY_FLAGS_DB": str(db)},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url, run, db
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _browser(p):
    return p.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=["--disable-dev-shm-usage", "--disable-gpu", "--no-sandbox", "--disable-background-networking"],
    )


def test_overview_to_cluster_box_select_and_flag(server: tuple[str, Path, Path]) -> None:
    from playwright.sync_api import expect, sync_playwright

    # expect() waits 5 s by default; a loaded 2-core CI machine can need longer for the first chart.
    expect.set_options(timeout=30_000)

    url, run, db = server
    top = RunData.open(run).summary["findings"][0]  # summary.json no longer lists members (layout 2)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(url + "/")
            expect(page.get_by_text("Suspicious clusters")).to_be_visible()
            expect(page.locator("[data-testid=stDataFrame]").first).to_be_visible()
            assert f"run={run.name}" in page.url
            page.screenshot(path=str(ARTIFACTS / "browser-overview.png"))

            # The top cluster's class (the Class page opens on the top finding's class by default).
            page.get_by_role("link", name="Class").first.click()
            expect(page.get_by_text("Eigenvalues of the normalised kNN affinity")).to_be_visible()
            page.wait_for_url(f"**cls={top['class_index']}**")
            charts = page.locator(".stPlotlyChart")
            expect(charts).to_have_count(2)
            drag = page.locator(".stPlotlyChart .nsewdrag").nth(1)
            expect(drag).to_be_visible()
            drag.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            # Box around the planted blob (the fixture puts it at (8, 8), far from the other groups).
            ranges = page.evaluate(
                "() => { const g = document.querySelectorAll('.stPlotlyChart .js-plotly-plot')[1];"
                " const L = g._fullLayout; return [L.xaxis.range, L.yaxis.range]; }"
            )
            (x0, x1), (y0, y1) = ranges
            box = drag.bounding_box()
            assert box is not None

            def px(x: float, y: float) -> tuple[float, float]:
                return (
                    box["x"] + (x - x0) / (x1 - x0) * box["width"],
                    box["y"] + (y1 - y) / (y1 - y0) * box["height"],
                )

            # Start at the box's lower-left corner (its upper right is under the mode bar) and end at the
            # plot's top-right corner: plotly clamps the box to the axes.
            a = px(5.5, 5.5)
            b = px(x1, y1)
            page.mouse.move(*a)
            page.mouse.down()
            page.mouse.move(*b, steps=15)
            page.mouse.up()
            heading = page.get_by_role("heading", name="Selection:")
            expect(heading).to_be_visible()
            n_sel = int(heading.inner_text().split(":")[1].split()[0].replace(",", ""))
            assert n_sel == top["size"], (n_sel, top["size"])

            # Flag the selection for unlearning.
            form = page.locator("[data-testid=stForm]").first
            form.get_by_text("unlearn", exact=True).click()
            form.locator("textarea").fill("corner stamp (browser test)")
            form.get_by_role("button", name="Apply").click()
            expect(page.get_by_text("Saved — unlearn")).to_be_visible()
            expect(page.locator("[data-testid=stImage]").first).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "browser-class-selection.png"), full_page=True)

            # The cluster page of the top finding, addressed by URL.
            page.goto(f"{url}/cluster?run={run.name}&cluster={top['key']}")
            expect(page.get_by_role("heading", name=f"Members ({top['size']})")).to_be_visible()
            # The mean heatmap plus one image per member (all on page 1).
            expect(page.locator("[data-testid=stMain] img").nth(top["size"])).to_be_attached()
            page.screenshot(path=str(ARTIFACTS / "browser-cluster.png"), full_page=True)
        finally:
            browser.close()

    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT sample_id, status, note FROM current WHERE dataset = ?", (DATASET,)
        ).fetchall()
    finally:
        con.close()
    assert len(rows) == top["size"]
    assert {r[1] for r in rows} == {"unlearn"} and {r[2] for r in rows} == {"corner stamp (browser test)"}
    assert {r[0] for r in rows} == set(top["member_ids"])

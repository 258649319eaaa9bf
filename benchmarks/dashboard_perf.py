"""Dashboard timings on a synthetic 100k-sample run written by spray's own run writer.

    .venv/bin/python benchmarks/dashboard_perf.py                 # AppTest (server side) + browser
    .venv/bin/python benchmarks/dashboard_perf.py --repeat 5      # 5 fresh servers + browsers: medians
    .venv/bin/python benchmarks/dashboard_perf.py --no-browser
    .venv/bin/python benchmarks/dashboard_perf.py --screenshot docs/screenshot.png --runs-dir spray-demo/runs

The run has 110,000 samples: class 0 with 100,000 (the class page's worst case) and class 1 with 10,000.
Timed, each first (cold caches) and second (warm) time:

- overview: the first paint of the ranked clusters;
- class page: spectrum + the 100k-point map (apps before 2026-12-03 session 4: plotly, a picture of every
  point plus the drawn sample of points; since: the static spectrum and picture, and then, as
  ``class_draw``, the interactive map from the click on "Select on the map" until it is drawn);
- cluster page: one page of 100 thumbnails (overlays rendered with numpy; one st.image call, since 2026-12-03
  session 5 one static HTML grid of data URIs, the page's table behind a switch).

Every browser repetition starts a fresh server (cold Streamlit caches) and a fresh browser (cold HTTP cache);
the load average is printed before and after each repetition.

AppTest times the Python script run (what the server does per rerun). The browser times run from
navigation until the page's last element is there (scatter: every one of the 100k points through plotly's
calc and a frame painted after it / 100 images decoded) *and* the main thread has then been free of long
tasks for 250 ms, so work the page does after its last element appeared (Streamlit re-rendering a chart
once after mounting it) counts; the quiet period itself does not.

    .venv/bin/python benchmarks/dashboard_perf.py --app /tmp/old/dashboard/app.py   # another checkout's app
    .venv/bin/python benchmarks/dashboard_perf.py --no-apptest --repeat 5 --ab /tmp/old/dashboard/app.py
        # interleaved A/B: this app ("app") and the other ("base") alternate, fresh server + browser each

Each browser figure comes with ``cpu_*``: CPU seconds the server and browser processes used for that load
(less sensitive to other jobs than the wall time, not a substitute for it), and ``server_start_s``: from
starting the server until it answers (includes the app's warm-up, dashboard/warmup.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
APP = ROOT / "dashboard" / "app.py"
CHROMIUM = "/usr/bin/chromium"
log = logging.getLogger("dashboard_perf")


def build_run(runs: Path) -> Path:
    from tests.dashboard_fixtures import make_synthetic_run

    t = time.perf_counter()
    p = make_synthetic_run(
        runs, class_sizes=[100_000, 10_000], planted_class=0, planted_fraction=0.03, seed=7
    )
    log.info("wrote a %s-sample run in %.1f s", "110,000", time.perf_counter() - t)
    return p


def time_apptest(runs: Path, db: Path, app: Path = APP) -> dict[str, float]:
    from streamlit.testing.v1 import AppTest

    os.environ["SPRAY_RUNS_DIR"] = str(runs)
    os.environ["SPRAY_FLAGS_DB"] = str(db)
    out: dict[str, float] = {}
    if (app.parent / "warmup.py").is_file():
        # What `spray dashboard` does before the server listens (see spray.serve.LAUNCHER).
        sys.path.insert(0, str(app.parent))
        t = time.perf_counter()
        __import__("warmup").warm(str(runs))
        out["warmup_s"] = time.perf_counter() - t
    at = AppTest.from_file(str(app), default_timeout=120)
    for label in ("cold", "warm"):
        t = time.perf_counter()
        at.run()
        out[f"overview_{label}_s"] = time.perf_counter() - t
        assert not at.exception, at.exception
    at.query_params["cls"] = "0"
    for label in ("cold", "warm"):
        t = time.perf_counter()
        at.switch_page("views/class_view.py").run()
        out[f"class_100k_{label}_s"] = time.perf_counter() - t
        assert not at.exception, at.exception
    from spray.runs.publish import list_runs
    from spray.runs.reader import read_summary

    big = next(f for f in read_summary(list_runs(runs)[0]).findings if f.size > 100)
    at.query_params["cluster"] = big.key
    for label in ("cold", "warm"):
        t = time.perf_counter()
        at.switch_page("views/cluster.py").run()
        out[f"grid_100_{label}_s"] = time.perf_counter() - t
        assert not at.exception, at.exception
    return out


def _serve(runs: Path, db: Path, app: Path = APP) -> tuple[subprocess.Popen[bytes], str]:
    """Start the dashboard the way ``spray dashboard`` does (same command line, preloading launcher)."""
    from spray import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv, env = serve.build_command(runs, port=port, flags_db=db)
    argv[argv.index("run") + 1] = str(app)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise TimeoutError("streamlit did not start")


def _launch(p):
    return p.chromium.launch(
        executable_path=CHROMIUM, headless=True,
        args=["--disable-dev-shm-usage", "--disable-gpu", "--no-sandbox", "--disable-background-networking"],
    )  # fmt: skip


# Resolves, once the main thread has been free of long tasks for 250 ms, with [ready, now] in page time:
# ready is two animation frames after the call (a frame painted) or the end of the last long task seen.
QUIET_JS = """async () => {
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  let ready = performance.now();
  const ends = [];
  const obs = new PerformanceObserver(l => { for (const e of l.getEntries()) ends.push(e.startTime + e.duration); });
  obs.observe({type: 'longtask'});
  for (;;) {
    const seen = ends.length;
    await new Promise(r => setTimeout(r, 250));
    if (ends.length === seen) break;
  }
  obs.disconnect();
  return [Math.max(ready, ...ends), performance.now()];
}"""
# The overview's ranked findings: the data grid (older apps) or the static table, with its pictures decoded.
FINDINGS = "[data-testid=stDataFrame], table[data-table=findings]"
PICTURES_JS = """() => Array.from(document.querySelectorAll('table[data-table=findings] img'))
  .every(i => i.complete && i.naturalWidth > 0)"""
# The class page's map is drawn: every drawn point went through plotly's calc and, for a big map, the picture of
# all points is decoded in the page.
MAP_DRAWN_JS = """(n) => { const g = document.querySelectorAll('.stPlotlyChart .js-plotly-plot')[1];
  if (!g || !g.calcdata || !g._fullData) return false;
  let total = 0; for (const t of g._fullData) total += t._length || 0;
  if (total < Math.min(n, 1000)) return false;
  const pics = (g._fullLayout.images || []).length;
  if (!pics) return total >= n;
  const imgs = g.querySelectorAll('.imagelayer image');
  return imgs.length >= pics; }"""

# The class page's first paint: the static spectrum and the picture of every point decoded (apps whose map
# is a picture first), else the interactive map drawn.
CLASS_READY_JS = (
    """(n) => { const pic = document.querySelector('img[data-map=picture]');
  if (pic) return pic.complete && pic.naturalWidth > 0 && (document.querySelector('img[data-chart=spectrum]') || {}).complete === true;
  return ("""
    + MAP_DRAWN_JS
    + """)(n); }"""
)


def tree_cpu() -> float:
    """CPU seconds (user + system) used so far by this process's live descendants: server and browser.

    Linux only (``/proc``); 0 elsewhere. A process that exited in between takes its seconds with it.
    """
    stats: dict[int, tuple[int, float]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(d.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        total += stats[pid][1]
        todo += children.get(pid, [])
    return total


def _settled(page: Any, t0: float) -> float:
    """Seconds from ``t0`` until the page was ready and then quiet (the quiet wait not counted)."""
    ready, now = page.evaluate(QUIET_JS)
    return time.perf_counter() - t0 - (now - ready) / 1000


def time_browser(runs: Path, db: Path, run: Path, app: Path = APP) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    from spray.runs.reader import read_summary

    big = next(f for f in read_summary(run).findings if f.size > 100)
    t = time.perf_counter()
    proc, url = _serve(runs, db, app)
    out: dict[str, float] = {"server_start_s": time.perf_counter() - t}
    try:
        with sync_playwright() as p:
            b = _launch(p)
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            for label in ("cold", "warm"):
                c, t = tree_cpu(), time.perf_counter()
                page.goto(url + "/")
                page.locator(FINDINGS).first.wait_for(state="visible")
                page.get_by_text("Since the previous run").wait_for()
                page.wait_for_function(PICTURES_JS)
                out[f"browser_overview_{label}_s"] = _settled(page, t)
                out[f"cpu_overview_{label}_s"] = tree_cpu() - c
            for label in ("cold", "warm"):
                c, t = tree_cpu(), time.perf_counter()
                page.goto(f"{url}/class?run={run.name}&cls=0")
                page.wait_for_function(CLASS_READY_JS, arg=100_000)
                static = page.locator("img[data-map=picture]").count() > 0
                if not static:
                    page.locator(".stPlotlyChart .nsewdrag").nth(1).wait_for(state="visible")
                out[f"browser_class_100k_{label}_s"] = _settled(page, t)
                out[f"cpu_class_100k_{label}_s"] = tree_cpu() - c
                if static:  # the interactive map behind its switch: from the click until it is drawn
                    c, t = tree_cpu(), time.perf_counter()
                    page.get_by_text("Select on the map (lasso").click()
                    page.wait_for_function(MAP_DRAWN_JS.replace("[1]", "[0]"), arg=100_000)
                    out[f"browser_class_draw_{label}_s"] = _settled(page, t)
                    out[f"cpu_class_draw_{label}_s"] = tree_cpu() - c
            for label in ("cold", "warm"):
                c, t = tree_cpu(), time.perf_counter()
                page.goto(f"{url}/cluster?run={run.name}&cluster={big.key}")
                page.locator("[data-testid=stMain] img").nth(100).wait_for(state="attached")
                page.wait_for_function(
                    "() => Array.from(document.querySelectorAll('[data-testid=stMain] img')).filter(i => i.complete && i.naturalWidth > 0).length >= 101"
                )
                out[f"browser_grid_100_{label}_s"] = _settled(page, t)
                out[f"cpu_grid_100_{label}_s"] = tree_cpu() - c
            b.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return out


def screenshot(runs: Path, out: Path, db: Path) -> None:
    """Save the overview and class page of the newest run in ``runs`` (for the README)."""
    from playwright.sync_api import sync_playwright

    proc, url = _serve(runs, db)
    try:
        with sync_playwright() as p:
            b = _launch(p)
            page = b.new_page(viewport={"width": 1500, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(url + "/")
            page.locator(FINDINGS).first.wait_for(state="visible")
            page.get_by_text("Since the previous run").wait_for()
            _settled(page, time.perf_counter())
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out))
            page.goto(url + "/class")
            page.wait_for_function(CLASS_READY_JS, arg=1)
            _settled(page, time.perf_counter())
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out.with_name(out.stem + "-class" + out.suffix)))
            b.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _browser_series(
    runs: Path, db: Path, run: Path, apps: dict[str, Path], repeat: int
) -> dict[str, dict[str, list[float]]]:
    """``repeat`` fresh server + browser pairs per app; with two apps, interleaved (order alternating)."""
    out: dict[str, dict[str, list[float]]] = {label: {} for label in apps}
    for i in range(repeat):
        for label in list(apps) if i % 2 == 0 else list(apps)[::-1]:
            before = os.getloadavg()[0]
            one = time_browser(runs, db, run, apps[label])
            after = os.getloadavg()[0]
            log.info("repetition %d %s: load %.2f → %.2f  %s", i + 1, label, before, after,
                     "  ".join(f"{k.removeprefix('browser_')[:-2]} {v:.2f}" for k, v in one.items()))  # fmt: skip
            for k, v in one.items():
                out[label].setdefault(k, []).append(v)
            out[label].setdefault("load_before", []).append(before)
            out[label].setdefault("load_after", []).append(after)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-browser", action="store_true", help="AppTest only")
    ap.add_argument("--no-apptest", action="store_true", help="browser only")
    ap.add_argument("--screenshot", type=Path, help="only save screenshots of --runs-dir's newest run here")
    ap.add_argument("--runs-dir", type=Path, help="runs to screenshot (default: the synthetic 100k run)")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    ap.add_argument("--app", type=Path, default=APP, help="dashboard app to time (default: this checkout's)")
    ap.add_argument("--repeat", type=int, default=1, help="browser repetitions (fresh server + browser each)")
    ap.add_argument("--keep-run", type=Path, help="build the 110k run here once and reuse it (A/B series)")
    ap.add_argument("--ab", type=Path, help="also time this app (e.g. main's), interleaved with --app")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "flags.sqlite"
        if args.screenshot:
            screenshot((args.runs_dir or Path(tmp)).resolve(), args.screenshot.resolve(), db)
            return 0
        runs = args.keep_run.resolve() if args.keep_run else Path(tmp) / "runs"
        from spray.runs.publish import list_runs

        found = list_runs(runs)
        run = found[0] if found else build_run(runs)
        db = Path(tmp) / "flags.sqlite"
        res: dict[str, Any] = {} if args.no_apptest else time_apptest(runs, db, args.app.resolve())
        if not args.no_browser and Path(CHROMIUM).exists():
            apps = {"app": args.app.resolve(), **({"base": args.ab.resolve()} if args.ab else {})}
            series = _browser_series(runs, db, run, apps, args.repeat)
            for label, browser in series.items():
                for k, vs in browser.items():
                    log.info("%-5s %-28s median %6.2f  (%s)", label, k, statistics.median(vs),
                             ", ".join(f"{v:.2f}" for v in vs))  # fmt: skip
            res.update(series["app"] if not args.ab else series)
    for k, v in res.items():
        if isinstance(v, float):
            log.info("%-28s %6.2f s", k, v)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

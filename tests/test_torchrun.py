"""Scale-out: ``torchrun --standalone --nproc_per_node=2`` (gloo on CPU) equals the single-process run.

Also checks the two ways a distributed run can deadlock: rank 0 finding the run already published, and
rank 0 finding the runs directory locked. In both cases every rank must leave at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from spray.exit_codes import EXIT_LOCKED, EXIT_OK
from spray.runs.locking import RunLock
from tests.test_nightly import REPO, Prepared, comparable, parse_logs, prepare, run_spray, spray_env

TORCHRUN = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node=2"]


def torchrun(
    cfg: Path, runs: Path, status: Path, timeout: float = 300
) -> tuple[int, list[dict[str, Any]], str]:
    args = [
        *TORCHRUN,
        "-m",
        "spray.cli",
        "run",
        "--config",
        str(cfg),
        "--runs-dir",
        str(runs),
        "--status-file",
        str(status),
    ]
    p = subprocess.run(args, cwd=REPO, env=spray_env(), capture_output=True, text=True, timeout=timeout)
    return p.returncode, parse_logs(p.stderr), p.stderr


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    return prepare(tmp_path_factory)


def test_torchrun_two_gloo_processes_equal_single_process(prepared: Prepared, tmp_path: Path) -> None:
    cfg = prepared.config("torchrun")
    single = run_spray(["run", "--config", str(cfg), "--runs-dir", str(tmp_path / "single")])
    assert single.status is not None and single.status["status"] == "published", single.stderr[-3000:]

    status = tmp_path / "status.json"
    code, logs, err = torchrun(cfg, tmp_path / "dist", status)
    st = json.loads(status.read_text())
    # torchrun reports any non-zero worker exit as 1: the real code is in the status file.
    assert st["exit_code"] == single.code and st["status"] == "published", err[-3000:]
    assert code == (0 if single.code == 0 else 1)

    # Each rank computed its own shards (r, r+W, ...) and nothing twice.
    written = [r for r in logs if r["msg"].startswith("shard ") and "written" in r["msg"]]
    by_rank = {rk: sorted(r["shard"] for r in written if r.get("rank") == rk) for rk in (0, 1)}
    assert by_rank[0] == list(range(0, 600, 128)) and by_rank[1] == list(range(64, 600, 128))
    merged = next(r for r in logs if r.get("stage") == "merge" and "n_computed" in r)
    assert (merged["n_computed"], merged["n_cached"], merged["n_samples"]) == (600, 0, 600)
    ours = [r for r in logs if r.get("logger", "").startswith("spray")]
    assert all("stage" in r and "rank" in r for r in ours)
    assert all("run_id" in r for r in ours if r["stage"] != "setup")

    a = comparable(Path(single.status["run_dir"]))
    b = comparable(Path(st["run_dir"]))
    assert a[0] == b[0]  # summary.json apart from timings
    assert a[1] == b[1] and a[2] == b[2]  # heatmaps.npy, thumbs.npy bytes
    assert json.loads((Path(st["run_dir"]) / "summary.json").read_text())["timings"]["world_size"] == 2

    # Run again: rank 0 finds the run published and tells rank 1; both leave at once with 0.
    t0 = time.perf_counter()
    code, logs, err = torchrun(cfg, tmp_path / "dist", status, timeout=180)
    assert code == EXIT_OK, err[-3000:]
    assert json.loads(status.read_text())["status"] == "up_to_date"
    assert {r.get("rank") for r in logs if "up to date" in r["msg"]} == {0, 1}
    assert not any(r.get("stage") == "batch" for r in logs)
    print(f"up-to-date torchrun: {time.perf_counter() - t0:.1f} s")


def test_torchrun_locked_exits_without_deadlock(prepared: Prepared, tmp_path: Path) -> None:
    cfg = prepared.config("torchrun-locked")
    runs = tmp_path / "runs"
    status = tmp_path / "status.json"
    with RunLock(runs):
        code, logs, err = torchrun(cfg, runs, status, timeout=180)
        touched = sorted(p.relative_to(runs) for p in runs.rglob("*"))
    assert code != 0, err[-3000:]  # torchrun: 1 for any failing worker
    assert json.loads(status.read_text())["exit_code"] == EXIT_LOCKED
    locked = [r for r in logs if "already running" in r["msg"]]
    assert {r.get("rank") for r in locked} == {0, 1}
    assert touched == [Path(".lock")]

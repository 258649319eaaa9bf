"""Scale-out: ``torchrun --standalone --nproc_per_node=2`` (gloo on CPU) equals the single-process run.

Both stages are split over the ranks: the batch stage's shards and the analysis' classes. Also checks the
ways a distributed run can deadlock: rank 0 finding the run already published, rank 0 finding the runs
directory locked, and one rank failing in its share of the analysis. In each case every rank must leave
at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
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


def class_arrays(run_dir: Path) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """Every array of every ``classes/<c>.npz``: dtype, shape and bytes (the zip's timestamps left out)."""
    out = {}
    for f in sorted((run_dir / "classes").glob("*.npz")):
        with np.load(f) as z:
            out.update({f"{f.name}:{k}": (z[k].dtype.str, z[k].shape, z[k].tobytes()) for k in z.files})
    assert out
    return out


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

    # The analysis is sharded: each rank analysed its classes (balanced by size), none twice.
    analysed = {
        rk: {r["msg"].split()[2] for r in logs if r["msg"].startswith("analysing class") and r["rank"] == rk}
        for rk in (0, 1)
    }
    assert analysed[0] and analysed[1] and not analysed[0] & analysed[1], analysed
    assert len(analysed[0] | analysed[1]) == 10

    a = comparable(Path(single.status["run_dir"]))
    b = comparable(Path(st["run_dir"]))
    assert a[0] == b[0]  # summary.json apart from timings
    assert a[1] == b[1] and a[2] == b[2]  # heatmaps.npy, thumbs.npy bytes
    assert class_arrays(Path(single.status["run_dir"])) == class_arrays(Path(st["run_dir"]))
    assert json.loads((Path(st["run_dir"]) / "summary.json").read_text())["timings"]["world_size"] == 2

    # Run again: rank 0 finds the run published and tells rank 1; both leave at once with 0.
    t0 = time.perf_counter()
    code, logs, err = torchrun(cfg, tmp_path / "dist", status, timeout=180)
    assert code == EXIT_OK, err[-3000:]
    assert json.loads(status.read_text())["status"] == "up_to_date"
    assert {r.get("rank") for r in logs if "up to date" in r["msg"]} == {0, 1}
    assert not any(r.get("stage") == "batch" for r in logs)
    print(f"up-to-date torchrun: {time.perf_counter() - t0:.1f} s")
    # spray audit under torchrun prints one report, rank 0's (rank 1 printed an empty one beside it)
    argv = [
        *TORCHRUN,
        "-m",
        "spray.cli",
        "audit",
        "-q",
        "--config",
        str(cfg),
        "--runs-dir",
        str(tmp_path / "dist"),
    ]
    p = subprocess.run(argv, cwd=REPO, env=spray_env(), capture_output=True, text=True, timeout=180)
    assert p.returncode == EXIT_OK, p.stderr[-3000:]
    headers = [ln for ln in p.stdout.splitlines() if ln.startswith("run ") and "samples" in ln]
    assert len(headers) == 1 and "600 samples" in headers[0], p.stdout


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


def test_torchrun_rank_failure_in_the_analysis_stops_every_rank(prepared: Prepared, tmp_path: Path) -> None:
    """Rank 1's analysis fails: rank 0 must not wait for it, and the status file names rank 1's error."""
    cfg = prepared.config("torchrun-failure")
    status = tmp_path / "status.json"
    args = [*TORCHRUN, "-m", "tests.rank_failure", "run", "--config", str(cfg)]
    args += ["--runs-dir", str(tmp_path / "runs"), "--status-file", str(status)]
    t0 = time.perf_counter()
    p = subprocess.run(args, cwd=REPO, env=spray_env(), capture_output=True, text=True, timeout=300)
    took = time.perf_counter() - t0
    assert p.returncode == 1, p.stderr[-3000:]
    st = json.loads(status.read_text())
    assert st["exit_code"] == 1 and st["status"] == "failed", st
    assert "rank 1 failed: DataError: injected" in json.dumps(st), st
    logs = parse_logs(p.stderr)
    # Both ranks reached the analysis, and rank 0 left after its own share instead of hanging.
    assert {r.get("rank") for r in logs if r.get("stage") == "analysis"} == {0, 1}
    assert not any(r.get("stage") == "publish" for r in logs)
    print(f"failing torchrun: {took:.1f} s")


def _rank_1_fails(
    prepared: Prepared, tmp_path: Path, how: str, **env_extra: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """A torchrun of ``tests.rank_failure`` with rank 1 failing ``how`` (``SPRAY_TEST_RANK1``): the process and
    rank 0's status file."""
    cfg = prepared.config(f"torchrun-{how}")
    status = tmp_path / "status.json"
    args = [*TORCHRUN, "-m", "tests.rank_failure", "run", "--config", str(cfg)]
    args += ["--runs-dir", str(tmp_path / "runs"), "--status-file", str(status)]
    env = {**spray_env(), "SPRAY_TEST_RANK1": how, **env_extra}
    p = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0, p.stderr[-3000:]
    return p, json.loads(status.read_text())


def test_torchrun_a_rank_killed_outright_is_named_by_rank_0(prepared: Prepared, tmp_path: Path) -> None:
    """Rank 1 is killed (SIGKILL) in its analysis: rank 0's status says which rank vanished, not only that
    it was stopped itself."""
    p, st = _rank_1_fails(prepared, tmp_path, "kill")
    # a failure, not a scheduler's stop: 1, as in one process (torchrun's SIGTERM to rank 0 gave 143)
    assert st["exit_code"] == 1 and st["status"] == "failed", st
    assert st["error"].startswith("rank 1 (pid ") and "without a final status" in st["error"], st
    assert any("distributed run ended because rank 1" in r["msg"] for r in parse_logs(p.stderr))


def test_torchrun_a_rank_failing_in_the_batch_stage_is_a_failure_not_a_stop(
    prepared: Prepared, tmp_path: Path
) -> None:
    """An outside check: a sample only rank 1's shard reads failed (relevance overflow); torchrun stopped rank 0
    with SIGTERM, whose status then said 143 "terminated" (a scheduler's stop, resumed next time) instead of
    1 "failed", as the same error gives in one process or on rank 0."""
    _, st = _rank_1_fails(prepared, tmp_path, "batch")
    assert st["exit_code"] == 1 and st["status"] == "failed", st
    assert "rank 1 failed: " in st["error"] and "injected: relevance overflow on rank 1" in st["error"], st


def test_torchrun_ranks_that_read_other_data_stop_before_any_work(prepared: Prepared, tmp_path: Path) -> None:
    """An outside check: two machines, each with its own copy of the data, one copy with an image changed; the
    ranks each explained their shards and the merge failed late with a raw missing-manifest traceback."""
    from spray.data.idx import read_idx, write_idx

    images = read_idx(prepared.images).copy()
    images[7] = 255 - images[7]
    write_idx(tmp_path / "other-images.gz", images)
    other = prepared.config("torchrun-data-rank1", images=tmp_path / "other-images.gz")
    p, st = _rank_1_fails(prepared, tmp_path, "data", SPRAY_TEST_RANK1_CONFIG=str(other))
    assert st["exit_code"] == 2 and st["status"] == "failed", st
    # the config names the other file (on two machines it would be the same path)
    assert "rank 1 of 2: its config and data differ from rank 0's" in st["error"], st
    frames = [line for line in p.stderr.splitlines() if line.strip().startswith("File ")]
    assert not any(str(REPO / "spray") in f for f in frames), p.stderr[-3000:]  # torchrun prints its own
    logs = parse_logs(p.stderr)
    assert not any(r.get("stage") in ("batch", "analysis", "publish") for r in logs), p.stderr[-3000:]
    assert not (tmp_path / "runs" / "latest").exists()


def test_torchrun_ranks_that_list_the_samples_in_another_order_stop_before_any_work(
    prepared: Prepared, tmp_path: Path
) -> None:
    """An outside check: a factory whose order followed each process's hash seed, with an order-free
    fingerprint, passed the ranks' check; the merge mixed the two orders (a quarter of the images twice, a
    quarter missing) and the planted finding went unflagged, exit 0."""
    cfg = prepared.config("torchrun-order")
    status = tmp_path / "status.json"
    args = [*TORCHRUN, "-m", "spray.cli", "run", "--config", str(cfg), "--runs-dir", str(tmp_path / "runs")]
    env = spray_env(SPRAY_TEST_REVERSED_ON_RANK1="1")
    p = subprocess.run([*args, "--status-file", str(status)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    st = json.loads(status.read_text())
    assert st["exit_code"] == 2 and "rank 1 of 2: its sample order differ from rank 0's" in st["error"], st
    assert "must list its samples in one order in every process" in st["error"], st
    assert not any(r.get("stage") in ("batch", "analysis", "publish") for r in parse_logs(p.stderr))
    assert not (tmp_path / "runs" / "latest").exists()


def test_rank_0_reads_a_failed_ranks_file_of_this_run(tmp_path: Path) -> None:
    """A rank above 0 that fails writes its final status with its start record: rank 0 names it (a final
    status without "started" was taken for a previous run's file and ignored)."""
    import os

    from spray.cli.rank_status import lost_ranks, rank_status_path, running_record

    status = str(tmp_path / "status.json")
    record = {**running_record(1), "exit_code": 1, "status": "failed", "error": "DataError: unreadable"}
    Path(str(rank_status_path(status, 1))).write_text(json.dumps(record))
    assert lost_ranks(status, 2, record["started"]) == ["rank 1 failed: DataError: unreadable"]
    old = {**record, "started": record["started"] - 3600}
    Path(str(rank_status_path(status, 1))).write_text(json.dumps(old))
    assert lost_ranks(status, 2, record["started"]) == []  # a previous run's file
    assert os.path.basename(str(rank_status_path(status, 1))) == "status.json.rank1"


def test_rank_0_waits_briefly_for_a_rank_still_writing_its_failure(tmp_path: Path) -> None:
    """An outside check: rank 1 failed (disk full) just before the ranks met; rank 0 read its record while it
    still said "running" and reported only a lost connection, in 2 of 3 tries."""
    import subprocess
    import threading
    import time

    from spray.cli.rank_status import lost_ranks, rank_status_path, running_record

    status = str(tmp_path / "status.json")
    alive = subprocess.Popen(["sleep", "30"])  # the failing rank's process, still up
    try:
        start = {**running_record(1), "pid": alive.pid}
        Path(str(rank_status_path(status, 1))).write_text(json.dumps(start))
        final = {**start, "exit_code": 1, "status": "failed", "error": "OSError: No space left on device"}
        later = threading.Timer(
            0.5, lambda: Path(str(rank_status_path(status, 1))).write_text(json.dumps(final))
        )
        later.start()
        t0 = time.monotonic()
        assert lost_ranks(status, 2, start["started"]) == ["rank 1 failed: OSError: No space left on device"]
        assert time.monotonic() - t0 < 3.0
        later.join()
    finally:
        alive.kill()
        alive.wait()

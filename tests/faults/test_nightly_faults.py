"""Faults of the nightly job and the runs folder: each case asserts the exit code and that the message names
the key, file or folder to fix (``tests/faults/cli.py``), and that nothing published or cached is lost.

The audits are tiny (20 random 16×16 images, a seeded random CNN, ``scoring.map_threshold: 0`` so that
clusters are flagged without a trained model): most cases run ``spray`` in this process; signals, locks
and a second process's view run it as a child process. Disk-full and read-only cases use a real tmpfs
where this machine lets the test mount one (root), and an injected ``OSError`` at the atomic-write layer
everywhere.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from spray.data import write_idx
from spray.exit_codes import EXIT_CONFIG, EXIT_FAILURE, EXIT_FINDINGS, EXIT_INTERRUPTED, EXIT_LOCKED, EXIT_OK
from spray.runs import atomic
from spray.runs.layout import RunFiles
from spray.runs.locking import RunLock
from spray.runs.publish import list_runs
from spray.runs.reader import RunReader
from tests.faults.cli import REPO, CliResult, assert_clean_failure, run_main, run_spray, spray_env
from tests.runs.builders import tiny_config

EXIT_TERMINATED = 143


# ---------------------------------------------------------------------------------------------------------
# Fixtures


def _config(tmp: Path, **sections: Any) -> Path:
    """A tiny audit config file (flagging clusters without a trained model); returns its path."""
    sections.setdefault("scoring", {"intervention": False, "map_threshold": 0.0})
    tiny_config(tmp, **sections)
    return tmp / "tiny.yaml"


def _edit(cfg: Path, section: str, **values: Any) -> Path:
    raw = yaml.safe_load(cfg.read_text())
    raw.setdefault(section, {}).update(values)
    cfg.write_text(yaml.safe_dump(raw))
    return cfg


def _status(res: CliResult) -> dict[str, Any]:
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    assert lines, res.output
    return json.loads(lines[-1])


def _run(capsys: pytest.CaptureFixture[str], cfg: Path, *extra: str) -> CliResult:
    return run_main(["run", "--config", str(cfg), *extra], capsys)


@pytest.fixture
def published(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    """A config and its first published run (exit 10: every flagged cluster is new)."""
    cfg = _config(tmp_path)
    res = _run(capsys, cfg)
    assert res.code == EXIT_FINDINGS, res.output
    return cfg, Path(_status(res)["run_dir"])


@contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real tmpfs at ``path`` (skips the test where this machine does not let it mount one)."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


# ---------------------------------------------------------------------------------------------------------
# The runs folder itself


def test_runs_dir_under_a_file_cannot_be_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path)
    (tmp_path / "afile").write_text("x")
    res = _run(capsys, cfg, "--runs-dir", str(tmp_path / "afile" / "runs"))
    assert_clean_failure(
        res, EXIT_CONFIG, "--runs-dir", str(tmp_path / "afile" / "runs"), "cannot be created"
    )
    assert _status(res)["exit_code"] == EXIT_CONFIG


def test_runs_dir_argument_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path)
    (tmp_path / "afile").write_text("x")
    res = _run(capsys, cfg, "--runs-dir", str(tmp_path / "afile"))
    assert_clean_failure(res, EXIT_CONFIG, "--runs-dir", str(tmp_path / "afile"), "is a file, not a folder")
    assert (tmp_path / "afile").read_text() == "x"


def test_a_latest_that_is_a_folder_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check: a runs folder restored with cp -rL holds `latest` as a folder; every run then
    published its folder and failed with a raw IsADirectoryError, and the rerun said "up to date" (1, 0, 1...)."""
    cfg = _config(tmp_path)
    runs = tmp_path / "runs"
    (runs / "latest").mkdir(parents=True)
    (runs / "latest" / "summary.json").write_text("{}")
    res = _run(capsys, cfg, "--runs-dir", str(runs))
    assert_clean_failure(res, EXIT_CONFIG, "latest", "is a folder, not the link", "cp -L")
    assert [p.name for p in runs.iterdir()] == ["latest"]  # nothing computed or published


def test_output_runs_dir_in_the_config_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _edit(_config(tmp_path), "output", runs_dir=str(tmp_path / "afile"))
    (tmp_path / "afile").write_text("x")
    res = _run(capsys, cfg)
    assert_clean_failure(res, EXIT_CONFIG, "output.runs_dir", str(tmp_path / "afile"))


def test_spray_audit_names_a_runs_dir_that_is_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path)
    (tmp_path / "afile").write_text("x")
    res = run_main(["audit", "--config", str(cfg), "--runs-dir", str(tmp_path / "afile"), "-q"], capsys)
    assert_clean_failure(res, EXIT_CONFIG, str(tmp_path / "afile"), "is a file")


def test_lock_held_exits_75_and_touches_nothing(published: tuple[Path, Path]) -> None:
    cfg, run = published
    runs = run.parent
    before = sorted(p.relative_to(runs) for p in runs.rglob("*"))
    with RunLock(runs):
        res = run_spray(["run", "--config", str(cfg)], timeout=120)
    assert_clean_failure(res, EXIT_LOCKED, "already running", str(runs))
    assert sorted(p.relative_to(runs) for p in runs.rglob("*")) == before


# ---------------------------------------------------------------------------------------------------------
# Read-only runs folder: the up-to-date check works, publishing says why it cannot


def _read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the runs folder were read-only for this user (root ignores permission bits)."""
    monkeypatch.setattr("spray.runs.publish._writable", lambda folder: False)


def test_read_only_runs_dir_up_to_date_exits_0(
    published: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, run = published
    _read_only(monkeypatch)
    res = _run(capsys, cfg)
    assert_clean_failure(res, EXIT_OK, "not writable", "up to date")
    assert _status(res)["status"] == "up_to_date" and _status(res)["run_dir"] == str(run)


def test_read_only_runs_dir_not_published_names_the_folder(
    published: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, run = published
    _edit(cfg, "analysis", k_max=4)
    _read_only(monkeypatch)
    res = _run(capsys, cfg)
    assert_clean_failure(res, EXIT_FAILURE, "is not published yet", str(run.parent), "output.runs_dir")
    assert list_runs(run.parent) == [run]


def test_read_only_runs_dir_with_a_newer_run_of_other_inputs_says_the_run_is_published(
    published: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inputs went back to an older published run while a newer run of other inputs exists: a writable
    folder re-publishes it as the newest; a read-only one said "not published yet" (an outside-in check)."""
    cfg, run = published
    original = cfg.read_text()
    assert _run(capsys, _edit(cfg, "analysis", k_max=4)).code in (EXIT_OK, EXIT_FINDINGS)
    cfg.write_text(original)
    _read_only(monkeypatch)
    res = _run(capsys, cfg)
    assert_clean_failure(
        res, EXIT_FAILURE, f"is published ({run.name})", "is newer", "not writable", str(run)
    )
    assert "not published yet" not in res.output


def test_read_only_file_system_for_real(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with _tmpfs(tmp_path / "mnt", "4m") as mnt:
        cfg = _edit(_config(tmp_path), "output", runs_dir=str(mnt / "runs"))
        assert _run(capsys, cfg).code == EXIT_FINDINGS
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        res = _run(capsys, cfg)
        assert_clean_failure(res, EXIT_OK, "up to date")
        _edit(cfg, "analysis", k_max=4)
        res = _run(capsys, cfg)
        assert_clean_failure(res, EXIT_FAILURE, str(mnt / "runs"), "not published yet")


# ---------------------------------------------------------------------------------------------------------
# Disk full: "no space left on <folder>", previous runs and the cache intact


def _full_disk_under(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """Atomic writes of files whose path contains ``where`` fail with ENOSPC."""
    real = atomic.tempfile.mkstemp

    def mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        fd, name = real(*args, **kwargs)
        if where in name:
            os.close(fd)
            os.unlink(name)
            raise OSError(errno.ENOSPC, "No space left on device")
        return fd, name

    monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp)


def test_disk_full_while_writing_the_run(
    published: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, run = published
    _edit(cfg, "analysis", k_max=4)
    _full_disk_under(monkeypatch, ".staging")
    res = _run(capsys, cfg)
    # the runs folder, not the staging folder that is removed on failure
    assert_clean_failure(res, EXIT_FAILURE, f"no space left on {run.parent} (while writing")
    assert list_runs(run.parent) == [run] and RunReader.open(run).report().run_id
    monkeypatch.undo()
    res = _run(capsys, cfg)
    assert res.code in (EXIT_OK, EXIT_FINDINGS), res.output
    assert _count(res, "n_cached") == 20  # every heatmap came from the cache


def test_a_short_write_of_numpy_is_a_full_disk(
    published: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """numpy reports a full disk as "2587200 requested and 905152 written", without an errno: the same
    clear error, no traceback, the staging folder gone."""
    cfg, run = published
    _edit(cfg, "analysis", k_max=4)
    real = np.save

    def save(file: Any, arr: Any, *args: Any, **kwargs: Any) -> None:
        real(file, arr[: len(arr) // 3], *args, **kwargs)
        raise OSError("2587200 requested and 905152 written")

    monkeypatch.setattr(np, "save", save)
    res = _run(capsys, cfg)
    assert_clean_failure(
        res, EXIT_FAILURE, f"no space left on {run.parent} (while writing heatmaps.npy", "2.6 MB", "905.2 kB"
    )
    assert "requested and" not in res.output and "Traceback" not in res.output
    assert list_runs(run.parent) == [run] and not any((run.parent / ".staging").iterdir())


def test_disk_full_while_writing_a_cache_shard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(tmp_path)
    _full_disk_under(monkeypatch, "shard-000000008")
    res = _run(capsys, cfg)
    assert_clean_failure(res, EXIT_FAILURE, "no space left on", str(tmp_path / "runs" / ".cache"))
    assert list_runs(tmp_path / "runs") == []
    monkeypatch.undo()
    res = _run(capsys, cfg)
    assert res.code == EXIT_FINDINGS and _count(res, "n_computed") == 8  # only the shard that failed


def test_disk_full_for_real(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with _tmpfs(tmp_path / "mnt", "1m") as mnt:
        cfg = _edit(_config(tmp_path), "output", runs_dir=str(mnt / "runs"))
        first = _run(capsys, cfg)
        assert first.code == EXIT_FINDINGS, first.output
        run = Path(_status(first)["run_dir"])
        free = shutil.disk_usage(mnt).free
        (mnt / "filler").write_bytes(b"\0" * max(0, free - 16 * 1024))
        _edit(cfg, "analysis", k_max=4)
        res = _run(capsys, cfg)
        assert_clean_failure(res, EXIT_FAILURE, "no space left on", str(mnt / "runs"))
        assert list_runs(mnt / "runs") == [run] and RunReader.open(run).report().findings


def _count(res: CliResult, key: str) -> int:
    logs = [json.loads(ln) for ln in res.stderr.splitlines() if ln.startswith("{")]
    return next(r[key] for r in logs if r.get("stage") == "merge" and key in r)


# ---------------------------------------------------------------------------------------------------------
# Damaged runs: never silently wrong


def _damage_summary(run: Path) -> Path:
    f = RunFiles(run).summary
    f.write_bytes(f.read_bytes()[:100])
    return f


def test_a_damaged_previous_run_is_passed_over_and_named(
    published: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, first = published
    second = _run(capsys, _edit(cfg, "batch", shard_size=5))  # same results, another run id
    assert second.code == EXIT_OK, second.output  # the flagged clusters persist
    damaged = _damage_summary(Path(_status(second)["run_dir"]))
    res = _run(capsys, _edit(cfg, "batch", shard_size=6))
    # Compared with the older readable run: the persisting clusters are not reported as new.
    assert_clean_failure(res, EXIT_OK, str(damaged), "passed over")
    status = _status(res)
    assert status["n_new"] == 0 and status["unreadable_runs"] == [damaged.parent.name]
    ch = RunReader.open(status["run_dir"]).changes()
    assert ch is not None and ch.previous_run == first.name and ch.unreadable[0].run == damaged.parent.name


def test_the_only_previous_run_damaged_is_named_not_taken_as_none(
    published: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, first = published
    damaged = _damage_summary(first)
    res = _run(capsys, _edit(cfg, "batch", shard_size=5))
    assert_clean_failure(res, EXIT_FINDINGS, str(damaged), "passed over")
    assert _status(res)["unreadable_runs"] == [first.name]


def test_a_previous_run_with_a_missing_class_file_is_passed_over(
    published: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, first = published
    missing = RunFiles(first).class_file(0)
    missing.unlink()
    res = _run(capsys, _edit(cfg, "batch", shard_size=5))
    assert_clean_failure(res, EXIT_FINDINGS, str(missing), "missing")


def test_a_previous_run_from_a_newer_spray_is_passed_over(
    published: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, first = published
    f = RunFiles(first).summary
    raw = json.loads(f.read_text())
    raw["layout_version"] = 99
    f.write_text(json.dumps(raw))
    res = _run(capsys, _edit(cfg, "batch", shard_size=5))
    assert_clean_failure(res, EXIT_FINDINGS, str(f), "upgrade spray")


def test_a_damaged_published_run_is_not_taken_as_up_to_date(
    published: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, first = published
    damaged = _damage_summary(first)
    res = _run(capsys, cfg)
    assert_clean_failure(res, EXIT_FINDINGS, str(damaged), "not taken as published")
    assert _status(res)["status"] == "published" and _status(res)["run_dir"] != str(first)


def test_a_damaged_cache_shard_is_recomputed_and_named(
    published: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, first = published
    shard = sorted(first.parent.glob(".cache/*/shard-000000000-*.npz"))[0]
    shard.write_bytes(b"garbage")
    res = _run(capsys, cfg, "--force")  # compared with the published run of the same inputs: nothing new
    assert_clean_failure(res, EXIT_OK, str(shard), "will be recomputed")
    assert _count(res, "n_computed") == 8


def test_a_damaged_published_run_cannot_be_reused_and_says_what_to_do(
    published: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, first = published
    npz = RunFiles(first).class_file(1)
    npz.write_bytes(npz.read_bytes()[:200])
    res = run_main(["audit", "--config", str(cfg), "-q"], capsys)
    assert_clean_failure(res, EXIT_FAILURE, str(npz), "truncated", "--force")
    res = run_main(["audit", "--config", str(cfg), "-q", "--force"], capsys)
    assert res.code == EXIT_OK and len(list_runs(first.parent)) == 2


def test_a_damaged_paste_cache_is_moved_aside(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, scoring={"intervention_samples": 4})
    assert _run(capsys, cfg).code in (EXIT_OK, EXIT_FINDINGS)
    (db,) = (tmp_path / "runs").glob(".cache/*/paste-a*.sqlite")
    db.write_bytes(b"not a database" * 100)
    for extra in ("-wal", "-shm"):
        db.with_name(db.name + extra).unlink(missing_ok=True)
    res = _run(capsys, cfg, "--force")
    assert_clean_failure(res, res.code, str(db), "starting a new one")
    assert res.code in (EXIT_OK, EXIT_FINDINGS)


# ---------------------------------------------------------------------------------------------------------
# Options, status file, notification


def test_keep_runs_zero_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = _run(capsys, _config(tmp_path), "--keep-runs", "0")
    assert_clean_failure(res, EXIT_CONFIG, "--keep-runs")


def test_status_file_under_a_file_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A status file that cannot be written is a mistyped path: refused at once (exit 2), as a missing folder
    is, rather than found after the audit (an outside check asked for the refusal)."""
    (tmp_path / "afile").write_text("x")
    res = _run(capsys, _config(tmp_path), "--status-file", str(tmp_path / "afile" / "status.json"))
    assert_clean_failure(res, EXIT_CONFIG, "--status-file", str(tmp_path / "afile"), "is a file")
    assert _status(res)["status"] == "failed" and (tmp_path / "afile").read_text() == "x"
    assert list_runs(tmp_path / "runs") == []


def test_a_failing_notifier_is_named_and_does_not_change_the_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _edit(_config(tmp_path), "nightly", notify_command="/nonexistent/notify-me --now")
    res = _run(capsys, cfg)
    assert_clean_failure(res, EXIT_FINDINGS, "/nonexistent/notify-me")


def test_a_notifier_that_exits_non_zero_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cmd = f"{sys.executable} -c \"import sys; sys.stderr.write('mailer down'); sys.exit(3)\""
    res = _run(capsys, _edit(_config(tmp_path), "nightly", notify_command=cmd))
    assert_clean_failure(res, EXIT_FINDINGS, "exited 3", "mailer down")


def test_cuda_requested_without_a_gpu_names_batch_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    res = _run(capsys, _config(tmp_path), "--device", "cuda")
    assert_clean_failure(res, EXIT_FAILURE, "batch.device")


def test_a_bad_change_rule_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = _run(capsys, _edit(_config(tmp_path), "nightly", match_jaccard=1.5))
    assert_clean_failure(res, EXIT_CONFIG, "nightly.match_jaccard")


# ---------------------------------------------------------------------------------------------------------
# Signals: SIGTERM is Ctrl-C for a scheduler


def _slow_config(tmp: Path) -> Path:
    """160 random 28×28 images as IDX read through a factory that ``SPRAY_TEST_SAMPLE_DELAY`` slows down.

    At 0.05 s a sample the run has seven seconds left after its first shard: enough for the signal to land
    mid-run on a loaded machine (with 64 samples the run sometimes finished first).
    """
    rng = np.random.default_rng(0)
    write_idx(tmp / "img.gz", rng.integers(0, 255, (160, 28, 28), dtype=np.uint8))
    write_idx(tmp / "lab.gz", np.repeat(np.arange(2), 80).astype(np.uint8))
    raw = {
        "model": {
            "factory": "spray.lab.cnn:small_cnn",
            "factory_kwargs": {"in_channels": 1, "num_classes": 2, "width": 4},
        },
        "data": {
            "kind": "factory",
            "factory": "tests.test_nightly:idx_factory",
            "factory_kwargs": {"images": str(tmp / "img.gz"), "labels": str(tmp / "lab.gz")},
        },
        "batch": {"batch_size": 8, "shard_size": 16, "grid": 7, "device": "cpu"},
        "analysis": {"embedding": "spectral", "min_class_size": 4, "n_neighbors": 3, "k_max": 3},
        "scoring": {"intervention": False},
        "output": {"runs_dir": str(tmp / "runs"), "html_report": False},
    }
    (tmp / "slow.yaml").write_text(yaml.safe_dump(raw))
    return tmp / "slow.yaml"


@pytest.mark.parametrize(
    ("sig", "code", "name"),
    [(signal.SIGTERM, EXIT_TERMINATED, "SIGTERM"), (signal.SIGINT, EXIT_INTERRUPTED, "SIGINT")],
)
def test_a_signal_stops_the_run_keeps_finished_shards_and_the_next_run_resumes(
    tmp_path: Path, sig: int, code: int, name: str
) -> None:
    cfg = _slow_config(tmp_path)
    runs = tmp_path / "runs"
    err_path = tmp_path / "err.log"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "spray.cli", "run", "--config", str(cfg)],
            cwd=REPO,
            env=spray_env(SPRAY_TEST_SAMPLE_DELAY="0.05"),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            # A test runner started in the background inherits SIGINT ignored (as nohup and `&` set it), and
            # Python then never raises KeyboardInterrupt: give the child the disposition a terminal gives.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and "written" not in err_path.read_text():
            time.sleep(0.05)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)
    res = CliResult(proc.returncode, out, err_path.read_text())
    assert_clean_failure(res, code, name, "finished shards are kept")
    assert _status(res)["status"] in ("terminated", "interrupted")
    assert list_runs(runs) == [] and list(runs.glob(".cache/*/shard-*.npz"))
    again = run_spray(["run", "--config", str(cfg)], timeout=300)
    assert again.code in (EXIT_OK, EXIT_FINDINGS), again.output
    assert "not recomputed" in again.stderr

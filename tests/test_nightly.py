"""The nightly job end to end: real subprocesses of ``spray run`` on a tiny planted Fashion-MNIST set.

Every run is a separate ``spray run`` process (as cron would start it) with JSON-lines logs on stderr,
which the tests parse. The dataset is a factory over IDX files (600 images, 28×28) so that one test can
slow the reading down (``SPRAY_TEST_SAMPLE_DELAY``) without changing any content hash: the killed and
resumed run must equal the uninterrupted one bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from spray.data import read_idx, write_idx
from spray.exit_codes import EXIT_FINDINGS, EXIT_LOCKED, EXIT_OK
from spray.lab.artifacts import plant
from spray.nightly import exit_code_for
from spray.records import AuditReport, ChangeRule, ChangeSet, ClusterChange, ClusterFinding
from spray.runs.locking import RunLock

REPO = Path(__file__).resolve().parents[1]
SPRAY = [sys.executable, "-m", "spray.cli"]
PLANTED_CLASS = 6  # Shirt, see spray.lab.demo


# ---------------------------------------------------------------------------------------------------------
# The dataset factory used by the configs (imported by the spray subprocesses)


class IdxFactoryDataset:
    """An IDX image/label pair as a map-style dataset, optionally slow to read.

    ``SPRAY_TEST_SAMPLE_DELAY`` (seconds per sample) slows reading down so a test can kill the batch
    stage in the middle; it changes no content, so the run id and every hash stay the same.
    """

    def __init__(self, images: str, labels: str) -> None:
        self.images = read_idx(images)
        self.targets = read_idx(labels).astype(np.int64).tolist()
        self.sample_ids = [f"img{i:05d}" for i in range(len(self.targets))]
        h = hashlib.sha256(Path(images).read_bytes())
        h.update(Path(labels).read_bytes())
        self.fingerprint = h.hexdigest()
        self.delay = float(os.environ.get("SPRAY_TEST_SAMPLE_DELAY", "0"))
        if os.environ.get("SPRAY_TEST_REVERSED_ON_RANK1") and os.environ.get("RANK") == "1":
            # the same samples in another order under the same fingerprint (a set's order under hash seeds)
            self.images, self.targets = self.images[::-1].copy(), self.targets[::-1]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        if self.delay:
            time.sleep(self.delay)
        return self.images[i], self.targets[i]


def idx_factory(images: str, labels: str) -> IdxFactoryDataset:
    """``data.factory`` entry point."""
    return IdxFactoryDataset(images, labels)


# ---------------------------------------------------------------------------------------------------------
# Fixture data (shared with tests/test_torchrun.py through a module-level cache)


@dataclass
class Prepared:
    """A trained tiny demo model, its data as IDX, and a nightly config writer."""

    work: Path
    images: Path
    labels: Path

    def config(
        self, name: str, *, images: Path | None = None, labels: Path | None = None, **nightly: Any
    ) -> Path:
        """Write a config for the (optionally replaced) IDX files; returns its path."""
        from spray.lab.demo import FASHION_CLASSES, MEAN, STD

        raw: dict[str, Any] = {
            "name": "nightly-test",
            "seed": 0,
            "model": {
                "factory": "spray.lab.cnn:small_cnn",
                "factory_kwargs": {"in_channels": 1, "num_classes": 10},
                "checkpoint": str(self.work / "model.pt"),
            },
            "data": {
                "kind": "factory",
                "name": "planted-fashion",
                "factory": "tests.test_nightly:idx_factory",
                "factory_kwargs": {
                    "images": str(images or self.images),
                    "labels": str(labels or self.labels),
                },
                "class_names": FASHION_CLASSES,
                "transform": {"mean": [MEAN], "std": [STD]},
            },
            "batch": {"batch_size": 32, "shard_size": 64, "grid": 28, "thumbnail_size": 28, "device": "cpu"},
            "analysis": {"embedding": "spectral", "min_class_size": 5, "n_neighbors": 5, "k_max": 4},
            "scoring": {"intervention_samples": 20},
            "output": {"runs_dir": str(self.work / "runs")},
            "nightly": nightly,
        }
        p = self.work / f"{name}.yaml"
        p.write_text(yaml.safe_dump(raw, sort_keys=False))
        return p


_PREPARED: dict[str, Prepared] = {}


def prepare(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    """Build the planted data and train the tiny model once per pytest session.

    600 Fashion-MNIST images (60 per class); 40 % of the Shirts carry a 4×4 corner stamp, so that 4
    epochs are enough for the model to use it as a shortcut (the paste test then flags the cluster),
    while the cluster stays a minority of its class (scoring flags only clusters of ≤ 60 % of a class).
    """
    if "demo" not in _PREPARED:
        import torch

        from spray.lab.cnn import small_cnn
        from spray.lab.demo import MEAN, STD, make_demo_data
        from spray.lab.training import train_classifier

        work = tmp_path_factory.mktemp("nightly-demo")
        d = make_demo_data(per_class=60, poison_fraction=0.4, seed=0)
        torch.manual_seed(0)
        model = small_cnn(in_channels=1, num_classes=10)
        train_classifier(model, d.images, d.labels, epochs=4, seed=0, mean=MEAN, std=STD)
        torch.save(model.state_dict(), work / "model.pt")
        write_idx(work / "images.gz", d.images)
        write_idx(work / "labels.gz", d.labels.astype(np.uint8))
        (work / "planted.json").write_text(json.dumps(np.flatnonzero(d.planted).tolist()))
        _PREPARED["demo"] = Prepared(work, work / "images.gz", work / "labels.gz")
    return _PREPARED["demo"]


def spray_env(**extra: str) -> dict[str, str]:
    """Environment of a spray subprocess: the repo importable, one thread (as torchrun sets it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **extra)
    return env


@dataclass
class Result:
    """A finished ``spray run`` process."""

    code: int
    logs: list[dict[str, Any]]
    status: dict[str, Any] | None
    stderr: str

    def messages(self) -> list[str]:
        return [r["msg"] for r in self.logs]

    def merged(self) -> dict[str, Any]:
        """The merge stage's log record (counts of computed and cached samples)."""
        return next(r for r in self.logs if r.get("stage") == "merge" and "n_computed" in r)

    def paste(self) -> dict[str, Any]:
        """The analysis log line with the paste test's computed / cached counts."""
        return next(r for r in self.logs if "n_paste_computed" in r)


def parse_logs(stderr: str) -> list[dict[str, Any]]:
    """Every JSON line of stderr (other lines, e.g. torchrun's own, are ignored)."""
    out = []
    for line in stderr.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def run_spray(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 240) -> Result:
    """Run ``spray <args>`` as a subprocess and parse its JSON logs and stdout status line."""
    p = subprocess.run(
        [*SPRAY, *args], cwd=REPO, env=env or spray_env(), capture_output=True, text=True, timeout=timeout
    )
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    return Result(p.returncode, parse_logs(p.stderr), json.loads(lines[-1]) if lines else None, p.stderr)


def comparable(run_dir: Path) -> tuple[dict[str, Any], bytes, bytes]:
    """summary.json without ``timings`` and ``config.output`` (where it was published), and the bytes of
    heatmaps.npy and thumbs.npy."""
    s = json.loads((run_dir / "summary.json").read_text())
    s.pop("timings")
    s["config"].pop("output")
    return s, (run_dir / "heatmaps.npy").read_bytes(), (run_dir / "thumbs.npy").read_bytes()


# ---------------------------------------------------------------------------------------------------------
# Tests


def _paste_rows(runs: Path) -> int:
    """Rows of the runs directory's paste cache (one per pasted image ever run through the model)."""
    import contextlib
    import sqlite3

    from spray.runs.layout import paste_db_file
    from spray.versions import PASTE_VERSION

    (db,) = runs.rglob(paste_db_file(PASTE_VERSION))
    # Closed here, not when garbage-collected: closing removes the -wal and -shm files, which a later
    # copy of this runs folder would otherwise find listed and then gone.
    with contextlib.closing(sqlite3.connect(db)) as conn:
        tables = ("paste", "paste_logit")  # predictions, and the logit tests' (prediction, logit)
        return sum(int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in tables)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    return prepare(tmp_path_factory)


@pytest.fixture(scope="module")
def first(prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The first, uninterrupted run in a fresh runs directory (the reference for the other tests)."""
    runs = tmp_path_factory.mktemp("runs-a")
    cfg = prepared.config("base")
    res = run_spray(["run", "--config", str(cfg), "--runs-dir", str(runs)])
    assert res.code in (EXIT_OK, EXIT_FINDINGS), res.stderr[-3000:]
    assert res.status is not None
    run_dir = Path(res.status["run_dir"])
    summary, heat, thumbs = comparable(run_dir)
    return {
        "paste_rows": _paste_rows(runs),
        "runs": runs,
        "cfg": cfg,
        "res": res,
        "run_dir": run_dir,
        "summary": summary,
        "heat": heat,
        "thumbs": thumbs,
    }


def test_first_run_publishes_logs_and_reports(first: dict[str, Any]) -> None:
    res: Result = first["res"]
    run_dir: Path = first["run_dir"]
    # Every log line is JSON with the run id and the stage.
    assert res.logs and all("stage" in r for r in res.logs)
    rid = first["summary"]["run_id"][:16]
    assert {r["run_id"] for r in res.logs if "run_id" in r} == {rid}
    stages = [r["stage"] for r in res.logs]
    for st in ("setup", "check", "batch", "merge", "analysis", "compare", "write", "publish", "done"):
        assert st in stages, st
    assert res.merged()["n_computed"] == 600 and res.merged()["n_cached"] == 0
    # Empty cache: every prediction was computed here and stored once; hits are repeats within this run
    # (the same paste in two tests, e.g. the non-members' pastes shared by a class's concept findings).
    assert res.paste()["n_paste_computed"] == first["paste_rows"] > 0
    # The planted cluster is flagged; with no previous run every suspicious cluster is new → exit 10.
    ch = first["summary"]["changes"]
    assert ch["previous_run_id"] is None
    assert any(c["class_index"] == PLANTED_CLASS for c in ch["new"]), ch
    assert res.code == EXIT_FINDINGS and res.status["exit_code"] == EXIT_FINDINGS
    # Published atomically with the self-contained HTML report; nothing left in staging.
    assert (first["runs"] / "latest").resolve() == run_dir
    html = (run_dir / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "data:image/png;base64," in html
    assert 'src="http' not in html and "<script" not in html
    assert not any((first["runs"] / ".staging").iterdir())
    assert not list(first["runs"].glob(".alert-pending-*"))  # exit 10 was reported: nothing owed
    assert not (first["runs"] / ".cache" / "work").exists() or not any(
        (first["runs"] / ".cache" / "work").iterdir()
    )


def test_second_run_is_a_noop(first: dict[str, Any]) -> None:
    t0 = time.perf_counter()
    res = run_spray(["run", "--config", str(first["cfg"]), "--runs-dir", str(first["runs"])])
    took = time.perf_counter() - t0
    assert res.code == EXIT_OK, res.stderr[-2000:]
    assert res.status["status"] == "up_to_date" and res.status["run_dir"] == str(first["run_dir"])
    assert any("up to date" in m for m in res.messages())
    # Nothing was recomputed: no batch stage at all, and still exactly one published run.
    assert not any(r.get("stage") in ("batch", "merge", "analysis") for r in res.logs)
    assert [p.name for p in first["runs"].iterdir() if not p.name.startswith(".") and p.name != "latest"] == [
        first["run_dir"].name
    ]
    print(f"no-op run took {took:.1f} s")
    # -q, as for spray audit: warnings and the status line only (it was refused with exit 2)
    quiet = run_spray(["run", "-q", "--config", str(first["cfg"]), "--runs-dir", str(first["runs"])])
    assert quiet.code == EXIT_OK and quiet.status["status"] == "up_to_date", quiet.stderr[-2000:]
    assert all(r["level"] != "info" for r in quiet.logs), quiet.logs[:3]
    assert not quiet.stderr.strip(), quiet.stderr[-2000:]  # nothing at all on a quiet, up-to-date night


def test_a_moved_checkpoint_is_the_same_run(first: dict[str, Any], tmp_path: Path) -> None:
    """The checkpoint's weights are in the model hash: the same file elsewhere is not a new run."""
    raw = yaml.safe_load(Path(first["cfg"]).read_text())
    moved = tmp_path / "elsewhere" / "weights.pt"
    moved.parent.mkdir()
    shutil.copy2(raw["model"]["checkpoint"], moved)
    raw["model"]["checkpoint"] = str(moved)
    cfg = tmp_path / "moved.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    res = run_spray(["run", "--config", str(cfg), "--runs-dir", str(first["runs"])])
    assert res.code == EXIT_OK, res.stderr[-2000:]
    assert res.status["status"] == "up_to_date" and res.status["run_dir"] == str(first["run_dir"])


def test_a_changed_setting_is_named_in_the_status_and_an_owed_alert_is_reported(
    first: dict[str, Any], tmp_path: Path
) -> None:
    """A cluster resolved by a setting (here the flag's size limit) must not read as a shortcut gone."""
    raw = yaml.safe_load(Path(first["cfg"]).read_text())
    raw["scoring"] = {**raw.get("scoring", {}), "flag_max_fraction": 0.5}
    cfg = tmp_path / "changed.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    runs = tmp_path / "runs"
    shutil.copytree(first["runs"], runs, symlinks=True)
    # The job that published the first run was stopped before reporting its exit 10 (a marker written before
    # markers named their audit), and this job has new inputs (an outside check: the alert was then lost for
    # good, the marker left behind); another audit's marker in the shared folder is its own job's business.
    rid = first["summary"]["run_id"][:16]
    (runs / f".alert-pending-{rid}").write_text("10\n")
    other = runs / ".alert-pending-00000000deadbeef"
    other.write_text(json.dumps({"name": "other", "dataset": "other-data"}))
    res = run_spray(["run", "--config", str(cfg), "--runs-dir", str(runs)])
    assert res.code == EXIT_FINDINGS and res.status["status"] != "up_to_date", res.stderr[-2000:]
    assert "scoring.flag_max_fraction: 0.6 → 0.5" in res.status["config_changed"]
    assert any(f"published run {rid} was stopped before it reported" in m for m in res.messages())
    assert [p.name for p in runs.glob(".alert-pending-*")] == [other.name]


def test_another_audit_name_is_another_audit_and_a_rename_is_said(
    first: dict[str, Any], tmp_path: Path
) -> None:
    """An outside check: an audit renamed (or a second audit of the same data in the folder) found the other
    name's run up to date (exit 0, the other name in its summary) and the next night counted from nothing
    without a word."""
    raw = yaml.safe_load(Path(first["cfg"]).read_text())
    raw["name"] = "nightly-test-renamed"
    cfg = tmp_path / "renamed.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    runs = tmp_path / "runs"
    shutil.copytree(first["runs"], runs, symlinks=True)
    res = run_spray(["run", "--config", str(cfg), "--runs-dir", str(runs)])
    assert res.status is not None and res.status["status"] == "published", res.stderr[-2000:]
    run_dir = Path(res.status["run_dir"])
    assert (
        run_dir != first["run_dir"]
        and json.loads((run_dir / "summary.json").read_text())["name"] == raw["name"]
    )
    assert res.code == EXIT_FINDINGS  # a new audit: its suspicious clusters are new
    assert any("If the audit was renamed, set name: 'nightly-test'" in m for m in res.messages())
    again = run_spray(["run", "--config", str(first["cfg"]), "--runs-dir", str(runs)])  # the first audit's
    assert again.code == EXIT_OK and Path(again.status["run_dir"]).name == first["run_dir"].name


def test_a_run_published_by_spray_audit_is_reported_by_the_next_nightly_job(
    first: dict[str, Any], tmp_path: Path
) -> None:
    """An outside check: `spray audit` published the run first, so the nightly job found it up to date and
    exited 0 without a changes section or a notification; its planted shortcut was never reported."""
    runs = tmp_path / "runs"
    audited = run_spray(["audit", "-q", "--config", str(first["cfg"]), "--runs-dir", str(runs)])
    assert audited.code == EXIT_OK, audited.stderr[-2000:]
    (run_dir,) = [p for p in runs.iterdir() if not p.name.startswith(".") and p.name != "latest"]
    changes = json.loads((run_dir / "summary.json").read_text())["changes"]  # the same comparison
    assert changes == first["summary"]["changes"]
    note = tmp_path / "notified.txt"
    cfg = yaml.safe_load(Path(first["cfg"]).read_text())
    cfg["nightly"] = {"notify_command": f"sh -c 'echo \"$0\" >> {note}'"}
    (tmp_path / "n.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    argv = ["run", "--config", str(tmp_path / "n.yaml"), "--runs-dir", str(runs)]
    res = run_spray(argv)
    assert res.code == EXIT_FINDINGS and res.status["status"] == "up_to_date", res.stderr[-2000:]
    assert res.status["n_new"] == len(changes["new"]) > 0
    assert any("was published by spray audit" in m for m in res.messages())
    assert note.read_text().strip().endswith("summary.json")  # notified once
    again = run_spray(argv)
    assert again.code == EXIT_OK and len(note.read_text().splitlines()) == 1


def test_a_job_stopped_after_publishing_has_its_exit_10_reported_by_the_next(
    first: dict[str, Any], tmp_path: Path
) -> None:
    """The marker a stop after publishing leaves (written before publishing, removed once 10 is reported):
    the next job finds the run up to date and still reports 10, once."""
    runs = tmp_path / "runs"
    shutil.copytree(first["runs"], runs, symlinks=True)
    rid = first["summary"]["run_id"][:16]
    (runs / f".alert-pending-{rid}").write_text("10\n")
    argv = ["run", "--config", str(first["cfg"]), "--runs-dir", str(runs)]
    res = run_spray(argv)
    assert res.code == EXIT_FINDINGS and res.status["status"] == "up_to_date", res.stderr[-2000:]
    assert any("stopped before it reported" in m for m in res.messages())
    assert not (runs / f".alert-pending-{rid}").exists()
    assert run_spray(argv).code == EXIT_OK


def test_five_percent_new_images_are_the_only_ones_computed(
    first: dict[str, Any], prepared: Prepared, tmp_path: Path
) -> None:
    # 30 new images (5 % of 600): 10 unstamped Shirts of the data set with the stamp drawn in (more
    # Clever-Hans samples arriving) and 20 mirrored images of other classes. The planted cluster must be
    # reported as grown.
    images = read_idx(prepared.images)
    labels = read_idx(prepared.labels)
    shirts = np.flatnonzero(labels == PLANTED_CLASS)
    planted = set(json.loads((prepared.work / "planted.json").read_text()))
    clean = np.asarray([i for i in shirts if int(i) not in planted])[:10]
    others = np.flatnonzero(labels != PLANTED_CLASS)[::25][:20]
    stamped = plant(images[clean], "corner_square", size=4, margin=1, seed=1).images
    mirrored = images[others][:, :, ::-1]
    write_idx(tmp_path / "img.gz", np.concatenate([images, stamped, mirrored]))
    write_idx(tmp_path / "lab.gz", np.concatenate([labels, labels[clean], labels[others]]))
    notified = tmp_path / "notified.txt"
    notify = f"{sys.executable} -c \"import sys; open({str(notified)!r}, 'w').write(sys.argv[1])\""
    cfg = prepared.config(
        "more", images=tmp_path / "img.gz", labels=tmp_path / "lab.gz", notify_command=notify
    )

    res = run_spray(["run", "--config", str(cfg), "--runs-dir", str(first["runs"]), "--keep-runs", "1"])
    assert res.code == EXIT_FINDINGS, res.stderr[-3000:]
    m = res.merged()
    assert (m["n_computed"], m["n_cached"]) == (30, 600)
    # Only the shards holding new samples did any work: 600 old samples fill shards 0..576 (the last
    # one partly), the 30 new ones are at positions 600..629.
    written = [r for r in res.logs if r["msg"].startswith("shard ") and "written" in r["msg"]]
    assert sum(r["n_computed"] for r in written) == 30 and {r["shard"] for r in written} == {576}
    # The paste test picks targets and donors by content and pairs them by rendezvous hashing, so many
    # pasted images are the same as last night's and come from the cache (their predictions and logits);
    # the rest changed with the class's clusters (new members, new hot-pixel masks). Measured: 43 %.
    p = res.paste()
    assert p["n_paste_cached"] > 0.25 * (p["n_paste_cached"] + p["n_paste_computed"]), p
    assert p["n_paste_computed"] < first["paste_rows"], p  # fewer pastes run than in the first run
    s = json.loads(Path(res.status["summary"]).read_text())
    ch = s["changes"]
    assert ch["previous_run_id"] == first["summary"]["run_id"]
    grown = [c for c in ch["grown"] if c["class_index"] == PLANTED_CLASS]
    assert grown and grown[0]["size"] > grown[0]["previous_size"], ch
    # what changed in the data is said too: 30 new images, nothing removed, modified, moved or copied
    assert (
        res.status["data_changes"]
        == ch["data"]
        == {
            "added": 30,
            "removed": 0,
            "modified": 0,
            "moved": 0,
            "copied": 0,
            "relabelled": 0,
            "unreadable": 0,
        }
    )
    assert notified.read_text() == res.status["summary"]
    # Retention (--keep-runs 1): the previous run is gone, latest points at the new one.
    runs = [p for p in first["runs"].iterdir() if not p.name.startswith(".") and p.name != "latest"]
    assert [p.name for p in runs] == [Path(res.status["run_dir"]).name]
    # The same findings as a fresh run of the same data, to the last bit (a trace of an outside check: paste
    # logits cached in one run's passes and computed in another's differed by ~1e-8 in the paste gains)
    fresh = run_spray(["run", "--config", str(cfg), "--runs-dir", str(tmp_path / "fresh")])
    assert fresh.status is not None and fresh.code == EXIT_FINDINGS, fresh.stderr[-3000:]
    again = json.loads(Path(fresh.status["summary"]).read_text())
    assert again["findings"] == s["findings"]


def test_kill_9_during_batch_stage_then_resume_is_identical(
    first: dict[str, Any], prepared: Prepared, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    status_file = tmp_path / "status.json"
    status_file.write_text('{"exit_code": 0, "status": "published", "run_id": "yesterday"}\n')
    args = [
        *SPRAY,
        "run",
        "--config",
        str(first["cfg"]),
        "--runs-dir",
        str(runs),
        "--status-file",
        str(status_file),
    ]
    err_path = tmp_path / "killed.log"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            args,
            cwd=REPO,
            env=spray_env(SPRAY_TEST_SAMPLE_DELAY="0.01"),
            stderr=err,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            # Kill once a shard is on disk *and* its log line is out: the file is renamed into place
            # just before the line is logged, so killing on the file alone sometimes landed in between
            # (no "written" line to compare with).
            if list(runs.glob(".cache/*/shard-*.npz")) and "written" in err_path.read_text():
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # Yesterday's outcome is not left in the status file: it says a run started and never finished.
    left = json.loads(status_file.read_text())
    assert left["status"] == "running" and left["exit_code"] is None and left["pid"] == proc.pid, left
    finished = sorted(runs.glob(".cache/*/shard-*.npz"))
    assert 1 <= len(finished) < 10, "the kill should land inside the batch stage"
    assert not list(runs.glob("2*")), "nothing may be published by a killed run"
    killed_logs = parse_logs(err_path.read_text())
    done_before = {r["shard"] for r in killed_logs if r["msg"].startswith("shard ") and "written" in r["msg"]}
    assert done_before and len(done_before) <= len(finished)

    res = run_spray(["run", "--config", str(first["cfg"]), "--runs-dir", str(runs)])
    assert res.code == first["res"].code, res.stderr[-3000:]
    reused = {r["shard"] for r in res.logs if "not recomputed" in r["msg"]}
    recomputed = {r["shard"] for r in res.logs if r["msg"].startswith("shard ") and "written" in r["msg"]}
    assert done_before <= reused and not (reused & recomputed)
    assert len(reused) + len(recomputed) == 10
    m = res.merged()
    n_done = sum(min(64, 600 - start) for start in reused)
    assert (m["n_computed"], m["n_cached"]) == (600 - n_done, n_done)
    # Identical to the uninterrupted run in a fresh runs directory: no sample lost or counted twice.
    summary, heat, thumbs = comparable(Path(res.status["run_dir"]))
    assert summary == first["summary"]
    assert heat == first["heat"] and thumbs == first["thumbs"]
    assert not list(runs.glob(".cache/**/*.tmp"))


def test_lock_conflict_exits_75_without_touching_anything(first: dict[str, Any], tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with RunLock(runs):
        before = sorted(p.relative_to(runs) for p in runs.rglob("*"))
        res = run_spray(["run", "--config", str(first["cfg"]), "--runs-dir", str(runs)])
        after = sorted(p.relative_to(runs) for p in runs.rglob("*"))
    assert res.code == EXIT_LOCKED, res.stderr[-2000:]
    assert res.status["status"] == "locked"
    assert any("already running" in r["msg"] for r in res.logs)
    assert before == after == [Path(".lock")]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.update(anlysis={}), "Did you mean 'analysis'"),
        (lambda r: r["batch"].update(shard_size=0), "batch.shard_size"),
        (lambda r: r["model"].update(checkpoint="/nowhere/model.pt"), "model.checkpoint: file or folder"),
        (None, "does not exist"),
    ],
)
def test_bad_configs_exit_2_with_a_clear_message(
    first: dict[str, Any], tmp_path: Path, mutate, message
) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "bad.yaml"
    if mutate is not None:
        raw = yaml.safe_load(first["cfg"].read_text())
        mutate(raw)
        cfg.write_text(yaml.safe_dump(raw))
    t0 = time.perf_counter()
    res = run_spray(["run", "--config", str(cfg)])
    assert res.code == 2, res.stderr[-2000:]
    assert any(message in r["msg"] for r in res.logs if r["level"] == "error"), res.stderr
    assert "Traceback" not in res.stderr
    assert res.status["exit_code"] == 2
    assert time.perf_counter() - t0 < 30  # fails before the model or data are touched


# ---------------------------------------------------------------------------------------------------------
# Exit codes (change detection itself: tests/runs/test_changes.py)


def _report(suspicious: bool, n_new: int, *, up_to_date: bool = False) -> AuditReport:
    f = ClusterFinding(0, "c0", 0, 2, 5, 0.5, 1.0, suspicious, [], {}, ["a"], np.zeros((2, 2), np.float32))
    new = [ClusterChange("0/k2/c0", 0, "c0")] * n_new
    changes = ChangeSet(None, None, new, [], [], [], int(suspicious), ChangeRule(0.3, 0.8, 0.1))
    return AuditReport("r", "", {}, {}, [], [], [f], changes=changes, up_to_date=up_to_date)


def test_exit_codes() -> None:
    susp = _report(True, 0)
    assert exit_code_for(susp, fail_on_findings=False) == EXIT_OK
    assert exit_code_for(susp, fail_on_findings=True) == EXIT_FINDINGS
    assert exit_code_for(_report(True, 0, up_to_date=True), fail_on_findings=True) == EXIT_FINDINGS
    assert exit_code_for(_report(True, 1), fail_on_findings=False) == EXIT_FINDINGS
    assert exit_code_for(_report(True, 1, up_to_date=True), fail_on_findings=False) == EXIT_OK
    assert exit_code_for(_report(False, 0), fail_on_findings=True) == EXIT_OK


def test_a_hanging_notifier_is_killed_with_its_children(tmp_path: Path) -> None:
    """``sh -c 'sleep 60'``: the shell's child holds the output pipe; the whole group is killed at the
    timeout and the job goes on (before, it waited for the child, holding the runs directory's lock)."""
    from spray.nightly import notify

    summary = tmp_path / "summary.json"
    summary.write_text("{}")
    t0 = time.monotonic()
    assert notify("sh -c 'sleep 60; true'", summary, env={}, timeout=1.0) is None
    assert time.monotonic() - t0 < 10
    done = tmp_path / "done.txt"
    assert notify(f"sh -c 'echo \"$0\" > {done}'", summary, env={}, timeout=10.0) == 0
    assert done.read_text().strip() == str(summary)


def test_usage_errors_still_write_the_status_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A scheduler reads the status line: argparse's refusal (exit 2) writes it too, and the status file."""
    from spray.cli import main

    status = tmp_path / "st.json"
    with pytest.raises(SystemExit) as stop:
        main(["run", "--config", "x.yaml", "--keep-runs", "0", "--status-file", str(status)])
    assert stop.value.code == 2
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["exit_code"] == 2 and line["status"] == "failed"
    assert json.loads(status.read_text()) == line
    with pytest.raises(SystemExit):
        main(["audit", "--config", "run", "--nope"])  # another command: no status line
    assert capsys.readouterr().out == ""


def test_a_class_with_no_readable_sample_is_not_analysed_never_resolved(
    first: dict[str, Any], prepared: Prepared, tmp_path: Path
) -> None:
    """Tonight the shortcut's class has no sample (a broken sync): its cluster has no verdict, and the
    status line says so, instead of counting it as resolved with exit 0."""
    runs = tmp_path / "runs"
    shutil.copytree(first["runs"], runs, symlinks=True)
    images, labels = read_idx(prepared.images), read_idx(prepared.labels)
    keep = labels != PLANTED_CLASS
    write_idx(tmp_path / "img.gz", images[keep])
    write_idx(tmp_path / "lab.gz", labels[keep])
    cfg = prepared.config("no-shirts", images=tmp_path / "img.gz", labels=tmp_path / "lab.gz")
    res = run_spray(["run", "--config", str(cfg), "--runs-dir", str(runs)])
    assert res.code == EXIT_OK, res.stderr[-3000:]
    assert res.status is not None
    assert any(k.startswith(f"{PLANTED_CLASS}/") for k in res.status["not_analysed"]), res.status
    ch = json.loads(Path(res.status["summary"]).read_text())["changes"]
    assert not [c for c in ch["resolved"] if c["class_index"] == PLANTED_CLASS], ch
    assert "is not resolved, there is no verdict" in res.stderr


def test_a_relabelled_image_is_counted_in_the_data_changes(
    first: dict[str, Any], prepared: Prepared, tmp_path: Path
) -> None:
    """An outside check: labels fixed in the labels file (same ids, same images) gave a new run whose data
    changes said 0 added, removed, modified, moved and copied: nothing to explain why the run changed."""
    runs = tmp_path / "runs"
    shutil.copytree(first["runs"], runs, symlinks=True)
    # the newest run of the first data (another test may have published one of more images since)
    assert run_spray(["run", "--config", str(first["cfg"]), "--runs-dir", str(runs)]).code in (
        EXIT_OK,
        EXIT_FINDINGS,
    )
    labels = read_idx(prepared.labels).copy()
    fixed = np.flatnonzero(labels == 0)[:4]
    labels[fixed] = 1
    write_idx(tmp_path / "lab.gz", labels)
    cfg = prepared.config("relabelled", labels=tmp_path / "lab.gz")
    res = run_spray(["run", "--config", str(cfg), "--runs-dir", str(runs)])
    assert res.code in (EXIT_OK, EXIT_FINDINGS), res.stderr[-3000:]
    assert res.status is not None
    want = {
        "added": 0,
        "removed": 0,
        "modified": 0,
        "moved": 0,
        "copied": 0,
        "relabelled": 4,
        "unreadable": 0,
    }
    assert res.status["data_changes"] == want, res.status
    assert any("4 relabelled" in m for m in res.messages())


def test_the_run_command_leaves_at_once_after_reporting(monkeypatch: pytest.MonkeyPatch) -> None:
    """A job killed during the interpreter's shutdown (most of a second) had already removed its marker of an
    unreported exit 10 while its scheduler saw the kill: `spray run` now exits with os._exit after flushing;
    every other command exits normally."""
    import spray.cli as cli

    exits: list[tuple[str, int]] = []

    def fake_exit(code: int) -> None:
        exits.append(("os._exit", code))
        raise SystemExit(code)

    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    for command, code in (("run", 10), ("audit", 0)):
        monkeypatch.setattr(cli, "main", lambda c=command, k=code: (setattr(cli, "_LAST_COMMAND", c), k)[1])
        with pytest.raises(SystemExit) as stop:
            cli.entry()
        assert stop.value.code == code
    assert exits == [("os._exit", 10)]


def test_the_same_data_under_another_dataset_key_is_compared_with_its_old_runs_and_said_aloud(
    first: dict[str, Any], tmp_path: Path
) -> None:
    """Data moved, and the dataset key taken from its path changed (here: data.name renamed): found in an
    outside check, every finding was reported new (exit 10) and the flags of the old key silently no longer
    applied. The run compares with the old key's run by content and says what to set."""
    runs = tmp_path / "runs"
    shutil.copytree(first["runs"], runs, symlinks=True)
    raw = yaml.safe_load(first["cfg"].read_text())
    raw["data"]["name"] = "planted-fashion-moved"
    cfg = tmp_path / "moved.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    res = run_spray(["run", "--config", str(cfg), "--runs-dir", str(runs)])
    assert res.code == EXIT_OK, res.stderr[-3000:]
    warned = [m for m in res.messages() if "holds the same content" in m]
    assert warned and "set data.name: 'planted-fashion'" in warned[0]
    # another audit (another name) on the same content is not "the data moved": its findings are new
    other = tmp_path / "other-runs"
    shutil.copytree(first["runs"], other, symlinks=True)
    raw["name"] = "another-audit"
    cfg.write_text(yaml.safe_dump(raw))
    res = run_spray(["run", "--config", str(cfg), "--runs-dir", str(other)])
    assert res.code == EXIT_FINDINGS and not any("holds the same content" in m for m in res.messages())
    # a damaged run under the old key is passed over, never the end of the run
    damaged = tmp_path / "damaged-runs"
    shutil.copytree(first["runs"], damaged, symlinks=True)
    runs_there = list(damaged.glob("2*/samples.parquet"))  # other tests of this module may have added runs
    assert runs_there
    for parquet in runs_there:
        parquet.write_bytes(b"x")
    raw["name"] = "nightly-test"
    cfg.write_text(yaml.safe_dump(raw))
    res = run_spray(["run", "--config", str(cfg), "--runs-dir", str(damaged)])
    assert res.code == EXIT_FINDINGS, res.stderr[-3000:]
    assert any("is unreadable and is passed over" in m for m in res.messages())


def test_force_and_a_return_to_earlier_inputs_compare_with_the_newest_run(
    first: dict[str, Any], tmp_path: Path
) -> None:
    """``--force`` on unchanged inputs changes nothing (no false "new"); inputs that go back to those of an
    older run are analysed again, so that the newest run (``latest``, the dashboard, the next comparison)
    describes them."""
    runs = tmp_path / "runs"
    shutil.copytree(first["runs"], runs, symlinks=True)
    base = ["run", "--config", str(first["cfg"]), "--runs-dir", str(runs)]
    forced = run_spray([*base, "--force"])
    assert forced.code == EXIT_OK, forced.stderr[-2000:]
    assert forced.status["n_new"] == 0, forced.status
    other_cfg = tmp_path / "other.yaml"
    raw = yaml.safe_load(first["cfg"].read_text())
    raw["seed"] = 1  # another run of the same audit (name and dataset key)
    other_cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    other = run_spray(["run", "--config", str(other_cfg), "--runs-dir", str(runs)])
    assert other.code in (EXIT_OK, EXIT_FINDINGS), other.stderr[-2000:]
    back = run_spray(base)
    assert back.code in (EXIT_OK, EXIT_FINDINGS), back.stderr[-2000:]
    assert back.status["status"] != "up_to_date"
    assert any("are those of run" in m for m in back.messages())
    newest = Path(back.status["run_dir"])
    assert (runs / "latest").resolve() == newest.resolve()
    summary = json.loads((newest / "summary.json").read_text())
    assert summary["run_id"] == first["summary"]["run_id"]
    assert summary["changes"]["previous_run"] == Path(other.status["run_dir"]).name


def test_an_owed_alert_whose_run_retention_removed_is_still_reported(tmp_path: Path) -> None:
    """A review: with keep_runs 1 the stopped job's run is pruned before the next job looks for it, and its
    marker was dropped as 'never published'; markers now name their audit and are owed without the run."""
    from spray.cli.run import _owed_earlier
    from spray.nightly import pending_marker as _pending

    runs = tmp_path / "runs"
    runs.mkdir()
    mine = _pending(runs, "a" * 64)
    mine.write_text(json.dumps({"name": "nightly", "dataset": "ds"}))
    theirs = _pending(runs, "b" * 64)
    theirs.write_text(json.dumps({"name": "other", "dataset": "ds"}))
    current = _pending(runs, "c" * 64)
    current.write_text(json.dumps({"name": "nightly", "dataset": "ds"}))
    assert _owed_earlier(runs, current, "nightly", "ds") == [("a" * 16, None)]
    assert not mine.exists() and theirs.exists() and current.exists()
    # a review: a hand audit with other settings (same name) is not the nightly job's to report
    probe = _pending(runs, "d" * 64)
    probe.write_text(json.dumps({"name": "nightly", "dataset": "ds", "by": "spray audit", "config": "other"}))
    same = _pending(runs, "e" * 64)
    same.write_text(json.dumps({"name": "nightly", "dataset": "ds", "by": "spray audit", "config": "mine"}))
    assert _owed_earlier(runs, current, "nightly", "ds", "mine") == [("e" * 16, "spray audit")]
    assert probe.exists() and not same.exists()


def test_a_run_that_fails_before_publishing_owes_no_alert(tmp_path: Path) -> None:
    """An outside check: a write stage that failed (disk full, a stop) left its run's alert marker, and the
    next job exited 10 and notified for 'run f4c8...' that never existed, with nothing suspicious itself."""
    from spray.nightly import owed_once_published
    from spray.nightly import pending_marker as _pending
    from spray.runs.publish import run_dir_name

    runs = tmp_path / "runs"
    runs.mkdir()
    earlier = _pending(runs, "e" * 64)
    earlier.write_text("{}")  # a stopped job's, published: still owed
    with pytest.raises(OSError), owed_once_published(runs) as written:
        _pending(runs, "a" * 64).write_text("{}")
        written.append(_pending(runs, "a" * 64))  # what before_write adds
        _pending(runs, "h" * 64).write_text("{}")  # a review: another audit's, written meanwhile, is its own
        raise OSError(28, "No space left on device")
    assert not _pending(runs, "a" * 64).exists() and earlier.exists() and _pending(runs, "h" * 64).exists()
    # failing after the run is in place (retention, the flag check) keeps its marker: the run exists
    with pytest.raises(RuntimeError), owed_once_published(runs) as written:
        _pending(runs, "b" * 64).write_text("{}")
        written.append(_pending(runs, "b" * 64))
        folder = runs / run_dir_name("b" * 64)
        folder.mkdir()
        (folder / "summary.json").write_text("{}")
        raise RuntimeError("after publishing")
    assert _pending(runs, "b" * 64).exists()


def test_progress_bars_stay_out_of_json_log_lines_in_a_file(caplog: pytest.LogCaptureFixture) -> None:
    """An outside check: with --progress and stderr in a file, 11 of 70 JSON log lines began with bar text
    (a bar redraws with a carriage return), which jq could not read."""
    import argparse

    from spray.cli.run import _bars

    assert not sys.stderr.isatty()  # pytest captures it, as a scheduler's log file would
    with caplog.at_level(logging.WARNING):
        assert _bars(argparse.Namespace(progress=True, log_format="json")) is False
    assert "no bars are drawn among the JSON log lines" in caplog.text
    assert _bars(argparse.Namespace(progress=True, log_format="text")) is True
    assert _bars(argparse.Namespace(progress=False, log_format="text")) is False

"""pipelines/spray-torchrun.sh: spray's own exit code through torchrun, and a rank 0 killed before its status."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

WRAPPER = Path(__file__).resolve().parent.parent / "pipelines" / "spray-torchrun.sh"
# A stand-in for torchrun: writes the given status into the last --status-file (as argparse takes the last
# one given) and exits with the given code.
FAKE = """#!/bin/bash
out=""
while [[ $# -gt 0 ]]; do
  if [[ "$1" == "--status-file" ]]; then out="$2"; fi
  if [[ "$1" == --status-file=* ]]; then out="${1#--status-file=}"; fi
  shift
done
[[ -n "$out" && -n "$FAKE_STATUS" ]] && printf '%s\\n' "$FAKE_STATUS" > "$out"
exit "$FAKE_RC"
"""


@pytest.mark.parametrize(
    ("status", "rc", "code", "says"),
    [
        ('{"exit_code": 10, "status": "published"}', 1, 10, ""),  # torchrun's 1 hides spray's 10
        ('{"exit_code": null, "status": "running", "pid": 7}', 137, 137, "without a final status"),
        ('{"exit_code": null, "status": "running", "pid": 7}', 0, 1, "without a final status"),
    ],
)
def test_the_wrapper_returns_sprays_code_or_says_rank_0_was_killed(
    tmp_path: Path, status: str, rc: int, code: int, says: str
) -> None:
    fake = tmp_path / "torchrun"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    env = {**os.environ, "SPRAY_TORCHRUN": str(fake), "FAKE_STATUS": status, "FAKE_RC": str(rc)}
    done = subprocess.run(
        ["bash", str(WRAPPER), "2", "--config", "x.yaml"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == code, done.stderr
    assert says in done.stderr


def test_the_users_own_status_file_and_no_python3_on_path(tmp_path: Path) -> None:
    """An outside check: with the user's own --status-file (a documented option) the wrapper read its own,
    empty file and exited 1 for a published 10; and it needed python3 on PATH (a cron job's may have none)."""
    import shutil
    import sys

    venv = tmp_path / "venv-bin"
    venv.mkdir()
    fake = venv / "torchrun"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    (venv / "python").symlink_to(sys.executable)  # the Python beside torchrun, as in a virtual environment
    tools = tmp_path / "tools"  # a PATH with the shell tools the wrapper uses and no python3
    tools.mkdir()
    for tool in ("bash", "dirname", "mktemp", "rm", "cat", "env"):
        found = shutil.which(tool)
        assert found is not None
        (tools / tool).symlink_to(found)
    mine = tmp_path / "mine.json"
    env = {
        "PATH": str(tools),
        "HOME": str(tmp_path),
        "SPRAY_TORCHRUN": str(fake),
        "FAKE_STATUS": '{"exit_code": 10, "status": "published"}',
        "FAKE_RC": "1",
    }
    for given in (["--status-file", str(mine)], [f"--status-file={mine}"]):
        done = subprocess.run(
            [str(tools / "bash"), str(WRAPPER), "2", "--config", "x.yaml", *given],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 10, done.stderr
        assert mine.read_text().strip() == env["FAKE_STATUS"]  # the user's file is kept
        mine.unlink()
    # a review: torchrun failing before rank 0 wrote "running" (a broken venv) left yesterday's file, whose
    # exit code the wrapper returned
    mine.write_text('{"exit_code": 0, "status": "published"}')
    done = subprocess.run(
        [str(tools / "bash"), str(WRAPPER), "2", "--config", "x.yaml", "--status-file", str(mine)],
        env={**env, "FAKE_STATUS": "", "FAKE_RC": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr


# A stand-in for torchrun that runs until stopped: on SIGTERM it writes spray's "terminated" status and exits.
SLOW = """#!/usr/bin/env python3
import signal, sys, time
out = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--status-file=")) if any(
    a.startswith("--status-file=") for a in sys.argv) else sys.argv[sys.argv.index("--status-file") + 1]
open(out, "w").write('{"exit_code": null, "status": "running"}')
def stop(*_):
    open(out, "w").write('{"exit_code": 143, "status": "terminated"}')
    sys.exit(1)
signal.signal(signal.SIGTERM, stop)
open(out + ".started", "w").write("")
time.sleep(60)
open(out, "w").write('{"exit_code": 10, "status": "published"}')
"""


@pytest.mark.parametrize("sig", ["TERM", "INT"])
def test_a_stop_signal_to_the_wrapper_stops_the_job(tmp_path: Path, sig: str) -> None:
    """An outside check: SIGTERM to the wrapper alone returned 143 at once while torchrun and its ranks went
    on, held the lock and published with exit 10, which nobody read (as PID 1 the signal was ignored)."""
    import signal
    import sys
    import time

    fake = tmp_path / "torchrun"
    fake.write_text(SLOW.replace("#!/usr/bin/env python3", f"#!{sys.executable}"))
    fake.chmod(0o755)
    status = tmp_path / "status.json"
    env = {**os.environ, "SPRAY_TORCHRUN": str(fake)}
    # A shell that starts with SIGINT ignored cannot trap it (POSIX): a suite run in the background of a
    # non-interactive shell (nohup ... &) passes that on, so the wrapper gets the default back, as from a terminal.
    job = subprocess.Popen(
        ["bash", str(WRAPPER), "2", "--config", "x.yaml", "--status-file", str(status)],
        env=env, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not (tmp_path / "status.json.started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    job.send_signal(getattr(signal, f"SIG{sig}"))
    assert job.wait(timeout=30) == 143  # the job's own "terminated", read from its status
    assert '"terminated"' in status.read_text()
    time.sleep(0.5)
    assert '"published"' not in status.read_text()  # the stand-in did not go on to publish


def test_a_second_job_leaves_the_running_jobs_status_file_alone(tmp_path: Path) -> None:
    """An outside check: a second job with the same --status-file (locked out) wrote "locked" into it, and
    when the first job's rank 0 was killed later its wrapper returned 75 instead of 1; a second wrapper
    emptied the file and the running job's rank records."""
    import json
    import socket
    import sys

    from spray.cli.rank_status import held_by_another_job

    status = tmp_path / "status.json"
    # a stand-in for the running job: a live process whose command line names spray
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(30)", "spray"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert sleeper.stdout is not None and sleeper.stdout.readline().strip() == "up"  # its command line is set
    try:
        record = {"exit_code": None, "status": "running", "pid": sleeper.pid, "host": socket.gethostname()}
        status.write_text(json.dumps(record))
        (tmp_path / "status.json.rank1").write_text(json.dumps({**record, "rank": 1}))
        assert held_by_another_job(str(status)) == sleeper.pid
        fake = tmp_path / "torchrun"
        fake.write_text(FAKE)
        fake.chmod(0o755)
        env = {**os.environ, "SPRAY_TORCHRUN": str(fake), "FAKE_STATUS": '{"exit_code": 75}', "FAKE_RC": "1"}
        done = subprocess.run(
            ["bash", str(WRAPPER), "2", "--config", "x.yaml", "--status-file", str(status)],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 75 and "belongs to a running spray job" in done.stderr
        assert json.loads(status.read_text()) == record and (tmp_path / "status.json.rank1").exists()
        # spray run itself (without the wrapper) leaves it alone too, whatever its own outcome
        from spray.cli import main

        assert main(["run", "--config", str(tmp_path / "missing.yaml"), "--status-file", str(status)]) == 2
        assert json.loads(status.read_text()) == record
    finally:
        sleeper.kill()
        sleeper.wait()
    assert held_by_another_job(str(status)) is None  # its job is gone: the file is free
    # a review: a pid reused by another program is no holder, and a file that is no record is no crash
    other = subprocess.Popen(["sleep", "30"])
    while not Path(f"/proc/{other.pid}/cmdline").read_bytes().startswith(b"sleep"):  # exec'd: its own line
        pass
    try:
        status.write_text(json.dumps({**record, "pid": other.pid}))
        assert held_by_another_job(str(status)) is None
    finally:
        other.kill()
        other.wait()
    for junk in ("null", "[1]", '"x"', "{"):
        status.write_text(junk)
        assert held_by_another_job(str(status)) is None


def test_the_wrapper_does_not_empty_a_file_that_is_no_status_record(tmp_path: Path) -> None:
    """An outside check: ``--status-file audit.yaml`` replaced the config; the wrapper emptied it even before
    spray could refuse it, and made a missing folder's file."""
    fake = tmp_path / "torchrun"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    config = tmp_path / "audit.yaml"
    config.write_text("name: mine\n")
    env = {**os.environ, "SPRAY_TORCHRUN": str(fake), "FAKE_STATUS": '{"exit_code": 0, "status": "x"}'}
    for given, says in (
        (config, "not a spray status record"),
        (tmp_path / "no" / "s.json", "does not exist"),
    ):
        done = subprocess.run(
            ["bash", str(WRAPPER), "2", "--config", str(config), "--status-file", str(given)],
            env={**env, "FAKE_RC": "0"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2 and says in done.stderr, done.stderr
    assert config.read_text() == "name: mine\n" and not (tmp_path / "no").exists()

"""``spray.cli.logs``: what reaches stderr is log records, JSON lines under ``--log-format json``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spray.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_an_exception_python_cannot_raise_is_one_log_record() -> None:
    """An outside check: a SIGTERM to the nightly job's process group (systemd, Kubernetes) killed the
    DataLoader workers, and the DataLoader's ``__del__`` printed a raw traceback of ~20 lines among the JSON
    lines on stderr."""
    code = (
        "import sys\n"
        "from spray.cli.logs import log_unraisable, setup_logging\n"
        "setup_logging(json_logs=True)\n"
        "sys.unraisablehook = log_unraisable  # as spray.cli.main sets it while a command runs\n"
        "class Workers:\n"
        "    def __del__(self):\n"
        "        raise RuntimeError('DataLoader worker (pid 1) is killed by signal: Terminated.')\n"
        "w = Workers()\n"
        "del w\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    record = json.loads(lines[0])
    assert record["level"] == "warning" and "killed by signal: Terminated" in record["msg"]
    assert "Workers.__del__" in record["msg"]


def test_the_hook_is_spray_s_only_while_a_command_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """A review: setup_logging replaced sys.unraisablehook for the whole process, so pytest's own hook (and an
    application's that calls spray.cli.main) was gone after one command."""
    before = sys.unraisablehook
    assert main(["flags", "list", "--db", str(REPO / "no-such.sqlite")]) != 0
    assert sys.unraisablehook is before


def test_sigterm_stops_any_command_with_a_log_line_and_143(tmp_path: Path) -> None:
    """An outside check: SIGTERM to spray correct ended it unsaid (the shell's 143, no log line), unlike spray
    run; every command now unwinds on it as on Ctrl-C."""
    import signal
    import time

    code = (
        "import sys, time; from spray.cli import main, correct\n"
        "def slow(args):\n"
        "    print('started', flush=True); time.sleep(30); return 0\n"
        "correct.run_command = slow\n"
        "from spray.cli import build_parser\n"
        "sys.exit(main(['correct', '--config', 'x.yaml']))\n"
    )
    job = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)  # fmt: skip
    assert job.stdout is not None and job.stdout.readline().strip() == "started"
    time.sleep(0.2)
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=30)
    assert job.returncode == 143, err
    assert "terminated (SIGTERM); its training checkpoints are kept" in err and "Traceback" not in err


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_every_line_under_torchrun_says_its_rank(
    fmt: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outside check: under torchrun the text format had no rank (both ranks printed identical lines),
    and the JSON lines before the audit started (a config error) had no rank field."""
    import logging

    from spray.cli.logs import configure_run_logging
    from spray.runlog import RUN_CONTEXT

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_run_logging(False, fmt)
        logging.getLogger("spray.test").warning("config error before the audit")
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert ("[rank 1]" in line) if fmt == "text" else (json.loads(line)["rank"] == 1)
    finally:
        RUN_CONTEXT.pop("rank", None)
        root.handlers[:] = handlers
        root.setLevel(level)


def test_other_ranks_do_not_repeat_the_data_sources_setup_warnings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every torchrun rank lists the same data, and printed each data note once per rank; rank 0's stay, and
    a rank's own warnings of the batch stage (its unreadable files) stay."""
    import logging

    from spray.cli.logs import configure_run_logging
    from spray.runlog import RUN_CONTEXT

    monkeypatch.setenv("WORLD_SIZE", "2")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    data = logging.getLogger("spray.data.folder")
    try:
        for rank, stage, kept in ((1, "setup", False), (0, "setup", True), (1, "batch", True)):
            monkeypatch.setenv("RANK", str(rank))
            root.handlers[:] = handlers
            configure_run_logging(False, "text")
            RUN_CONTEXT["stage"] = stage
            data.warning("3 of 8 probed files carry an EXIF orientation")
            logging.getLogger("spray.audit").warning("another warning")
            err = capsys.readouterr().err
            assert ("EXIF orientation" in err) == kept and "another warning" in err, (rank, stage, err)
    finally:
        RUN_CONTEXT.pop("rank", None)
        RUN_CONTEXT.pop("stage", None)
        root.handlers[:] = handlers
        root.setLevel(level)


def test_faiss_falling_back_from_its_avx512_build_is_not_logged() -> None:
    """An outside check: every audit logged "faiss.loader: Could not load library with AVX512 support" three
    times at INFO, which reads as a failure."""
    import logging

    from spray.cli.logs import setup_logging

    setup_logging()
    assert not logging.getLogger("faiss.loader").isEnabledFor(logging.INFO)
    assert logging.getLogger("spray").isEnabledFor(logging.INFO)

"""A job stopped while its notifier runs (an outside check): the notifier, in a session of its own, went on
and sent the alert, and the next job (the marker stays) sent it again."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from types import FrameType

import pytest

from spray.cli.run import Terminated
from spray.nightly import notify


def test_a_stop_while_notifying_kills_the_notifier(tmp_path: Path) -> None:
    sent = tmp_path / "sent"

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGALRM, stop)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with pytest.raises(Terminated):
            notify(f"sh -c 'sleep 1.5; echo sent > {sent}' notifier", tmp_path / "summary.json", env={})
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    time.sleep(2.0)
    assert not sent.exists()

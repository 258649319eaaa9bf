"""Frame widths a heatmap is too small for are said, once per heatmap size (they were dropped silently)."""

from __future__ import annotations

import logging

import pytest

from spray.analysis.scoring import signals


def test_frames_too_wide_for_the_heatmaps_are_said_once(caplog: pytest.LogCaptureFixture) -> None:
    signals._SAID_FRAMES.discard((6, 6))
    with caplog.at_level(logging.WARNING, logger="spray.analysis.scoring.signals"):
        signals._say_untested_frames([3], 6, 6)
        signals._say_untested_frames([3], 6, 6)  # the next class of the same run
        signals._say_untested_frames([], 28, 28)
    assert caplog.text.count("scoring.frame_widths [3]: not tested on 6x6 heatmaps") == 1
    assert "28x28" not in caplog.text

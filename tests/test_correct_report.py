"""What report.html and the command line's table say of a correction record (built in memory: fast)."""

from __future__ import annotations

from spray.correct.html import render_correction_html
from tests.correction_records import reaudit, record, scores


def test_not_judged_gives_the_reaudits_own_reason() -> None:
    """An outside check: a ViT corrected at patch_embed (82.9 % → 13.7 % clean accuracy) was not judged because
    the re-audit's checks doubted the collapsed model, yet the report said "not flagged before"."""
    doubted = record(
        after=scores(clean=0.137), rea=reaudit(True, False, ["The model gives the true label for 14 %."])
    )
    page = render_correction_html(doubted)
    assert "not flagged before" not in page
    assert "not judged: the re-audit&#x27;s heatmaps of the corrected model may show no shortcut" in page
    never = render_correction_html(record(rea=reaudit(False, False)))
    assert "not judged: it was not flagged before either" in never
    assert "not judged" not in render_correction_html(record(rea=reaudit(True, False)))


def test_the_lost_clean_accuracy_is_warned_of_in_the_report() -> None:
    """An outside check: four corrections lost 5.4 to 69.2 points of clean accuracy; the console warned, the
    report only marked the goal "not met"."""
    lost = record(method="pclarc", after=scores(clean=0.137, flip=0.05, share=0.05), rea=reaudit(True, False))
    assert lost.warnings()[0].startswith("the corrected model lost 69.20 points of clean accuracy")
    assert "Warning: the corrected model lost 69.20 points of clean accuracy; P-ClArC trains nothing" in (
        render_correction_html(lost)
    )
    kept = record(method="pclarc", after=scores(clean=0.835, flip=0.05, share=0.05), rea=reaudit(True, False))
    assert "lost" not in render_correction_html(kept)

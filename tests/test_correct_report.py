"""What report.html and the command line's table say of a correction record (built in memory: fast)."""

from __future__ import annotations

import json
from pathlib import Path

from spray.correct.html import render_correction_html
from tests.correction_records import reaudit, record, scores


def test_not_judged_gives_the_reaudits_own_reason() -> None:
    """An outside check: a ViT corrected at patch_embed (82.9 % → 13.7 % clean accuracy) was not judged because
    the re-audit's checks doubted the collapsed model, yet the report said "not flagged before"."""
    doubted = record(
        after=scores(clean=0.137), rea=reaudit(True, False, ["The model gives the true label for 14 %."])
    )
    page = render_correction_html(doubted)
    assert "not flagged before" not in page and "not measured" not in page
    assert "not judged: the re-audit&#x27;s heatmaps of the corrected model may show no shortcut" in page
    never = render_correction_html(record(rea=reaudit(False, False)))
    assert (
        "no longer flags the finding (it was not flagged before either): <span class='small'>not judged"
        in never
    )
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


def _rr_advice(clean_after: float, still_flagged: bool, held: float, flip: float = 0.3) -> str:
    """Every warning of an RR-ClArC record (clean accuracy 82.9 % before, flip rate 60 %) as one text."""
    from spray.correct.subspace import SubspaceSummary

    rec = record(
        after=scores(clean=clean_after, flip=flip, share=0.3),
        rea=reaudit(True, still_flagged),
        subspace=SubspaceSummary(1, held, held, 400),
    )
    return " ".join(rec.warnings())


def test_rrclarc_advice_turns_each_setting_one_way() -> None:
    """An outside check: RR-ClArC at a ViT's blocks.0 lost accuracy and kept the finding flagged, and the
    advice said both "a lower correction.rr_lambda" and "a larger correction.rr_lambda", while its CAV held
    48 % of the paste's effect and nothing named correction.rr_directions."""
    both = _rr_advice(0.75, True, 0.48)
    assert "lower correction.rr_lambda" not in both and "larger correction.rr_lambda" not in both
    assert "no correction.rr_lambda helps both" in both
    assert "correction.rr_directions, now 1: the CAV holds only 48 % of the paste's effect" in both
    kept = _rr_advice(0.83, True, 0.9)  # accuracy kept, the finding still flagged: correct harder
    assert "a larger correction.rr_lambda" in kept and "lower correction.rr_lambda" not in kept
    assert "rr_directions" not in kept  # the CAV holds most of the effect
    lost = _rr_advice(0.75, False, 0.48, flip=0.08)  # the finding cleared at a cost: correct less
    # no longer flagged, but pasting still flips 30 % (null 5 %): the shortcut acts, so no "lower" either
    acting = _rr_advice(0.75, False, 0.48)
    assert "still acts" in acting and "lower correction.rr_lambda" not in acting
    assert "a lower correction.rr_lambda" in lost and "larger correction.rr_lambda" not in lost


def test_a_flip_rate_of_0_before_and_after_was_measured() -> None:
    """An outside check: a paste that flipped nothing before or after was summed up as "flip rate not
    measured"."""
    from types import SimpleNamespace

    from spray.cli.correct import _table

    rec = record(before=scores(flip=0.0), after=scores(flip=0.0, share=0.05), rea=reaudit(True, False))
    page = render_correction_html(rec)
    assert "paste flip rate 0 before and after: nothing to remove (goal: down ≥ 90%): " in page
    assert "nothing to remove</span>" in page and "not measured" not in page
    table = _table(SimpleNamespace(record=rec, up_to_date=False, folder=Path("c")))
    assert "flip rate 0 before and after: nothing to remove, relevance share down 87.5 %" in table
    risen = render_correction_html(record(before=scores(flip=0.0), after=scores(flip=0.2)))
    assert "paste flip rate up from 0 to 20.0 %" in risen


def test_a_region_term_that_did_not_run_is_said(tmp_path: Path) -> None:
    """An outside check: RR-ClArC at a ViT's token layer dropped its region term (the log said so), while
    correction.json's parameters and report.html showed rr_region_weight 30 as if it had run."""
    from types import SimpleNamespace

    from spray.cli.correct import _table
    from spray.correct.record import CorrectionRecord

    rec = record(rea=reaudit(True, False))  # rr_region_weight 30, no footprint: the term was dropped
    said = "the region term (correction.rr_region_weight 30) did not run: layer blocks.11 has no (h, w) grid"
    assert said in render_correction_html(rec)
    assert f"not penalised: {said}" in _table(SimpleNamespace(record=rec, up_to_date=False, folder=tmp_path))
    rec.write(tmp_path)
    assert json.loads((tmp_path / "correction.json").read_text())["region_term_ran"] is False
    assert CorrectionRecord.read(tmp_path) == rec  # the derived field does not come back as a field
    off = record(parameters={"rr_region_weight": 0.0})
    assert off.region_term_skipped() == "" and "did not run" not in render_correction_html(off)
    assert record(method="pclarc").region_term_skipped() == ""


def test_a_finding_no_longer_flagged_whose_samples_still_cluster_is_warned_of() -> None:
    """An outside check: after P-ClArC at a ViT's first block the re-audit said "no longer flagged" while its
    top-ranked Shirt cluster held 112 of the 114 planted images with 28 % of its relevance on the stamp."""
    import dataclasses

    # the after-match overlaps by 0.9; the flip rate fell short of its goal (0.6 -> 0.08, null 0.05) and the
    # relevance share by half only (a flip rate still well over the null is hidden_warning's)
    lingering = record(method="pclarc", after=scores(flip=0.08, share=0.3), rea=reaudit(True, False))
    said = [w for w in lingering.warnings() if "still form cluster" in w]
    assert said and "overlap 0.90, rank 1" in said[0] and "not by the flag alone" in said[0]
    assert "still form cluster" in render_correction_html(lingering)
    rea = reaudit(True, False)
    gone = dataclasses.replace(rea, after=dataclasses.replace(rea.after, jaccard=0.1))
    assert not [
        w for w in record(after=scores(flip=0.3, share=0.3), rea=gone).warnings() if "still form" in w
    ]
    # the paste test and the relevance share say the behaviour is gone: a group kept together is no alarm
    assert not [w for w in record(rea=rea).warnings() if "still form cluster" in w]
    assert not [w for w in record(rea=reaudit(True, True)).warnings() if "still form cluster" in w]


def test_flags_that_mark_no_shortcut_are_warned_of_in_the_record_not_with_a_moved_stamp() -> None:
    """An outside check: flags on a finding whose paste flipped 0.35 % (null 0.06 %) got the console's
    "acts no more than any pixels" warning only (not report.html, not the dashboard), and report.html warned
    of a stamp that moves, from a 0.93 % flip at the opposite place that the correction had not changed."""
    from dataclasses import replace

    before = replace(scores(flip=0.0035), flip_null=0.0006, flip_moved=0.0093)
    after = replace(scores(flip=0.0035), flip_null=0.0006, flip_moved=0.0093)
    weak = record(method="pclarc", before=before, after=after)
    said = weak.warnings()
    assert said[0].startswith(
        "before the correction, pasting the flagged pixels flips 0.35 % of the other classes' images and"
    )
    assert not any("opposite place" in w for w in said)
    assert (
        "Warning: before the correction, pasting the flagged pixels flips 0.35 %"
        in render_correction_html(weak)
    )
    # a real shortcut that the correction removed in place only is still warned of as one that moves
    strong = record(
        method="pclarc",
        before=replace(scores(flip=0.6), flip_null=0.01, flip_moved=0.6),
        after=replace(scores(flip=0.05), flip_null=0.01, flip_moved=0.5),
    )
    assert any("opposite place" in w for w in strong.warnings())
    assert not strong.weak_shortcut_warning()


def test_a_class_lost_by_fine_tuning_gets_advice_beyond_lambda() -> None:
    """An outside check: the class-accuracy warning said "try a smaller lambda" where the class was lost as
    much at rr_lambda 1e-6 with the region term off: the fine-tuning itself cost it."""
    from dataclasses import replace

    lost = record(after=replace(scores(flip=0.05, share=0.05), class_accuracy=0.6), rea=reaudit(True, False))
    text = lost.class_accuracy_warning()
    assert "may have fallen because it answers shirt less" in text
    assert "fewer correction.epochs or a smaller lr" in text


def test_the_flags_runs_warnings_reach_the_report() -> None:
    """An outside check: "the flags were set on run …, which audited other model weights" was logged only."""
    note = "the flags were set on run 0123456789ab, which audited other model weights; check them"
    page = render_correction_html(record(flag_notes=[note]))
    assert f"Warning: {note}." in page
    assert "flags were set on run" not in render_correction_html(record())


def test_a_shortcut_hidden_from_the_reaudit_is_not_cleared() -> None:
    """An outside check (a hybrid CNN-transformer, P-ClArC): the re-audit no longer flagged the finding and
    --fail-if-not-cleared exited 0, while the planted tag still turned 53 % of clean images into the class
    (paste flip rate 97.8 % -> 52.3 %, null 2 %): the projection hides the direction from the re-audit too."""
    from dataclasses import replace

    before = replace(scores(flip=0.978), flip_null=0.02)
    hidden = record(method="pclarc", before=before, after=replace(scores(flip=0.523), flip_null=0.02),
                    rea=reaudit(True, False))  # fmt: skip
    assert hidden.verdict.finding_cleared is True and hidden.acts_still() and hidden.cleared() is False
    assert (
        "still turns 52.3 % of the other classes' images into shirt (null 2.0 %)" in hidden.hidden_warning()
    )
    page = render_correction_html(hidden)
    assert (
        "no longer flags the finding, but the shortcut still acts (below): <span class='unmet'>not met"
        in page
    )
    gone = record(method="pclarc", before=before, after=replace(scores(flip=0.03), flip_null=0.02),
                  rea=reaudit(True, False))  # fmt: skip
    assert gone.cleared() is True and not gone.hidden_warning()


def test_never_flagged_findings_get_no_lingering_cluster_warning() -> None:
    """An outside check: "the re-audit no longer flags the finding, but the flagged samples still form
    cluster ..." next to "not judged: it was not flagged before either"."""
    from spray.correct.reaudit import Reaudit
    from tests.correction_records import finding

    after = finding(False, "2/k2/c1")
    never = Reaudit("r" * 40, "reaudit/latest", finding(False), after, False, [], [])
    rec = record(after=scores(flip=0.5, share=0.35), rea=never)
    assert rec.reaudit is not None and rec.reaudit.after.jaccard >= 0.5
    assert not rec.lingering_warning()
    flagged = record(after=scores(flip=0.08, share=0.35), rea=reaudit(True, False))
    assert flagged.lingering_warning()
    # a shortcut that still acts is said once, by hidden_warning
    acting = record(after=scores(flip=0.5, share=0.35), rea=reaudit(True, False))
    assert acting.hidden_warning() and not acting.lingering_warning()


def test_a_stamp_not_removed_in_place_is_not_called_one_that_moves() -> None:
    """An outside check: "the correction removed it at one place" where the in-place flip rate went 98 -> 96 %;
    and correction.pooling: max advised at a token layer, where it is refused."""
    from dataclasses import replace

    before = replace(scores(flip=0.98), flip_null=0.02, flip_moved=0.9)
    stayed = record(before=before, after=replace(scores(flip=0.96), flip_null=0.02, flip_moved=0.9))
    assert not stayed.moved_warning()
    moved = record(before=before, after=replace(scores(flip=0.05), flip_null=0.02, flip_moved=0.9))
    assert "removed it at one place" in moved.moved_warning()
    assert "correction.pooling: max" not in moved.moved_warning()  # its layer's candidates: mean only


def test_a_stamp_that_still_acts_at_the_opposite_place_is_not_cleared() -> None:
    """An outside check: P-ClArC's re-audit no longer flagged the finding and the in-place flip rate fell, but
    the stamp pasted at the opposite place flipped 66 % before and 68 % after: the record said cleared and
    --fail-if-not-cleared exited 0."""
    from dataclasses import replace

    before = replace(scores(flip=0.90), flip_null=0.01, flip_moved=0.66)
    moved = record(method="pclarc", before=before, after=replace(scores(flip=0.03), flip_null=0.01, flip_moved=0.68),
                   rea=reaudit(True, False))  # fmt: skip
    assert moved.verdict.finding_cleared is True and not moved.acts_still()
    assert moved.cleared() is False and "(not cleared, whatever the re-audit says)" in moved.moved_warning()
    gone = record(method="pclarc", before=before, after=replace(scores(flip=0.03), flip_null=0.01, flip_moved=0.05),
                  rea=reaudit(True, False))  # fmt: skip
    assert gone.cleared() is True


def test_a_bound_a_hair_below_zero_is_not_minus_zero() -> None:
    """An outside check: "interval -0.00 to +0.71"."""
    from spray.correct.record import Verdict

    text = Verdict(0.5, 0.5, -0.00001, True, [-0.00001, 0.0071]).accuracy_text()
    assert text == "+0.00 points (95 % interval +0.00 to +0.71)"


def test_a_correction_that_did_little_is_warned_of_where_the_reaudit_cannot_judge() -> None:
    """An outside check: rr_target artifact_class moved the flip rate 98.4 % -> 90.6 % on a finding the source
    run had not flagged (re-audit: not judged), and the console printed no warning."""
    from dataclasses import replace

    before, after = replace(scores(flip=0.984), flip_null=0.02), replace(scores(flip=0.906), flip_null=0.02)
    little = record(before=before, after=after, rea=reaudit(False, False))
    assert little.warnings() and little.warnings()[0].startswith(
        "the paste flip rate fell by 8 % only (goal: 90 %)"
    )
    judged = record(before=before, after=after, rea=reaudit(True, True))  # still flagged: its own advice
    assert not judged.little_effect_warning()
    # a review: a rise read "fell by -25 % only" beside stronger_warning's "rose"
    rose = record(before=replace(scores(flip=0.4), flip_null=0.02), after=replace(scores(flip=0.5), flip_null=0.02),
                  rea=reaudit(False, False))  # fmt: skip
    assert not rose.little_effect_warning() and any("rose" in w for w in rose.warnings())


def test_a_loss_on_test_data_carrying_the_shortcut_is_not_sent_to_another_method() -> None:
    """An outside check: with 60 of 200 test Shirts stamped, the class-accuracy warning said "try a later layer
    (--layer) or RR-ClArC" and the clean-accuracy one "compare --method rrclarc", where the loss was the
    correction working (0.00 points on the same test data without the stamped images)."""
    from dataclasses import replace

    from spray.correct.lookalikes import LOOKALIKE_ADVICE, Lookalikes

    before = scores(clean=0.65)
    after = replace(scores(clean=0.61, flip=0.03), class_accuracy=0.4)
    plain = record(method="pclarc", before=before, after=after)
    assert (
        "try a later layer" in plain.class_accuracy_warning()
        and "--method rrclarc" in plain.accuracy_warning()
    )
    stamped = record(method="pclarc", before=before, after=after)
    stamped.evaluation.lookalikes = Lookalikes(60, 60, 0.0, 40, [str(i) for i in range(50)])
    assert stamped.lookalike_warning()
    for text in (stamped.class_accuracy_warning(), stamped.accuracy_warning()):
        assert LOOKALIKE_ADVICE in text and "later layer" not in text and "--method" not in text


def test_a_held_out_part_of_the_audited_data_is_not_called_test_data_without_a_caveat() -> None:
    """An outside check: "evaluated on held-out part of the audited data" with nothing saying that the audited
    model was probably trained on those images (docs/correction.md promises the report says so)."""
    from dataclasses import replace

    rec = record()
    rec.evaluation = replace(rec.evaluation, split="held-out part of the audited data")
    assert "may have been trained on it" in rec.evaluation.split_text()
    assert "may have been trained on it" in render_correction_html(rec)
    rec.evaluation = replace(rec.evaluation, split="test_data")
    assert rec.evaluation.split_text() == "test_data"

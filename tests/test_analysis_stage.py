"""The analysis stage's choice of classes: too small ones and ones whose every heatmap is zero are skipped,
said, and recorded with their reason (a run read back keeps it)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from spray.analysis_shards import AnalysisInputs
from spray.analysis_stage import _classes_to_analyze, _zero_classes
from spray.config import config_from_dict
from spray.records import ZERO_HEATMAPS

#: The reason a class below the default analysis.min_class_size is given.
TOO_FEW = "fewer than analysis.min_class_size (20) samples"


def _cfg():  # type: ignore[no-untyped-def]
    raw = {"model": {"factory": "m:f"}, "data": {"kind": "idx", "images": "x", "labels": "y"}}
    return config_from_dict(raw, check_files=False)


def test_a_class_whose_every_heatmap_is_zero_is_skipped_with_its_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """k-means split such a class by index ties and its evidence described the split as structure."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 30)
    relevance = rng.random((90, 4, 4)).astype(np.float16)
    relevance[labels == 1] = 0  # a dead logit: nothing depends on the input
    relevance[np.flatnonzero(labels == 2)[0]] = 0  # one zero map in a live class is no reason
    inputs = AnalysisInputs([str(i) for i in range(90)], [""] * 90, labels, labels, relevance)
    zero = _zero_classes(inputs, labels)
    assert zero == {1} and _zero_classes(None, labels) == set()
    with caplog.at_level(logging.WARNING):
        todo, skipped = _classes_to_analyze(_cfg(), ["a", "b", "c"], labels, zero)
    assert todo == {0: 30, 2: 30}
    assert [(s.class_name, s.n, s.reason) for s in skipped] == [("b", 30, ZERO_HEATMAPS)]
    assert "every one of its 30 heatmaps is zero" in caplog.text
    _, skipped = _classes_to_analyze(_cfg(), ["a", "b", "c"], labels[:62], set())
    assert [(s.class_name, s.reason) for s in skipped] == [("c", TOO_FEW)]


def test_a_run_whose_every_class_is_all_zero_says_so(caplog: pytest.LogCaptureFixture) -> None:
    labels = np.repeat(np.arange(2), 30)
    inputs = AnalysisInputs([str(i) for i in range(60)], [""] * 60, labels, labels, np.zeros((60, 4, 4)))
    with caplog.at_level(logging.WARNING):
        todo, _ = _classes_to_analyze(_cfg(), ["a", "b"], labels, _zero_classes(inputs, labels))
    assert not todo and "every class's heatmaps are all zero" in caplog.text
    assert "min_class_size" not in caplog.text


def test_a_class_emptied_by_skipped_images_says_so_not_too_small(caplog: pytest.LogCaptureFixture) -> None:
    """An outside check: 100 images of a class all of another size (no resize) were reported as "0 samples
    (fewer than analysis.min_class_size)"; the reason now counts the skipped ones."""
    labels = np.repeat([0, 1], 30)  # the readable samples; class 2's 100 images were all skipped
    listed = np.array([30, 30, 100])
    with caplog.at_level(logging.WARNING):
        todo, skipped = _classes_to_analyze(_cfg(), ["a", "b", "c"], labels, set(), listed)
    assert todo == {0: 30, 1: 30}
    assert [(s.class_name, s.n) for s in skipped] == [("c", 0)]
    assert skipped[0].reason.startswith(
        "100 of its 100 samples were skipped (each with its reason under 'skipped')"
    )
    assert "class c not analysed: 100 of its 100 samples were skipped" in caplog.text
    # a class merely small keeps the plain reason, with the threshold; an empty class is said to be empty
    # (an outside check: "class Trouser has 0 samples (< analysis.min_class_size)")
    with caplog.at_level(logging.WARNING):
        _, skipped = _classes_to_analyze(_cfg(), ["a", "b", "c"], labels[:35], set(), np.array([30, 5, 0]))
    assert [(s.class_name, s.reason) for s in skipped] == [("b", TOO_FEW), ("c", "no samples")]
    assert "class c not analysed: it has no samples" in caplog.text


def test_predictions_into_outputs_without_a_class_name_are_listed_not_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``group_by: prediction`` with 10 outputs and 5 class names: the samples predicted as 5-9 were in no
    analysed class and nowhere in classes_skipped."""
    from spray.records import UNNAMED_OUTPUT

    groups = np.concatenate([np.repeat(np.arange(5), 30), np.repeat([7, 9], [40, 3])])
    with caplog.at_level(logging.WARNING):
        todo, skipped = _classes_to_analyze(_cfg(), list("abcde"), groups, set())
    assert sorted(todo) == [0, 1, 2, 3, 4]
    assert [(s.class_index, s.class_name, s.n, s.reason) for s in skipped] == [
        (7, "output 7", 40, UNNAMED_OUTPUT),
        (9, "output 9", 3, UNNAMED_OUTPUT),
    ]
    assert "43 samples are predicted as model outputs that have no class name" in caplog.text
    assert "40 as output 7, 3 as output 9" in caplog.text


def test_the_reason_survives_the_summary(tmp_path: Path) -> None:
    from spray.records import ClassSkipped
    from spray.runs.reader import read_report
    from tests.runs.builders import make_report, write_published

    report, stage = make_report()
    report.classes_skipped = [ClassSkipped(1, "b", 30, ZERO_HEATMAPS)]
    run = write_published(tmp_path / "runs", report, stage)
    assert read_report(run).classes_skipped == [ClassSkipped(1, "b", 30, ZERO_HEATMAPS)]


def test_a_one_class_audit_still_runs_the_removal_test(tmp_path: Path) -> None:
    """An outside check: auditing one class of a model (the other classes without images, as docs/config.md
    suggests) ran no intervention at all, since the paste test has no other-class image to paste into; the
    planted group was unflagged (score 0.07 against 0.60 with every class). The removal test needs only the
    class's own images."""
    import yaml

    from spray.cli import main
    from spray.data import write_idx
    from spray.runs.reader import RunReader
    from tests.test_correct_world import TARGET, build_world

    world = build_world(tmp_path, flag=False)
    only = world.labels == TARGET
    write_idx(world.root / "images.idx", world.images[only])
    write_idx(world.root / "labels.idx", world.labels[only].astype(np.uint8))
    raw = yaml.safe_load(world.config.read_text())
    raw["data"]["class_names"] = ["bar", "ring", "wide ring"]
    world.config.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["audit", "--config", str(world.config), "-q"]) == 0
    reader = RunReader.open(world.runs_dir / "latest")
    summary = reader.summary
    top = reader.findings()[0]
    planted = {str(i) for i in range(int(only.sum())) if world.planted[only][i]}
    assert top.suspicious and set(top.member_ids) <= planted, top.evidence
    assert "flagged by the removal test" in top.evidence
    assert "no paste test: no image of another class was audited to paste into" in top.evidence
    from spray.accuracy import recorded_accuracy, recorded_problems

    acc = recorded_accuracy(summary.extra)
    assert acc is not None and acc["classes_present"] == 1 and not recorded_problems(summary.extra)


def test_members_explained_for_another_class_are_said() -> None:
    """An outside check: under lrp.target: pred a concept group of coats all explained for the shirt logit read
    as a coat strategy; nothing said whose logit their relevance was."""
    from spray.analysis_stage import _explained_targets, _other_target_line

    labels = np.array([0, 0, 0, 0, 1, 1])
    predictions = np.array([0, 1, 1, 2, 1, 1])
    inputs = AnalysisInputs([f"s{i}" for i in range(6)], [""] * 6, labels, predictions, None)
    rows = np.flatnonzero(labels == 0)
    names = ["coat", "shirt", "bag"]
    for target, line in (
        ("label", None),
        (
            "pred",
            "3 of its 4 members are explained for another class's logit (lrp.target: pred): shirt and others",
        ),
    ):
        cfg = config_from_dict(
            {
                "model": {"factory": "m:f"},
                "data": {"kind": "idx", "images": "x", "labels": "y"},
                "lrp": {"target": target},
            },
            check_files=False,
        )
        explained = dict(
            zip(["s0", "s1", "s2", "s3"], _explained_targets(cfg, inputs, rows).tolist(), strict=True)
        )
        assert _other_target_line(["s0", "s1", "s2", "s3"], explained, 0, names, cfg) == line
        assert _other_target_line(["s0"], explained, 0, names, cfg) is None  # explained for its own class

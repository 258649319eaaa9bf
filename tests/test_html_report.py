"""report.html says what the run holds: the classes it did not analyse and why, and what its member tiles
show when the run kept no thumbnails."""

from __future__ import annotations

from pathlib import Path

from spray.html_report import render_html_report
from spray.records import ZERO_HEATMAPS, ClassSkipped
from tests.runs.builders import make_report, write_published


def test_report_names_classes_not_analysed_and_tiles_without_thumbnails(tmp_path: Path) -> None:
    report, stage = make_report()
    report.classes_skipped = [ClassSkipped(3, "dead", 40, ZERO_HEATMAPS)]
    run = write_published(tmp_path / "runs", report, stage)
    page = render_html_report(run)
    assert f"not analysed: dead (40 samples: {ZERO_HEATMAPS})".replace("'", "&#x27;") in page
    assert "relevance overlaid" in page
    (run / "thumbs.npy").unlink()  # as a run with batch.thumbnails: false has none
    page = render_html_report(run)
    assert "the run kept no thumbnails" in page and "relevance overlaid" not in page


def test_report_shows_every_suspicious_finding_the_model_and_why_a_cluster_resolved(tmp_path: Path) -> None:
    """An outside check: suspicious findings ranked below the top 10 were not in the report (its header counted
    them), the report named no model, and a resolved cluster's note ('now below the alarm threshold') and scores
    were left out of the changes."""
    import dataclasses

    from spray.records import ChangeRule, ChangeSet, ClusterChange

    report, stage = make_report()
    # the 4th and 6th of 7 findings suspicious too: below a top of 2
    report.findings = [
        dataclasses.replace(f, suspicious=i in (0, 3, 5)) for i, f in enumerate(report.findings)
    ]
    extra = [report.findings[3], report.findings[5]]
    resolved = ClusterChange(
        None, 6, "Shirt", previous_key="6/k3/c2", previous_size=5, size=5, score=0.086, previous_score=0.586,
        jaccard=1.0, note="still a cluster, now below the alarm threshold",
    )  # fmt: skip
    report.changes = ChangeSet("b" * 64, "earlier", [], [], [], [resolved], 1, ChangeRule(0.3, 0.8, 0.1))
    report.config["model"] = {"factory": "spray.lab.cnn:small_cnn", "checkpoint": "/data/models/shirt.pt"}
    report.config["lrp"] = {"composite": "EpsilonPlusFlat"}
    run = write_published(tmp_path / "runs", report, stage)
    page = render_html_report(run, top=2)
    assert "Top 2 findings and the 2 other suspicious ones (of 7 candidates)" in page
    assert all(html_key in page for html_key in (extra[0].key, extra[1].key))
    assert "now below the alarm threshold" in page and "score 0.586 → 0.086" in page
    assert "model spray.lab.cnn:small_cnn, weights shirt.pt (mmmmmmmmmmmm) · LRP EpsilonPlusFlat" in page


def test_a_trials_classes_without_samples_are_said_to_be_beyond_its_limit(tmp_path: Path) -> None:
    """An outside check: a data.limit trial's classes that none of its samples belong to read '0 samples: fewer
    than analysis.min_class_size samples'."""
    report, stage = make_report()
    report.config["data"] = {"limit": 26}
    report.classes_skipped = [ClassSkipped(3, "dead", 0, "fewer than analysis.min_class_size samples")]
    page = render_html_report(write_published(tmp_path / "runs", report, stage))
    assert "dead (none of the first 26 samples: data.limit)" in page


def test_report_says_seed_data_cost_and_tells_small_scores_apart(tmp_path: Path) -> None:
    """An outside check: the report named no seed, data source or timings, and small scores ranked apart
    printed alike ('0.004' six times)."""
    import dataclasses

    from spray.records import score_text
    from spray.report import findings_table

    report, stage = make_report()
    report.config["seed"] = 3
    report.config["data"] = {"kind": "folder", "path": "/data/skin"}
    scores = [0.0043, 0.0041, 0.0039]
    report.findings = [dataclasses.replace(f, score=x) for f, x in zip(report.findings, scores, strict=False)]
    page = render_html_report(write_published(tmp_path / "runs", report, stage))
    n = report.timings["n_computed"]
    assert f"seed 3 · data /data/skin · {n} heatmaps computed, 0 reused · 1.2 s on cpu" in page
    assert all(f"score {t}" in page for t in ("0.0043", "0.0041", "0.0039"))
    table = findings_table(report.findings)
    assert all(t in table for t in ("0.0043", "0.0041", "0.0039"))
    assert [score_text(x) for x in (0.0, 0.5, 0.12345, 0.01234, 4.2e-05)] == [
        "0.000", "0.500", "0.123", "0.0123", "4.2e-05",
    ]  # fmt: skip


def test_a_previous_run_of_an_older_fingerprint_is_said_to_leave_the_model_question_open(
    tmp_path: Path,
) -> None:
    """An outside check of the upgrade: that whether the model changed could not be told was one INFO line,
    silent under -q and absent from report.html and the dashboard."""
    import dataclasses

    from spray.records import MODEL_UNKNOWN, ChangeRule, ChangeSet

    report, stage = make_report()
    report.changes = ChangeSet("b" * 64, "earlier", [], [], [], [], 0, ChangeRule(0.3, 0.8, 0.1))
    said = MODEL_UNKNOWN.replace("'", "&#x27;")
    assert said in render_html_report(write_published(tmp_path / "a", report, stage))
    report.changes = dataclasses.replace(report.changes, model_changed=False)
    assert said not in render_html_report(write_published(tmp_path / "b", report, stage))

"""The re-audit's verdict: "no longer flagged" only for a finding that was flagged before the correction."""

from __future__ import annotations

from pathlib import Path

import pytest

from spray.correct.reaudit import Reaudit
from spray.correct.source import FindingMatch


def _match(*, suspicious: bool, rank: int = 1, score: float = 0.016) -> FindingMatch:
    return FindingMatch("0/k2/c1", rank, score, suspicious, 1.0, None, 41)


@pytest.mark.parametrize(
    ("before", "still", "cleared", "outcome"),
    [
        (True, False, True, "no longer flagged"),
        (True, True, False, "still flagged"),
        (False, True, False, "flagged now (it was not before)"),
        # the outside-in case: never flagged, the same cluster still first after the correction
        (False, False, None, "not judged: it was not flagged before either"),
    ],
)
def test_the_verdict_needs_a_flag_before_the_correction(
    before: bool, still: bool, cleared: bool | None, outcome: str
) -> None:
    r = Reaudit(
        "id", "reaudit/x", _match(suspicious=before), _match(suspicious=still, score=0.019), still, []
    )
    assert r.cleared is cleared and r.outcome == outcome
    line = r.describe()
    assert (
        line.startswith(outcome)
        and "rank 1 score 0.016, 41 members → 0/k2/c1 rank 1 score 0.019, 41 members" in line
    )
    assert ("cannot show the shortcut gone" in line) == (cleared is None)


def test_a_reaudit_whose_own_checks_doubt_its_heatmaps_judges_nothing() -> None:
    """An outside check: P-ClArC left a model near chance (74 % of predictions one class); its re-audit flagged
    nothing and the correction said "no longer flagged", cleared, exit 0 under --fail-if-not-cleared."""
    from spray.accuracy import model_problems as doubts

    extra = {
        "model_accuracy": {
            "accuracy": 0.337, "majority_share": 0.2, "n_samples": 3000, "near_chance": True,
            "shifted": {"cross": "circle", "ring": "circle"},
        },
        "label_conflicts": {"n_groups": 1, "examples": []},
    }  # fmt: skip
    said = doubts(extra)
    assert len(said) == 2 and "answers circle for nearly everything" in said[0] and "only 34%" in said[1]
    assert doubts({}) == [] and doubts({"model_accuracy": {**extra["model_accuracy"], "near_chance": False,
                                                           "shifted": {}}}) == []  # fmt: skip
    r = Reaudit("id", "reaudit/x", _match(suspicious=True), _match(suspicious=False), False, [], said)
    assert r.cleared is None and r.outcome.startswith("not judged: the re-audit's heatmaps")
    assert "The re-audit's own checks: The model predicts the images of 2 other classes" in r.describe()
    # a finding still flagged is still a failure, whatever the checks say
    still = Reaudit(
        "id", "reaudit/x", _match(suspicious=True), _match(suspicious=True), True, ["0/k2/c1"], said
    )
    assert still.cleared is False and still.outcome == "still flagged"


def test_the_match_prefers_the_flagged_finding_and_names_the_suspicious_one() -> None:
    """An outside check: flags set from 0/k3/c1 (its 22 members) were matched "before" to a concept finding
    whose Jaccard was higher by 0.001, and "still flagged" named an unflagged finding, not the one keeping
    the flag."""
    import numpy as np

    from spray.correct.source import match_finding
    from tests.runs.test_changes import _finding

    mean = np.zeros((4, 4), np.float32)
    flagged = [f"s{i}" for i in range(22)]
    source = [
        _finding("0/k6/c5", range(9, 40), mean),  # overlaps a hair more by Jaccard
        _finding("0/k3/c1", range(0, 22), mean),
    ]
    source[1].carrier_ids = [f"s{i}" for i in range(22, 73)]
    assert match_finding(source, 0, flagged).key == "0/k6/c5"
    assert match_finding(source, 0, flagged, prefer="0/k3/c1").key == "0/k3/c1"
    assert match_finding(source, 0, flagged, prefer="0/k9/c9").key == "0/k6/c5"  # not in the run: by overlap
    after = [
        _finding("0/k4/c3", range(0, 22), mean, suspicious=False),  # the best overlap, not flagged
        _finding("0/k2/c1", range(0, 15), mean),  # flagged: this one keeps the re-audit's flag
    ]
    assert match_finding(after, 0, flagged).key == "0/k4/c3"
    got = match_finding(after, 0, flagged, among={"0/k2/c1"})
    assert (got.key, got.rank, got.suspicious) == ("0/k2/c1", 2, True)


def test_the_flagged_key_is_preferred_only_for_flags_set_on_the_source_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A review found the key preferred for flags set on an older run, where the same key names another
    cluster: the 'before' match then had no overlap and the verdict was 'not judged'."""
    from pathlib import Path
    from types import SimpleNamespace

    import numpy as np

    from spray.correct import run as correct_run
    from tests.runs.test_changes import _finding

    mean = np.zeros((4, 4), np.float32)
    flagged = [f"s{i}" for i in range(20)]
    findings = [
        _finding("6/k3/c0", range(0, 20), mean),
        _finding("6/k3/c2", range(50, 70), mean, suspicious=False),
    ]
    seen: list[str | None] = []
    monkeypatch.setattr(correct_run, "run_reaudit", lambda _c, before, *_a, **_k: seen.append(before.key))
    monkeypatch.setattr(correct_run, "slim_runs_dir", lambda _p: None)

    def plan(run_ids: list[str]) -> object:
        flags = SimpleNamespace(cluster_keys=["6/k3/c2"], run_ids=run_ids, sample_ids=flagged)
        return SimpleNamespace(
            cfg=SimpleNamespace(correction=SimpleNamespace(reaudit=True, reaudit_min_jaccard=0.5, reaudit_min_contained=0.8, reaudit_min_enrichment=2.0, reaudit_no_worse=0.5)),
            flags=flags, source=SimpleNamespace(run_id="src", findings=findings, extra={}),
            group=SimpleNamespace(class_index=6),
        )  # fmt: skip

    correct_run._reaudit(plan(["older"]), Path("."), Path("."), device=None, progress=False)  # type: ignore[arg-type]
    correct_run._reaudit(plan(["src"]), Path("."), Path("."), device=None, progress=False)  # type: ignore[arg-type]
    assert seen == ["6/k3/c0", "6/k3/c2"]  # by overlap; the flags' own key on their own run


def test_flags_on_part_of_a_group_are_still_flagged_when_a_suspicious_finding_holds_them() -> None:
    """An outside check: 13 samples flagged from one of a shortcut's three findings (no carriers); after a
    P-ClArC that raised the flip rate, every suspicious re-audit finding held all 13 among its 79–81 members
    and carriers (Jaccard 0.16 < 0.3), and the verdict said "no longer flagged" with --fail-if-not-cleared 0."""
    from spray.correct.reaudit import keeps_flag
    from spray.records import ClusterFinding

    def finding(members: range, carriers: range = range(0)) -> ClusterFinding:
        return ClusterFinding(
            class_index=2, class_name="square", cluster_id=0, k=5, size=len(members), fraction=0.2, score=0.5,
            suspicious=True, evidence=[], signals={}, member_ids=[f"s{i}" for i in members],
            carrier_ids=[f"s{i}" for i in carriers], mean_heatmap=None,
        )  # fmt: skip

    flagged = {f"s{i}" for i in range(13)}
    same, n = (0.3, 0.8, 2.0), 300  # a class of 300 images, 13 of them flagged
    assert keeps_flag(finding(range(0, 40), range(40, 79)), flagged, same, n)  # holds all 13: Jaccard 0.16
    assert not keeps_flag(finding(range(3, 40)), flagged, same, n)  # 10 of 13 (0.77), Jaccard 0.25
    assert keeps_flag(finding(range(3, 40)), flagged, (0.3, 0.75, 2.0), n)  # reaudit_min_contained decides
    assert keeps_flag(finding(range(0, 20)), flagged, same, n)  # Jaccard 0.65
    assert not keeps_flag(finding(range(100, 160)), flagged, same, n)  # another group of the class
    # a finding holding most of the class holds most flagged samples by its size alone (a review)
    assert not keeps_flag(finding(range(0, 180), range(180, 260)), flagged, same, n)


def test_a_collapsed_corrected_model_is_blamed_on_the_correction(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An outside check: a ViT corrected at patch_embed fell to 13.7 % and its re-audit's checks blamed
    data.transform or the checkpoint, which the re-audit shares with the source run: the correction did it."""
    from types import SimpleNamespace

    import spray.audit
    from spray.accuracy import model_problems
    from spray.correct import reaudit as module

    extra = {
        "model_accuracy": {
            "accuracy": 0.137, "majority_share": 0.1, "n_samples": 2000, "near_chance": True,
            "shifted": {"cat": "dog", "ship": "dog"},
        },
    }  # fmt: skip
    audited = model_problems(extra)  # a user's audit: the inputs or the weights, as before
    assert "check data.transform" in audited[0] and "inputs probably differ from training" in audited[1]
    report = SimpleNamespace(
        run_id="r", run_dir=str(tmp_path / "reaudit" / "run"), findings=[], classes=[], extra=extra
    )
    monkeypatch.setattr(module, "load_config", lambda path: None)
    monkeypatch.setattr(spray.audit, "audit", lambda cfg, device, progress: report)
    with caplog.at_level("WARNING", logger="spray.correct.reaudit"):
        r = module.run_reaudit(
            tmp_path / "config.yaml", _match(suspicious=True), 0, ["a"], (0.5, 0.5, 1.5), device=None,
            progress=False,
        )  # fmt: skip
    assert "the correction collapsed it, not the inputs or model.checkpoint" in caplog.text
    assert len(r.doubts) == 2 and all("the corrected model collapsed" in d for d in r.doubts)
    said = " ".join(r.doubts)
    assert "check data.transform" not in said and "inputs probably differ" not in said
    assert "the correction itself did this" in r.describe()


def test_a_check_the_source_run_failed_too_is_no_doubt_and_no_collapse(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An outside check: a MobileNetV3 whose heatmaps carried 8.7 % of the logit (source run) and 6.5 % after
    the correction, accurate throughout: the re-audit said "the correction collapsed it", and its doubt would
    have called a cleared finding "not judged" though the source run found the finding under the same
    condition."""
    from types import SimpleNamespace

    import spray.audit
    from spray.accuracy import model_problems_by_check
    from spray.correct import reaudit as module

    share = {"n_samples": 32, "low_share": 0.02, "high_share": 0.2, "low": True}
    low = {"conservation": {**share, "median_share": 0.065}}
    found = model_problems_by_check(low)
    assert found["conservation"] and not found["model_accuracy"], found
    report = SimpleNamespace(
        run_id="r", run_dir=str(tmp_path / "reaudit" / "run"), findings=[], classes=[], extra=low
    )
    monkeypatch.setattr(module, "load_config", lambda path: None)
    monkeypatch.setattr(spray.audit, "audit", lambda cfg, device, progress: report)

    def reaudit(source_extra: dict | None) -> Reaudit:
        return module.run_reaudit(
            tmp_path / "config.yaml", _match(suspicious=True), 0, ["a"], (0.5, 0.5, 1.5), device=None,
            progress=False, source_extra=source_extra,
        )  # fmt: skip

    with caplog.at_level("INFO", logger="spray.correct.reaudit"):
        r = reaudit({"conservation": {**share, "median_share": 0.087}})
    assert r.doubts == [] and r.cleared is True and r.outcome == "no longer flagged"
    assert "collapsed" not in caplog.text and "not counted against the verdict" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="spray.correct.reaudit"):
        r = reaudit({})  # the source run's heatmaps carried the logit: the doubt stands, without "collapsed"
    assert r.doubts and r.cleared is None
    assert "collapsed" not in caplog.text and "may show no shortcut at all" in caplog.text
    # a review finding: a share far below the source run's (0.5 % after 8.7 %) is no "same problem"
    low["conservation"]["median_share"] = 0.005
    assert reaudit({"conservation": {**share, "median_share": 0.087}}).doubts
    # and a collapse of the corrected model is never discounted, whatever the source run's accuracy check said
    report.extra = {
        "model_accuracy": {"accuracy": 0.11, "majority_share": 0.1, "n_samples": 500, "near_chance": True,
                           "shifted": {}},
    }  # fmt: skip
    source = {"model_accuracy": {"accuracy": 0.88, "majority_share": 0.1, "n_samples": 500, "near_chance": False,
                                 "shifted": {}, "unrecognised": {"truck": 0.02}}}  # fmt: skip
    caplog.clear()
    with caplog.at_level("WARNING", logger="spray.correct.reaudit"):
        r = reaudit(source)
    assert r.doubts and r.cleared is None and "the correction collapsed it" in caplog.text

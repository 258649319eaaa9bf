"""The one change detector: new, grown, persisting and resolved suspicious clusters, and the previous run
it compares with (a damaged one is passed over, never taken as "no previous run")."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spray.config.output import NightlyConfig
from spray.html_report import _changes_html
from spray.records import ChangeRule, ClusterChange, ClusterFinding
from spray.runs.changes import MemberKeys, change_rule, changes_since_previous, compare_findings, compare_runs
from spray.runs.reader import RunReader
from tests.runs.builders import make_report, write_published

RULE = change_rule()


def _finding(key: str, members: range, mean: np.ndarray, *, suspicious: bool = True) -> ClusterFinding:
    c, k, cid = key.split("/")
    ids = [f"s{i}" for i in members]
    return ClusterFinding(
        class_index=int(c), class_name=f"c{c}", cluster_id=int(cid[1:]), k=int(k[1:]), size=len(ids),
        fraction=0.1, score=1.0, suspicious=suspicious, evidence=[], signals={}, member_ids=ids,
        mean_heatmap=mean,
    )  # fmt: skip


def test_the_rule_is_the_nightly_config_sections() -> None:
    n = NightlyConfig()
    assert RULE == ChangeRule(n.match_jaccard, n.match_correlation, n.grown_min) == ChangeRule(0.3, 0.8, 0.1)
    assert change_rule({"grown_min": 0.5, "notify_command": None}).grow_min == 0.5


def test_compare_findings_classifies_new_grown_persisting_resolved() -> None:
    rng = np.random.default_rng(0)
    corner = np.zeros((8, 8), np.float32)
    corner[:2, :2] = 1

    def noise() -> np.ndarray:
        return rng.random((8, 8)).astype(np.float32)

    prev = [
        _finding("1/k3/c0", range(0, 20), noise()),  # grows to 30 members (ids kept) → grown
        _finding("2/k2/c1", range(100, 120), noise()),  # same members → persisting
        _finding("3/k2/c0", range(200, 210), corner),  # members replaced, same heatmap → grown
        _finding("4/k2/c0", range(300, 310), noise(), suspicious=False),  # becomes suspicious → new (note)
    ]
    cur = [
        _finding("1/k4/c2", range(0, 30), noise()),
        _finding("2/k2/c0", range(100, 121), noise()),
        _finding("4/k3/c1", range(300, 312), noise()),
        _finding("5/k2/c0", range(400, 405), noise()),  # brand new
        _finding("3/k2/c1", range(500, 540), corner + 0.01 * noise()),
    ]
    ch = compare_findings(cur, prev, RULE)
    assert [c.key for c in ch.grown] == ["1/k4/c2", "3/k2/c1"]
    assert ch.grown[1].jaccard == 0 and ch.grown[1].correlation > 0.99 and ch.grown[0].rank == 1
    assert [c.key for c in ch.persisting] == ["2/k2/c0"]  # +1 member of 20 is under grown_min
    assert [c.key for c in ch.new] == ["4/k3/c1", "5/k2/c0"]
    assert "not suspicious then" in ch.new[0].note and ch.new[0].previous_key == "4/k2/c0"
    assert ch.resolved == [] and (ch.n_new, ch.n_grown, ch.n_resolved, ch.n_suspicious) == (2, 2, 0, 5)
    # A stricter grown rule makes the +50 % cluster persisting.
    assert [c.key for c in compare_findings(cur, prev, ChangeRule(0.3, 0.8, 0.6)).grown] == ["3/k2/c1"]
    # A previous suspicious cluster still there below the alarm threshold is resolved, and named.
    prev.append(_finding("6/k2/c0", range(600, 610), corner.T.copy()))
    cur.append(_finding("6/k3/c1", range(700, 720), corner.T + 0.01 * noise(), suspicious=False))
    (res,) = compare_findings(cur, prev, RULE).resolved
    assert res.previous_key == "6/k2/c0" and res.key == "6/k3/c1" and res.correlation > 0.99
    html = _changes_html(compare_findings(cur, prev, RULE))
    assert "persisting" in html and "resolved" in html and "6/k3/c1" in html
    prev.pop()
    cur.pop()
    # Without the heatmap match the old cluster of class 3 is resolved and the new one is new.
    cur[-1] = _finding("3/k2/c1", range(500, 540), -corner)
    ch = compare_findings(cur, prev, RULE)
    assert [c.previous_key for c in ch.resolved] == ["3/k2/c0"] and ch.resolved[0].key is None
    assert "3/k2/c1" in [c.key for c in ch.new]
    # No previous run: every suspicious cluster is new.
    assert compare_findings(cur, None, RULE).n_new == 5


def test_compare_runs_and_the_previous_run(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    report, stage = make_report()
    report.changes = None
    older = write_published(runs, report, stage)
    report.run_id = "s" * 64
    newer = write_published(runs, report, stage)
    same = compare_runs(RunReader.open(newer), RunReader.open(older))
    assert same.n_new == 0 and [c.key for c in same.persisting] == [
        f.key for f in report.findings if f.suspicious
    ]
    assert same.previous_run == older.name
    # The nightly comparison of a new run: the newest run of the same audit.
    report.run_id = "t" * 64
    ch = changes_since_previous(report, runs, RULE)
    assert ch.previous_run == newer.name and ch.n_new == 0 and ch.unreadable == []
    # The newest one damaged: logged, listed, and the older readable one is used instead.
    (newer / "summary.json").write_text('{"layout_version": 2, "run_id"')
    ch = changes_since_previous(report, runs, RULE)
    assert ch.previous_run == older.name and ch.n_new == 0
    assert [u.run for u in ch.unreadable] == [newer.name] and "summary.json" in ch.unreadable[0].reason
    # Another audit's runs are not compared with.
    report.name = "other"
    assert changes_since_previous(report, runs, RULE).previous_run is None
    assert isinstance(ch.persisting[0], ClusterChange)


def test_a_class_not_analysed_now_is_no_verdict_not_resolved(tmp_path: Path) -> None:
    """Every file of the shortcut's class unreadable tonight: its cluster is "not analysed", never "resolved",
    and it survives the round trip through summary.json."""
    from spray.runs.summary import parse_changes
    from spray.runs.writer import changes_entry

    rng = np.random.default_rng(1)
    prev = [
        _finding("6/k3/c2", range(0, 20), rng.random((8, 8)).astype(np.float32)),
        _finding("2/k2/c0", range(100, 120), rng.random((8, 8)).astype(np.float32)),
    ]
    cur = [_finding("1/k2/c0", range(300, 330), rng.random((8, 8)).astype(np.float32), suspicious=False)]
    ch = compare_findings(cur, prev, RULE, analysed={1, 2})
    assert [c.previous_key for c in ch.resolved] == ["2/k2/c0"]  # class 2 was analysed: resolved
    (gone,) = ch.not_analysed
    assert gone.previous_key == "6/k3/c2" and "not analysed" in gone.note and ch.n_resolved == 1
    assert "not analysed" in _changes_html(ch)
    back = parse_changes(changes_entry(ch), tmp_path / "summary.json")
    assert back is not None and [c.previous_key for c in back.not_analysed] == ["6/k3/c2"]
    # without the list of analysed classes (older callers), nothing changes
    assert compare_findings(cur, prev, RULE).n_resolved == 2


def test_a_class_left_out_for_a_night_is_compared_with_the_last_run_that_analysed_it(tmp_path: Path) -> None:
    """An outside check: a class not analysed one night (a broken sync) brought its suspicious cluster back
    as *new* the next night (exit 10, a notification), though it had been there two nights before."""
    import dataclasses

    runs = tmp_path / "runs"
    report, stage = make_report()
    report.changes = None
    first = write_published(runs, report, stage)
    c = next(f.class_index for f in report.findings if f.suspicious)
    night2 = dataclasses.replace(
        report,
        run_id="s" * 64,
        classes=[ca for ca in report.classes if ca.class_index != c],
        findings=[f for f in report.findings if f.class_index != c],
    )
    write_published(runs, night2, stage)
    report.run_id = "t" * 64  # night 3: the class is back, with the same cluster
    ch = changes_since_previous(report, runs, RULE)
    assert ch.n_new == 0, [e.key for e in ch.new]
    back = [e for e in ch.persisting if e.class_index == c]
    assert back and all(
        f"compared with run {first.name}, the last to analyse this class" in e.note for e in back
    )
    assert all(e.class_index != c or not e.note for e in ch.new + ch.resolved)


def test_a_retrained_model_is_named_in_the_changes(tmp_path: Path) -> None:
    """Clusters matched across two models: the changes say the weights differ (status, report, dashboard)."""
    from spray.runs.summary import parse_changes
    from spray.runs.writer import changes_entry

    runs = tmp_path / "runs"
    report, stage = make_report()
    report.changes = None
    write_published(runs, report, stage)
    report.run_id = "u" * 64
    assert changes_since_previous(report, runs, RULE).model_changed is False
    report.hashes = {**report.hashes, "model": "n" * 64}
    ch = changes_since_previous(report, runs, RULE)
    assert ch.model_changed is True and "The model changed" in _changes_html(ch)
    back = parse_changes(changes_entry(ch), tmp_path / "summary.json")
    assert back is not None and back.model_changed is True


def test_a_model_fingerprinted_by_an_older_spray_is_not_called_other_weights(tmp_path: Path) -> None:
    """An outside check (an upgrade): the same checkpoint was reported as "the model changed (other
    weights)" because the way the model is hashed had changed; runs record that way now."""
    runs = tmp_path / "runs"
    report, stage = make_report()
    report.changes = None
    report.hashes = {k: v for k, v in report.hashes.items() if k != "model_hash_version"}  # an older run
    write_published(runs, report, stage)
    report.run_id = "v" * 64
    report.hashes = {**report.hashes, "model": "n" * 64, "model_hash_version": "2"}
    ch = changes_since_previous(report, runs, RULE)
    assert ch.model_changed is None and "The model changed" not in _changes_html(ch)
    write_published(runs, report, stage)  # the next night, both fingerprinted alike: compared again
    report.run_id = "w" * 64
    report.hashes = {**report.hashes, "model": "m" * 64}
    assert changes_since_previous(report, runs, RULE).model_changed is True


def test_renamed_files_keep_their_cluster_by_content(tmp_path: Path) -> None:
    """A shortcut cluster whose files were renamed (new sample ids, same images) and that grew by new files
    is "grown", not "resolved" + "new" (the sample ids alone share nothing); a replaced image is another
    sample."""
    rng = np.random.default_rng(2)
    prev = [_finding("6/k3/c2", range(0, 30), rng.random((8, 8)).astype(np.float32))]
    cur = [_finding("6/k4/c1", range(1000, 1047), rng.random((8, 8)).astype(np.float32))]
    before = {f"s{i}": f"h{i}" for i in range(30)}
    # s1000..s1029 are s0..s29 renamed, s1030..s1046 new images
    after = {f"s{1000 + i}": f"h{i}" if i < 30 else f"new{i}" for i in range(47)}
    by_id = compare_findings(cur, prev, RULE)
    assert [c.previous_key for c in by_id.resolved] == ["6/k3/c2"] and [c.key for c in by_id.new] == [
        "6/k4/c1"
    ]
    ch = compare_findings(cur, prev, RULE, keys=MemberKeys(after, before))
    assert ch.resolved == [] and ch.new == [] and [c.key for c in ch.grown] == ["6/k4/c1"]
    assert ch.grown[0].previous_key == "6/k3/c2" and ch.grown[0].jaccard == round(30 / 47, 4)
    # Every image replaced in place (same ids, other content): no longer the same members.
    replaced = {f"s{i}": f"other{i}" for i in range(30)}
    same_ids = [_finding("6/k3/c2", range(0, 30), rng.random((8, 8)).astype(np.float32))]
    assert compare_findings(same_ids, prev, RULE, keys=MemberKeys(replaced, before)).n_resolved == 1
    # One side without content hashes (a run of layout < 5): sample ids, as before.
    assert compare_findings(cur, prev, RULE, keys=MemberKeys(after, {})).n_resolved == 1
    # Through the nightly path: the published previous run's samples.parquet against the new report's hashes.
    runs = tmp_path / "runs"
    report, stage = make_report()
    report.changes = None
    write_published(runs, report, stage)
    report.run_id = "v" * 64
    renamed = {f"renamed/{i}": h for i, h in enumerate(report.content_hashes.values())}
    old_to_new = dict(zip(report.content_hashes, renamed, strict=True))
    for f in report.findings:
        f.member_ids = [old_to_new[i] for i in f.member_ids]
        if f.mean_heatmap is not None:  # retrained: the model looks elsewhere, no heatmap match
            f.mean_heatmap = rng.random(np.shape(f.mean_heatmap)).astype(np.float32)
    n_suspicious = sum(f.suspicious for f in report.findings)
    report.content_hashes = renamed
    ch = changes_since_previous(report, runs, RULE)
    assert n_suspicious > 0 and ch.n_new == 0 and ch.n_resolved == 0 and len(ch.persisting) == n_suspicious
    report.content_hashes = {}  # without this run's hashes: by sample id, which share nothing
    ch = changes_since_previous(report, runs, RULE)
    assert ch.n_new == n_suspicious and ch.n_resolved == n_suspicious


def test_a_cluster_that_splits_or_two_that_merge_persist() -> None:
    """A suspicious cluster in two suspicious parts (or two in one) is the same shortcut: persisting, so the
    nightly job does not call it new (exit 10) or resolved."""
    rng = np.random.default_rng(1)

    def noise() -> np.ndarray:
        return rng.random((8, 8)).astype(np.float32)

    prev = [_finding("3/k2/c1", range(0, 53), noise())]
    cur = [_finding("3/k8/c5", range(0, 28), noise()), _finding("3/k6/c5", range(28, 54), noise())]
    ch = compare_findings(cur, prev, RULE)
    assert ch.n_new == 0 and ch.n_resolved == 0 and ch.n_grown == 0
    assert sorted(c.key for c in ch.persisting) == ["3/k6/c5", "3/k8/c5"]
    part = next(c for c in ch.persisting if c.note)
    assert (
        part.previous_key == "3/k2/c1"
        and "were in the previous suspicious cluster 3/k2/c1 (members and carriers), which split" in part.note
    )
    # the other way round: two previous clusters in one
    ch = compare_findings(prev, cur, RULE)
    assert ch.n_new == 0 and ch.n_resolved == 0
    assert any("the two merged" in c.note for c in ch.persisting)
    # a part mostly of other samples is still new; the share is the nightly section's match_contained
    cur = [_finding("3/k8/c5", range(0, 28), noise()), _finding("3/k6/c5", range(40, 90), noise())]
    assert [c.key for c in compare_findings(cur, prev, RULE).new] == ["3/k6/c5"]
    assert compare_findings(cur, prev, ChangeRule(0.3, 0.8, 0.1, contained_min=0.2)).n_new == 0
    assert change_rule({"match_contained": 0.5}).contained_min == 0.5


def test_a_part_among_the_other_runs_carriers_persists() -> None:
    """An outside check: the tagged images of one shortcut came out as a new suspicious cluster (exit 10) whose
    members had all been members or carriers of last night's suspicious cluster, and a previous cluster
    whose images are now carriers of the current one was called resolved."""
    from dataclasses import replace

    rng = np.random.default_rng(2)

    def noise() -> np.ndarray:
        return rng.random((8, 8)).astype(np.float32)

    prev = [replace(_finding("2/k4/c2", range(0, 40), noise()), carrier_ids=[f"s{i}" for i in range(40, 60)])]
    cur = [_finding("2/k11/c6", range(30, 53), noise())]  # 10 former members, 13 former carriers
    ch = compare_findings(cur, prev, RULE)
    assert ch.n_new == 0 and ch.n_resolved == 0, ch
    assert ch.persisting[0].previous_key == "2/k4/c2" and "(members and carriers)" in ch.persisting[0].note
    # the other way round: last night's cluster among tonight's cluster's carriers
    cur = [
        replace(_finding("2/k4/c2", range(100, 140), noise()), carrier_ids=[f"s{i}" for i in range(0, 23)])
    ]
    prev = [_finding("2/k5/c3", range(0, 23), noise())]
    ch = compare_findings(cur, prev, RULE)
    assert ch.n_new == 0 and ch.n_resolved == 0 and "merged" in ch.persisting[0].note, ch
    # without the carriers both would be told as before: new and resolved
    ch = compare_findings(
        [_finding("2/k11/c6", range(30, 53), noise())], [_finding("2/k4/c2", range(0, 40), noise())], RULE
    )
    assert ch.n_new == 1 and ch.n_resolved == 1

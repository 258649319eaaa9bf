"""spray/copies.py: copies of one image within a class are said, in the run and in every candidate they are
members of."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from spray.accuracy import data_notes
from spray.copies import find_copies, members_line, notes


def test_copies_within_a_label_are_found_and_across_labels_left_to_label_conflicts() -> None:
    ids = [f"s{i}" for i in range(7)]
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    hashes = ["a", "a", "b", "a", "c", "c", "c"]  # "a" twice in class 0, "c" three times in class 1
    got = find_copies(ids, labels, hashes)
    assert got is not None and (got.n_groups, got.n_samples, got.n_classes) == (2, 5, 2)
    assert got.examples == [["s4", "s5", "s6"], ["s0", "s1"]]  # the most copied first
    assert find_copies(ids, labels, [str(i) for i in range(7)]) is None
    assert find_copies(ids, labels, hashes[:3]) is None  # hashes not one per sample: not judged
    (said,) = notes(got.__dict__)
    assert said.startswith("5 images in 2 class(es) are copies of 2 images") and "s4, s5, s6" in said
    assert notes({}) == [] and data_notes({"copies": None}) == []


def test_a_members_line_counts_distinct_images() -> None:
    content = {"a": "1", "b": "1", "c": "1", "d": "2", "e": "3"}
    assert members_line(["a", "b", "c", "d", "e"], content) == (
        "its 5 members are 3 distinct images: 3 are copies of one image (the same file content), each counted "
        "in the share and the tests"
    )
    assert members_line(["a", "b", "c"], content) == (
        "its 3 members are copies of one image (the same file content), each counted in the share and the tests"
    )
    two = {
        "a": "1",
        "b": "1",
        "c": "2",
        "d": "2",
    }  # a review: "2 distinct images: 4 are copies of each other"
    assert "its 4 members are 2 distinct images: 4 are copies of 2 images" in str(
        members_line(list(two), two)
    )
    assert members_line(["a", "d", "e"], content) is None
    assert members_line(["a", "b", "zz"], content) is None  # a member of unknown content: not judged


def test_an_audit_says_so(tmp_path: Path) -> None:
    """An outside check: 31 of a finding's 39 members were byte-identical, and neither the finding nor the run
    said so (its share of the class and its rank-sum test counted every copy)."""
    from spray.audit import audit
    from spray.runs.reader import RunReader
    from tests.helpers import make_image_folder
    from tests.runs.builders import tiny_config

    make_image_folder(tmp_path / "imgs", n_per_class=10, size=16)
    first = sorted((tmp_path / "imgs" / "cat").iterdir())[0]
    for i in range(8):
        shutil.copy(first, first.with_name(f"copy{i}{first.suffix}"))
    report = audit(tiny_config(tmp_path, output={"html_report": True}), progress=False)
    run = RunReader.open(report.run_dir)
    page = (Path(report.run_dir) / "report.html").read_text()
    assert "About the data.</b> 9 images in 1 class(es) are copies of 1 image filed" in page
    assert run.summary.extra["copies"]["n_samples"] == 9
    assert any("are copies of 1 image filed more than once" in s for s in data_notes(run.summary.extra))
    copies = {s for s in report.content_hashes if s.startswith("cat/copy")} | {f"cat/{first.name}"}
    holding = [f for f in report.findings if len(copies & set(f.member_ids)) >= 2]
    assert holding, "no candidate holds two copies"
    for f in holding:
        assert any(" distinct images: " in line or "copies of one image" in line for line in f.evidence), (
            f.evidence
        )
    assert all(
        not any(" distinct images: " in line or "copies of one image" in line for line in f.evidence)
        for f in report.findings
        if len(copies & set(f.member_ids)) < 2
    )

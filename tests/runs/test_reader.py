"""The run reader: write → read gives back the same report; a damaged run raises one clear error naming
the file; layout-1 runs stay readable; row positions never leave the reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spray.runs.errors import RunReadError
from spray.runs.layout import RunFiles
from spray.runs.reader import RunReader, parse_cluster_key, read_report, scan_runs
from tests.runs.builders import assert_same, make_report, write_published


@pytest.fixture
def written(tmp_path: Path):  # type: ignore[no-untyped-def]
    report, stage = make_report()
    run = write_published(tmp_path / "runs", report, stage)
    return report, stage, run


def test_write_then_read_gives_back_the_same_report(written) -> None:  # type: ignore[no-untyped-def]
    report, _, run = written
    back = read_report(run)
    report.run_dir = str(run)
    assert_same(report, back)


def test_reader_speaks_sample_ids_and_returns_arrays_in_the_order_asked(written) -> None:  # type: ignore[no-untyped-def]
    report, stage, run = written
    r = RunReader.open(run)
    assert r.sample_ids() == stage.batch.sample_ids
    pick = [stage.batch.sample_ids[i] for i in (5, 0, 17)]
    np.testing.assert_array_equal(r.heatmaps(pick), stage.batch.relevance[[5, 0, 17]])
    np.testing.assert_array_equal(r.thumbs(pick), stage.thumbs[[5, 0, 17]])
    table = r.samples()
    assert list(table.index) == stage.batch.sample_ids and "row" not in table
    assert table.loc[pick[1], "label"] == stage.batch.labels[0]
    top = report.findings[0]
    assert r.members(top.key) == top.member_ids and r.finding(top.key).member_ids == top.member_ids
    data = r.class_data(top.class_index)
    ca = next(c for c in report.classes if c.class_index == top.class_index)
    assert data.sample_ids == ca.sample_ids
    # Any stored labelling, scored or not; unknown clusters are None, not another cluster.
    assert r.members(f"{top.class_index}/k2/c0") == data.members(2, 0) != []
    for missing in (f"{top.class_index}/k9/c0", "2/k3/c0", "7/k3/c0", f"{top.class_index}/k3/c99", "junk"):
        assert r.members(missing) is None
    assert r.finding("1/k2/c0") is None and r.mean_heatmap(top.key) is not None
    with pytest.raises(KeyError, match="not in run"):
        r.heatmaps(["nobody"])
    assert parse_cluster_key("6/k5/c4") == (6, 5, 4)


def test_summary_stores_each_cluster_once_and_no_members(written) -> None:  # type: ignore[no-untyped-def]
    report, _, run = written
    raw = json.loads((run / "summary.json").read_text())
    assert [c["cluster_keys"] for c in raw["classes"]] == [
        [f.key for f in ca.clusters] for ca in report.classes
    ]
    text = json.dumps(raw)
    for f in report.findings:
        assert text.count(f'"key": "{f.key}"') == 1 + sum(1 for c in report.changes.new if c.key == f.key), (
            f.key
        )
        assert "member_ids" not in raw["findings"][0]


def _damage(run: Path, what: str) -> Path:
    files = RunFiles(run)
    if what == "summary truncated":
        data = files.summary.read_bytes()
        files.summary.write_bytes(data[: len(data) // 2])
        return files.summary
    if what == "summary key missing":
        raw = json.loads(files.summary.read_text())
        del raw["findings"]
        files.summary.write_text(json.dumps(raw))
        return files.summary
    if what == "summary wrong type":
        raw = json.loads(files.summary.read_text())
        raw["n_samples"] = "many"
        files.summary.write_text(json.dumps(raw))
        return files.summary
    if what == "summary from the future":
        raw = json.loads(files.summary.read_text())
        raw["layout_version"] = 99
        files.summary.write_text(json.dumps(raw))
        return files.summary
    if what == "class file missing":
        files.class_file(1).unlink()
        return files.class_file(1)
    if what == "class file truncated":
        data = files.class_file(1).read_bytes()
        files.class_file(1).write_bytes(data[: len(data) // 3])
        return files.class_file(1)
    if what == "class file lacks an array":
        with np.load(files.class_file(1)) as z:
            arrays = {k: z[k] for k in z.files if k != "rows"}
        np.savez(files.class_file(1), **arrays)
        return files.class_file(1)
    if what == "heatmaps truncated":
        data = files.heatmaps.read_bytes()
        files.heatmaps.write_bytes(data[: len(data) // 2])
        return files.heatmaps
    if what == "heatmaps missing":
        files.heatmaps.unlink()
        return files.heatmaps
    if what == "samples truncated":
        data = files.samples.read_bytes()
        files.samples.write_bytes(data[: len(data) // 2])
        return files.samples
    if what == "samples sorted and written back":  # a user sorting the table by score in pandas
        import pandas as pd

        table = pd.read_parquet(files.samples).sort_values("score", ascending=False, kind="stable")
        table.reset_index(drop=True).to_parquet(files.samples)
        return files.samples
    if what == "thumbs of another run":
        np.save(files.thumbs, np.zeros((3, 8, 8, 3), np.uint8))
        return files.thumbs
    raise AssertionError(what)


DAMAGE = [
    "summary truncated",
    "summary key missing",
    "summary wrong type",
    "summary from the future",
    "class file missing",
    "class file truncated",
    "class file lacks an array",
    "heatmaps truncated",
    "heatmaps missing",
    "samples truncated",
    "samples sorted and written back",
    "thumbs of another run",
]


@pytest.mark.parametrize("what", DAMAGE)
def test_a_damaged_run_raises_one_clear_error_naming_the_file(written, what: str) -> None:  # type: ignore[no-untyped-def]
    _, stage, run = written
    bad = _damage(run, what)
    with pytest.raises(RunReadError) as info:
        r = RunReader.open(run)
        r.report()
        r.heatmaps(stage.batch.sample_ids[:2])
        r.thumbs(stage.batch.sample_ids[:2])
    assert info.value.path == bad and str(bad) in str(info.value)
    if what == "summary from the future":
        assert "upgrade spray" in str(info.value)
    if what == "samples sorted and written back":
        assert "not in the order the run wrote them" in str(info.value) and "--force" in str(info.value)
    # The runs directory lists it as unreadable with the reason; scanning does not fail.
    if what.startswith("summary"):
        (entry,) = scan_runs(run.parent)
        assert entry.reader is None and entry.error is not None and str(bad) in str(entry.error)


def _as_layout_1(run: Path, report) -> None:  # type: ignore[no-untyped-def]
    """Rewrite a layout-2 run as spray 0.1 wrote it (what users' older runs look like)."""
    import pandas as pd

    files = RunFiles(run)
    raw = json.loads(files.summary.read_text())
    members = {f.key: f.member_ids for f in report.findings}
    for f in raw["findings"]:
        f["member_ids"] = members[f["key"]]
    by_key = {f["key"]: f for f in raw["findings"]}
    for c in raw["classes"]:
        c["clusters"] = [
            {k: v for k, v in by_key[key].items() if k != "rank"} for key in c.pop("cluster_keys")
        ]
        c["eigenvalues"] = [1.0, 0.5]
    v1 = {k: v for k, v in raw.items() if k not in ("versions", "config", "extra")}
    raw["extra"].pop("sample_order")  # layout 1 runs predate the recorded row order
    v1.update(layout_version=1, spray_version="0.1.0", **raw["extra"])
    files.summary.write_text(json.dumps(v1))
    for c in (0, 1):
        with np.load(files.class_file(c)) as z:
            arrays = {k: z[k] for k in z.files if k != "knn_distances"}
        np.savez(files.class_file(c), **arrays)
    table = pd.read_parquet(files.samples)
    table.insert(1, "row", np.arange(len(table)))
    table.to_parquet(files.samples, index=False)


def test_layout_1_runs_stay_readable(written) -> None:  # type: ignore[no-untyped-def]
    report, _, run = written
    _as_layout_1(run, report)
    r = RunReader.open(run)
    s = r.summary
    assert s.layout_version == 1 and s.versions == {"spray": "0.1.0", "lrp": 0, "analysis": 0, "layout": 1}
    assert s.extra == {"note": "made by tests/runs/builders.py"} and s.config == {}
    assert [f.key for f in s.findings] == [f.key for f in report.findings]
    assert [f.member_ids for f in r.findings()] == [f.member_ids for f in report.findings]
    assert r.class_data(1).knn_distances is None
    assert r.changes().n_new == 1 and "sample_id" in r.samples().columns
    with pytest.raises(RunReadError, match="layout 1"):
        r.report()


def test_a_sample_of_a_class_not_analysed_has_no_suspicion(tmp_path: Path) -> None:
    """An outside check: the one image of a class below analysis.min_class_size scored 0.0 in samples.parquet,
    which reads as "analysed and clean" to anyone ranking samples by score."""
    import math

    report, stage = make_report()  # class 2 has two samples: not analysed
    table = RunReader.open(write_published(tmp_path / "runs", report, stage)).samples()
    assert table.loc[table["label"] == 2, "score"].map(math.isnan).all()
    assert table.loc[table["label"] != 2, "score"].map(math.isfinite).all()
    # an outside check (an upgrade): runs written before 6 Dec 2026 stored 0.0 there; the dashboard showed
    # "suspicion 0.000" above "its class was not analysed": the reader reads them as not analysed too
    import pandas as pd

    run = RunReader.open(tmp_path / "runs" / "latest").path
    raw = pd.read_parquet(run / "samples.parquet")
    raw.loc[raw["label"] == 2, "score"] = 0.0
    raw.to_parquet(run / "samples.parquet")
    table = RunReader.open(run).samples()
    assert table.loc[table["label"] == 2, "score"].map(math.isnan).all()
    assert table.loc[table["label"] != 2, "score"].map(math.isfinite).all()
    # a review: a real score of a sample labelled with a skipped class is kept (under group_by: prediction it
    # is analysed in its predicted class's group); only the 0.0 older runs wrote is read as not analysed
    i = raw.index[raw["label"] == 2][0]
    raw.loc[i, ["prediction", "score"]] = [0, 0.37]
    raw.to_parquet(run / "samples.parquet")
    assert RunReader.open(run).samples().iloc[i]["score"] == pytest.approx(0.37)

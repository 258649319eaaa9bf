"""What changed in a run's inputs: result settings and data (``spray.runs.input_changes``)."""

from __future__ import annotations

from pathlib import Path

from spray.runs.input_changes import config_changes, data_changes


def test_data_changes_count_added_removed_modified_and_moved_images() -> None:
    previous = {"a.png": "h1", "b.png": "h2", "c.png": "h3", "d.png": "h4", "e.png": "h5"}
    current = {
        "a.png": "h1",  # unchanged
        "b.png": "h9",  # replaced in place
        "c2.png": "h3",  # renamed
        "f.png": "h6",  # new
        "g.png": "h7",  # new
    }  # d.png and e.png deleted
    got = data_changes(current, previous)
    assert (got.added, got.removed, got.modified, got.moved, got.copied) == (2, 2, 1, 1, 0)
    # A copy of a kept image under a new id (an outside-in check saw 30 such copies called "moved").
    got = data_changes({**current, "a_copy.png": "h1", "g2.png": "h3"}, previous)
    assert (got.added, got.moved, got.copied) == (2, 2, 1)
    assert got.relabelled == 0  # without the runs' classes
    # the same image under its id in another class; a renamed class (same label) and an inserted class
    # folder (shifted label, same name) are not relabels
    before = {"a.png": (0, "cat"), "b.png": (1, "dog"), "c.png": (1, "dog"), "d.png": (2, "fox")}
    now = {"a.png": (1, "dog"), "b.png": (1, "hound"), "c.png": (2, "dog"), "d.png": (2, "fox")}
    same = {i: "h" + i for i in before}
    assert data_changes(same, same, (now, before)).relabelled == 1
    assert (
        data_changes({**same, "a.png": "new"}, same, (now, before)).relabelled == 0
    )  # modified, not relabelled
    # an outside check: an image folder's file moved to another class folder (a new id) was "moved: 1,
    # relabelled: 0", and two files swapped across classes "modified: 2, relabelled: 0"
    prev = {"cat/1.png": "h1", "dog/2.png": "h2", "dog/3.png": "h3"}
    was = {"cat/1.png": (0, "cat"), "dog/2.png": (1, "dog"), "dog/3.png": (1, "dog")}
    cur = {"dog/1.png": "h1", "dog/2.png": "h2", "dog/3.png": "h3"}
    got = data_changes(
        cur, prev, ({"dog/1.png": (1, "dog"), "dog/2.png": (1, "dog"), "dog/3.png": (1, "dog")}, was)
    )
    assert (got.moved, got.relabelled) == (1, 1)
    swapped = {"cat/1.png": "h2", "dog/2.png": "h1", "dog/3.png": "h3"}
    got = data_changes(swapped, prev, (was, was))
    assert (got.modified, got.relabelled) == (2, 2)
    # a review: a copy into another class folder (the original stays) was counted as copied and relabelled
    got = data_changes({**prev, "dog/1copy.png": "h1"}, prev, ({**was, "dog/1copy.png": (1, "dog")}, was))
    assert (got.copied, got.relabelled) == (1, 0)
    renamed = {"dog/1b.png": "h2"}  # renamed within its class: moved, not relabelled
    assert data_changes(renamed, {"dog/2.png": "h2"}, ({"dog/1b.png": (1, "dog")}, was)).relabelled == 0
    # a file still there but unreadable now (an outside check saw a truncated file counted as removed)
    got = data_changes({k: v for k, v in previous.items() if k != "c.png"}, previous, skipped={"c.png"})
    assert (got.removed, got.unreadable) == (0, 1)
    assert data_changes({k: v for k, v in previous.items() if k != "c.png"}, previous).removed == 1


def test_config_changes_name_the_result_settings_that_differ() -> None:
    """A finding resolved by a setting must not read as a shortcut gone: the settings that changed are named
    (where the inputs lie and the output section are not settings of the result)."""
    before = {"seed": 0, "scoring": {"flag_max_fraction": 0.6, "carriers": True}, "model": {"checkpoint": "/a.pt"},
              "output": {"keep_runs": 10}}  # fmt: skip
    now = {"seed": 1, "scoring": {"flag_max_fraction": 0.1, "carriers": True}, "model": {"checkpoint": "/b.pt"},
           "output": {"keep_runs": 1}}  # fmt: skip
    assert config_changes(before, now) == ["scoring.flag_max_fraction: 0.6 → 0.1", "seed: 0 → 1"]
    assert config_changes(before, before) == [] and config_changes({}, now) == []
    # an outside check: a setting back at its default (left out of the record) read "'bicubic' → None"
    bicubic = {"data": {"transform": {"resize": 28, "interpolation": "bicubic"}}}
    assert config_changes(bicubic, {"data": {"transform": {"resize": 28}}}) == [
        "data.transform.interpolation: 'bicubic' → 'bilinear'"
    ]
    many = {"scoring": {f"f{i}": i for i in range(25)}}
    assert config_changes({"scoring": {}}, many, limit=20)[-1] == "and 5 more settings"


def test_runs_grouped_by_prediction_count_no_relabels(tmp_path: Path) -> None:
    """A review: under analysis.group_by: prediction a run's classes are predicted classes, so every
    misclassified image would count as relabelled against the previous run's labels."""
    from spray.runs.input_changes import run_classes
    from spray.runs.reader import RunReader
    from tests.runs.builders import make_report, write_published

    report, stage = make_report()
    reader = RunReader.open(write_published(tmp_path / "runs", report, stage))
    report.config = {"analysis": {"group_by": "label"}}
    assert run_classes(report, reader) is not None
    report.config = {"analysis": {"group_by": "prediction"}}
    assert run_classes(report, reader) is None


def test_an_image_moved_into_a_class_too_small_to_analyse_is_relabelled(tmp_path: Path) -> None:
    """An outside-in check: an image moved into a class below ``analysis.min_class_size`` was counted as moved
    with ``relabelled: 0`` (this run's classes were taken from its analysed classes only)."""
    from spray.runs.input_changes import run_classes
    from spray.runs.reader import RunReader
    from tests.runs.builders import make_report, write_published

    report, stage = make_report()
    reader = RunReader.open(write_published(tmp_path / "runs", report, stage))
    table = reader.samples()
    moved = str(table.index[0])
    other = next(int(label) for label in table["label"] if int(label) != int(table["label"].iloc[0]))
    report.labels = {str(s): int(label) for s, label in zip(table.index, table["label"], strict=True)}
    report.labels[moved] = other
    report.classes = []  # no class analysed: every class too small
    hashes = reader.content_hashes()
    assert data_changes(hashes, hashes, run_classes(report, reader)).relabelled == 1
    report.labels[moved] = int(table["label"].iloc[0])
    assert data_changes(hashes, hashes, run_classes(report, reader)).relabelled == 0


def test_every_setting_left_out_at_its_default_reads_as_that_default() -> None:
    """The sections declare what they leave out of the record; config_changes reads the same declaration, so
    a setting added later (left out at its default) can never read "→ None" when it goes back to it."""
    from spray.config.audit import AuditConfig
    from spray.config.section import omitted_defaults

    omitted = omitted_defaults(AuditConfig)
    assert {"data.transform.interpolation", "data.transform.decode_device", "lrp.elementwise"} <= set(omitted)
    for path, default in omitted.items():
        if path.startswith("correction."):
            continue  # not a result section
        *parents, leaf = path.split(".")
        other = "changed"
        recorded: dict = {"seed": 0}
        node = recorded
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = other
        assert config_changes(recorded, {"seed": 0}) == [f"{path}: {other!r} → {default!r}"], path


def test_a_section_records_its_omitted_settings_only_away_from_their_default() -> None:
    from spray.config.data import TransformConfig
    from spray.config.lrp import LRPConfig

    assert "interpolation" not in TransformConfig().model_dump(mode="json")
    assert TransformConfig(interpolation="bicubic").model_dump(mode="json")["interpolation"] == "bicubic"
    assert "elementwise" not in LRPConfig().model_dump() and LRPConfig(elementwise="compile").model_dump()


def test_the_data_changes_sentence_counts_in_words_and_says_a_move_across_classes_counts_twice() -> None:
    """An outside check: "1 copies", and a file moved into another class folder counted as moved and as
    relabelled without a word, so the counts read as more changed images than there were."""
    from spray.records import DataChanges

    said = DataChanges(added=1, removed=0, modified=0, moved=1, copied=1, relabelled=1).sentence()
    assert said.startswith("1 image added, 0 removed, 0 modified in place, 1 moved to another id, 1 copy of ")
    assert "counts as moved and relabelled" in said
    assert "3 copies of kept images" in DataChanges(2, 0, 0, 0, copied=3).sentence()

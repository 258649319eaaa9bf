"""What changed in a run's inputs since the previous run: its result settings (:func:`config_changes`) and its
data, by sample id, content hash and class (:func:`data_changes`). :mod:`spray.runs.changes` records both in
``summary.json`` → ``changes`` beside the clusters' changes, so that a cluster that came or went can be told
from one that a setting or the data moved.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from spray.records import AuditReport, DataChanges, is_relabel
from spray.runs.errors import RunReadError
from spray.runs.reader import RunReader

#: ``sample_id -> (label, class name)`` of one run.
Classes = Mapping[str, tuple[int, str]]


def run_classes(report: AuditReport, reader: RunReader) -> tuple[Classes, Classes] | None:
    """The class of every sample in this run and in the previous one (None when its per-sample table cannot
    be read, or when the run groups samples by prediction: its classes are then not the labels)."""
    if (report.config.get("analysis") or {}).get("group_by", "label") != "label":
        return None
    try:
        samples = reader.samples()
        before = zip(samples.index, samples["label"], samples["label_name"], strict=True)
        previous = {str(s): (int(label), str(name)) for s, label, name in before}
    except (RunReadError, OSError, KeyError):
        return None
    if not report.labels:  # a run read back from disk: its analysed classes
        return {s: (c.class_index, c.class_name) for c in report.classes for s in c.sample_ids}, previous
    names = report.class_names
    # every sample, also those of a class too small to analyse (an image moved into one is relabelled too)
    now = {
        s: (label, names[label] if label < len(names) else str(label)) for s, label in report.labels.items()
    }
    return now, previous


def config_changes(before: Mapping[str, Any], now: Mapping[str, Any], limit: int = 20) -> list[str]:
    """``"section.field: old → new"`` for each result-relevant setting (:data:`RESULT_SECTIONS` and the seed,
    not where the inputs lie) that differs between two runs' recorded configs; at most ``limit`` of them.
    Empty when either config is unknown (a run written before configs were recorded)."""
    from spray.config.audit import AuditConfig
    from spray.config.section import omitted_defaults
    from spray.runs.identity import NOT_RESULT_FIELDS, RESULT_SECTIONS

    if not before or not now:
        return []

    def flat(d: Any, prefix: str) -> dict[str, Any]:
        if not isinstance(d, Mapping):
            return {prefix: d}
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out

    skip = {f"{section}.{name}" for section, names in NOT_RESULT_FIELDS.items() for name in names}
    a = flat({s: before.get(s) for s in (*RESULT_SECTIONS, "seed")}, "")
    b = flat({s: now.get(s) for s in (*RESULT_SECTIONS, "seed")}, "")
    # a setting at its default is left out of the recorded config (to keep older run ids): read it as that
    omitted = omitted_defaults(AuditConfig)
    a, b = {**omitted, **a}, {**omitted, **b}
    keys = sorted(k for k in set(a) | set(b) if k not in skip and a.get(k) != b.get(k))
    said = [f"{k}: {a.get(k)!r} → {b.get(k)!r}" for k in keys[:limit]]
    return said + ([f"and {len(keys) - limit} more settings"] if len(keys) > limit else [])


def data_changes(
    current: Mapping[str, str],
    previous: Mapping[str, str],
    classes: tuple[Classes, Classes] | None = None,
    skipped: Collection[str] = (),
) -> DataChanges:
    """What changed in the data between two runs' ``sample_id -> content hash`` tables; with both runs'
    classes (``sample_id -> (label, name)``) also the images whose label changed, and with the ids this run
    skipped as unreadable, the previous samples that are unreadable now (not removed)."""
    now, before = set(current.values()), set(previous.values())
    new_ids = [i for i in current if i not in previous]
    # Content whose previous id is still here (with that content): a new id holding it is a copy, not a move.
    kept = {h for i, h in previous.items() if current.get(i) == h}
    relabelled = 0
    if classes is not None:
        a, b = classes
        # each image's previous id: its own with the same content, else the one id that held its content (a
        # file moved or swapped into another class folder is an image with another class too)
        ids_of: dict[str, list[str]] = {}
        for i, h in previous.items():
            ids_of.setdefault(h, []).append(i)
        for i, h in current.items():
            # a copy (its original still there) is not the image moving: the original keeps its class
            moved = h not in kept and len(ids_of.get(h, ())) == 1
            was = i if previous.get(i) == h else (ids_of[h][0] if moved else None)
            relabelled += was is not None and i in a and was in b and is_relabel(b[was], a[i])
    return DataChanges(
        relabelled=relabelled,
        added=sum(current[i] not in before for i in new_ids),
        removed=sum(h not in now for i, h in previous.items() if i not in current and i not in skipped),
        unreadable=sum(i not in current and i in skipped for i in previous),
        modified=sum(previous[i] != h for i, h in current.items() if i in previous),
        moved=sum(current[i] in before and current[i] not in kept for i in new_ids),
        copied=sum(current[i] in kept for i in new_ids),
    )

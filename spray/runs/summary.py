"""The typed form of ``summary.json``, parsed with errors that name the file and the key.

:func:`parse_summary` turns the JSON document (any layout version up to
:data:`~spray.runs.layout.LAYOUT_VERSION`) into a :class:`RunSummary`; :func:`parse_changes` does the same
for its ``changes`` section. Reading the file itself is :mod:`spray.runs.reader`'s job.

How older layouts are read (``docs/run_layout.md``, "Older versions"):

- layout 1 (spray 0.1): no ``versions`` (its ``spray_version`` is kept; the LRP and analysis versions
  read as 0, "before versions existed"), no ``config``, run-level fields at the top level (they are read
  from there), each cluster also under ``classes[].clusters`` with its ``member_ids`` (ignored: the
  members are read from the class files, as in layout 2), no ``knn_distances`` in the class files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spray.records import (
    SPACES,
    TOO_FEW_SAMPLES,
    ChangeRule,
    ChangeSet,
    ClassSkipped,
    ClusterChange,
    DataChanges,
    SkippedSample,
    UnreadableRun,
)
from spray.runs.errors import RunReadError
from spray.runs.layout import LAYOUT_VERSION


@dataclass(frozen=True)
class FindingSummary:
    """A scored cluster as ``summary.json`` describes it (members and mean heatmap are in the class file:
    :meth:`spray.runs.reader.RunReader.finding` gives the whole :class:`~spray.records.ClusterFinding`).

    ``space`` and ``channels`` (layout 4) read as ``"pixel"`` and ``[]`` from older runs."""

    key: str
    rank: int
    class_index: int
    class_name: str
    k: int
    cluster_id: int
    size: int
    fraction: float
    score: float
    suspicious: bool
    evidence: list[str]
    signals: dict[str, float]
    carrier_ids: list[str]
    space: str = "pixel"
    channels: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ClassSummary:
    """An analysed class as ``summary.json`` describes it (arrays: :class:`spray.runs.reader.ClassData`)."""

    class_index: int
    class_name: str
    n: int
    n_components: int
    chosen_k: int
    eigengap_k: int
    k_scores: dict[int, dict[str, float]]
    embedding_method: str
    cluster_keys: list[str]


@dataclass(frozen=True)
class RunSummary:
    """Everything ``summary.json`` says about a run, typed (except ``changes``: see
    :meth:`spray.runs.reader.RunReader.changes`).

    Attributes
    ----------
    path : Path
        The run folder.
    layout_version : int
        Layout the run was written with.
    run_id, name, dataset : str
        Identity: run id (64 hex digits), the audit's name, the dataset key (flags and previous runs
        are matched by it).
    versions : dict
        ``spray`` (package), ``lrp``, ``analysis``, ``layout`` versions the run was made with.
    hashes : dict[str, str]
        ``model``, ``data``, ``config``, ``code``: what the run id hashes.
    config : dict
        The full resolved config (empty for layout 1).
    cache : str
        Cache directory name of its heatmaps ("" when not recorded).
    n_samples : int
        Readable samples (rows of ``samples.parquet``).
    class_names : list[str]
        Names in label order.
    timings : dict
        Seconds per stage and what varies between identical runs.
    skipped : list[SkippedSample]
        Unreadable samples with reasons.
    classes_skipped : list[ClassSkipped]
        Classes too small to analyse.
    classes : list[ClassSummary]
        Analysed classes, by class index.
    findings : list[FindingSummary]
        Every scored cluster, most suspicious first.
    extra : dict
        Free-form additions.
    """

    path: Path
    layout_version: int
    run_id: str
    name: str
    dataset: str
    versions: dict[str, Any]
    hashes: dict[str, str]
    config: dict[str, Any]
    cache: str
    n_samples: int
    class_names: list[str]
    timings: dict[str, Any]
    skipped: list[SkippedSample]
    classes_skipped: list[ClassSkipped]
    classes: list[ClassSummary]
    findings: list[FindingSummary]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def trial_limit(self) -> int | None:
        """``data.limit`` of a trial on the first N samples (None for a full audit, or a run without config)."""
        return _trial_limit(self.config)

    @property
    def n_suspicious(self) -> int:
        """Suspicious clusters in the run."""
        return sum(1 for f in self.findings if f.suspicious)

    def class_summary(self, class_index: int) -> ClassSummary | None:
        """The analysed class ``class_index``, or None."""
        return next((c for c in self.classes if c.class_index == int(class_index)), None)

    def finding(self, key: str) -> FindingSummary | None:
        """The scored cluster ``key`` (``"<class>/k<k>/c<id>"``), or None."""
        return next((f for f in self.findings if f.key == key), None)


class _Doc:
    """Typed access to one JSON object of a file, raising :class:`RunReadError` that names file and key."""

    def __init__(self, d: Any, file: Path, where: str) -> None:
        if not isinstance(d, dict):
            raise RunReadError(file, f"{where or 'the document'} is not a JSON object")
        self.d, self.file, self.where = d, file, where

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.d or (self.d[key] is None and default is not ...):
            if default is ...:
                raise RunReadError(self.file, f"key {self._name(key)!r} is missing")
            return default
        v = self.d[key]
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            raise RunReadError(self.file, f"key {self._name(key)!r} has the wrong type ({type(v).__name__})")
        return v

    def sub(self, key: str) -> _Doc:
        v = self.get(key, dict)
        return _Doc(v, self.file, self._name(key))

    def items(self, key: str, default: Any = ...) -> list[_Doc]:
        v = self.get(key, list, default)
        return [_Doc(x, self.file, f"{self._name(key)}[{i}]") for i, x in enumerate(v)]


def _finding(d: _Doc, rank: int) -> FindingSummary:
    return FindingSummary(
        key=d.get("key", str),
        rank=d.get("rank", int, rank),
        class_index=d.get("class_index", int),
        class_name=d.get("class_name", str),
        k=d.get("k", int),
        cluster_id=d.get("cluster_id", int),
        size=d.get("size", int),
        fraction=d.get("fraction", float),
        score=d.get("score", float),
        suspicious=d.get("suspicious", bool),
        evidence=[str(e) for e in d.get("evidence", list)],
        signals={str(k): float(v) for k, v in d.get("signals", dict).items()},
        carrier_ids=[str(c) for c in d.get("carrier_ids", list, [])],
        space=_space(d),
        channels=[int(c) for c in d.get("channels", list, [])],
    )


def _space(d: _Doc) -> str:
    space = d.get("space", str, "pixel")
    if space not in SPACES:
        raise RunReadError(d.file, f"key {d._name('space')!r} is {space!r}, not one of {', '.join(SPACES)}")
    return str(space)


def _class(d: _Doc, v1: bool) -> ClassSummary:
    keys = [str(c["key"]) for c in d.get("clusters", list)] if v1 else d.get("cluster_keys", list)
    return ClassSummary(
        class_index=d.get("class_index", int),
        class_name=d.get("class_name", str),
        n=d.get("n", int),
        n_components=d.get("n_components", int),
        chosen_k=d.get("chosen_k", int),
        eigengap_k=d.get("eigengap_k", int),
        k_scores={
            int(k): {str(n): float(v) for n, v in s.items()} for k, s in d.get("k_scores", dict).items()
        },
        embedding_method=d.get("embedding_method", str),
        cluster_keys=[str(k) for k in keys],
    )


#: Top-level keys of layout 1 that are read into typed fields (anything else goes to ``extra``).
_V1_KNOWN = {
    "layout_version",
    "spray_version",
    "run_id",
    "hashes",
    "timings",
    "skipped",
    "classes",
    "findings",
    "name",
    "dataset",
    "n_samples",
    "classes_skipped",
    "class_names",
    "cache",
    "changes",
}


def _trial_limit(config: dict[str, Any]) -> int | None:
    """The ``data.limit`` a run's recorded config sets (None without one, or a config of another shape)."""
    data = config.get("data")
    limit = data.get("limit") if isinstance(data, dict) else None
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else None


def audit_name(name: str, limit: int | None) -> str:
    """The name an audit's runs are published under: ``name``, or for a trial on the first ``limit`` samples
    ``"NAME (data.limit N)"``, another audit (its runs are neither the full audit's previous runs nor in its
    retention)."""
    trial = f" (data.limit {limit})"
    return name if limit is None or name.endswith(trial) else name + trial


def full_audit_name(name: str) -> str:
    """The full audit a trial's name (:func:`audit_name`) belongs to: ``name`` without its ``(data.limit N)``."""
    return re.sub(r" \(data\.limit \d+\)$", "", name)


def parse_summary(raw: Any, file: Path) -> RunSummary:
    """The typed summary of the JSON document ``raw`` read from ``file`` (``<run>/summary.json``).

    Raises
    ------
    RunReadError
        A key is missing or has the wrong type, or the layout is newer than this spray reads.
    """
    d = _Doc(raw, file, "")
    layout = d.get("layout_version", int)
    if layout > LAYOUT_VERSION:
        raise RunReadError(
            file,
            f"written with run layout {layout}, newer than this spray reads (up to {LAYOUT_VERSION}); "
            "upgrade spray to read it",
        )
    if layout < 1:
        raise RunReadError(file, f"unknown run layout {layout}")
    v1 = layout == 1
    config = {} if v1 else d.get("config", dict)
    # a trial published before 6 Dec 2026 carries the full audit's name: read as the trial it is
    versions = (
        {"spray": d.get("spray_version", str), "lrp": 0, "analysis": 0, "layout": 1}
        if v1
        else dict(d.get("versions", dict))
    )
    return RunSummary(
        path=file.parent,
        layout_version=layout,
        run_id=d.get("run_id", str),
        name=audit_name(d.get("name", str, ""), _trial_limit(config)),
        dataset=d.get("dataset", str, ""),
        versions=versions,
        hashes={str(k): str(v) for k, v in d.get("hashes", dict).items()},
        config=config,
        cache=d.get("cache", str, ""),
        n_samples=d.get("n_samples", int),
        class_names=[str(c) for c in d.get("class_names", list)],
        timings=d.get("timings", dict),
        skipped=[SkippedSample(s.get("sample_id", str), s.get("reason", str)) for s in d.items("skipped")],
        classes_skipped=[
            ClassSkipped(
                c.get("class_index", int),
                c.get("class_name", str),
                c.get("n", int),
                c.get("reason", str, TOO_FEW_SAMPLES),
            )
            for c in d.items("classes_skipped", [])
        ],
        classes=[_class(c, v1) for c in d.items("classes")],
        findings=[_finding(f, i + 1) for i, f in enumerate(d.items("findings"))],
        extra={k: v for k, v in raw.items() if k not in _V1_KNOWN} if v1 else d.get("extra", dict, {}),
    )


def _opt(d: _Doc, key: str, kind: type) -> Any:
    return d.get(key, kind, None)


def _change(d: _Doc) -> ClusterChange:
    return ClusterChange(
        key=_opt(d, "key", str),
        class_index=d.get("class_index", int),
        class_name=d.get("class_name", str),
        size=_opt(d, "size", int),
        score=_opt(d, "score", float),
        rank=_opt(d, "rank", int),
        previous_key=_opt(d, "previous_key", str),
        previous_size=_opt(d, "previous_size", int),
        previous_score=_opt(d, "previous_score", float),
        jaccard=_opt(d, "jaccard", float),
        correlation=_opt(d, "correlation", float),
        note=d.get("note", str, ""),
    )


def parse_changes(raw: Any, file: Path) -> ChangeSet | None:
    """The typed ``changes`` section (None when the run has none: made by ``spray audit``).

    Raises
    ------
    RunReadError
        A key is missing or has the wrong type.
    """
    if raw is None:
        return None
    d = _Doc(raw, file, "changes")
    m = d.sub("matching")
    return ChangeSet(
        previous_run_id=_opt(d, "previous_run_id", str),
        previous_run=_opt(d, "previous_run", str),
        new=[_change(c) for c in d.items("new")],
        grown=[_change(c) for c in d.items("grown")],
        persisting=[_change(c) for c in d.items("persisting")],
        resolved=[_change(c) for c in d.items("resolved")],
        n_suspicious=d.get("n_suspicious", int),
        rule=ChangeRule(
            jaccard_min=m.get("jaccard_min", float),
            correlation_min=m.get("correlation_min", float),
            grow_min=m.get("grow_min", float),
            # runs before split and merged clusters were recognised did not record it: the default then
            contained_min=m.get("contained_min", float, ChangeRule.contained_min),
        ),
        unreadable=[
            UnreadableRun(u.get("run", str), u.get("reason", str)) for u in d.items("unreadable", [])
        ],
        not_analysed=[_change(c) for c in d.items("not_analysed", [])],
        model_changed=raw.get("model_changed") if isinstance(raw.get("model_changed"), bool) else None,
        data=_data_changes(d),
        config_changed=[str(c) for c in d.get("config_changed", list, [])],
    )


def _data_changes(d: _Doc) -> DataChanges | None:
    """``changes.data``: None in runs before 5 Dec 2026 and when either run lacked content hashes."""
    if d.d.get("data") is None:
        return None
    x = d.sub("data")
    return DataChanges(
        added=x.get("added", int),
        removed=x.get("removed", int),
        modified=x.get("modified", int),
        moved=x.get("moved", int),
        copied=x.get("copied", int, 0),  # no "copied" before 5 Dec 2026
        relabelled=x.get("relabelled", int, 0),  # none before 6 Dec 2026
        unreadable=x.get("unreadable", int, 0),  # counted as removed before 6 Dec 2026
    )

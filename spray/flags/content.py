"""Whether a flag still names the content it was set on.

A flag is keyed by sample id, and an id is not always bound to content: an IDX record's id is its
position, so removing a record moves every later id onto another image, and a file replaced in place keeps
its path. Each flag records the content hash its sample had in the run it was set on; this module compares
those hashes with another run's (``samples.parquet``'s ``content_hash``) and sorts every flag into

- **bound**: same content, or nothing to compare (a flag or a run from before content hashes were kept);
- **moved**: the id names other content or is gone, and the flagged content is in the run under exactly one
  other id (``spray flags rebind`` moves the flag there);
- **replaced**: the id names other content and the flagged content is nowhere (or under several ids);
- **gone**: the id is absent from the run and its content is nowhere or under several ids, or was never
  recorded (a deleted file: the flag acts on no image);
- **unverified**: set before flags recorded content, on a run of other data whose ids are positions (IDX,
  factory; its data fingerprint differs from the run's): the id may now name another image, and nothing
  tells which.

A flag set before the database recorded content or class (flag database schemas 1–3) takes both from the
run it was set on, when that run is still in the runs folder and kept them (run layout 5).

Moved and replaced flags would otherwise act on the wrong image (``spray correct``, exports), silently;
gone flags would be handed to unlearning for images that no longer exist.
"""

from __future__ import annotations

import logging
import shlex
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spray.flags.records import Flag
from spray.flags.store import FlagStore
from spray.records import is_relabel

if TYPE_CHECKING:
    from spray.runs.summary import RunSummary

log = logging.getLogger(__name__)

# How many ids a message lists before "and N more".
SHOWN_IDS = 5


@dataclass(frozen=True)
class ChangedFlag:
    """A flag whose sample id does not name the flagged content in the run.

    Attributes
    ----------
    flag : Flag
        The current flag.
    run_hash : str or None
        The id's content hash in the run; None when the id is not in the run.
    found_at : list[str]
        Ids of the run that hold the flagged content (sorted; empty when it is nowhere).
    """

    flag: Flag
    run_hash: str | None
    found_at: list[str]
    unverified: bool = False

    @property
    def kind(self) -> str:
        """``"moved"`` (the content is under exactly one other id), ``"replaced"``, ``"gone"`` or
        ``"unverified"`` (no content recorded, and the data changed since the flag's run)."""
        if self.unverified:
            return "unverified"
        if len(self.found_at) == 1:
            return "moved"
        # An id that is gone names no image, so its flag acts on none (content under several ids: ambiguous).
        return "gone" if self.run_hash is None else "replaced"


@dataclass(frozen=True)
class FlagBinding:
    """The current flags of a dataset checked against one run's content.

    Attributes
    ----------
    bound : list[Flag]
        Flags whose id names the same content (or could not be checked, see ``unchecked``).
    changed : list[ChangedFlag]
        Flags whose id names other content or is gone (see :attr:`ChangedFlag.kind`).
    unchecked : int
        Bound flags without a recorded hash (set before flags recorded content, or from an older run).
    outside : int
        Bound flags on samples a ``data.limit`` trial run did not read (not checked: not deleted files).
    """

    bound: list[Flag] = field(default_factory=list)
    changed: list[ChangedFlag] = field(default_factory=list)
    unchecked: int = 0
    outside: int = 0

    def of_kind(self, *kinds: str) -> list[ChangedFlag]:
        """The changed flags of the given kinds, in flag order."""
        return [c for c in self.changed if c.kind in kinds]

    @property
    def wrong(self) -> list[ChangedFlag]:
        """Flags that would act, or may act, on other content than was flagged: moved, replaced, unverified."""
        return self.of_kind("moved", "replaced", "unverified")


@dataclass(frozen=True)
class _Origin:
    """What a flag's own run kept: content hashes (None before run layout 5), ``(label, class name)`` per
    sample, its data fingerprint, and whether its sample ids are positions (IDX records; a factory's, which
    spray cannot tell) rather than paths, which new or changed files elsewhere cannot shift."""

    hashes: dict[str, str] | None
    classes: dict[str, tuple[int, str]]
    data: str | None
    positional: bool = True

    def other_data(self, data_hash: str | None) -> bool:
        """Whether ids of this run may name other images in data of fingerprint ``data_hash``."""
        return self.positional and bool(self.data) and bool(data_hash) and self.data != data_hash


def _origin(runs_dir: Path, run_id: str, *, samples: bool = True) -> _Origin | None:
    """The run ``run_id`` in ``runs_dir`` as an :class:`_Origin` (None when it is not there or unreadable);
    without ``samples`` only its summary is read (no content hashes, no classes)."""
    from spray.runs.errors import RunReadError
    from spray.runs.publish import find_run
    from spray.runs.reader import RunReader

    try:
        path = find_run(runs_dir, run_id)
        if path is None:
            return None
        reader = RunReader.open(path)
        kind = (reader.summary.config.get("data") or {}).get("kind")
        data, positional = reader.summary.hashes.get("data"), kind != "image_folder"
        if not samples:
            return _Origin(None, {}, data, positional)
        table = reader.samples()
        classes = {str(s): (int(table.at[s, "label"]), str(table.at[s, "label_name"])) for s in table.index}
        return _Origin(reader.content_hashes(), classes, data, positional)
    except (RunReadError, OSError, KeyError, ValueError):
        return None


def runs_of_other_data(runs_dir: Path, run_ids: Sequence[str], data_hash: str) -> list[str]:
    """The ids among ``run_ids`` of runs in ``runs_dir`` whose sample ids may name other images in the data of
    fingerprint ``data_hash`` (:meth:`_Origin.other_data`)."""
    return [
        r
        for r in run_ids
        if (origin := _origin(runs_dir, r, samples=False)) is not None and origin.other_data(data_hash)
    ]


def from_origin_runs(
    flags: Sequence[Flag], runs_dir: Path, data_hash: str | None
) -> tuple[list[Flag], set[int]]:
    """``flags`` with the content hash and class that flags of schemas 1–3 lack taken from the run each was
    set on (when it is in ``runs_dir`` and kept them), and the ``event_id`` of those still without a content
    hash whose run saw other data than ``data_hash`` (unverified)."""
    out: list[Flag] = []
    stale: set[int] = set()
    origins: dict[str, _Origin | None] = {}
    for f in flags:
        if (f.content_hash is not None and f.class_name is not None) or not f.run_id:
            out.append(f)
            continue
        if f.run_id not in origins:
            origins[f.run_id] = _origin(runs_dir, f.run_id)
        origin = origins[f.run_id]
        if origin is not None:
            if f.content_hash is None and origin.hashes is not None and f.sample_id in origin.hashes:
                f = replace(f, content_hash=origin.hashes[f.sample_id])
            if f.class_name is None and f.sample_id in origin.classes:
                label, name = origin.classes[f.sample_id]
                f = replace(f, class_name=name, class_index=label)
            if f.content_hash is None and origin.other_data(data_hash):
                stale.add(f.event_id)
        out.append(f)
    return out, stale


def bind_flags(
    flags: Sequence[Flag],
    run_hashes: Mapping[str, str],
    *,
    run: Path | None = None,
) -> FlagBinding:
    """Sort ``flags`` by whether their ids still name the flagged content in a run.

    Parameters
    ----------
    flags : sequence of Flag
        Current flags of one dataset (:meth:`FlagStore.current`).
    run_hashes : mapping of str to str
        ``sample_id -> content hash`` of every sample of the run (``RunReader.content_hashes()``).
    run : Path, optional
        The run's folder: flags of schemas 1–3 take their content and class from their own runs beside it,
        and its data fingerprint tells the unverified ones (:func:`from_origin_runs`).

    Returns
    -------
    FlagBinding
    """
    ids_of: dict[str, list[str]] = defaultdict(list)
    for sample_id, h in run_hashes.items():
        ids_of[h].append(sample_id)
    stale: set[int] = set()
    summary = None if run is None else _run_summary(run)
    if run is not None:
        data_hash = None if summary is None else summary.hashes.get("data")
        flags, stale = from_origin_runs(flags, run.parent, data_hash)
    # a trial run (data.limit) holds the first N samples only: an id it lacks is not a deleted file
    trial = summary is not None and summary.trial_limit is not None
    bound: list[Flag] = []
    changed: list[ChangedFlag] = []
    unchecked = outside = 0
    for f in flags:
        now = run_hashes.get(f.sample_id)
        if f.event_id in stale:
            changed.append(ChangedFlag(f, now, [], unverified=True))
        elif trial and now is None and not ids_of.get(f.content_hash or ""):
            bound.append(f)
            outside += 1
        elif f.content_hash is None and now is None:
            changed.append(ChangedFlag(f, None, []))  # nothing to compare, but its id is gone: a deleted file
        elif f.content_hash is None:
            bound.append(f)
            unchecked += 1
        elif now == f.content_hash:
            bound.append(f)
        else:
            found = sorted(i for i in ids_of.get(f.content_hash, []) if i != f.sample_id)
            changed.append(ChangedFlag(f, now, found))
    return FlagBinding(bound, changed, unchecked, outside)


def plan_moves(binding: FlagBinding) -> tuple[list[tuple[Flag, str]], list[ChangedFlag], dict[str, Flag]]:
    """What ``spray flags rebind`` may move: ``(moves as (flag, new id), clashes, flags staying put by id)``.

    A flag already on the content's new id (set on the new run, say) is a decision of its own and is never
    overwritten; a flag that moves vacates its id (a swap of two files moves both); two flags whose images
    became one file (same bytes, one of them deleted) clash with each other: neither wins.
    """
    staying = [*binding.bound, *(c.flag for c in binding.changed if c.kind != "moved")]
    taken = {f.sample_id: f for f in staying}
    moved = binding.of_kind("moved")
    targets = Counter(c.found_at[0] for c in moved)
    clashes = [c for c in moved if c.found_at[0] in taken or targets[c.found_at[0]] > 1]
    return [(c.flag, c.found_at[0]) for c in moved if c not in clashes], clashes, taken


def class_changes(
    moves: Sequence[tuple[Flag, str]], labels: Mapping[str, int], class_names: Sequence[str]
) -> list[str]:
    """The moves whose image now carries another label than the class its flag was set in (the class
    recorded with the flag, or for a flag set before flag database schema 4 from a finding, the class index
    its key starts with): ``"old → new (flagged in class A, now labelled B)"`` (``"id (…)"`` for a flag that
    stays on its id: a relabelled image)."""
    out = []
    for flag, new_id in moves:
        if new_id not in labels:
            continue
        label = int(labels[new_id])
        now = _name(class_names, label)
        was = flag.class_name if flag.class_name is not None else _key_class(flag.cluster_key, class_names)
        if was is not None and is_relabel((flag.class_index, was), (label, now)):
            where = flag.sample_id if new_id == flag.sample_id else f"{flag.sample_id} → {new_id}"
            out.append(f"{where} (flagged in class {was}, now labelled {now})")
    return out


def classes_of(samples: Any, sample_ids: Sequence[str]) -> dict[str, tuple[int, str]]:
    """``sample_id -> (label, class name)`` of these samples in a run's per-sample table (``RunReader.samples()``),
    as a flag records them (:meth:`FlagStore.flag`'s ``classes``); ids not in the table are left out."""
    return {
        s: (int(samples.at[s, "label"]), str(samples.at[s, "label_name"]))
        for s in sample_ids
        if s in samples.index
    }


def _key_class(cluster_key: str | None, class_names: Sequence[str]) -> str | None:
    """The class a finding key names (``"3/k5/c2"`` → class 3's name), None for no key or another form."""
    if cluster_key is None:
        return None
    try:
        return _name(class_names, int(cluster_key.split("/")[0]))
    except ValueError:
        return None


def _name(class_names: Sequence[str], c: int) -> str:
    return class_names[c] if 0 <= c < len(class_names) else str(c)


def listed(ids: Sequence[str]) -> str:
    """``a, b, c`` with at most :data:`SHOWN_IDS` ids, then ``and N more``."""
    head = ", ".join(ids[:SHOWN_IDS])
    return head + (f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else "")


def describe(binding: FlagBinding, run: str) -> str:
    """One paragraph on the moved, replaced and gone flags and what to do (empty when there are none).

    Parameters
    ----------
    binding : FlagBinding
        The checked flags.
    run : str
        The run folder the flags were checked against (used in the commands suggested).
    """
    moved, replaced, gone = binding.of_kind("moved"), binding.of_kind("replaced"), binding.of_kind("gone")
    unverified = binding.of_kind("unverified")
    if not moved and not replaced and not gone and not unverified:
        return ""
    parts = []
    run_path = Path(run)
    run = shlex.quote(str(run))  # the commands below are pasted into a shell
    if unverified:
        ids = [c.flag.sample_id for c in unverified]
        origins = sorted({(c.flag.run_id or "")[:12] for c in unverified})
        parts.append(
            f"{len(unverified)} flags were set before flags recorded the content of their images, on run "
            f"{', '.join(origins)}, whose data differ from this run's ({listed(ids)}): an IDX record removed or "
            "reordered, or a file replaced, would put them on other images, and nothing tells which. Look at "
            f"their images in the dashboard, then set each again with `spray flags set --run {run} --sample-ids "
            f"ID --status STATUS` (which records the content) or drop it with `spray flags unset --run {run} "
            "--sample-ids ID`."
        )
    if moved:
        pairs = [f"{c.flag.sample_id} → {c.found_at[0]}" for c in moved]
        parts.append(
            f"{len(moved)} flagged images are now under another sample id ({listed(pairs)}): "
            f"`spray flags rebind --run {run}` moves their flags with them."
        )
    if replaced:
        ids = [c.flag.sample_id for c in replaced]
        parts.append(
            f"{len(replaced)} flagged sample ids now name other content (replaced or changed files, or a "
            f"changed factory transform: {listed(ids)}): look at them in the dashboard, then keep each flag "
            f"on the new content with `spray flags set --run {run} --sample-ids ID --status STATUS` or drop "
            f"it with `spray flags unset --run {run} --sample-ids ID`."
        )
    parts.extend(_gone_parts(gone, run_path, run))
    return " ".join(parts)


def _gone_parts(gone: Sequence[ChangedFlag], run_path: Path, run: str) -> list[str]:
    """The sentences of :func:`describe` on flags whose ids the run does not hold (``run`` shell-quoted)."""
    parts = []
    copies = [c for c in gone if c.found_at]
    if copies:
        pairs = [f"{c.flag.sample_id} → {' and '.join(c.found_at)}" for c in copies]
        parts.append(
            f"{len(copies)} flags name sample ids that are no longer in the run, and their content is now under "
            f"several ids ({listed(pairs)}): flag the copies you mean with `spray flags set --run {run} "
            f"--sample-ids ID --status STATUS`, then drop the old id's flag with `spray flags unset --run {run} "
            "--sample-ids ID`."
        )
    skipped = _skipped_in(run_path)
    unreadable = [c for c in gone if not c.found_at and c.flag.sample_id in skipped]
    if unreadable:
        pairs = [f"{c.flag.sample_id}: {skipped[c.flag.sample_id]}" for c in unreadable]
        parts.append(
            f"{len(unreadable)} flagged sample ids could not be read in this run and were skipped ({listed(pairs)}): "
            "their flags stay; restore or repair the files and audit again (the flags then name their images "
            "again, or say that they changed)."
        )
    deleted = [c for c in gone if not c.found_at and c.flag.sample_id not in skipped]
    later = _set_later_on_runs_elsewhere([c.flag for c in deleted], run_path)
    unseen = [c for c in deleted if c.flag.event_id in later]
    if unseen:
        ids = [c.flag.sample_id for c in unseen]
        origins = sorted({(c.flag.run_id or "")[:12] for c in unseen})
        parts.append(
            f"{len(unseen)} {'flag names' if len(unseen) == 1 else 'flags name'} sample ids this run does not "
            f"hold ({listed(ids)}) and {'was' if len(unseen) == 1 else 'were'} set after it, on run "
            f"{', '.join(origins)}, which this runs folder does not hold: a newer audit elsewhere (a copy of the "
            "project, a colleague's runs folder) may hold their images, unless retention removed that run here. "
            "Audit the data that holds them here, or copy that run into this runs folder, before dropping any: "
            "until then they are left out of what is checked against this run."
        )
    deleted = [c for c in deleted if c not in unseen]
    if deleted:
        ids = [c.flag.sample_id for c in deleted]
        parts.append(
            f"{len(deleted)} flags name sample ids that are no longer in the run, and their content is not found "
            f"under another id (deleted files: {listed(ids)}): they act on no image; drop them with "
            f"`spray flags unset --run {run} --sample-ids ID`."
        )
    return parts


def _set_later_on_runs_elsewhere(flags: Sequence[Flag], run: Path) -> set[int]:
    """Event ids of ``flags`` set after the run at ``run`` was made, on runs its runs folder does not hold (a
    flag database synced from a newer copy of the project): their ids may name images this run never saw."""
    from spray.runs.publish import list_runs, run_time

    run = run.resolve()  # runs/latest names no time; the folder it points at does
    made = run_time(run.name)
    if made is None or not flags:
        return set()
    after = made.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # the flag database's format: compared as text
    held = {p.name[-12:] for p in list_runs(run.parent)}
    return {
        f.event_id
        for f in flags
        if f.run_id is not None and f.flagged_at > after and f.run_id[:12] not in held
    }


def _run_summary(run: str | Path) -> RunSummary | None:
    """The summary of the run at ``run`` (None when it cannot be read: nothing to check against)."""
    from spray.runs.errors import RunReadError
    from spray.runs.reader import read_summary

    try:
        return read_summary(Path(run))
    except (RunReadError, OSError):
        return None


def _skipped_in(run: Path) -> dict[str, str]:
    """``sample_id -> reason`` of the samples the run at ``run`` skipped as unreadable ({} if unknown)."""
    summary = _run_summary(run)
    return {} if summary is None else {s.sample_id: s.reason for s in summary.skipped}


def run_flag_message(db: Path, dataset: str, run_hashes: Mapping[str, str], run: str) -> str:
    """:func:`describe` of the current flags of ``dataset`` in ``db`` against a run, and
    :func:`other_key_message` when it has none, then :func:`relabel_message` ('' without a database or
    anything to say).

    Raises
    ------
    SprayError
        The database is damaged or not a flag database.
    """
    if not db.is_file():
        return ""
    store = FlagStore(db, read_only=True)
    binding = bind_flags(store.current(dataset), run_hashes, run=Path(run))
    message = binding_message(store, dataset, binding, run_hashes, run)
    changes = relabelled(binding.bound, Path(run), binding.of_kind("moved"))
    return " ".join(m for m in (message, relabel_message(changes)) if m)


def relabelled(flags: Sequence[Flag], run: Path, moved: Sequence[ChangedFlag] = ()) -> list[str]:
    """The flags among ``flags`` (bound to their images) whose image carries another label in the run at
    ``run`` than the class recorded with the flag (:func:`class_changes`; [] when the run cannot be read).

    Parameters
    ----------
    flags : sequence of Flag
        Flags whose ids still name the images they were set on.
    run : Path
        A published run folder.
    moved : sequence of ChangedFlag
        Flags whose images moved to another id (``FlagBinding.of_kind("moved")``): a file moved into another
        class folder is a relabelled image too, at its new id.

    Returns
    -------
    list of str
        One ``"id (flagged in class A, now labelled B)"`` per relabelled image.
    """
    from spray.runs.errors import RunReadError
    from spray.runs.reader import RunReader

    recorded = [(f, f.sample_id) for f in flags if f.class_name is not None]
    recorded += [(c.flag, c.found_at[0]) for c in moved if c.flag.class_name is not None]
    if not recorded:
        return []
    try:
        reader = RunReader.open(run)
        labels = reader.samples()["label"].to_dict()
    except (RunReadError, OSError):
        return []
    return class_changes(recorded, labels, reader.summary.class_names)


def relabel_message(changes: Sequence[str]) -> str:
    """One sentence on flagged images that now carry another label ('' for none)."""
    if not changes:
        return ""
    return (
        f"{len(changes)} flagged images now carry another label than the class they were flagged in "
        f"({listed(list(changes))}): a flag set in one class may not hold in another; look at them (`spray flags "
        "list`) and unset what no longer applies."
    )


def binding_message(
    store: FlagStore, dataset: str, binding: FlagBinding, run_hashes: Mapping[str, str], run: str
) -> str:
    """:func:`describe` of a dataset's checked flags, or :func:`other_key_message` when it has none."""
    if binding.bound or binding.changed:
        return describe(binding, run)
    return other_key_message(store, dataset, run_hashes)


def other_key_message(store: FlagStore, dataset: str, run_hashes: Mapping[str, str]) -> str:
    """When most of another dataset key's flags name this run's images by content: the key may have changed
    (a data folder moved without ``data.name``, whose key is the folder's path), and those flags are out of
    sight of the dashboard, the exports and ``spray correct``. '' otherwise."""
    contents = set(run_hashes.values())
    found = []
    for other in store.datasets():
        if other == dataset:
            continue
        known = [f for f in store.current(other) if f.content_hash is not None]
        hits = sum(1 for f in known if f.content_hash in contents)
        # most of them, not a shared blank or duplicate image: another dataset altogether keeps its own key
        if hits and 2 * hits > len(known):
            found.append(f"{hits} of {len(known)} under {other!r}")
    if not found:
        return ""
    return (
        f"this dataset's key is {dataset!r} and it has no flags, but most flags under another key name its images "
        f"by content ({', '.join(found)}): the key may have changed (without data.name it is the data folder's "
        "path). If it is the same data, set data.name in the config to the old key and audit again."
    )

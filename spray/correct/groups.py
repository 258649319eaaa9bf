"""The artifact group and its reference, from the flags database.

The flagged samples of one class are the artifact group; the class's other samples are the reference.
Both are split (seeded) into a part that fits the artifact direction and a held-out part that scores it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spray.config.correction import CorrectionConfig
from spray.correct.samples import SampleSet, seeded_subset
from spray.errors import ConfigError, DataError, SprayError
from spray.flags import Flag, FlagStore
from spray.flags.content import from_origin_runs, listed, runs_of_other_data
from spray.records import is_relabel

log = logging.getLogger(__name__)


class NoFlagsError(SprayError):
    """The flag database holds no flags for this correction (``spray correct --if-flagged`` exits 0)."""


@dataclass
class FlagSelection:
    """The flags a correction uses.

    Attributes
    ----------
    db : str
        Flag database path.
    dataset : str
        Dataset key.
    status : str
        Flag status used.
    cluster_keys : list[str]
        Finding keys the flags were set from (sorted, without None).
    sample_ids : list[str]
        Flagged sample ids (sorted).
    digest : str
        Hash of dataset, status, sorted ids and the other flagged ids: part of the correction id.
    content_hashes : dict[str, str]
        ``sample_id -> content hash`` recorded with each flag (flags set before spray recorded it have none).
    other_flagged : list[str]
        The dataset's other samples flagged ``unlearn`` or ``investigate`` (another finding's flags, another
        status): never reference or clean data of a correction, whichever flags it uses.
    run_ids : list[str]
        The runs the used flags were set on (sorted, without None).
    class_names, class_indices : dict
        ``sample_id -> class name`` and ``-> label`` recorded with each flag (flags set before flag database
        schema 4 have none).
    unrecorded_runs : list[str]
        The runs the used flags without a recorded content were set on (sorted).
    """

    db: str
    dataset: str
    status: str
    cluster_keys: list[str]
    sample_ids: list[str]
    digest: str
    content_hashes: dict[str, str] = field(default_factory=dict)
    other_flagged: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    class_names: dict[str, str] = field(default_factory=dict)
    class_indices: dict[str, int] = field(default_factory=dict)
    unrecorded_runs: list[str] = field(default_factory=list)


#: Flag statuses whose samples never serve as a correction's reference or clean data.
SUSPECT_STATUSES = ("unlearn", "investigate")


def _no_db_message(db: Path) -> str:
    return (
        f"No flag database at {db}. Flag the shortcut's samples first (spray dashboard, 'Flag for "
        "unlearning', or spray flags set --runs-dir RUNS --finding CLASS/kK/cC), or point correction.flags_db / "
        "--flags-db at the database."
    )


def _statuses(flags: list[Flag]) -> str:
    """``"10 'investigate', 2 'ok'"``: how many flags of each status."""
    counts = Counter(f.status for f in flags)
    return ", ".join(f"{n} {st!r}" for st, n in sorted(counts.items()))


def _none_hint(store: FlagStore, dataset: str, cfg: CorrectionConfig) -> str:
    """Why a dataset has no flags of the wanted status: flags of another status, or of other datasets."""
    mine = store.current(dataset)
    others = [d for d in store.datasets() if d != dataset]
    if mine:
        return (
            f" The dataset has {_statuses(mine)} flags: set correction.flag_status to use them, or flag the "
            f"shortcut's samples {cfg.flag_status!r}."
        )
    if others:
        return (
            f" The database has flags of other datasets: {', '.join(repr(d) for d in others)}; data.name (the "
            "dataset key) must match the one the flags were set on."
        )
    return " Flag the shortcut's samples in the dashboard first."


def _of_finding(store: FlagStore, rows: list[Flag], dataset: str, cfg: CorrectionConfig) -> list[Flag]:
    """The flags set from finding ``cfg.cluster_key``.

    Raises
    ------
    ConfigError
        No flag was ever set from that finding (a typo: also with ``--if-flagged``).
    NoFlagsError
        Its flags were removed since, or have another status (the message counts them).
    """
    keys = sorted({str(r.cluster_key) for r in rows if r.cluster_key})
    found = [r for r in rows if r.cluster_key == cfg.cluster_key]
    if found:
        return found
    theirs = [r for r in store.current(dataset) if r.cluster_key == cfg.cluster_key]
    also = (
        f" The finding has {_statuses(theirs)} flags: set correction.flag_status to use them, or flag them "
        f"{cfg.flag_status!r}."
        if theirs
        else ""
    )
    message = (
        f"No {cfg.flag_status!r} flags of finding {cfg.cluster_key!r} for dataset {dataset!r}; flags "
        f"exist for findings {keys or ['(none recorded)']}. Fix correction.cluster_key.{also}"
    )
    # A key no flag was ever set from is a typo (a config error even with --if-flagged); one whose
    # flags were all removed since is "nothing flagged".
    if all(e.cluster_key != cfg.cluster_key for e in store.history(dataset)):
        raise ConfigError(
            message.replace(
                "Fix",
                "No flag was ever set from that finding: flag its samples first (spray flags set "
                f"--finding {cfg.cluster_key}, or the dashboard), or fix",
            )
        )
    raise NoFlagsError(message)


def read_flags(db: Path, dataset: str, cfg: CorrectionConfig, runs_dir: Path | None = None) -> FlagSelection:
    """The current flags of ``dataset`` with ``cfg.flag_status`` (and ``cfg.cluster_key``).

    Raises
    ------
    ConfigError
        The database named by ``cfg.flags_db`` does not exist.
    NoFlagsError
        The default database does not exist yet (nothing was ever flagged).
    SprayError
        The database is damaged or not a flag database (raised by :class:`~spray.flags.FlagStore`), or it
        holds no such flags (the message says which datasets and finding keys do have flags).
    """
    if not db.is_file():
        # the default database does not exist until someone flags: nothing is flagged (exit 1, or 0 with
        # --if-flagged); a database named in the config or on the command line that is missing is a typo
        if cfg.flags_db is None:
            raise NoFlagsError(_no_db_message(db))
        raise ConfigError(_no_db_message(db))
    # FlagStore reports a damaged or foreign database itself (the file, the reason, what to do).
    store = FlagStore(db, read_only=True)  # a correction never writes flags
    rows = store.current(dataset, cfg.flag_status)
    if runs_dir is not None:  # an older database's flags: content and class from the runs they were set on
        rows = from_origin_runs(rows, runs_dir, None)[0]
    if not rows:
        raise NoFlagsError(
            f"No {cfg.flag_status!r} flags for dataset {dataset!r} in {db}.{_none_hint(store, dataset, cfg)}"
        )
    if cfg.cluster_key is not None:
        rows = _of_finding(store, rows, dataset, cfg)
    ids = sorted({str(r.sample_id) for r in rows})
    # a sample someone flagged as a shortcut (or to look at) must not stand for the clean class
    other = sorted(
        {str(r.sample_id) for r in store.current(dataset) if r.status in SUSPECT_STATUSES} - set(ids)
    )
    payload = json.dumps({"dataset": dataset, "status": cfg.flag_status, "ids": ids, "other": other}).encode()
    return FlagSelection(
        db=str(db),
        dataset=dataset,
        status=cfg.flag_status,
        cluster_keys=sorted({str(r.cluster_key) for r in rows if r.cluster_key}),
        sample_ids=ids,
        digest=hashlib.sha256(payload).hexdigest(),
        content_hashes={str(r.sample_id): r.content_hash for r in rows if r.content_hash},
        other_flagged=other,
        run_ids=sorted({str(r.run_id) for r in rows if r.run_id}),
        class_names={str(r.sample_id): r.class_name for r in rows if r.class_name is not None},
        class_indices={str(r.sample_id): r.class_index for r in rows if r.class_index is not None},
        unrecorded_runs=sorted({str(r.run_id) for r in rows if r.run_id and not r.content_hash}),
    )


def check_flag_content(
    samples: SampleSet, flags: FlagSelection, runs_dir: Path, data_hash: str | None = None
) -> None:
    """Refuse flags whose sample ids now name other content than the images that were flagged.

    Raises
    ------
    DataError
        Some flagged ids hold other bytes now (IDX records removed or reordered, a file replaced), or flags
        without a recorded content were set on a run of other data than ``data_hash`` (the data now): the
        correction would fit its direction on images nobody flagged.
    """
    ids = [s for s in flags.sample_ids if s in flags.content_hashes]
    if len(ids) < len(flags.sample_ids) and data_hash is not None:
        other = runs_of_other_data(runs_dir, flags.unrecorded_runs, data_hash)
        if other:
            raise DataError(
                f"{len(flags.sample_ids) - len(ids)} flags of {flags.dataset!r} were set before flags recorded "
                f"the content of their images, on run {', '.join(r[:12] for r in other)}, whose data differ from "
                "the data now: an IDX record removed or reordered, or a file replaced, would put them on other "
                f"images. `spray flags check --runs-dir {shlex.quote(str(runs_dir))}` lists them; look at their "
                "images and set the flags again (spray flags set records the content)."
            )
    found = samples.rows_of(ids)
    missing = set(found.missing)
    present = [s for s in ids if s not in missing]
    now = samples.content_hashes(found.rows)
    changed = [s for s, h in zip(present, now, strict=True) if h != flags.content_hashes[s]]
    if len(ids) < len(flags.sample_ids):
        log.info(
            "%d flags were set before flags recorded their content: not checked",
            len(flags.sample_ids) - len(ids),
        )
    if changed:
        raise DataError(
            f"{len(changed)} of the {len(flags.sample_ids)} flagged sample ids of {flags.dataset!r} now name other "
            f"content than the images that were flagged ({listed(changed)}): IDX records removed or reordered, "
            "or files replaced. A correction would treat other images as the artifact group. Audit the current "
            f"data (spray audit), then `spray flags check --runs-dir {shlex.quote(str(runs_dir))}` says for each "
            f"whether its image moved to another id (`spray flags rebind --runs-dir {shlex.quote(str(runs_dir))}` "
            "moves the flags with them) or was "
            "replaced (keep the flag on the new image with `spray flags set`, or drop it with `spray flags unset`)."
        )


@dataclass
class ArtifactGroup:
    """The artifact group (flagged samples of one class) and its reference (the class's other samples).

    Rows index the audited :class:`~spray.correct.samples.SampleSet`.

    Attributes
    ----------
    class_index, class_name
        The class.
    fit_artifact, held_artifact : np.ndarray
        ``(n,)`` int64 rows of flagged samples used to fit / to score the direction.
    fit_reference, held_reference : np.ndarray
        ``(n,)`` int64 rows of unflagged samples of the class (at most ``max_reference`` in all).
    flagged_rows : np.ndarray
        ``(n,)`` int64 every flagged row of the class.
    other_class_flags : dict[str, int]
        Flagged samples in other classes (class name → count), which this correction leaves alone.
    missing_ids : list[str]
        Flagged ids that are not in the dataset (any more).
    """

    class_index: int
    class_name: str
    fit_artifact: np.ndarray
    held_artifact: np.ndarray
    fit_reference: np.ndarray
    held_reference: np.ndarray
    flagged_rows: np.ndarray
    other_class_flags: dict[str, int]
    missing_ids: list[str]


def _choose_class(samples: SampleSet, rows: np.ndarray, cfg: CorrectionConfig) -> int:
    counts = Counter(int(c) for c in samples.labels[rows])
    names = samples.class_names
    listing = ", ".join(
        f"{names[c] if c < len(names) else c} (class {c}): {n}" for c, n in counts.most_common()
    )
    if cfg.artifact_class is not None:
        if not 0 <= cfg.artifact_class < len(names):
            raise ConfigError(
                f"correction.artifact_class (--class) {cfg.artifact_class}: there is no such class; the dataset "
                f"has {len(names)} classes (0..{len(names) - 1}). Flagged samples per class: {listing}."
            )
        if cfg.artifact_class not in counts:
            raise ConfigError(
                f"correction.artifact_class {cfg.artifact_class} holds none of the flagged samples; flagged "
                f"samples per class: {listing}."
            )
        return cfg.artifact_class
    if len(counts) > 1:
        raise SprayError(
            f"The flagged samples span several classes ({listing}). One correction removes one class's "
            "shortcut: set correction.artifact_class (or --class)"
            + (
                f"; the flags of finding {cfg.cluster_key} themselves span them (an image moved to another class "
                "since it was flagged: spray flags check names it)."
                if cfg.cluster_key is not None
                else ", or narrow the flags with correction.cluster_key."
            )
        )
    return next(iter(counts))


def _split(rows: np.ndarray, fraction: float, seed: int, salt: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, *salt.encode()])
    perm = rng.permutation(rows)
    n_held = max(2, round(fraction * len(perm)))
    return np.sort(perm[n_held:]), np.sort(perm[:n_held])


def artifact_group(
    samples: SampleSet, flags: FlagSelection, cfg: CorrectionConfig, seed: int, exclude: np.ndarray
) -> ArtifactGroup:
    """Build and split the artifact group and its reference.

    Parameters
    ----------
    samples : SampleSet
        The audited data.
    flags : FlagSelection
        The flags.
    cfg : CorrectionConfig
        min_group_size, holdout_fraction, max_reference, artifact_class.
    seed : int
        The audit seed.
    exclude : np.ndarray
        Rows never used (unreadable samples, the evaluation hold-out).

    Raises
    ------
    DataError
        None of the flagged samples is in the dataset.
    SprayError
        A group is smaller than ``min_group_size``, or the flags span several classes.
    """
    found = samples.rows_of(flags.sample_ids)
    rows, missing = found.rows, found.missing
    if missing:
        log.warning("%d flagged samples are not in the dataset (any more): %s", len(missing), missing[:5])
    if len(rows) == 0:
        raise DataError(
            f"None of the {len(flags.sample_ids)} flagged samples (e.g. {flags.sample_ids[:3]}) is in the "
            f"dataset {flags.dataset!r}; were they flagged on another version of it?"
        )
    c = _choose_class(samples, rows, cfg)
    name = samples.class_names[c] if c < len(samples.class_names) else str(c)
    in_class = rows[samples.labels[rows] == c]
    _warn_relabelled(samples, flags, in_class, (c, name))
    others = Counter(samples.class_names[int(k)] for k in samples.labels[rows] if int(k) != c)
    if others:
        listing = ", ".join(f"{n} of {k}" for k, n in sorted(others.items()))
        log.warning(
            "%d flagged samples belong to other classes (%s): this correction of class %s leaves their shortcut "
            "alone, and they are kept out of the clean evaluation drawn from the audited data",
            sum(others.values()),
            listing,
            name,
        )
    usable = np.setdiff1d(in_class, exclude)
    reference = np.setdiff1d(np.setdiff1d(np.flatnonzero(samples.labels == c), in_class), exclude)
    reference = seeded_subset(reference, cfg.max_reference, seed, "reference")
    class_size = int((samples.labels == c).sum())
    if len(usable) < cfg.min_group_size:
        raise SprayError(
            f"Class {name} has {len(usable)} usable flagged samples; the artifact direction needs at least "
            f"correction.min_group_size = {cfg.min_group_size} (flagged {len(in_class)}, "
            f"{len(in_class) - len(usable)} of them kept out as the evaluation hold-out or unreadable; class size "
            f"{class_size}). "
            "Flag more of the shortcut's samples, "
            + (
                ""
                if cfg.test_data is not None
                else "give correction.test_data (then none of the audited data is held out), "
            )
            + "or lower correction.min_group_size."
        )
    if len(reference) < cfg.min_group_size:
        raise SprayError(
            f"Class {name} has {len(reference)} usable unflagged samples for the reference; the artifact "
            f"direction needs at least correction.min_group_size = {cfg.min_group_size} (class size {class_size}, "
            f"{len(in_class)} flagged, {class_size - len(in_class) - len(reference)} others kept out: the "
            "evaluation hold-out and any samples the warnings above name). Unflag samples that do not show the "
            "shortcut, or lower correction.min_group_size."
        )
    fit_a, held_a = _split(usable, cfg.holdout_fraction, seed, "artifact")
    fit_r, held_r = _split(reference, cfg.holdout_fraction, seed, "reference-split")
    return ArtifactGroup(c, name, fit_a, held_a, fit_r, held_r, np.sort(in_class), dict(others), missing)


def _warn_relabelled(
    samples: SampleSet, flags: FlagSelection, in_class: np.ndarray, cls: tuple[int, str]
) -> None:
    """Name the flagged samples of class ``cls`` (label, name) that were flagged in another class (relabelled
    since: another name and another label; a rename keeps the label, an inserted class folder the name): they
    join the artifact group, which the person who flagged them never saw in this class."""
    c, name = cls
    moved = [
        f"{s} ({flags.class_names[s]})"
        for s in (samples.sample_ids[int(r)] for r in in_class)
        if s in flags.class_names
        and is_relabel((flags.class_indices.get(s), flags.class_names[s]), (c, name))
    ]
    if moved:
        log.warning(
            "%d flagged samples of class %s were flagged in another class and relabelled since: %s. They are "
            "part of its artifact group; unset their flags (spray flags unset) if the shortcut is not theirs.",
            len(moved),
            name,
            listed(moved),
        )


#: A finding counts as the flagged one when at least this share of its members is flagged (a finding
#: flagged only in part was chosen from on purpose: its other members stay references).
MOSTLY_FLAGGED = 2 / 3


def unflagged_members(
    findings: list[Any], flagged: list[str], class_index: int, seen: set[str] | None = None
) -> tuple[str | None, list[str]]:
    """The source run's finding of the class that holds most of the flagged samples (at least half of them;
    of two alike, the smaller) and is mostly flagged (:data:`MOSTLY_FLAGGED`), and its members and carriers
    without a flag. Its members are matched first, then its members and carriers (flags set with carriers).

    Such samples look like the artifact group (they joined the finding after the flags were set, e.g. new
    images with the same stamp, or were left unflagged), so they must not serve as its reference: a
    reference holding the artifact weakens the direction without a word.

    Parameters
    ----------
    findings : list
        The source run's findings (``class_index``, ``key``, ``member_ids``, ``carrier_ids``).
    flagged : list[str]
        Flagged sample ids.
    class_index : int
        The corrected class.
    seen : set[str], optional
        The samples of the run(s) the flags were set on: "mostly flagged" counts only the members that
        existed then, so a finding that grew since by new images is still the flagged one (an outside check
        grew the demo's from 75 to 135 members, 56 % flagged). None: every member counts.

    Returns
    -------
    tuple
        The finding's key (None when no finding holds half of the flags, or it is flagged only in part) and
        the sorted unflagged sample ids.
    """
    wanted = set(flagged)
    # the flags are the finding's members, or (flags set --with-carriers) its members and carriers
    for group in (lambda f: set(f.member_ids), lambda f: set(f.member_ids) | set(f.carrier_ids)):
        best, best_rank = None, (0, 0)
        for f in findings:
            if f.class_index != class_index:
                continue
            rank = (len(wanted & group(f)), -len(group(f)))
            if rank > best_rank:
                best, best_rank = f, rank
        if best is None or best_rank[0] < 0.5 * len(wanted):
            continue
        then = [m for m in group(best) if seen is None or m in seen]
        if best_rank[0] >= MOSTLY_FLAGGED * len(then):
            return best.key, sorted((set(best.member_ids) | set(best.carrier_ids)) - wanted)
    return None, []

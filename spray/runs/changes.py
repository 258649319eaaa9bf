"""The one change detector: which suspicious clusters are new, grown, persisting or resolved since a
previous run.

``spray run`` records its result in ``summary.json`` → ``changes`` (and exits 10 on new or grown
clusters), the HTML report shows that section, and the dashboard compares any two runs with
:func:`compare_runs`. All of them use :func:`compare_findings` and one rule, :class:`~spray.records.ChangeRule`,
whose thresholds are fields of the ``nightly`` config section (``match_jaccard``, ``match_correlation``,
``grown_min``), recorded with the run's config.

Cluster ids are arbitrary per run, so a cluster is recognised by its members (Jaccard of their content
hashes when both runs record them, layout 5, so renamed or moved files keep their cluster; else of their
sample ids) or, when many members changed, by what the model looks at (Pearson correlation of the mean
heatmaps). Pairs are assigned one to one, best Jaccard (then correlation) first.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from spray.records import (
    AuditReport,
    ChangeRule,
    ChangeSet,
    ClusterChange,
    ClusterFinding,
    UnreadableRun,
)
from spray.runs.errors import RunReadError
from spray.runs.input_changes import config_changes, data_changes, run_classes
from spray.runs.reader import RunReader

log = logging.getLogger(__name__)


def change_rule(nightly: Any = None) -> ChangeRule:
    """The rule of a ``nightly`` config section (a :class:`~spray.config.NightlyConfig`, its JSON form as
    recorded in a run's ``config``, or None for the defaults)."""
    from spray.config.output import NightlyConfig

    if nightly is None:
        nightly = NightlyConfig()
    elif isinstance(nightly, Mapping):
        fields = NightlyConfig.model_fields
        nightly = NightlyConfig(**{k: v for k, v in nightly.items() if k in fields})
    return ChangeRule(
        jaccard_min=float(nightly.match_jaccard),
        correlation_min=float(nightly.match_correlation),
        grow_min=float(nightly.grown_min),
        contained_min=float(nightly.match_contained),
    )


def _corr(a: np.ndarray | None, b: np.ndarray | None) -> float:
    if a is None or b is None or np.shape(a) != np.shape(b):
        return float("nan")
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    x, y = x - x.mean(), y - y.mean()
    d = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y / d) if d > 0 else float("nan")


#: Which run a cluster comes from.
Side = Literal["current", "previous"]


@dataclass(frozen=True)
class MemberKeys:
    """How the members of each run's clusters are compared: by content when both runs record it.

    Attributes
    ----------
    current, previous : Mapping[str, str]
        ``sample_id -> content hash`` of each run (empty: compare sample ids).
    """

    current: Mapping[str, str] = field(default_factory=dict)
    previous: Mapping[str, str] = field(default_factory=dict)

    @property
    def by_content(self) -> bool:
        return bool(self.current) and bool(self.previous)

    def of(self, f: ClusterFinding, side: Side, *, carriers: bool = False) -> set[str]:
        """The member keys of ``f``, a cluster of the ``"current"`` or ``"previous"`` run (and of its
        carriers with ``carriers``)."""
        ids = [*f.member_ids, *f.carrier_ids] if carriers else f.member_ids
        if not self.by_content:
            return set(ids)
        table = self.current if side == "current" else self.previous
        # a member missing from its run's table (never in a layout-5 run) is compared by its id
        return {table.get(i, f"id:{i}") for i in ids}


def _assign(
    left: Sequence[ClusterFinding],
    right: Sequence[ClusterFinding],
    rule: ChangeRule,
    keys: MemberKeys,
    sides: tuple[Side, Side] = ("current", "previous"),
) -> dict[int, tuple[int, float, float]]:
    """One-to-one matches ``i -> (j, jaccard, correlation)`` of clusters of the same class, best first."""
    pairs = []
    right_keys = [keys.of(p, sides[1]) for p in right]
    for i, f in enumerate(left):
        a = keys.of(f, sides[0])
        for j, p in enumerate(right):
            if f.class_index != p.class_index:
                continue
            b = right_keys[j]
            jac = len(a & b) / max(1, len(a | b))
            corr = _corr(f.mean_heatmap, p.mean_heatmap)
            if jac >= rule.jaccard_min or (corr == corr and corr >= rule.correlation_min):
                pairs.append((-jac, -(corr if corr == corr else -1.0), i, j, jac, corr))
    pairs.sort()
    used_l: set[int] = set()
    used_r: set[int] = set()
    out: dict[int, tuple[int, float, float]] = {}
    for _, _, i, j, jac, corr in pairs:
        if i in used_l or j in used_r:
            continue
        used_l.add(i)
        used_r.add(j)
        out[i] = (j, jac, corr)
    return out


def _r(x: float) -> float | None:
    return round(x, 4) if x == x else None


def compare_findings(
    current: Sequence[ClusterFinding],
    previous: Sequence[ClusterFinding] | None,
    rule: ChangeRule,
    *,
    previous_run_id: str | None = None,
    previous_run: str | None = None,
    unreadable: Sequence[UnreadableRun] = (),
    analysed: Collection[int] | None = None,
    keys: MemberKeys | None = None,
) -> ChangeSet:
    """Match the suspicious clusters of two runs and classify them.

    Parameters
    ----------
    current, previous : sequence of ClusterFinding
        Every scored cluster of each run, most suspicious first (with members and mean heatmaps);
        ``previous`` is None when there is no previous run (every suspicious cluster is then new).
    rule : ChangeRule
        When two clusters match and when a match has grown.
    previous_run_id, previous_run, unreadable
        Recorded in the result.
    analysed : collection of int, optional
        The classes this run analysed; a previous suspicious cluster of another class is "not analysed",
        never "resolved" (None: every class was).
    keys : MemberKeys, optional
        The two runs' content hashes (None: members are compared by sample id).

    Returns
    -------
    ChangeSet
        Entries sorted by class and key, so the section is deterministic.
    """
    rank = {f.key: i + 1 for i, f in enumerate(current)}
    cur = [f for f in current if f.suspicious]
    prev = [p for p in previous or [] if p.suspicious]
    keys = keys or MemberKeys()
    matched = _assign(cur, prev, rule, keys)
    grown, persisting = _matched(cur, prev, matched, rule, rank)
    unmatched = [f for i, f in enumerate(cur) if i not in matched]
    left = [p for j, p in enumerate(prev) if j not in {m[0] for m in matched.values()}]
    split, unmatched = _parts(unmatched, prev, rule, keys, rank, alone_current=True)
    # a previous cluster that lives on in a part is not resolved, a current one holding a merged one not new
    left = [p for p in left if p.key not in {e.previous_key for e in split}]
    merged, left = _parts(left, cur, rule, keys, rank, alone_current=False)
    unmatched = [f for f in unmatched if f.key not in {e.key for e in merged}]
    persisting += split + merged
    new = _new(unmatched, [p for p in previous or [] if not p.suspicious], rule, rank, keys)
    # by class, not by membership: comparing two findings compares their mean heatmaps (numpy arrays)
    unjudged = [p for p in left if analysed is not None and p.class_index not in analysed]
    left = [p for p in left if analysed is None or p.class_index in analysed]
    resolved = _resolved(left, [f for f in current if not f.suspicious], rule, rank, keys)

    def order(xs: list[ClusterChange]) -> list[ClusterChange]:
        return sorted(xs, key=lambda e: (e.class_index, str(e.key or e.previous_key)))

    return ChangeSet(
        previous_run_id=previous_run_id,
        previous_run=previous_run,
        new=order(new),
        grown=order(grown),
        persisting=order(persisting),
        resolved=order(resolved),
        n_suspicious=len(cur),
        rule=rule,
        unreadable=list(unreadable),
        not_analysed=order([_not_analysed(p) for p in unjudged]),
    )


def _entry(
    f: ClusterFinding,
    rank: dict[str, int],
    p: ClusterFinding | None = None,
    jac: float = 0.0,
    corr: float = 0.0,
) -> ClusterChange:
    """A change entry of current cluster ``f``, matched with previous cluster ``p`` when given."""
    e = ClusterChange(f.key, f.class_index, f.class_name, f.size, f.score, rank.get(f.key))
    if p is None:
        return e
    return replace(
        e,
        previous_key=p.key,
        previous_size=p.size,
        previous_score=p.score,
        jaccard=round(jac, 4),
        correlation=_r(corr),
    )


def _matched(
    cur: list[ClusterFinding],
    prev: list[ClusterFinding],
    matched: dict[int, tuple[int, float, float]],
    rule: ChangeRule,
    rank: dict[str, int],
) -> tuple[list[ClusterChange], list[ClusterChange]]:
    """Grown and persisting: current suspicious clusters matched with a previous suspicious one."""
    grown: list[ClusterChange] = []
    persisting: list[ClusterChange] = []
    for i, (j, jac, corr) in matched.items():
        f, p = cur[i], prev[j]
        has_grown = f.size - p.size >= 1 and f.size >= p.size * (1 + rule.grow_min)
        (grown if has_grown else persisting).append(_entry(f, rank, p, jac, corr))
    return grown, persisting


def _parts(
    alone: list[ClusterFinding],
    other: list[ClusterFinding],
    rule: ChangeRule,
    keys: MemberKeys,
    rank: dict[str, int],
    *,
    alone_current: bool,
) -> tuple[list[ClusterChange], list[ClusterFinding]]:
    """Suspicious clusters left without a match that are part of a suspicious cluster of the other run
    (``rule.contained_min`` of their members among its members and carriers): current ones of a previous
    cluster that split (``alone_current``), or previous ones that merged into a current cluster. Returns
    their persisting entries and the clusters still alone."""
    side: Side = "current" if alone_current else "previous"
    other_side: Side = "previous" if alone_current else "current"
    entries: list[ClusterChange] = []
    rest: list[ClusterFinding] = []
    for f in alone:
        a = keys.of(f, side)
        # with its carriers: a flagged stamp's images outside its cluster are the same shortcut
        shares = [
            (len(a & keys.of(g, other_side, carriers=True)) / max(1, len(a)), g)
            for g in other
            if g.class_index == f.class_index
        ]
        share, g = max(shares, key=lambda t: t[0], default=(0.0, None))
        if g is None or share < rule.contained_min:
            rest.append(f)
            continue
        cur, prev = (f, g) if alone_current else (g, f)
        a, b = keys.of(cur, "current"), keys.of(prev, "previous")
        jac = len(a & b) / max(1, len(a | b))
        note = (
            f"{100 * share:.0f} % of its members were in the previous suspicious cluster {prev.key} (members and "
            "carriers), which split"
            if alone_current
            else f"{100 * share:.0f} % of the members of the previous suspicious cluster {prev.key} are in this "
            "one (members and carriers): the two merged"
        )
        entries.append(
            replace(_entry(cur, rank, prev, jac, _corr(cur.mean_heatmap, prev.mean_heatmap)), note=note)
        )
    return entries, rest


def _new(
    unmatched: list[ClusterFinding],
    prev_quiet: list[ClusterFinding],
    rule: ChangeRule,
    rank: dict[str, int],
    keys: MemberKeys,
) -> list[ClusterChange]:
    """New: unmatched current suspicious clusters, noting those present but not suspicious before."""
    was = _assign(unmatched, prev_quiet, rule, keys)
    new = []
    for i, f in enumerate(unmatched):
        if i in was:
            j, jac, corr = was[i]
            e = _entry(f, rank, prev_quiet[j], jac, corr)
            new.append(replace(e, note="present in the previous run but not suspicious then"))
        else:
            new.append(_entry(f, rank))
    return new


def _not_analysed(p: ClusterFinding) -> ClusterChange:
    return ClusterChange(
        None, p.class_index, p.class_name, previous_key=p.key, previous_size=p.size, previous_score=p.score,
        note="its class was not analysed in this run (too few readable samples, or only zero heatmaps): no verdict",
    )  # fmt: skip


def _resolved(
    left: list[ClusterFinding],
    now_quiet: list[ClusterFinding],
    rule: ChangeRule,
    rank: dict[str, int],
    keys: MemberKeys,
) -> list[ClusterChange]:
    """Resolved: previous suspicious clusters with no suspicious match now. One that is still there below
    the alarm threshold is named, so the change can be checked."""
    still = _assign(left, now_quiet, rule, keys, sides=("previous", "current"))
    out = []
    for j, p in enumerate(left):
        gone = ClusterChange(
            None,
            p.class_index,
            p.class_name,
            previous_key=p.key,
            previous_size=p.size,
            previous_score=p.score,
        )
        if j in still:
            k, jac, corr = still[j]
            q = now_quiet[k]
            gone = replace(
                gone,
                key=q.key,
                size=q.size,
                score=q.score,
                rank=rank.get(q.key),
                jaccard=round(jac, 4),
                correlation=_r(corr),
                note="still a cluster, now below the alarm threshold",
            )
        out.append(gone)
    return out


def compare_runs(current: RunReader, previous: RunReader, rule: ChangeRule | None = None) -> ChangeSet:
    """The changes from run ``previous`` to run ``current`` (the dashboard's comparison of two runs).

    ``rule`` defaults to the one recorded in ``current``'s config (its ``nightly`` section), else the
    config defaults.
    """
    if rule is None:
        rule = change_rule(current.summary.config.get("nightly"))
    return compare_findings(
        current.findings(),
        previous.findings(),
        rule,
        previous_run_id=previous.summary.run_id,
        previous_run=previous.path.name,
        analysed={c.class_index for c in current.summary.classes},
        keys=MemberKeys(current.content_hashes() or {}, previous.content_hashes() or {}),
    )


def previous_run(
    runs_dir: Path, *, name: str, dataset: str
) -> tuple[RunReader | None, list[ClusterFinding] | None, list[UnreadableRun]]:
    """The newest readable published run of the same audit (same ``name`` and dataset key), whatever its
    run id (``--force`` on unchanged inputs compares with the run of the same inputs: nothing new).

    A published run that cannot be read is never taken silently as "no previous run": it is logged
    (naming the file at fault), listed in the result, and the next older readable run is used.

    Returns
    -------
    reader, findings, unreadable
        The previous run and its findings (both None when there is none), and the runs passed over.
    """
    from spray.runs.publish import list_runs

    unreadable: list[UnreadableRun] = []
    for p in list_runs(runs_dir):
        try:
            reader = RunReader.open(p)
            if reader.summary.name != name or reader.summary.dataset != dataset:
                continue
            return reader, reader.findings(), unreadable
        except RunReadError as err:
            log.warning(
                "previous run %s is unreadable and is passed over (compared with an older one, if any): %s",
                p.name,
                err,
            )
            unreadable.append(UnreadableRun(p.name, str(err)))
    return None, None, unreadable


def _backfill(
    runs_dir: Path,
    previous: RunReader,
    analysed: Collection[int],
    prev: list[ClusterFinding],
    prev_hashes: dict[str, str],
) -> dict[str, str]:
    """Add to ``prev`` (and ``prev_hashes``) the findings of the classes this run analysed and the previous
    run did not, from the newest older run of the audit that analysed each: a class left out for a night
    (a broken sync) would otherwise bring back its suspicious clusters as new. Returns ``key -> run folder``
    of the findings added."""
    from spray.runs.publish import list_runs

    gap = set(analysed) - {c.class_index for c in previous.summary.classes}
    older: dict[str, str] = {}
    names = [r.name for r in list_runs(runs_dir)]  # newest first
    start = names.index(previous.path.name) + 1 if previous.path.name in names else len(names)
    for p in [runs_dir / n for n in names[start:]] if gap else []:
        try:
            reader = RunReader.open(p)
            s = reader.summary
            if (s.name, s.dataset) != (previous.summary.name, previous.summary.dataset):
                continue
            take = gap & {c.class_index for c in s.classes}
            found = [f for f in reader.findings() if f.class_index in take] if take else []
            hashes = reader.content_hashes() or {}
        except RunReadError:
            continue
        prev += found
        older.update({f.key: p.name for f in found})
        for sid, h in hashes.items():
            prev_hashes.setdefault(sid, h)
        gap -= take
        if not gap:
            break
    return older


def _from_older(e: ClusterChange, older: Mapping[str, str]) -> ClusterChange:
    """``e`` with a note when its previous cluster is from an older run (see :func:`_backfill`)."""
    if e.previous_key is None or e.previous_key not in older:
        return e
    said = f"compared with run {older[e.previous_key]}, the last to analyse this class"
    return replace(e, note=f"{e.note}; {said}" if e.note else said)


def changes_since_previous(report: AuditReport, runs_dir: Path, rule: ChangeRule) -> ChangeSet:
    """The ``changes`` section for a finished (not yet published) report.

    Parameters
    ----------
    report : AuditReport
        The new run's report.
    runs_dir : Path
        Where the previous runs are.
    rule : ChangeRule
        From the run's ``nightly`` config section (:func:`change_rule`).
    """
    reader, prev, unreadable = previous_run(runs_dir, name=report.name, dataset=report.dataset)
    if reader is None and (moved := same_content_run(runs_dir, report)) is not None:
        reader, prev = moved
    if reader is None:
        _say_if_renamed(runs_dir, report)
    before = None if reader is None else reader.summary.hashes.get("model")
    analysed = {c.class_index for c in report.classes}
    prev_hashes = dict((reader.content_hashes() if reader else None) or {})
    older: dict[str, str] = {}
    if reader is not None and prev is not None:
        older = _backfill(runs_dir, reader, analysed, prev, prev_hashes)
    changes = compare_findings(
        report.findings,
        prev,
        rule,
        previous_run_id=None if reader is None else reader.summary.run_id,
        previous_run=None if reader is None else reader.path.name,
        unreadable=unreadable,
        analysed=analysed,
        keys=MemberKeys(report.content_hashes, prev_hashes),
    )
    if older:
        for part in ("new", "grown", "persisting", "resolved"):
            setattr(changes, part, [_from_older(e, older) for e in getattr(changes, part)])
    if before and report.hashes.get("model"):
        scheme = reader.summary.hashes.get("model_hash_version") if reader is not None else None
        if scheme == report.hashes.get("model_hash_version") or before == report.hashes["model"]:
            changes.model_changed = before != report.hashes["model"]
        else:  # an older spray fingerprinted models otherwise: unknown, not "other weights"
            log.warning(
                "the previous run's model fingerprint is of another spray version (scheme %s, now %s): whether the model changed "
                "since cannot be told", scheme or "1", report.hashes.get("model_hash_version"),
            )  # fmt: skip
    if reader is not None:
        changes.config_changed = config_changes(reader.summary.config, report.config)
        code = reader.summary.hashes.get("code"), report.hashes.get("code")
        if code[0] and code[1] and code[0] != code[1]:
            changes.config_changed.append(f"code version: {code[0]} → {code[1]}")
    if reader is not None and report.content_hashes and (previous := reader.content_hashes()):
        skipped = {s.sample_id for s in report.skipped}
        changes.data = data_changes(report.content_hashes, previous, run_classes(report, reader), skipped)
    return changes


#: A run of another dataset key holding at least this share of a new run's content is the same data moved.
SAME_CONTENT = 0.9
#: Runs of other dataset keys read when looking for the same content (the newest first).
SAME_CONTENT_RUNS = 5


def _say_if_renamed(runs_dir: Path, report: AuditReport) -> None:
    """Warn when this audit has no earlier run but the folder holds runs of the same dataset key under
    another audit ``name``: a renamed audit starts over (every suspicious cluster counts as new)."""
    from spray.runs.publish import newest_run_where
    from spray.runs.summary import full_audit_name

    # a trial (data.limit) and its full audit are not a rename of each other
    audit = full_audit_name(report.name)
    found = newest_run_where(
        runs_dir, lambda s: s.dataset == report.dataset and full_audit_name(s.name) != audit
    )
    if found is not None:
        p, s = found
        log.warning(
            "no earlier run of audit %r, but run %s of audit %r has the same dataset key: changes are counted "
            "from nothing (every suspicious cluster is new). If the audit was renamed, set name: %r in the "
            "config to continue its history",
            report.name, p.name, s.name, s.name,
        )  # fmt: skip


def same_content_run(runs_dir: Path, report: AuditReport) -> tuple[RunReader, list[ClusterFinding]] | None:
    """The newest run of the same audit (``name``) under another dataset key that holds (nearly) the same
    content as ``report``, with its findings, when no run of its own key exists: the data moved and its
    path-derived key changed. Said aloud, since flags set under the old key do not apply to the new one. A run
    that cannot be read is passed over, as :func:`previous_run` does."""
    from spray.runs.publish import list_runs

    mine = set(report.content_hashes.values())
    if not mine:
        return None
    seen = 0
    for p in list_runs(runs_dir):
        try:
            reader = RunReader.open(p)
            s = reader.summary
            if s.dataset == report.dataset or s.run_id == report.run_id or s.name != report.name:
                continue
            seen += 1
            shared = len(mine & set((reader.content_hashes() or {}).values()))
            found = reader.findings() if shared >= SAME_CONTENT * len(mine) else None
        except RunReadError as err:
            log.warning("run %s is unreadable and is passed over: %s", p.name, err)
            continue
        if found is not None:
            log.warning(
                "no earlier run of dataset key %r, but run %s of dataset key %r holds the same content (%d of "
                "%d samples): the data moved and its dataset key, taken from its path, changed. Changes are "
                "measured against that run; flags set under %r do not apply to this dataset key: set data.name: "
                "%r in the config to keep the old key (docs/config.md)",
                report.dataset, p.name, s.dataset, shared, len(mine), s.dataset, s.dataset,
            )  # fmt: skip
            return reader, found
        if seen >= SAME_CONTENT_RUNS:
            break
    return None

"""The flag database as the dashboard sees it, and the one form that writes to it.

Reading never creates anything: until the first flag is saved there is no database file, and a read-only
dashboard opens the file read-only. Every write is one action by this session's author, refused with a
warning when another decision on the same samples came in after this page was shown (the user then sees
those decisions and may apply anyway), and confirmed first when it touches many samples.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import access
import common
import pandas as pd
import safetext
import samplegrid
import streamlit as st

from spray.errors import SprayError
from spray.flags import STATUSES, FlagConflict, FlagStore, bind_flags
from spray.flags.content import classes_of, describe, other_key_message
from spray.flags.lockless import folder_closed
from spray.runs.layout import project_root

# Actions on more samples than this ask "really?" first (one stray click must not flag a whole cluster).
CONFIRM_ABOVE = 20
# Seconds between the live checks of the flag counts (one small SQLite query per open tab; every check
# re-sends the sidebar's counts, so not more often).
REFRESH_S = 10


@st.cache_resource(show_spinner=False)
def _writer(path: str) -> FlagStore:
    return FlagStore(path)


@st.cache_resource(show_spinner=False)
def _reader(path: str) -> FlagStore:
    return FlagStore(path, read_only=True)


def reader() -> FlagStore | None:
    """The flag database for reading, or None while it does not exist yet (nothing flagged so far)."""
    path = common.flags_db_path()
    if not path.is_file() and not path.is_dir():
        return None
    # a runs folder on a read-only mount (an archive) is browsed: a writer cannot open its database there
    return _reader(str(path)) if access.read_only() or folder_closed(path) else _writer(str(path))


def writer() -> FlagStore:
    """The flag database for writing (created on the first flag)."""
    return _writer(str(common.flags_db_path()))


def status_of(dataset: str, sample_ids: Sequence[str] | None = None) -> dict[str, str]:
    """``sample_id -> status`` of the currently flagged samples (all of the dataset when None)."""
    store = reader()
    return {} if store is None else store.status_of(dataset, sample_ids)


def status_text(statuses: Iterable[str]) -> str:
    """``"150 unlearn · 26 ok"``: how many of some samples' flags hold each status ("" when none); an ``ok``
    (reviewed, no shortcut) is a flag too, so a bare count would read as flagged for unlearning."""
    n = Counter(statuses)
    return " · ".join(f"{n[s]:,} {s}" for s in STATUSES if n[s])


def counts(dataset: str) -> dict[str, int]:
    """Currently flagged samples per status."""
    store = reader()
    return {} if store is None else store.counts(dataset)


def last_event_id(dataset: str | None = None) -> int:
    """Newest event id (0 without a database)."""
    store = reader()
    return 0 if store is None else store.last_event_id(dataset)


#: This session's own flag actions (their ids): a decision of its own is no conflict for another form.
OWN_ACTIONS = "_own_flag_actions"


@dataclass
class _Pending:
    """An action waiting for a confirmation (many samples) or an override (a conflict)."""

    dataset: str
    sample_ids: list[str]
    status: str
    note: str
    run_id: str
    cluster_key: str | None
    source: str
    since: int | None
    conflict: FlagConflict | None = None


def _run_hashes(run_id: str) -> dict[str, str] | None:
    """The content hashes of the page's run, recorded with each flag (None when the run has none)."""
    cur = common.current_run()
    if cur is None:
        return None
    path = str(Path(cur[0]) / cur[1])
    return common.content_hashes(path) if common.summary(path).run_id == run_id else None


def _run_classes(run_id: str, sample_ids: Sequence[str]) -> dict[str, tuple[int, str]] | None:
    """The labels and class names of the page's run for these samples, recorded with each flag."""
    cur = common.current_run()
    if cur is None:
        return None
    path = str(Path(cur[0]) / cur[1])
    if common.summary(path).run_id != run_id:
        return None
    return classes_of(common.samples(path), sample_ids)


def _apply(p: _Pending, key: str, reset_keys: Sequence[str]) -> None:
    store = writer()
    own: set[str] = st.session_state.setdefault(OWN_ACTIONS, set())
    try:
        if p.status == "unflag":
            action = store.unflag(
                p.dataset,
                p.sample_ids,
                p.note,
                run_id=p.run_id,
                source=p.source,
                author=access.author(),
                since=p.since,
                cluster_key=p.cluster_key,
            )
        else:
            action = store.flag(
                p.dataset,
                p.sample_ids,
                p.status,
                p.note,
                run_id=p.run_id,
                cluster_key=p.cluster_key,
                source=p.source,
                author=access.author(),
                since=p.since,
                content_hashes=_run_hashes(p.run_id),
                classes=_run_classes(p.run_id, p.sample_ids),
            )
    except FlagConflict as conflict:
        if all(e.action_id in own for e in conflict.events):
            # only this session's own decisions (in another form of the page) came in: they were seen
            p.since = max(e.id for e in conflict.events)
            _apply(p, key, reset_keys)
            return
        p.conflict = conflict
        st.session_state[f"_pending_{key}"] = p
        # Drawn anew at once: the confirmation box already on the page would otherwise stay, and its
        # next click would override a decision the user never saw.
        st.rerun()
    own.add(action)
    st.session_state.pop(f"_pending_{key}", None)
    st.session_state.pop(f"_seen_{key}", None)  # the user's own decision is seen
    n = len(p.sample_ids)
    st.session_state[f"_saved_{key}"] = f"{p.status}: {n:,} sample{'' if n == 1 else 's'} ({p.source})"
    for k in reset_keys:
        samplegrid.clear_picks(k)
    st.rerun()


def saved_note(key: str) -> None:
    """The "Saved" line of form ``key`` where the form itself is gone: a form on picked table rows is not
    drawn once its rows are cleared, and its confirmation went unseen (an outside check)."""
    if said := st.session_state.pop(f"_saved_{key}", None):
        st.success(f"Saved — {safetext.md(said)}")


def _ask(p: _Pending, key: str, reset_keys: Sequence[str]) -> None:
    """The confirmation / conflict box of a pending action."""
    if p.conflict is not None:
        events = p.conflict.events
        st.warning(
            f"**Another decision came in meanwhile** on {len({e.sample_id for e in events}):,} of these "
            "samples (below, newest first); nothing was saved. Apply anyway to override them, or cancel."
        )
        st.dataframe(
            pd.DataFrame(
                [(e.sample_id, e.status, e.author, e.note, e.created_at) for e in events[:200]],
                columns=["sample_id", "status", "author", "note", "when"],
            ),
            hide_index=True,
            key=f"conflicts_{key}",
        )
    else:
        st.warning(
            f"Set **{p.status}** on **{len(p.sample_ids):,} samples** ({safetext.md(p.source)}) as "
            f"{safetext.code(access.author() or 'anonymous')}?"
        )
    c1, c2 = st.columns(2)
    label = "Apply anyway" if p.conflict is not None else f"Yes, {p.status} {len(p.sample_ids):,} samples"
    # Another key for the override: a click meant for the confirmation must never count as one.
    button_key = f"override_{key}" if p.conflict is not None else f"confirm_{key}"
    if c1.button(label, key=button_key, type="primary"):
        p.since = None if p.conflict is not None else p.since
        p.conflict = None
        _apply(p, key, reset_keys)
    if c2.button("Cancel", key=f"cancel_{key}"):
        st.session_state.pop(f"_pending_{key}", None)
        if p.conflict is not None:  # the other decisions were shown: the next save overrides no unseen one
            st.session_state.pop(f"_seen_{key}", None)
        st.rerun()


def flag_controls(
    *,
    dataset: str,
    sample_ids: Sequence[str],
    run_id: str,
    cluster_key: str | None,
    source: str,
    key: str,
    reset_keys: Sequence[str] = (),
) -> None:
    """Flag / unflag the given samples with a decision and a note (one action = one transaction).

    No decision is preselected; more than :data:`CONFIRM_ABOVE` samples need a confirmation; a decision
    that another session made on these samples after this page was shown blocks the save until the user
    has seen it. After saving, the page reruns so every table on it shows the new state; ``reset_keys``
    (e.g. a table selection whose row positions the change would invalidate) are cleared first.
    """
    if access.read_only():
        st.caption("Read-only dashboard: flagging is off.")
        return
    if folder_closed(common.flags_db_path()):
        st.caption(
            f"Flagging is off: this user cannot write the flag database's folder "
            f"({safetext.md(str(common.flags_db_path().parent))}: a read-only file system or permissions)."
        )
        return
    n = len(sample_ids)
    since = _baseline(key, dataset, sample_ids)
    with st.form(key=f"flagform_{key}", border=True):
        st.markdown(f"**Flag {n:,} sample{'' if n == 1 else 's'}** ({safetext.md(source)})")
        c1, c2 = st.columns([1, 2])
        status = c1.radio("Decision", [*STATUSES, "unflag"], index=None, key=f"flag_status_{key}")
        note = c2.text_area(
            "Note", key=f"flag_note_{key}", height=90, placeholder="why (kept in the history)"
        )
        submitted = st.form_submit_button("Apply", type="primary", disabled=n == 0)
    if submitted and n:
        if status is None:
            st.warning("Choose a decision (unlearn, investigate, ok or unflag) first.")
        else:
            pending = _Pending(
                dataset, [str(s) for s in sample_ids], str(status), note, run_id, cluster_key, source, since
            )
            if n > CONFIRM_ABOVE:
                st.session_state[f"_pending_{key}"] = pending
            else:
                _apply(pending, key, reset_keys)
    pending_now = st.session_state.get(f"_pending_{key}")
    if isinstance(pending_now, _Pending):
        _ask(pending_now, key, reset_keys)
    elif st.session_state.get(f"_saved_{key}"):
        st.success(f"Saved — {safetext.md(st.session_state[f'_saved_{key}'])}")


def _baseline(key: str, dataset: str, sample_ids: Sequence[str]) -> int:
    """The newest flag event when form ``key`` was first shown for these samples: a decision made elsewhere
    after it blocks the save until the user has seen it. Reruns of the page (typing a name, a filter) keep it,
    since a count that changed on the page is not a decision seen; a save or a cancel starts a new one."""
    seen_key = f"_seen_{key}"
    ids = hash(tuple(str(s) for s in sample_ids))
    seen = st.session_state.get(seen_key)
    if not (isinstance(seen, tuple) and seen[0] == ids):
        seen = (ids, last_event_id(dataset))
        st.session_state[seen_key] = seen
    return int(seen[1])


@st.fragment(run_every=REFRESH_S)
def live_counts(dataset: str) -> None:
    """Flag counts of the dataset, re-read every few seconds; offers a refresh when others flagged."""
    try:
        c, now = counts(dataset), last_event_id(dataset)
    except SprayError as err:  # the flag database went bad meanwhile: say so here, the page says it too
        st.caption(safetext.md(str(err)))
        return
    st.caption(
        "Flags of this dataset: " + " · ".join(f"{s} {c.get(s, 0):,}" for s in STATUSES),
        help=f"Re-read every {REFRESH_S} s from the flag database.",
    )
    shown = st.session_state.setdefault("_shown_event", now)
    if now > shown:
        st.info(f"{now - shown:,} new flag events since this page was shown.")
        if st.button("Refresh the page", key="live_refresh"):
            st.session_state["_shown_event"] = now
            st.rerun(scope="app")


def content_warning(dataset: str, path: str) -> None:
    """A warning when flags of the dataset name other images in this run than they were set on, or when the
    dataset has no flags while another dataset key's flags name its images (the key changed)."""
    message = _content_message(dataset, path)
    if not message:
        store, hashes = reader(), common.content_hashes(path)
        unflagged = store is not None and hashes and not store.counts(dataset)
        moved = other_key_message(store, dataset, hashes) if unflagged and store and hashes else ""
        if moved:
            st.warning("**Flags under another dataset key.** " + safetext.md(moved))
        return
    newest = _newer_run(path)
    if newest is not None:
        # Its commands would follow images to the ids of older data (spray flags rebind refuses an older run).
        if _reaudit_project(path) is not None:
            which, where = (
                "a correction's re-audit, which read the data as it was then",
                (
                    f"the project's newest run ({safetext.code(newest.name)}: "
                    f"{safetext.code(f'spray dashboard --runs-dir {newest.parent}', limit=None)})"
                ),
            )
        else:
            which, where = (
                "which is not the newest of its audit",
                f"the newest run ({safetext.code(newest.name)})",
            )
        st.warning(
            f"**Flags on other images.** In this run, {which}, some flagged ids name other images than they were "
            f"set on. Open {where} to check the flags against the current data."
        )
        return
    st.warning("**Flags on other images.** " + safetext.md(message))


def other_weights_note(dataset: str, path: str) -> None:
    """A note when flags of the dataset were set on runs (still in this runs folder) that audited other model
    weights than this run: the shortcut they mark may not be this model's (spray correct warns of it too)."""
    store = reader()
    flags = [] if store is None else store.current(dataset)
    here = common.summary(path).hashes
    if not flags or not here.get("model"):
        return
    runs_dir = str(Path(path).parent)
    other: dict[str, int] = {}
    unknown: dict[str, int] = {}  # fingerprints of another scheme (another spray version): not comparable
    for name in common.runs_overview(runs_dir)[0]:
        s = common.summary(str(Path(runs_dir) / name))
        same_scheme = s.hashes.get("model_hash_version") == here.get("model_hash_version")
        if s.hashes.get("model") in (None, here["model"]):
            continue
        (other if same_scheme else unknown)[s.run_id] = 0
    for f in flags:
        for counts in (other, unknown):
            if f.run_id in counts:
                counts[f.run_id] += 1
    if untold := _per_run(unknown):
        st.info(
            f"**Flags from runs of another spray version.** {untold[0]:,} of the {len(flags):,} flags of this "
            f"dataset were set on runs whose model fingerprint another spray version made ({untold[1]}): whether "
            "they audited these weights cannot be told. If the weights changed since, check that the flags still "
            "mark this model's shortcut (spray flags check)."
        )
    if used := _per_run(other):
        st.info(
            f"**Flags from other weights.** {used[0]:,} of the {len(flags):,} flags of this dataset were set on runs "
            f"that audited other model weights than this run ({used[1]}): check that they still mark this model's "
            "shortcut (their samples' Cluster and Sample pages here, or spray flags check)."
        )


def _per_run(counts: dict[str, int]) -> tuple[int, str] | None:
    """``(flags, "3 on run <id12>, ...")`` of the runs holding any flag in ``counts`` (None when none does)."""
    held = {r: n for r, n in counts.items() if n}
    if not held:
        return None
    return sum(held.values()), ", ".join(f"{n} on run {safetext.code(r[:12])}" for r, n in held.items())


def _newer_run(path: str) -> Path | None:
    """The newest published run of the audit ``path`` belongs to, when that is not ``path``; for a correction's
    re-audit, the project's newest run of the dataset (the flags are the project's, and so is its data)."""
    from spray.runs.publish import newer_run, newest_runs

    s = common.summary(path)
    project = _reaudit_project(path)
    if project is not None:
        return newest_runs(project, full_first=True).get(s.dataset)
    return newer_run(Path(path), name=s.name, dataset=s.dataset)


def _reaudit_project(path: str) -> Path | None:
    """The project's runs folder when the run ``path`` is a correction's re-audit, else None."""
    folder = Path(path).parent
    project = project_root(folder)
    return None if project == folder else project


def _content_message(dataset: str, path: str, sample_id: str | None = None) -> str:
    """What the flags of the dataset (or of one sample) name in this run other than they were set on
    (:func:`spray.flags.content.describe`; empty when nothing, or nothing to check against)."""
    store, hashes = reader(), common.content_hashes(path)
    if store is None or hashes is None:
        return ""
    flags = [f for f in store.current(dataset) if sample_id is None or f.sample_id == sample_id]
    return describe(bind_flags(flags, hashes, run=Path(path)), path) if flags else ""


def left_out(dataset: str, path: str) -> set[tuple[str, str]]:
    """The ``(dataset, sample_id)`` of flags that no longer name the images they were set on in the newest run
    of the audit ``path`` belongs to, or in a newer ``data.limit`` trial (moved, replaced, gone): left out of the
    export, as ``spray flags export --runs-dir`` does (empty without flags or content hashes to check against)."""
    from spray.runs.publish import flag_check_runs

    store = reader()
    newest = _newer_run(path)
    run = Path(newest if newest is not None else path)
    # the runs `spray flags export --runs-dir` checks against: the dataset's newest that is no data.limit trial,
    # and the trials newer than it (they read their files as they are now)
    out: set[tuple[str, str]] = set()
    for r in map(str, flag_check_runs(run.parent).get(dataset) or [run]):
        hashes = common.content_hashes(r)
        if store is not None and hashes is not None:
            binding = bind_flags(store.current(dataset), hashes, run=Path(r))
            out |= {(dataset, c.flag.sample_id) for c in binding.changed}
    return out


def moved_flag_note(dataset: str, path: str, sample_id: str) -> None:
    """A note on an unflagged sample's page when a flag of its image waits under an id this run does not hold
    (the file was renamed or moved since it was flagged)."""
    store, hashes = reader(), common.content_hashes(path)
    own = (hashes or {}).get(sample_id)
    # on an older run an id it lacks may be the image's newer name, and rebind moves flags to the newest run
    if store is None or own is None or _newer_run(path) is not None:
        return
    known = set(hashes or {})
    waiting = [f for f in store.current(dataset) if f.content_hash == own and f.sample_id not in known]
    for f in waiting[:3]:
        st.info(
            f"A flag **{safetext.md(f.status)}** of this image waits under its former id {safetext.code(f.sample_id)} "
            "(the file was renamed or moved since): `spray flags rebind --runs-dir RUNS` moves it here."
        )


def sample_content_warning(dataset: str, path: str, sample_id: str) -> None:
    """A warning on a sample's page when its flag was set on another image than this run holds under its id."""
    message = _content_message(dataset, path, sample_id)
    if message:
        st.warning("**This flag was set on another image.** " + safetext.md(message))


def mark_shown(dataset: str) -> None:
    """Remember the newest event at the time the page was drawn (for :func:`live_counts`)."""
    st.session_state["_shown_event"] = last_event_id(dataset)


def db_label() -> str:
    """Where the flags live, for captions."""
    p: Path = common.flags_db_path()
    return f"{p}{'' if p.is_file() else ' (created on the first flag)'}"

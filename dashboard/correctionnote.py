"""The corrections of some samples: which published ``spray correct`` runs took them as their artifact group and
what each found, for the Cluster and Sample pages (a corrected shortcut looks the same there as an untouched one).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import common
import safetext
import streamlit as st

from spray.correct.run import PublishedCorrection, corrections_for


def reaudit_text(c: PublishedCorrection) -> str:
    """The re-audit's outcome in a few words, "but the shortcut still acts" where the record says so."""
    r = c.record
    if r.reaudit is None:
        return "not run (--no-reaudit)"
    return f"{r.reaudit.outcome}, but the shortcut still acts" if r.hidden_warning() else r.reaudit.outcome


def dataset_corrections(
    dataset: str, unreadable: list[tuple[Path, str]] | None = None
) -> list[PublishedCorrection]:
    """The published corrections of ``dataset`` in the project's runs folder (also when the dashboard shows a
    correction's re-audit folder), newest first."""
    return corrections_for(common.project_dir(), dataset=dataset, unreadable=unreadable)


def newest_of_each(found: list[PublishedCorrection]) -> dict[str, PublishedCorrection]:
    """``correction_id -> its newest folder``: ``--force`` publishes an id again, and the newest one replaces
    the older ones."""
    newest: dict[str, PublishedCorrection] = {}
    for c in found:
        held = newest.get(c.record.correction_id)
        if held is None or c.folder.name > held.folder.name:
            newest[c.record.correction_id] = c
    return newest


def pct(x: float | None) -> str:
    """A share as ``"12.3 %"``, ``"–"`` when not measured."""
    return "–" if x is None else f"{100 * x:.1f} %"


def show(dataset: str, sample_ids: Collection[str], run: str, run_id: str) -> None:
    """One line per published correction whose flagged samples include some of ``sample_ids`` (of run folder
    ``run``, id ``run_id``), with its re-audit's outcome and a link to the Corrections page; nothing when none."""
    ids = set(sample_ids)
    current = newest_of_each(dataset_corrections(dataset))
    hits = [(c, len(ids.intersection(c.record.flags.sample_ids))) for c in current.values()]
    hits = [(c, n) for c, n in hits if n]
    if not hits:
        return
    lines = []
    for c, n in hits:
        r = c.record
        b, a = r.evaluation.before, r.evaluation.after
        source = "this run" if r.source_run_id == run_id else f"run {r.source_run_id[:12]}"
        share = (
            "" if len(ids) == 1 else f" {n:,} of these {len(ids):,} (of its {r.group.n_flagged:,} flagged)"
        )
        lines.append(
            f"- {safetext.code(c.folder.name)} ({safetext.plain(r.method)}, flags of {source}){share}: paste flip "
            f"rate {pct(b.flip_rate)} → {pct(a.flip_rate)}; re-audit: {safetext.plain(reaudit_text(c))}"
        )
    whom = "this sample" if len(ids) == 1 else "some of these samples"
    st.markdown(f"**Corrections** whose artifact group holds {whom}:\n" + "\n".join(lines))
    st.page_link(
        common.PAGES["corrections"],
        label="Before and after: the Corrections page",
        query_params={"run": run},
        icon=":material/build:",
    )

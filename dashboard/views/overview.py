"""Overview: the ranked suspicious clusters of a run across all classes, and what changed since the last run."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlencode

import common
import flagform
import htmltable
import safetext
import streamlit as st
import urlstate

from spray.accuracy import data_notes, recorded_accuracy, recorded_problems
from spray.errors import SprayError
from spray.imaging import COLORMAPS, DEFAULT_COLORMAP
from spray.records import MODEL_CHANGED, MODEL_UNKNOWN, SETTINGS_CHANGED, ChangeSet, score_text, skipped_size

st.title("Suspicious clusters")
cur = common.current_run()
if cur is None:
    st.info(common.no_run_message())
    st.stop()
runs, run = cur
path = str(Path(runs) / run)
summary = common.summary(path)
dataset = common.dataset_key(summary)
found = common.findings(path)
corrected = common.correction_of(path)


def metrics() -> None:
    """The run's figures (the sidebar's flag counts are the live ones), as one static strip."""
    try:
        flagged_now = f"{flagform.counts(dataset).get('unlearn', 0):,}"
    except SprayError as err:  # the flag database cannot be read: say so here, the figures still show
        flagged_now = "?"
        st.error(safetext.md(str(err)))
    figures = [
        ("Samples", f"{summary.n_samples:,}"),
        ("Classes analysed", f"{len(summary.classes):,}"),
        ("Clusters scored", f"{len(found):,}"),
        ("Suspicious", f"{summary.n_suspicious:,}"),
        ("Flagged (unlearn)", flagged_now),
    ]
    if accuracy is not None:
        figures.append(("Model accuracy", f"{accuracy['accuracy']:.1%}"))
    st.html(htmltable.figures(figures))
    if summary.classes_skipped:
        st.info(
            "Not analysed: "
            + "; ".join(
                f"{safetext.md(c.class_name)} ({skipped_size(c.n, c.reason)})"
                for c in summary.classes_skipped
            )
            + ". No finding can be made in these classes."
        )


# Recorded by the audit since 4 Dec 2026 (absent in older runs): a model that does not recognise its own
# data shows no shortcut, so this comes before the list.
accuracy = recorded_accuracy(summary.extra)
# a re-audit's collapse is the correction's: it read the source run's data with the same transform
for problem in recorded_problems(summary.extra, corrected=corrected is not None):
    st.warning(safetext.md(problem))
for note in data_notes(summary.extra):  # how the files were read, copies: not the model's doing
    st.info(safetext.md(note))
flagform.content_warning(dataset, path)
flagform.other_weights_note(dataset, path)


def skipped_note(first: int = 3) -> None:
    """The samples the audit could not read (not audited), with the first reasons; nothing when none."""
    n = len(summary.skipped)
    if not n:
        return
    reasons = "; ".join(
        f"{safetext.code(s.sample_id)} ({safetext.md(s.reason)})" for s in summary.skipped[:first]
    )
    more = f"; and {n - first:,} more" if n > first else ""
    st.warning(
        # not only unreadable images: hidden files, non-images and loose files are left out with their reason
        f"{n:,} entr{'y' if n == 1 else 'ies'} of the data left out (not audited): {reasons}{more}. "
        "summary.json lists them all with their reasons (report.html the first 50); fix or remove the files "
        "and rerun to audit them."
    )


metrics()
st.caption(
    f"Run {safetext.code(summary.run_id[:12])} of dataset {safetext.code(dataset)} · "
    f"{safetext.md(common.run_label(run))}" + (f" · {safetext.md(corrected.sentence())}" if corrected else "")
)
skipped_note()

c1, c2, c3 = st.columns([1, 1, 2])
# Selectboxes (the sidebar has one already), not a toggle and a number field: two fewer kinds of widget
# code for the browser to fetch before the first paint.
only_susp = urlstate.nav_widget(
    c1.selectbox, "Clusters", "susp", default=False, parse=urlstate.parse_bool,
    options=[False, True], format_func=lambda v: "suspicious only" if v else "every scored cluster",
)  # fmt: skip
tops = sorted({*range(5, len(found) + 1, 5), max(5, len(found))})
top = urlstate.nav_widget(
    c2.selectbox, "Show top", "top", default=min(25, max(5, len(found))), parse=int,
    valid=lambda v: v in tops, options=tops,
)  # fmt: skip
cmap = urlstate.nav_widget(
    c3.selectbox, "Heatmap colours", "cmap", default=DEFAULT_COLORMAP, valid=lambda v: v in COLORMAPS,
    options=list(COLORMAPS),
)  # fmt: skip
urlstate.push_url(
    run=run, susp=int(only_susp) or None, top=top, cmap=cmap if cmap != DEFAULT_COLORMAP else None
)

flagged = flagform.status_of(dataset)
shown = [f for f in found if f.suspicious or not only_susp][: int(top)]
unreadable: dict[str, str] = {}


def thumbnail(key: str) -> str | None:
    """The mean heatmap of a finding; a class whose files cannot be read loses its picture, not the page."""
    try:
        return common.mean_heatmap_uri(path, key, cmap)
    except common.RunFileError as err:
        unreadable.setdefault(err.file, err.reason)
        return None


def flags_of(key: str) -> str:
    """A cluster's members' flags per status (its members are read only when anything is flagged at all)."""
    return (
        flagform.status_text(flagged[s] for s in common.members(path, key) if s in flagged) if flagged else ""
    )


rows = [
    htmltable.Row(
        [
            htmltable.number(f.rank),
            htmltable.image(thumbnail(f.key)),
            htmltable.number(f.score, score_text),
            htmltable.text(f"{f.class_index} · {f.class_name}"),
            htmltable.number(f.size),
            htmltable.bar(f.fraction),
            htmltable.text("yes" if f.suspicious else ""),
            htmltable.text(flags_of(f.key)),
            htmltable.lines(list(f.evidence)),
            htmltable.text(f.key),
            htmltable.link("open ↗", href, new_tab=True),
        ],
        href=href,
        key=f.key,
    )
    for f in shown
    for href in ["cluster?" + urlencode({"run": run, "cluster": f.key})]
]
for file, reason in unreadable.items():
    st.warning(
        f"Run {safetext.code(run)}: {safetext.code(file)} cannot be read ({safetext.md(reason)}); its findings "
        "are listed without their mean heatmap."
    )
st.caption("Click any cell of a row to open that cluster (the `open ↗` link opens it in a new tab).")
# A static table: no data-grid code before the first paint (see htmltable).
st.html(
    htmltable.render(
        ["rank", "mean heatmap", "score", "class", "size", "share of class", "suspicious", "flags",
         "evidence (all lines)", "cluster key", "link"],
        rows,
        "findings",
    ),
    unsafe_allow_javascript=True,
)  # fmt: skip

if shown:
    st.subheader("Evidence in full")
    # The first three findings in full, as one element (the table's evidence column holds every line of
    # every finding; one Markdown block keeps the first paint light).
    blocks = []
    for f in shown[:3]:
        head = (
            f"**#{f.rank} · {safetext.md(f.class_name)} · {safetext.code(f.key)}** · "
            f"score {score_text(f.score)}{' · suspicious' if f.suspicious else ''} · {f.size:,} samples"
        )
        lines = "\n".join(f"  - {safetext.md(line)}" for line in f.evidence) or "  - no evidence recorded"
        blocks.append(f"- {head}\n{lines}")
    st.markdown("\n".join(blocks))

st.subheader("Since the previous run")


def changes_cell(value: object) -> htmltable.Cell:
    """One cell of the changes table (numbers right-aligned, scores with three decimals as everywhere else,
    none left empty)."""
    if value is None:
        return htmltable.text("")
    if isinstance(value, float):
        return htmltable.number(value, "{:.3f}")
    if isinstance(value, int) and not isinstance(value, bool):
        return htmltable.number(value)
    return htmltable.text(value)


def show_changes(ch: ChangeSet, how: str) -> None:
    """A change set (spray's one change detector) as a table of the clusters that are new, grown or resolved."""
    rule = ch.rule
    st.caption(
        f"{how} Clusters are matched within each class by member overlap (Jaccard ≥ {rule.jaccard_min:g}) or, "
        f"when many members changed, by their mean heatmaps (r ≥ {rule.correlation_min:g}); grown = at least "
        f"{100 * rule.grow_min:.0f} % larger."
    )
    rows = [
        {"change": kind, **asdict(c)}
        for kind in ("new", "grown", "resolved", "not_analysed", "persisting")
        for c in getattr(ch, kind)
    ]
    if not any(r["change"] in ("new", "grown") for r in rows):
        st.success("No new or grown suspicious clusters.")
    if rows:
        cols = ["change", "key", "class_name", "size", "previous_size", "score", "jaccard", "correlation",
                "previous_key", "note"]  # fmt: skip
        st.html(
            htmltable.render(
                cols, [htmltable.Row([changes_cell(r[c]) for c in cols]) for r in rows], "changes"
            )
        )
    for u in ch.unreadable:
        st.caption(f"Passed over (unreadable): {safetext.code(u.run)}")
    if ch.model_changed is None and ch.previous_run_id:
        st.caption(MODEL_UNKNOWN)
    if ch.model_changed:
        st.caption(MODEL_CHANGED)
    if ch.config_changed:
        st.caption(f"{SETTINGS_CHANGED}: " + safetext.md("; ".join(ch.config_changed)))


recorded = common.recorded_changes(path)
if recorded is not None:
    # Written when the run was published: spray audit, spray run and the nightly job all record it.
    prev_name = recorded.previous_run or recorded.previous_run_id or "none"
    show_changes(recorded, f"Recorded when the run was published (compared with {safetext.code(prev_name)}).")
else:
    prev = common.previous_run(runs, run, dataset)
    if prev is None:
        st.caption("No earlier run of this dataset to compare with.")
    else:
        ch = common.changes_between(path, str(Path(runs) / prev))
        show_changes(ch, f"Compared with {safetext.md(common.run_label(prev))}.")

"""The before/after comparison of a correction as HTML: a fragment for other pages, and a whole page.

:func:`render_correction_html` returns a self-contained ``<section>`` (inline styles, images as
``data:`` URIs) that the run report or the dashboard can embed (the dashboard with
``st.html(...)``); :func:`write_report` writes it as ``report.html`` into the correction folder.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

import numpy as np

from spray.correct.record import (
    GOAL_ACCURACY_LOSS,
    GOAL_FLIP_DROP,
    GOAL_RELEVANCE_DROP,
    CorrectionRecord,
    change_between,
)
from spray.correct.source import FindingMatch
from spray.imaging import png_data_uri, resize_nearest
from spray.records import score_text
from spray.runs.atomic import atomic_write_bytes
from spray.runs.errors import RunReadError
from spray.runs.layout import CORRECTION_DIRECTION
from spray.runs.reader import read_correction_arrays

log = logging.getLogger(__name__)

__all__ = [
    "GOAL_ACCURACY_LOSS",
    "GOAL_FLIP_DROP",
    "GOAL_RELEVANCE_DROP",
    "render_correction_html",
    "write_report",
]

REPORT_NAME = "report.html"


_STYLE = (
    "<style>.spray-corr{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;color:#222}"
    ".spray-corr table{border-collapse:collapse;font-size:13px;margin:6px 0}"
    ".spray-corr td,.spray-corr th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}"
    ".spray-corr .met{color:#2e7d32;font-weight:600}.spray-corr .unmet{color:#c62828;font-weight:600}"
    ".spray-corr .small{font-size:12px;color:#666}</style>"
)

_METHODS = {"pclarc": "P-ClArC (projection, no training)", "rrclarc": "RR-ClArC (fine-tuning)",
            "retrain": "baseline (retraining)"}  # fmt: skip


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _mark(ok: bool | None, unjudged: str = "not measured") -> str:
    if ok is None:
        return f"<span class='small'>{unjudged}</span>"
    return "<span class='met'>met</span>" if ok else "<span class='unmet'>not met</span>"


#: Why the after column of the rows along the direction is not shown for a model retrained from scratch.
UNRELATED_DIRECTION = (
    "the direction was fitted on the audited model's features; a model retrained from scratch has other "
    "features at that layer, so its sensitivity along the direction means nothing (not shown)"
)


def direction_unrelated(rec: CorrectionRecord) -> bool:
    """Whether the corrected model was retrained from scratch: its layer's channels are not the audited model's."""
    return rec.method == "retrain" and rec.parameters.get("retrain_init", "scratch") == "scratch"


def _scores_table(rec: CorrectionRecord) -> str:
    b, a, e = rec.evaluation.before, rec.evaluation.after, rec.evaluation
    unrelated = direction_unrelated(rec)
    rows = [
        (f"clean accuracy ({html.escape(e.split_text())}, n={e.n_clean})", _pct(b.clean_accuracy), _pct(a.clean_accuracy)),
        (f"… on the class {html.escape(rec.group.class_name)}'s own images", _pct(b.class_accuracy),
         _pct(a.class_accuracy)),
        (f"accuracy with the artifact pasted (n={e.n_paste})", _pct(b.pasted_accuracy), _pct(a.pasted_accuracy)),
        ("paste flip rate to the artifact class", _pct(b.flip_rate), _pct(a.flip_rate)),
        ("… same region from clean samples (null)", _pct(b.flip_null), _pct(a.flip_null)),
        ("… the stamp pasted at the opposite place", _pct(b.flip_moved), _pct(a.flip_moved)),
        (f"relevance share on the artifact region (n={e.n_relevance})", _pct(b.relevance_share), _pct(a.relevance_share)),
        (f"mean |sensitivity| along the direction (n={e.n_sensitivity})", f"{b.sensitivity_abs:.4g}",
         "n/a" if unrelated else f"{a.sensitivity_abs:.4g}"),
        ("TCAV score (share with positive sensitivity)", _pct(b.tcav), "n/a" if unrelated else _pct(a.tcav)),
    ]  # fmt: skip
    body = "".join(f"<tr><td>{m}</td><td>{x}</td><td>{y}</td></tr>" for m, x, y in rows)
    note = f"<p>n/a: {html.escape(UNRELATED_DIRECTION)}.</p>" if unrelated else ""
    return f"<table><tr><th>measurement</th><th>before</th><th>after</th></tr>{body}</table>{note}"


def _points(share: float) -> str:
    n = round(100 * share, 1)
    return f"{n:g} percentage point{'' if n == 1 else 's'}"


def _drop_met(drop: float | None, after: float, goal: float) -> bool | None:
    """Whether a relative drop meets its goal; a measure that was 0 before has none: nothing to remove (None,
    not judged) while it stays 0, a rise from 0 (not met) otherwise."""
    if drop is None:
        return None if after <= 0 else False
    return drop >= goal


def _verdict(rec: CorrectionRecord) -> str:
    v, b, a = rec.verdict, rec.evaluation.before, rec.evaluation.after
    flip_ok = _drop_met(v.flip_drop, a.flip_rate, GOAL_FLIP_DROP)
    share_ok = _drop_met(v.relevance_drop, a.relevance_share, GOAL_RELEVANCE_DROP)
    items = [
        (f"paste flip rate {change_between(b.flip_rate, a.flip_rate)} (goal: down ≥ {GOAL_FLIP_DROP:.0%})", flip_ok),
        (f"relevance share on the artifact {change_between(b.relevance_share, a.relevance_share)} (goal: down ≥ "
         f"{GOAL_RELEVANCE_DROP:.0%})", share_ok),
        (f"clean accuracy {v.accuracy_text()} (goal: no loss over {_points(GOAL_ACCURACY_LOSS)})",
         v.accuracy_change >= -GOAL_ACCURACY_LOSS),
        ("the re-audit no longer flags the finding" + _not_judged(rec) + _acts_still(rec), rec.cleared()),
    ]  # fmt: skip
    # what an unmarked item means: a measure 0 before, a re-audit that could not judge, or none run
    unmarked = [
        "nothing to remove",
        "nothing to remove",
        "",
        "not measured" if rec.reaudit is None else "not judged",
    ]
    return (
        "<ul>"
        + "".join(
            f"<li>{html.escape(t)}: {_mark(ok, u)}</li>" for (t, ok), u in zip(items, unmarked, strict=True)
        )
        + "</ul>"
        + "".join(f"<p class='unmet'>Warning: {html.escape(w.rstrip('.'))}.</p>" for w in rec.warnings())
        + _share_note(rec)
    )


def _not_judged(rec: CorrectionRecord) -> str:
    """Why the re-audit's flag cannot judge the correction, in its own words (its model checks' doubts, or a
    finding the source run did not flag either); empty when it judged, or did not run."""
    r = rec.reaudit
    return "" if r is None or r.cleared is not None else f" ({r.outcome.removeprefix('not judged: ')})"


def _acts_still(rec: CorrectionRecord) -> str:
    """The goal's own caveat when the re-audit no longer flags the finding but the shortcut still acts."""
    return ", but the shortcut still acts (below)" if rec.hidden_warning() else ""


def _share_note(rec: CorrectionRecord) -> str:
    """Why a relevance share above its goal need not be the shortcut: shown only when the behavioural
    measures say the shortcut is gone (flip rate goal met, re-audit cleared) and the share goal is missed."""
    v = rec.verdict
    behaviour_gone = v.flip_drop is not None and v.flip_drop >= GOAL_FLIP_DROP and rec.cleared() is True
    if v.relevance_drop is None or v.relevance_drop >= GOAL_RELEVANCE_DROP or not behaviour_gone:
        return ""
    return (
        "<p class='small'>The paste test and the re-audit say the shortcut is gone, yet relevance stays on the "
        "artifact's pixels. Some of it would be there in a model that never learned the artifact: the LRP "
        "rules send relevance to strong, high-contrast inputs (in spray's benchmark, models trained without "
        "any framed image put 16–22 % of their relevance on a 1-pixel frame; 2–11 % on a small stamp or "
        "glyph). The retrain baseline (<code>spray correct --method retrain</code>) shows what a model without "
        "the flagged samples puts there (docs/correction.md, “The relevance share's floor”).</p>"
    )


def _reaudit(rec: CorrectionRecord) -> str:
    r = rec.reaudit
    if r is None:
        return "<p class='small'>No re-audit (correction.reaudit is off).</p>"

    def row(label: str, f: FindingMatch) -> str:
        flip = "–" if f.flip_rate is None else _pct(f.flip_rate)
        score = "–" if f.score is None else score_text(f.score)
        cells = [label, html.escape(str(f.key)), str(f.rank), score, "yes" if f.suspicious else "no",
                 f"{f.jaccard:.2f}", flip]  # fmt: skip
        return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"

    head = "<tr><th></th><th>finding</th><th>rank</th><th>score</th><th>suspicious</th><th>overlap</th><th>paste flips</th></tr>"
    return (f"<p>The re-audit ({html.escape(r.run_dir)}): {html.escape(r.describe())}.</p>"
            f"<table>{head}{row('source run', r.before)}{row('re-audit', r.after)}</table>")  # fmt: skip


def _region_image(folder: Path | None) -> str:
    if folder is None or not (folder / CORRECTION_DIRECTION).is_file():
        return ""
    try:
        arrays = read_correction_arrays(folder)
    except RunReadError as err:
        log.warning("no region image in the report: %s", err)
        return ""
    if "region" not in arrays:
        return ""
    mask = arrays["region"].astype(np.uint8) * 255
    rgb = np.repeat(resize_nearest(mask, 112)[..., None], 3, axis=2)
    return f"<img src='{png_data_uri(rgb)}' width=112 height=112 title='artifact region' style='border:1px solid #999'>"


def _penalties(rec: CorrectionRecord) -> str:
    """What RR-ClArC penalised, as sentences: the subspace's share of the paste's effect and the region
    term's footprint (empty for the other methods)."""
    text = "" if rec.subspace is None else f" Penalised: {html.escape(rec.subspace.text())}."
    if rec.footprint is not None:
        text += f" With a {html.escape(rec.footprint.text(rec.parameters))}."
    skipped = rec.region_term_skipped()
    return text + (f" <b>Not penalised</b>: {html.escape(skipped)}." if skipped else "")


def render_correction_html(rec: CorrectionRecord, folder: Path | None = None) -> str:
    """The comparison as one self-contained ``<section>`` (``folder``: the correction's, for the region image)."""
    d, s, t = rec.direction, rec.direction.separation, rec.training
    e = rec.evaluation
    candidates = ", ".join(f"{name} {auroc:.3f}" for name, auroc in d.candidates.items())
    train = (
        "no training"
        if t is None
        else f"{t.steps} steps, {t.samples:,} samples seen, {t.seconds:.1f} s in the last start"
    )
    return (
        f"{_STYLE}<section class='spray-corr'><h2>Correction {html.escape(rec.correction_id[:12])}: "
        f"{html.escape(_METHODS.get(rec.method, rec.method))}</h2>"
        f"<p class='small'>class {html.escape(rec.group.class_name)} · {rec.group.n_flagged} flagged samples · "
        f"layer <code>{html.escape(d.layer)}</code> ({html.escape(d.pooling)} pooling) · source run "
        f"{html.escape(rec.source_run_id[:12])} · {html.escape(train)} · correction "
        f"{rec.timings.get('correction_s', 0):.1f} s</p>"
        f"{_verdict(rec)}{_scores_table(rec)}"
        f"<h3>Artifact direction and region</h3><div style='display:flex;gap:16px'>{_region_image(folder)}"
        f"<p>Held-out separation AUROC {s.auroc:.3f} ({s.n_artifact} flagged vs {s.n_reference} reference; "
        f"held-out AUROC of each pooling: {html.escape(candidates)}). Region: {html.escape(e.region_source)}, "
        f"{e.region_pixels} pixels, box {e.region_box}.{_penalties(rec)}</p></div>"
        f"<h3>Re-audit</h3>{_reaudit(rec)}</section>"
    )


def write_report(rec: CorrectionRecord, folder: Path) -> Path:
    """Write the comparison as ``folder/report.html`` (a whole page)."""
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>spray correction "
        f"{html.escape(rec.correction_id[:12])}</title></head><body style='margin:24px;max-width:1000px'>"
        f"{render_correction_html(rec, folder)}</body></html>"
    )
    path = folder / REPORT_NAME
    atomic_write_bytes(path, page.encode())
    return path

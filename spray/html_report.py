"""A static, self-contained HTML report of one run (``report.html``).

The report is one file with no external references: CSS is inline and every image is a base64 PNG
``data:`` URI, so it opens from a mail attachment, a CI artifact store or a file share without a server
or network access. It shows

- the run (id, dataset, sample counts, skipped samples),
- what changed since the previous run (new, grown and resolved suspicious clusters), when the nightly
  job recorded it in ``summary["changes"]``,
- the top findings: score, evidence, the cluster's mean heatmap and thumbnails of its most typical
  members with their relevance overlaid.

It is rendered from the files of a run folder only, through :class:`spray.runs.reader.RunReader`, so it
can be (re)built for any published run::

    from spray.html_report import write_html_report
    write_html_report("runs/latest")
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any

import numpy as np

from spray.accuracy import accuracy_sentence, data_notes, recorded_accuracy, recorded_problems
from spray.export.source import CorrectedFrom, corrected_from
from spray.imaging import colorize, png_data_uri, render, resize_nearest
from spray.records import (
    MODEL_CHANGED,
    MODEL_UNKNOWN,
    SETTINGS_CHANGED,
    ChangeSet,
    ClusterChange,
    score_text,
    skipped_size,
)
from spray.runs.atomic import atomic_write_bytes
from spray.runs.layout import RunFiles
from spray.runs.reader import RunReader
from spray.runs.summary import RunSummary

log = logging.getLogger(__name__)

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:13px}.meta code{background:#f3f3f3;padding:1px 4px;border-radius:3px}
table{border-collapse:collapse;font-size:13px}td,th{padding:4px 8px;border-bottom:1px solid #eee;text-align:left}
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;font-weight:600;color:#fff}
.new{background:#c62828}.grown{background:#ef6c00}.persisting{background:#757575}.resolved{background:#2e7d32}.not-analysed{background:#6d4c41}
.alarm{background:#c62828}.ok{background:#9e9e9e}
.finding{border:1px solid #ddd;border-radius:6px;padding:12px;margin:14px 0}
.finding h3{font-size:15px;margin:0 0 6px}.row{display:flex;gap:16px;align-items:flex-start}
.thumbs img{margin:0 4px 4px 0;border:1px solid #ccc}.mean img{border:1px solid #999}
ul.ev{margin:4px 0 8px 18px;padding:0;font-size:13px}.small{font-size:12px;color:#666}
.warn{background:#fff4e5;border-left:4px solid #ef6c00;padding:8px 12px;font-size:14px}
"""


def _img(uri: str, size: int, title: str = "") -> str:
    t = f' title="{html.escape(title)}"' if title else ""
    return f'<img src="{uri}" width="{size}" height="{size}" alt="{html.escape(title)}"{t}>'


def _typical(member_ids: list[str], heat: np.ndarray, mean: np.ndarray | None, n: int) -> list[str]:
    """The ``n`` members whose heatmap correlates best with the cluster mean (the most typical ones).

    ``heat`` is ``(len(member_ids), h, w)``, aligned with ``member_ids``.
    """
    if mean is None or len(member_ids) <= n:
        return member_ids[:n]
    h = np.asarray(heat, dtype=np.float32).reshape(len(member_ids), -1)
    h = h - h.mean(1, keepdims=True)
    m = mean.reshape(-1) - mean.mean()
    denom = np.linalg.norm(h, axis=1) * max(float(np.linalg.norm(m)), 1e-12)
    corr = (h @ m) / np.where(denom > 0, denom, 1.0)
    # Stable sort on the negated correlation: ties keep the members' order, so the report is deterministic.
    return [member_ids[i] for i in np.argsort(-corr, kind="stable")[:n]]


def _change_row(kind: str, c: ClusterChange) -> str:
    key = c.key or c.previous_key
    size, prev_size = c.size, c.previous_size
    sizes = f"{prev_size} → {size}" if prev_size is not None and size is not None else str(size or prev_size)
    sim = ""
    if c.jaccard is not None:
        sim = f"Jaccard {c.jaccard:.2f}"
    if c.correlation is not None:  # None: no comparable mean heatmap
        sim += f", heatmap r {c.correlation:.2f}"
    if c.previous_score is not None and c.score is not None:
        sim += f", score {score_text(c.previous_score)} → {score_text(c.score)}"
    if c.note:  # why a cluster still there counts as resolved ("now below the alarm threshold")
        sim += f"; {c.note}"
    return (
        f"<tr><td><span class='badge {kind.replace(' ', '-')}'>{kind}</span></td><td>{html.escape(c.class_name)}</td>"
        f"<td>{html.escape(str(key))}</td><td>{html.escape(sizes)}</td><td class='small'>{html.escape(sim)}</td></tr>"
    )


def _changes_html(changes: ChangeSet) -> str:
    prev = changes.previous_run_id
    head = (
        f"<p class='meta'>Compared with run <code>{html.escape(str(prev)[:12])}</code> "
        f"({html.escape(str(changes.previous_run or ''))}).</p>"
        if prev
        else "<p class='meta'>No previous run of this audit: every suspicious cluster counts as new.</p>"
    )
    if changes.model_changed is None and prev:
        head += f"<p class='meta'>{html.escape(MODEL_UNKNOWN)}</p>"
    if changes.model_changed:
        head += f"<p class='meta'>{html.escape(MODEL_CHANGED)}</p>"
    if changes.config_changed:
        head += (
            f"<p class='meta'>{html.escape(SETTINGS_CHANGED)}: "
            + html.escape("; ".join(changes.config_changed))
            + ".</p>"
        )
    if (d := changes.data) is not None:
        head += f"<p class='meta'>The data since the previous run: {html.escape(d.sentence())}.</p>"
    for u in changes.unreadable:
        head += (
            f"<p class='meta'>Run <code>{html.escape(u.run)}</code> could not be read and was passed over: "
            f"{html.escape(u.reason)}</p>"
        )
    kinds = {
        "new": changes.new,
        "grown": changes.grown,
        "persisting": changes.persisting,
        "resolved": changes.resolved,
        "not analysed": changes.not_analysed,
    }
    rows = [_change_row(kind, c) for kind, entries in kinds.items() for c in entries]
    if not rows:
        return head + "<p>No suspicious clusters in this run or the previous one.</p>"
    return (
        head
        + "<table><tr><th>change</th><th>class</th><th>cluster</th><th>members</th><th>match</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _provenance(s: RunSummary) -> str:
    """Where the run came from and what it cost: seed, data source, device, heatmaps computed or reused and
    wall time (what a reader needs to rerun it or to tell a slow night)."""
    data = s.config.get("data") or {}
    source = data.get("factory") or data.get("path") or data.get("images")
    t = s.timings
    said = [f"seed {s.config.get('seed', 0)}"]
    if source:
        said.append(f"data {source}")
    if "n_computed" in t:
        said.append(f"{t['n_computed']} heatmaps computed, {t.get('n_cached', 0)} reused")
    if "total_s" in t:
        said.append(f"{float(t['total_s']):.1f} s on {t.get('device', 'an unrecorded device')}")
    return " · ".join(said)


def _spaces(config: dict[str, Any], extra: dict[str, Any]) -> str:
    """Which spaces the run was analysed in, as HTML: concept space needs it enabled and a concept layer."""
    from spray.config.audit import pixel_only_reason

    reason = pixel_only_reason(config)
    layer = extra.get("concept_layer")
    if not reason and layer:
        return f"pixel and concept space (layer <code>{html.escape(str(layer))}</code>)"
    if not reason:
        return "pixel space only (the model has no concept layer: lrp.concept_layer)"
    return f"pixel space only ({html.escape(reason)})"


def render_html_report(run_dir: str | Path, *, top: int = 10, n_thumbs: int = 12, thumb_px: int = 72) -> str:
    """Render the report of a run folder as one HTML string.

    Parameters
    ----------
    run_dir : str or Path
        A run folder (published, or still in staging) holding at least summary.json, samples.parquet
        and heatmaps.npy; thumbs.npy is optional (heatmaps are shown alone without it).
    top : int
        Findings to show.
    n_thumbs : int
        Member thumbnails per finding.
    thumb_px : int
        Displayed thumbnail edge in pixels.

    Returns
    -------
    str
        A complete HTML document with every image inlined.
    """
    run = RunReader.open(run_dir)
    s = run.summary
    changes = run.changes()
    corrected = corrected_from(run.path, s.config)
    status_of: dict[str, str] = {}
    if changes is not None:
        for kind, entries in (
            ("new", changes.new),
            ("grown", changes.grown),
            ("persisting", changes.persisting),
        ):
            for c in entries:
                status_of[str(c.key)] = kind
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>spray report {html.escape(s.run_id[:12])}</title><style>{_CSS}</style></head><body>",
        f"<h1>spray audit: {html.escape(s.name or 'audit')}</h1>",
        *([f"<p class='meta'>This run is {html.escape(corrected.sentence())}.</p>"] if corrected else []),
        "<p class='meta'>",
        f"run <code>{html.escape(s.run_id[:16])}</code> · dataset <code>{html.escape(s.dataset)}</code>",
        f" · {s.n_samples} samples · {len(s.classes)} classes analysed",
        *(
            [f" · not analysed: {html.escape(_not_analysed(s.classes_skipped, s.trial_limit))}"]
            if s.classes_skipped
            else []
        ),
        f" · {len(s.skipped)} skipped · <b>{s.n_suspicious}</b> suspicious cluster"
        + ("" if s.n_suspicious == 1 else "s"),
        f" · {html.escape(_model_line(s.config, s.hashes, corrected))}",
        f" · {_spaces(s.config, s.extra)}",
        *([f" · {html.escape(accuracy_sentence(acc))}"] if (acc := recorded_accuracy(s.extra)) else []),
        f" · spray {html.escape(str(s.versions.get('spray', '')))}</p>",
        f"<p class='meta'>{html.escape(_provenance(s))}</p>",
    ]
    parts += [
        f"<p class='warn'><b>Check the model first.</b> {html.escape(t)}</p>"
        for t in recorded_problems(s.extra, corrected=corrected is not None)
    ]
    parts += [f"<p class='warn'><b>About the data.</b> {html.escape(t)}</p>" for t in data_notes(s.extra)]
    if changes is not None:
        parts.append("<h2>Changes since the previous run</h2>")
        parts.append(_changes_html(changes))
    # every suspicious finding, also below the top ones: an alarm the report did not show went unseen
    findings = s.findings[:top] + [f for f in s.findings[top:] if f.suspicious]
    more = len(findings) - min(top, len(s.findings))
    also = f" and the {more} other suspicious one{'s' if more > 1 else ''}" if more else ""
    parts.append(f"<h2>Top {min(top, len(s.findings))} findings{also} (of {len(s.findings)} candidates)</h2>")
    if not findings:
        parts.append("<p>No clusters were found.</p>")
    for f in findings:
        parts.append(_finding_html(run, f.key, status_of.get(f.key), n_thumbs, thumb_px))
    parts.extend(_skipped_html(s.skipped))
    parts.append(
        "<p class='small'>Generated by spray. Explore the run interactively with "
        "<code>spray dashboard --runs-dir RUNS_DIR</code>.</p></body></html>"
    )
    return "".join(parts)


def _not_analysed(skipped: list[Any], limit: int | None = None) -> str:
    """The classes left out of the analysis, each with its size and reason (a trial's classes without a sample:
    not among its first ``limit`` samples)."""
    return "; ".join(
        f"{c.class_name} (none of the first {limit} samples: data.limit)"
        if limit is not None and c.n == 0
        else f"{c.class_name} ({skipped_size(c.n, c.reason)})"
        for c in skipped
    )


def _model_line(
    config: dict[str, Any], hashes: dict[str, str], corrected: CorrectedFrom | None = None
) -> str:
    """Which model was audited, and how: its factory or architecture, checkpoint file, fingerprint, composite;
    a corrected model as the original's factory or architecture, corrected, with its correction's weights."""
    model, lrp = config.get("model") or {}, config.get("lrp") or {}
    base = (model.get("factory_kwargs") or {}).get("base") if corrected else None
    if isinstance(base, dict):
        model = {**base, "checkpoint": model.get("checkpoint")}
    what = model.get("factory") or model.get("architecture") or "model"
    ckpt = model.get("checkpoint")
    weights = f", weights {Path(str(ckpt)).name}" if ckpt else ""  # a factory may load its own weights
    if corrected is not None:
        # the original's checkpoint is often model.pt as well: the correction tells the two apart
        what += f" corrected by {corrected.method or 'spray correct'}"
        ckpt_of = (
            f"correction {corrected.correction_id[:12]}" if corrected.correction_id else "the correction"
        )
        weights = f", weights {Path(str(ckpt)).name if ckpt else 'model.pt'} of {ckpt_of}"
    fingerprint = f" ({hashes['model'][:12]})" if hashes.get("model") else ""
    composite = f" · LRP {lrp['composite']}" if lrp.get("composite") else ""
    return f"model {what}{weights}{fingerprint}{composite}"


def _finding_html(run: RunReader, key: str, status: str | None, n_thumbs: int, thumb_px: int) -> str:
    f = run.finding(key)
    assert f is not None
    s = run.summary.finding(key)
    assert s is not None
    pick = _typical(f.member_ids, run.heatmaps(f.member_ids), f.mean_heatmap, n_thumbs)
    badge = (
        "<span class='badge alarm'>suspicious</span>" if f.suspicious else "<span class='badge ok'>ok</span>"
    )
    if status is not None:
        badge += f" <span class='badge {status}'>{status}</span>"
    ev = "".join(f"<li>{html.escape(e)}</li>" for e in f.evidence)
    mean_img = _img(
        png_data_uri(resize_nearest(colorize(f.mean_heatmap), 128)), 128, f"mean heatmap of {key}"
    )
    tiles = []
    thumbs = None
    if pick:
        heat = np.asarray(run.heatmaps(pick), dtype=np.float32)
        thumbs = run.thumbs(pick)
        imgs = render("overlay" if thumbs is not None else "heatmap", heat, thumbs, size=thumb_px)
        tiles = [
            _img(png_data_uri(im), thumb_px, sample_id) for sample_id, im in zip(pick, imgs, strict=True)
        ]
    return (
        f"<div class='finding'><h3>#{s.rank} · {html.escape(f.class_name)} · cluster "
        f"{html.escape(key)} {badge}</h3>"
        f"<div class='small'>{f.size} members ({100 * float(f.fraction):.1f} % of the class) · "
        f"score {score_text(float(f.score))}</div><ul class='ev'>{ev}</ul>"
        f"<div class='row'><div class='mean'>{mean_img}<div class='small'>mean relevance</div></div>"
        f"<div class='thumbs'>{''.join(tiles)}<div class='small'>most typical members "
        f"({'relevance overlaid' if thumbs is not None else 'their heatmaps: the run kept no thumbnails'}; "
        "hover for the sample id)</div></div></div></div>"
    )


def _skipped_html(skipped: list[Any]) -> list[str]:
    if not skipped:
        return []
    parts = ["<h2>Skipped samples</h2><table><tr><th>sample</th><th>reason</th></tr>"]
    for sk in skipped[:50]:
        parts.append(f"<tr><td>{html.escape(sk.sample_id)}</td><td>{html.escape(sk.reason)}</td></tr>")
    parts.append("</table>")
    if len(skipped) > 50:
        parts.append(f"<p class='small'>… and {len(skipped) - 50} more (see summary.json).</p>")
    return parts


def write_html_report(run_dir: str | Path, **kwargs: Any) -> Path:
    """Render :func:`render_html_report` into ``<run_dir>/report.html`` (atomically).

    Returns
    -------
    Path
        The written file.
    """
    out = RunFiles(Path(run_dir)).report_html
    atomic_write_bytes(out, render_html_report(run_dir, **kwargs).encode("utf-8"))
    log.info("wrote %s (%d KB)", out.name, out.stat().st_size // 1024)
    return out

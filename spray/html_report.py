"""A static, self-contained HTML report of one run (``report.html``).

The report is one file with no external references: CSS is inline and every image is a base64 PNG
``data:`` URI, so it opens from a mail attachment, a CI artifact store or a file share without a server
or network access. It shows

- the run (id, dataset, sample counts, skipped samples),
- what changed since the previous run (new, grown and resolved suspicious clusters), when the nightly
  job recorded it in ``summary["changes"]``,
- the top findings: score, evidence, the cluster's mean heatmap and thumbnails of its most typical
  members with their relevance overlaid.

It is rendered from the files of a run folder only (summary.json, samples.parquet, heatmaps.npy,
thumbs.npy, classes/<c>.npz), so it can be (re)built for any published run::

    from spray.html_report import write_html_report
    write_html_report("runs/latest")
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from spray.imaging import colorize, png_data_uri, render, resize_nearest
from spray.runs.storage import SUMMARY, atomic_write_bytes

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:13px}.meta code{background:#f3f3f3;padding:1px 4px;border-radius:3px}
table{border-collapse:collapse;font-size:13px}td,th{padding:4px 8px;border-bottom:1px solid #eee;text-align:left}
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;font-weight:600;color:#fff}
.new{background:#c62828}.grown{background:#ef6c00}.persisting{background:#757575}.resolved{background:#2e7d32}
.alarm{background:#c62828}.ok{background:#9e9e9e}
.finding{border:1px solid #ddd;border-radius:6px;padding:12px;margin:14px 0}
.finding h3{font-size:15px;margin:0 0 6px}.row{display:flex;gap:16px;align-items:flex-start}
.thumbs img{margin:0 4px 4px 0;border:1px solid #ccc}.mean img{border:1px solid #999}
ul.ev{margin:4px 0 8px 18px;padding:0;font-size:13px}.small{font-size:12px;color:#666}
"""


def _img(uri: str, size: int, title: str = "") -> str:
    t = f' title="{html.escape(title)}"' if title else ""
    return f'<img src="{uri}" width="{size}" height="{size}" alt="{html.escape(title)}"{t}>'


def _mean_heatmaps(run: Path, class_indices: set[int]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for c in sorted(class_indices):
        p = run / "classes" / f"{c}.npz"
        if not p.exists():
            continue
        with np.load(p, allow_pickle=False) as z:
            for key, mh in zip(z["cluster_keys"].tolist(), z["mean_heatmaps"], strict=True):
                out[str(key)] = np.asarray(mh, dtype=np.float32)
    return out


def _typical_rows(rows: np.ndarray, heat: np.ndarray, mean: np.ndarray | None, n: int) -> np.ndarray:
    """The ``n`` members whose heatmap correlates best with the cluster mean (the most typical ones)."""
    if mean is None or len(rows) <= n:
        return rows[:n]
    h = np.asarray(heat[np.sort(rows)], dtype=np.float32).reshape(len(rows), -1)
    order_rows = np.sort(rows)
    h = h - h.mean(1, keepdims=True)
    m = mean.reshape(-1) - mean.mean()
    denom = np.linalg.norm(h, axis=1) * max(float(np.linalg.norm(m)), 1e-12)
    corr = (h @ m) / np.where(denom > 0, denom, 1.0)
    # Stable sort on the negated correlation: ties keep row order, so the report is deterministic.
    return order_rows[np.argsort(-corr, kind="stable")[:n]]


def _changes_html(changes: dict[str, Any]) -> str:
    prev = changes.get("previous_run_id")
    head = (
        f"<p class='meta'>Compared with run <code>{html.escape(str(prev)[:12])}</code> "
        f"({html.escape(str(changes.get('previous_run') or ''))}).</p>"
        if prev
        else "<p class='meta'>No previous run of this audit: every suspicious cluster counts as new.</p>"
    )
    rows = []
    for kind in ("new", "grown", "persisting", "resolved"):
        for c in changes.get(kind, []):
            key = c.get("key") or c.get("previous_key")
            size = c.get("size")
            prev_size = c.get("previous_size")
            sizes = (
                f"{prev_size} → {size}"
                if prev_size is not None and size is not None
                else str(size or prev_size)
            )
            sim = ""
            if c.get("jaccard") is not None:
                sim = f"Jaccard {c['jaccard']:.2f}"
            if c.get("correlation") is not None:  # None: no comparable mean heatmap
                sim += f", heatmap r {c['correlation']:.2f}"
            rows.append(
                f"<tr><td><span class='badge {kind}'>{kind}</span></td><td>{html.escape(str(c.get('class_name')))}</td>"
                f"<td>{html.escape(str(key))}</td><td>{html.escape(sizes)}</td><td class='small'>{html.escape(sim)}</td></tr>"
            )
    if not rows:
        return head + "<p>No suspicious clusters in this run or the previous one.</p>"
    return (
        head
        + "<table><tr><th>change</th><th>class</th><th>cluster</th><th>members</th><th>match</th></tr>"
        + "".join(rows)
        + "</table>"
    )


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
    import pandas as pd

    run = Path(run_dir)
    s = json.loads((run / SUMMARY).read_text())
    findings: list[dict[str, Any]] = s.get("findings", [])[:top]
    ids = pd.read_parquet(run / "samples.parquet", columns=["sample_id"])["sample_id"].tolist()
    row_of = {sid: i for i, sid in enumerate(ids)}
    heat = np.load(run / "heatmaps.npy", mmap_mode="r")
    thumbs = np.load(run / "thumbs.npy", mmap_mode="r") if (run / "thumbs.npy").exists() else None
    means = _mean_heatmaps(run, {int(f["class_index"]) for f in findings})
    changes: dict[str, Any] = s.get("changes") or {}
    status_of: dict[str, str] = {}
    for kind in ("new", "grown", "persisting"):
        for c in changes.get(kind, []):
            status_of[str(c.get("key"))] = kind

    n_susp = sum(1 for f in s.get("findings", []) if f.get("suspicious"))
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>spray report {html.escape(s['run_id'][:12])}</title><style>{_CSS}</style></head><body>",
        f"<h1>spray audit: {html.escape(str(s.get('name', 'audit')))}</h1>",
        "<p class='meta'>",
        f"run <code>{html.escape(s['run_id'][:16])}</code> · dataset <code>{html.escape(str(s.get('dataset', '')))}</code>",
        f" · {s.get('n_samples', len(ids))} samples · {len(s.get('classes', []))} classes analysed",
        f" · {len(s.get('skipped', []))} skipped · <b>{n_susp}</b> suspicious clusters",
        f" · spray {html.escape(str(s.get('spray_version', '')))}</p>",
    ]
    if changes:
        parts.append("<h2>Changes since the previous run</h2>")
        parts.append(_changes_html(changes))
    parts.append(f"<h2>Top {len(findings)} findings</h2>")
    if not findings:
        parts.append("<p>No clusters were found.</p>")
    for f in findings:
        key = str(f["key"])
        mean = means.get(key)
        rows = np.asarray([row_of[m] for m in f.get("member_ids", []) if m in row_of], dtype=np.int64)
        pick = _typical_rows(rows, heat, mean, n_thumbs)
        badge = (
            "<span class='badge alarm'>suspicious</span>"
            if f.get("suspicious")
            else "<span class='badge ok'>ok</span>"
        )
        if key in status_of:
            badge += f" <span class='badge {status_of[key]}'>{status_of[key]}</span>"
        ev = "".join(f"<li>{html.escape(e)}</li>" for e in f.get("evidence", []))
        mean_img = ""
        if mean is not None:
            mean_img = _img(png_data_uri(resize_nearest(colorize(mean), 128)), 128, f"mean heatmap of {key}")
        tiles = []
        if len(pick):
            h_sel = np.asarray(heat[np.sort(pick)], dtype=np.float32)
            order = {r: i for i, r in enumerate(np.sort(pick).tolist())}
            h_sel = h_sel[[order[r] for r in pick.tolist()]]
            t_sel = None
            if thumbs is not None:
                t_sel = np.asarray(thumbs[np.sort(pick)])[[order[r] for r in pick.tolist()]]
            imgs = render("overlay" if t_sel is not None else "heatmap", h_sel, t_sel, size=thumb_px)
            for r, im in zip(pick.tolist(), imgs, strict=True):
                tiles.append(_img(png_data_uri(im), thumb_px, ids[r]))
        parts.append(
            f"<div class='finding'><h3>#{f.get('rank', '')} · {html.escape(str(f['class_name']))} · cluster "
            f"{html.escape(key)} {badge}</h3>"
            f"<div class='small'>{f['size']} members ({100 * float(f['fraction']):.1f} % of the class) · "
            f"score {float(f['score']):.3f}</div><ul class='ev'>{ev}</ul>"
            f"<div class='row'><div class='mean'>{mean_img}<div class='small'>mean relevance</div></div>"
            f"<div class='thumbs'>{''.join(tiles)}<div class='small'>most typical members "
            f"(relevance overlaid; hover for the sample id)</div></div></div></div>"
        )
    if s.get("skipped"):
        parts.append("<h2>Skipped samples</h2><table><tr><th>sample</th><th>reason</th></tr>")
        for sk in s["skipped"][:50]:
            parts.append(
                f"<tr><td>{html.escape(sk['sample_id'])}</td><td>{html.escape(sk['reason'])}</td></tr>"
            )
        parts.append("</table>")
        if len(s["skipped"]) > 50:
            parts.append(f"<p class='small'>… and {len(s['skipped']) - 50} more (see summary.json).</p>")
    parts.append(
        "<p class='small'>Generated by spray. Explore the run interactively with "
        "<code>spray dashboard --runs-dir RUNS_DIR</code>.</p></body></html>"
    )
    return "".join(parts)


def write_html_report(run_dir: str | Path, **kwargs: Any) -> Path:
    """Render :func:`render_html_report` into ``<run_dir>/report.html`` (atomically).

    Returns
    -------
    Path
        The written file.
    """
    out = Path(run_dir) / REPORT_NAME
    atomic_write_bytes(out, render_html_report(run_dir, **kwargs).encode("utf-8"))
    log.info("wrote %s (%d KB)", out.name, out.stat().st_size // 1024)
    return out

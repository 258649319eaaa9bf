"""Sample: one sample at full size — input, heatmap, overlay, the original file — its clusters at every k,
its flag history and a flag form. Reached by the sidebar search or from a cluster's table (``?sample=<id>``).
"""

from __future__ import annotations

from pathlib import Path

import common
import correctionnote
import flagform
import numpy as np
import pandas as pd
import safetext
import samplegrid
import streamlit as st
import urlstate

from spray import imaging
from spray.data import UnreadableSample
from spray.data.originals import decode_original, input_box
from spray.records import score_text
from spray.runs.keys import sample_id_in
from spray.runs.summary import FindingSummary

# Display edge of the enlarged views (nearest-neighbour, so every stored pixel stays a sharp block).
VIEW_PX = 448


def _tag(f: FindingSummary) -> str:
    """A finding's score (and ⚠ when flagged) after its key in a link."""
    return f" · score {score_text(f.score)}{' ⚠' if f.suspicious else ''}"


path, summary = common.require_run()
run = Path(path).name
dataset = common.dataset_key(summary)
state = urlstate.nav()
tab = common.samples(path)
typed = str(state.get("sample", ""))
# as typed, trimmed, or in Unicode's composed form (a class folder may begin with a space)
sid = sample_id_in(typed, tab.index) or typed.strip()
if not sid:
    st.title("Sample")
    st.info("Type a sample id into **Find a sample id** in the sidebar, or open one from a cluster's table.")
    st.stop()
if not common.has_sample(path, sid):
    examples = ", ".join(safetext.code(s) for s in tab["sample_id"].astype(str).head(3))
    common.not_found(
        f"sample {safetext.code(sid)}",
        f"run {safetext.code(run)} has no sample with that id (ids look like {examples})",
    )
row = tab.loc[sid]
st.title("Sample")
st.markdown(
    f"**sample id** {safetext.code(sid)} · **label** {safetext.md(row['label_name'])} · **prediction** "
    f"{safetext.md(row['prediction_name'])} ({float(row['confidence']):.3f})"
    + (" · **misclassified**" if int(row["label"]) != int(row["prediction"]) else "")
    + (
        f" · suspicion {score_text(float(row['score']))}"
        if row["score"] == row["score"]
        else " · suspicion: none, its class was not analysed"
    )
)


def score_source(score: float, class_index: int) -> str:
    """Which finding gave the sample its suspicion: as a member, as a carrier of a flagged stamp, or (with
    ``scoring.graded_suspicion``) by its likeness to a flagged stamp ("" when it scores 0)."""
    if not score > 0:
        return ""
    found = common.class_findings(path, class_index)
    member = max(
        (f for f in found if sid in common.members(path, f.key)), key=lambda f: f.score, default=None
    )
    carrier = max((f for f in found if sid in f.carrier_ids), key=lambda f: f.score, default=None)
    best = max((f for f in (member, carrier) if f is not None), key=lambda f: f.score, default=None)
    tie = float((summary.config.get("scoring") or {}).get("suspicion_tie_break", 0.01))
    # samples.parquet keeps the score in float32: a carrier's equals its finding's only to that precision
    if best is not None and best.score - 1e-6 <= score <= best.score + tie + 1e-6:
        role = "a member of" if best is member else "a carrier of the stamp of"
        extra = score - best.score
        # the tie-break can be most of a small suspicion: a sentence naming the score alone undersold it 100×
        tail = (
            f", plus {score_text(extra)} for its own share of relevance in that finding's region (the tie-break "
            "among the finding's samples, at most scoring.suspicion_tie_break)"
            if extra > 1e-6
            else ""
        )
        return f"Its suspicion is that of {role} {safetext.code(best.key)} (score {score_text(best.score)}){tail}."
    # graded: a flagged finding's score × the sample's likeness (under 0.5) to its stamp; which one is not stored
    stamps = [f for f in found if f.suspicious and score < 0.5 * f.score + 1e-6]
    if not stamps:
        return ""
    if len(stamps) == 1:
        f = stamps[0]
        return (
            f"Its suspicion comes from its likeness to the stamp of {safetext.code(f.key)}: that finding's score "
            f"{score_text(f.score)} × {score / f.score:.2f} (a sample of the class that is no carrier scores "
            "under half; scoring.graded_suspicion)."
        )
    keys = ", ".join(safetext.code(f.key) for f in stamps)
    return (
        f"Its suspicion comes from its likeness to the stamp of one of the flagged findings {keys} (their score × "
        "under half; scoring.graded_suspicion)."
    )


# --- where it lies: its cluster at every stored k of its class -------------------------------------------
cls = int(row["label"])
if row["score"] == row["score"] and (said := score_source(float(row["score"]), cls)):
    st.caption(said)
entry = summary.class_summary(cls)
if entry is None:
    st.caption(f"Its class ({cls}) was not analysed in this run.")
else:
    data = common.class_data(path, cls)
    pos = common.class_positions(path, cls).get(sid)
    if pos is not None:
        scored = {f.key: f for f in common.class_findings(path, cls)}
        links = []
        for k in common.available_ks(data):
            if (cid := int(data.labellings[k][pos])) >= 0:  # -1: in no hot-spot group (k = 0)
                links.append((f"{cls}/k{k}/c{cid}", scored.get(f"{cls}/k{k}/c{cid}")))
        st.markdown("**Its clusters** (class " + safetext.md(entry.class_name) + ")")
        cols = st.columns(min(6, len(links)) or 1)
        for i, (key, f) in enumerate(links):
            tag = _tag(f) if f else ""
            cols[i % len(cols)].page_link(
                common.PAGES["cluster"], label=f"{key}{tag}", query_params={"run": run, "cluster": key}
            )
        # Concept-only findings are no pixel cluster: listed when this sample is one of their members.
        concept = [
            f
            for f in scored.values()
            if f.space == "concept"
            and (lab := data.labelling(f.k, "concept")) is not None
            and int(lab[pos]) == f.cluster_id
        ]
        if concept:
            st.markdown("**Its concept-space findings** (found in concept space only)")
            cols = st.columns(min(6, len(concept)))
            for i, f in enumerate(concept):
                tag = _tag(f)
                cols[i % len(cols)].page_link(
                    common.PAGES["cluster"],
                    label=f"{f.key}{tag}",
                    query_params={"run": run, "cluster": f.key},
                )

# --- the viewer ------------------------------------------------------------------------------------------
cmap = urlstate.nav_widget(
    st.selectbox, "Colour map", "cmap", default=imaging.DEFAULT_COLORMAP, valid=lambda v: v in imaging.COLORMAPS,
    options=list(imaging.COLORMAPS),
)  # fmt: skip
urlstate.push_url(run=run, sample=sid, cmap=cmap if cmap != imaging.DEFAULT_COLORMAP else None)
heat = np.asarray(common.heatmaps(path, [sid])[0], dtype=np.float32)
th = common.thumbs(path, [sid])
thumb = None if th is None else np.asarray(th[0])
original = common.original_file(sid)
full = common.full_relevance(path, [sid])
c1, c2, c3 = st.columns(3)
c1.markdown("**Input**")
if thumb is not None:
    c1.image(
        imaging.resize_nearest(imaging.to_rgb(thumb), VIEW_PX),
        caption=f"stored thumbnail {thumb.shape[1]}×{thumb.shape[0]} px",
    )
else:
    c1.info("This run stored no input thumbnail (no thumbs.npy).")
c2.markdown("**Heatmap**")
c2.image(
    imaging.resize_nearest(imaging.colorize(heat, cmap), VIEW_PX),
    caption=f"relevance grid {heat.shape[1]}×{heat.shape[0]}",
)
c3.markdown("**Overlay**")
if thumb is not None:
    c3.image(imaging.render("overlay", heat[None], thumb[None], cmap, size=VIEW_PX)[0])
else:
    c3.info("No overlay without the input thumbnail.")
samplegrid.colour_bar(cmap)
if full is not None:
    rel = np.asarray(full[0], dtype=np.float32)
    rel = rel.sum(axis=0) if rel.ndim == 3 else rel
    st.markdown("**Full-resolution relevance** (relevance_full.npy, summed over channels)")
    st.image(imaging.colorize(rel, cmap), caption=f"{rel.shape[1]}×{rel.shape[0]} px")

st.markdown("**Original file**")
if original is not None:
    st.caption(f"{safetext.code(original)}")
    try:
        # decoded as the audit decoded it: 16-bit files scaled (not clipped), a huge JPEG at reduced scale
        img = decode_original(original, summary.config)
    except (OSError, UnreadableSample) as err:
        st.warning(f"The original file cannot be shown: {safetext.md(err)}")
    else:
        # an image folder's content hash is its file's bytes' (IDX and factory samples hash the model input)
        kind = (summary.config.get("data") or {}).get("kind")
        changed = kind == "image_folder" and common.original_changed(path, sid, original)
        if changed:
            st.warning(
                "This file changed after the audit: it is not the image this run explained (its content differs "
                "from the run's record), so no relevance is drawn over it. Audit again to explain the file as "
                "it is now."
            )
        o1, o2 = st.columns(2)
        o1.image(
            img, caption=f"original, {img.shape[1]}×{img.shape[0]} px as decoded for the audit (not resized)"
        )
        if not changed:
            box = input_box(summary.config, *img.shape[:2])
            seen = "" if box == (0.0, 0.0, 1.0, 1.0) else "; dimmed: outside the centre crop the model saw"
            o2.image(imaging.overlay_box(img, heat, box, cmap), caption=f"relevance over the original{seen}")
        st.download_button(
            "Download the original", original.read_bytes(), file_name=original.name, key="dl_original"
        )
elif common.data_root() is not None:
    st.caption(f"No file {safetext.code(sid)} under the data root {safetext.code(common.data_root())}.")
elif (summary.config.get("data") or {}).get("kind") == "image_folder":
    st.caption(
        f"For image folders the sample id is the file's path relative to the dataset root ({safetext.code(sid)}). "
        "Start the dashboard with `--data-root DIR` to see and download the original file here."
    )
else:
    # IDX records and factory samples have no file per sample: without this line the heading stood alone
    source = {"idx": "IDX records", "factory": "samples of a factory dataset"}.get(
        str((summary.config.get("data") or {}).get("kind")), "samples of a source this run does not name"
    )
    st.caption(f"None: this run's {source} are not files. The input above is the image as the audit read it.")

# --- flags ----------------------------------------------------------------------------------------------
st.subheader("Flag")
status = flagform.status_of(dataset, [sid]).get(sid)
st.markdown(f"Current flag: **{safetext.md(status or 'none')}**")
if status is None:
    flagform.moved_flag_note(dataset, path, sid)
correctionnote.show(dataset, [sid], run, summary.run_id)
flagform.sample_content_warning(dataset, path, sid)
reader = flagform.reader()
hist = [] if reader is None else reader.history(dataset, sid, limit=50)
if hist:
    st.dataframe(
        pd.DataFrame([(h.created_at, h.status, h.author, h.note, h.source, h.run_id) for h in hist],
                     columns=["when", "status", "author", "note", "source", "run"]),
        hide_index=True,
    )  # fmt: skip
flagform.flag_controls(
    dataset=dataset, sample_ids=[sid], run_id=summary.run_id, cluster_key=None, source="sample page",
    key="sample",
)  # fmt: skip

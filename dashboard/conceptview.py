"""The concept side of the cluster page: what a concept finding leans on, where it sits in each member
(concept-conditional heatmaps) and what its channels detect (reference samples per channel).

Everything comes from the run through :class:`spray.runs.reader.RunReader` (``concept_maps.npz``,
``concepts.npy``); nothing here computes relevance.
"""

from __future__ import annotations

from collections.abc import Sequence

import common
import numpy as np
import safetext
import streamlit as st
import urlstate

from spray import imaging
from spray.runs.summary import FindingSummary, RunSummary

#: Heatmap sources of the member grid of a concept finding (URL ``heat``).
SOURCES = ("concept-conditional", "plain")
#: Reference samples per channel when the run's config does not say (``concepts.references``).
DEFAULT_REFERENCES = 8


def is_concept(finding: FindingSummary | None) -> bool:
    """A finding found in concept space (alone or in both spaces) with characteristic channels."""
    return finding is not None and finding.space != "pixel" and bool(finding.channels)


def describe(finding: FindingSummary) -> str:
    """One line: where the finding was found and on which channels of which layer."""
    where = "concept space only" if finding.space == "concept" else "pixel space and concept space"
    return f"Found in **{where}** · characteristic channels {', '.join(map(str, finding.channels))}"


def member_maps(
    path: str, finding: FindingSummary, ids: Sequence[str]
) -> tuple[list[str], dict[str, np.ndarray] | None]:
    """The members the grid shows and their maps: with the concept-conditional source (the default, URL
    ``heat``), the members that have a stored conditional heatmap, in the stored order; else every member
    with its plain heatmap (maps None)."""
    stored = common.conditional_maps(path, finding.key)
    if stored is None or not stored.sample_ids:
        st.caption("This run stored no concept-conditional heatmaps of this finding: plain heatmaps below.")
        return list(ids), None
    source = urlstate.nav_widget(
        st.segmented_control,
        "Heatmaps",
        "heat",
        default=SOURCES[0],
        valid=lambda v: v in SOURCES,
        options=list(SOURCES),
        required=True,
    )
    if source == "plain":
        return list(ids), None
    st.caption(
        f"Concept-conditional heatmaps: only the relevance of channels {', '.join(map(str, finding.channels))}, "
        f"propagated to the input, shows where in each member the shared detector looked. Stored for "
        f"{len(stored.sample_ids):,} of {len(ids):,} members (concepts.conditional_members), the members "
        "leaning on those channels most first."
    )
    maps = {s: np.asarray(m, dtype=np.float32) for s, m in zip(stored.sample_ids, stored.maps, strict=True)}
    return list(stored.sample_ids), maps


def references(path: str, summary: RunSummary, finding: FindingSummary, cmap: str) -> None:
    """Per characteristic channel, the samples of the run with the highest relevance of that channel."""
    n = int((summary.config.get("concepts") or {}).get("references", DEFAULT_REFERENCES))
    st.subheader("Reference samples per channel")
    st.caption(
        f"For each characteristic channel, the {n} samples of the run (any class) whose decision puts the most "
        "relevance on it, each with its whole heatmap (not the channel's own map): what those samples share is "
        "what that channel detects."
    )
    table = common.samples(path)
    for ch in finding.channels:
        ids = common.concept_references(path, int(ch), n)
        if not ids:
            st.caption("This run stored no concept relevance (concepts.npy).")
            return
        imgs = common.thumbs(path, ids)
        mode = "overlay" if imgs is not None else "heatmap"
        pics = imaging.render(mode, np.asarray(common.heatmaps(path, ids)), imgs, cmap, size=72)
        caps = [safetext.plain(f"{s} · {table.loc[s, 'label_name']}", limit=40) for s in ids]
        st.markdown(f"**Channel {int(ch)}**")
        # Data URIs: the strip comes with the page, no file request per picture.
        st.image([imaging.png_data_uri(p) for p in pics], caption=caps, width=72)

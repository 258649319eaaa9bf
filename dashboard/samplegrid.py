"""Pages of sample images (input, heatmap, overlay), their colour bar, filters and the table beside them.

Grid mode, colour map, sort order, filters and page number are view state (in the URL). A run without
thumbnails (no thumbs.npy) cannot show inputs or overlays: the grid says so and shows heatmaps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import common
import htmltable
import numpy as np
import pandas as pd
import safetext
import streamlit as st
import urlstate

from spray import imaging

PAGE_SIZE = 100
MODES = ("overlay", "heatmap", "input")
SORTS = ("row", "confidence ↑", "confidence ↓", "suspicion ↓")
FILTERS = ("misclassified", "low confidence", "flagged", "not flagged", "carriers")
# Below this confidence a sample counts as "low confidence" unless the URL says otherwise (?conf=0.7).
LOW_CONFIDENCE = 0.5


def grid_controls(key: str, *, has_thumbs: bool) -> tuple[str, str]:
    """View mode and colour-map pickers (URL ``mode`` and ``cmap``)."""
    c1, c2 = st.columns([2, 1])
    mode = urlstate.nav_widget(
        c1.segmented_control,
        "Show",
        "mode",
        default="overlay",
        valid=lambda v: v in MODES,
        options=list(MODES),
        required=True,
    )
    cmap = urlstate.nav_widget(
        c2.selectbox,
        "Colour map",
        "cmap",
        default=imaging.DEFAULT_COLORMAP,
        valid=lambda v: v in imaging.COLORMAPS,
        options=list(imaging.COLORMAPS),
    )
    mode = str(mode or "overlay")
    if mode != "heatmap" and not has_thumbs:
        st.info(
            f"This run stored no input thumbnails (no thumbs.npy), so **{mode}** cannot be shown: these are "
            "the heatmaps. Re-run the audit with thumbnails to see the inputs."
        )
        mode = "heatmap"
    return mode, str(cmap)


def colour_bar(cmap: str, *, width: int = 360) -> None:
    """The colour map as a strip, with what its ends mean."""
    cm = imaging.COLORMAPS[cmap]
    strip = np.repeat(cm.lut[None, :, :], 14, axis=0)
    st.image(imaging.png_data_uri(imaging.resize_nearest(strip, (14, width))), width=width)
    if cm.diverging:
        st.caption(
            "Relevance for the explained class (its label): **blue** = negative (speaks against it), "
            "middle = none, **red** = positive (speaks for it). Each map is scaled to its own largest "
            "|relevance|, so colours compare within a map, not between maps."
        )
    else:
        st.caption(
            "Positive relevance only (negative shown as none): dark/low = none, bright/high = the map's "
            "largest positive relevance. Each map is scaled to its own maximum."
        )


def filter_controls(key: str, *, carriers: bool) -> tuple[list[str], float]:
    """Filters of a member grid (URL ``filter``, comma-separated, and ``conf``)."""
    options = [f for f in FILTERS if carriers or f != "carriers"]
    c1, c2 = st.columns([3, 1])
    chosen = urlstate.nav_widget(
        c1.multiselect,
        "Filter",
        "filter",
        default=[],
        options=options,
        parse=lambda t: [f for f in t.split(",") if f],
        fmt=",".join,
        valid=lambda v: all(f in options for f in v),
        placeholder="all members",
        help="flagged: a flag of any status (unlearn, investigate or ok); not flagged: none",
    )
    conf = urlstate.nav_widget(
        c2.number_input,
        "Low confidence below",
        "conf",
        default=LOW_CONFIDENCE,
        parse=float,
        valid=lambda v: 0.0 <= v <= 1.0,
        min_value=0.0,
        max_value=1.0,
        step=0.05,
    )
    return list(chosen), float(conf)


def apply_filters(
    path: str,
    sample_ids: Sequence[str],
    filters: Sequence[str],
    *,
    conf: float,
    flagged: dict[str, str],
    carrier_ids: Sequence[str] = (),
) -> list[str]:
    """The samples that pass every filter (filters combine with AND), in the order given."""
    ids = [str(s) for s in sample_ids]
    if not filters or not ids:
        return ids
    tab = common.samples(path).loc[ids]
    keep = np.ones(len(ids), bool)
    if "misclassified" in filters:
        keep &= tab["label"].to_numpy() != tab["prediction"].to_numpy()
    if "low confidence" in filters:
        keep &= tab["confidence"].to_numpy() < conf
    if "flagged" in filters:
        keep &= np.isin(ids, list(flagged))
    if "not flagged" in filters:
        keep &= ~np.isin(ids, list(flagged))
    if "carriers" in filters:
        keep &= np.isin(ids, list(carrier_ids))
    return [s for s, k in zip(ids, keep, strict=True) if k]


def sort_ids(path: str, sample_ids: Sequence[str], order: str) -> list[str]:
    """The samples in the chosen order (stable; ``row`` keeps the order given)."""
    ids = [str(s) for s in sample_ids]
    if order not in ("confidence ↑", "confidence ↓", "suspicion ↓") or not ids:
        return ids
    tab = common.samples(path).loc[ids]
    if order == "suspicion ↓":
        key = -tab["score"].to_numpy()
    else:
        conf = tab["confidence"].to_numpy()
        key = conf if order == "confidence ↑" else -conf
    return [ids[i] for i in np.argsort(key, kind="stable")]


def render_grid(
    path: str,
    sample_ids: Sequence[str],
    *,
    mode: str,
    cmap: str,
    page: int,
    page_size: int = PAGE_SIZE,
    width: int = 96,
    maps_of: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Show one page of samples as one static grid (a click on a picture opens that sample); return the
    page's table.

    The pictures are PNG ``data:`` URIs in a single ``st.html`` element: no file request per picture and
    no image-list code to load. Each is rendered at the stored resolution and enlarged to ``width`` by the
    browser without smoothing, the same pixels as a nearest-neighbour resize on the server at a tenth of
    the bytes (larger ones are averaged down to ``width``). ``maps_of`` (sample id → ``(h, w)`` map)
    replaces the stored heatmaps, e.g. by a concept finding's concept-conditional heatmaps; every sample of
    the page must have one."""
    lo = (page - 1) * page_size
    page_ids = [str(s) for s in sample_ids[lo : lo + page_size]]
    if not page_ids:
        st.caption("No samples.")
        return pd.DataFrame()
    if maps_of is not None:
        heat = np.stack([np.asarray(maps_of[s]) for s in page_ids])
    else:
        heat = np.asarray(common.heatmaps(path, page_ids))
    imgs = common.thumbs(path, page_ids) if mode != "heatmap" else None
    native = int(imgs.shape[1] if imgs is not None else max(heat.shape[-2:]))
    pics = imaging.render(mode, heat, imgs, cmap, size=native)
    if native > width:
        pics = shrink(pics, width)
    table = common.samples(path).loc[page_ids]
    run = Path(path).name
    pictures = [
        htmltable.Picture(
            imaging.png_data_uri(pic),
            safetext.plain(f"{sid} · {ln}→{pn} {conf:.2f}", limit=60),
            "sample?" + urlencode({"run": run, "sample": sid}),
            sid,
        )
        for pic, sid, ln, pn, conf in zip(
            pics,
            table["sample_id"],
            table["label_name"],
            table["prediction_name"],
            table["confidence"],
            strict=True,
        )
    ]
    st.caption("Click a picture to open that sample at full size.")
    st.html(htmltable.picture_grid(pictures, "samples", width=width), unsafe_allow_javascript=True)
    return table


def shrink(pictures: np.ndarray, size: int) -> np.ndarray:
    """``(n, h, w, 3)`` uint8 pictures averaged down to ``size`` × ``size`` (larger thumbnails than a grid
    shows: a nearest-neighbour reduction would alias fine detail, and sending them whole would make the page
    a hundred times larger)."""
    from PIL import Image

    return np.stack(
        [np.asarray(Image.fromarray(p).resize((size, size), Image.Resampling.BOX)) for p in pictures]
    )


def page_picker(n_rows: int, key: str, page_size: int = PAGE_SIZE, name: str = "page") -> int:
    """Pagination over ``n_rows`` (page number mirrored in the view state ``name``)."""
    n_pages = max(1, -(-n_rows // page_size))
    state = urlstate.nav()
    asked = str(state.get(name, 1))
    try:
        cur = min(max(1, int(asked)), n_pages)
    except ValueError:
        cur = 1
    if name in urlstate.fresh() and asked != str(cur):
        # a link's page that is not there (fewer members now, or a typo) is said, as docs/dashboard.md promises
        urlstate._unusable(name, asked, str(cur))
    wkey = f"{key}_page"

    def changed() -> None:
        state[name] = str(st.session_state[wkey])

    if n_pages > 1:
        # First render: the URL's page is the default; later: the view state drives the widget.
        if wkey in st.session_state:
            # Only when the view state moved it: st.pagination always has a default, and a value written
            # through the Session State API on the same run makes Streamlit log a duplication warning.
            if st.session_state[wkey] != cur:
                st.session_state[wkey] = cur
            st.pagination(n_pages, key=wkey, on_change=changed, max_visible_pages=9)
        else:
            st.pagination(n_pages, default=cur, key=wkey, on_change=changed, max_visible_pages=9)
    state[name] = str(cur)
    return cur


def member_table(table: pd.DataFrame, flags: dict[str, str], key: str) -> Picks:
    """The page's samples as a table (click a row for its details); returns the picked samples by id."""
    if table.empty:
        st.session_state.pop(f"_ids_{key}", None)
        return Picks([], [], [])
    view = table[["sample_id", "label_name", "prediction_name", "confidence", "score"]].copy()
    view.insert(1, "flag", [flags.get(s, "") for s in view["sample_id"]])
    return picked_rows(
        key,
        view["sample_id"].astype(str).tolist(),
        lambda widget: st.dataframe(
            view,
            hide_index=True,
            on_select="rerun",
            selection_mode=["multi-row", "single-cell"],
            key=widget,
            height=260,
            column_config={
                "confidence": st.column_config.ProgressColumn("confidence", min_value=0.0, max_value=1.0)
            },
        ),
    )


@dataclass(frozen=True)
class Picks:
    """The samples picked in a table, by id.

    Attributes
    ----------
    sample_ids : list[str]
        The picked samples, all of them shown in the table.
    moved : list[str]
        Picked samples whose rows the table shows elsewhere than when they were picked (others' flags came
        in meanwhile, a re-sort): the selection was moved to follow them.
    gone : list[str]
        Picked samples the table no longer shows: they were dropped from the selection.
    """

    sample_ids: list[str]
    moved: list[str]
    gone: list[str]


def _positions(state: object) -> list[tuple[int, str | None]]:
    """``(row, column)`` of each picked row (column None) and cell of a table's selection state."""
    try:
        sel = state["selection"]  # type: ignore[index]
        picks: list[tuple[int, str | None]] = [(int(r), None) for r in sel["rows"]]
        picks += [(int(c[0]), str(c[1])) for c in sel.get("cells", [])]
        return picks
    except (KeyError, TypeError, IndexError):
        return []


def _widget(key: str) -> str:
    """The widget key of table ``key`` now: a new one after :func:`clear_picks`, so the browser's table starts
    without the ticks it kept on other rows."""
    return f"{key}-{st.session_state.get(f'_gen_{key}', 0)}"


def clear_picks(key: str) -> None:
    """Forget table ``key``'s selection, in the browser too (after a save its rows hold other samples)."""
    st.session_state.pop(_widget(key), None)
    st.session_state.pop(f"_ids_{key}", None)
    st.session_state[f"_gen_{key}"] = st.session_state.get(f"_gen_{key}", 0) + 1


def picked_rows(key: str, sample_ids: Sequence[str], draw: Callable[[str], object]) -> Picks:
    """Draw the selectable table ``key`` whose rows show ``sample_ids`` (``draw`` draws it under the widget key
    it is given and returns its event) and return the samples picked in it, by id.

    A table's selection is row positions, and they point at what the table showed when the rows were picked:
    this page's previous render. When the table changed since (another session flagged, unflagged or
    re-flagged samples; another page or order), the positions are read against that render's ids and the
    selection is moved onto the same samples here, so a decision never lands on a row that was not picked.
    """
    ids = [str(s) for s in sample_ids]
    seen = st.session_state.get(f"_ids_{key}")
    widget = _widget(key)
    picks = _positions(st.session_state.get(widget))
    moved: list[str] = []
    gone: list[str] = []
    if isinstance(seen, list) and seen != ids and picks:
        where = {s: i for i, s in enumerate(ids)}
        rows, cells = [], []
        for pos, col in picks:
            if not 0 <= pos < len(seen):
                continue
            sid = seen[pos]
            if sid not in where:
                gone.append(sid)
                continue
            if where[sid] != pos:
                moved.append(sid)
            if col is None:
                rows.append(where[sid])
            else:
                cells.append([where[sid], col])
        if moved or gone:
            st.session_state[widget] = {"selection": {"rows": rows, "columns": [], "cells": cells}}
    event = draw(widget)
    # Stored once the table is on its way to the browser: the next render reads its positions against it.
    st.session_state[f"_ids_{key}"] = ids
    chosen = [ids[pos] for pos, _ in _positions(event) if 0 <= pos < len(ids)]
    return Picks(list(dict.fromkeys(chosen)), moved, gone)


def say_picks_changed(key: str, picks: Picks) -> None:
    """Say that table ``key`` changed under its selection (nothing when it did not).

    When picked samples left the table, the page is drawn anew at once with the samples still picked: this
    render's flag form would act on fewer samples than were picked (its Apply is dropped, nothing is saved).
    """
    note_key = f"_picks_note_{key}"
    if picks.gone:
        n = len(picks.gone)
        st.session_state[note_key] = (
            f"**The table changed while rows were picked:** {n:,} picked sample{'' if n == 1 else 's'} "
            f"({safetext.md(', '.join(picks.gone[:10]))}{', …' if n > 10 else ''}) "
            f"{'is' if n == 1 else 'are'} no longer in it (flagged or unflagged elsewhere, or another page or "
            "filter) and left the selection; no decision was applied to any picked sample in the meantime. Check the "
            "rows still picked before applying."
        )
        st.rerun()
    if note := st.session_state.pop(note_key, None):
        st.warning(note)
    elif picks.moved:
        st.info(
            "The table changed while rows were picked (flags set elsewhere, or another order): the selection "
            "moved with the picked samples."
        )

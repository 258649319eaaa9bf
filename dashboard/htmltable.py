"""Static HTML (``st.html``): tables and picture grids with no lazily loaded code before a page's first paint.

``st.dataframe`` needs Streamlit's data-grid chunk (~50 lazily loaded modules) before it can draw anything,
and ``st.image`` a file request per picture; a plain HTML table, or a grid of ``data:`` pictures, needs
neither. Rows (and pictures) with a ``href`` open it in the app (one small script turns a click into
Streamlit's own in-app navigation: the session, its access and its author are kept); a modified click or a
browser without scripts follows the link. Every text is HTML-escaped here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import safetext

STYLE = """<style>
table.spray-table{border-collapse:collapse;width:100%;font-size:0.85rem}
table.spray-table th{text-align:left;font-weight:600;border-bottom:1px solid rgba(49,51,63,0.3);padding:4px 6px}
table.spray-table td{border-bottom:1px solid rgba(49,51,63,0.1);padding:4px 6px;vertical-align:top}
table.spray-table td.num{text-align:right;font-variant-numeric:tabular-nums}
table.spray-table tr[data-href]{cursor:pointer}
table.spray-table tr[data-href]:hover{background:rgba(151,166,195,0.15)}
table.spray-table img{image-rendering:pixelated;display:block}
table.spray-table .bar{background:rgba(151,166,195,0.25);width:80px;height:8px;border-radius:4px}
table.spray-table .bar>div{background:#ff4b4b;height:8px;border-radius:4px}
table.spray-table ul{margin:0;padding-left:1.1em}
div.spray-grid{display:flex;flex-wrap:wrap;gap:10px 8px}
div.spray-grid figure{margin:0;font-size:0.7rem;line-height:1.2;color:rgba(49,51,63,0.75);overflow-wrap:anywhere}
div.spray-grid figure[data-href]{cursor:pointer}
div.spray-grid img{image-rendering:pixelated;display:block}
</style>"""

# A plain left click on a row or picture: Streamlit's own navigation (it follows history changes) instead of
# a reload.
NAVIGATE = """<script>
(() => {
  const root = document.currentScript.parentElement.querySelector('table.spray-table, div.spray-grid');
  if (!root) return;
  root.addEventListener('click', (e) => {
    if (e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey || e.altKey) return;
    const link = e.target.closest('a');
    if (link && link.target === '_blank') return;
    const row = e.target.closest('[data-href]');
    if (!row || !root.contains(row)) return;
    e.preventDefault();
    window.history.pushState(null, '', new URL(row.dataset.href, window.location.href));
    window.dispatchEvent(new PopStateEvent('popstate'));
  });
})();
</script>"""


NUM = ' class="num"'


class Markup(str):
    """Finished HTML: ``st.html`` takes it as it is (through ``_repr_html_``) instead of dedenting it first,
    which took ~0.1 s for a page of 100 pictures."""

    def _repr_html_(self) -> str:
        return str(self)


@dataclass
class Cell:
    """One cell: ``html`` is already safe markup (build it with the helpers below)."""

    html: str
    numeric: bool = False


@dataclass
class Row:
    """A row; ``href`` (relative to the app, e.g. ``cluster?run=…``) makes it open that view."""

    cells: list[Cell]
    href: str | None = None
    key: str = field(default="")


def text(value: object) -> Cell:
    return Cell(safetext.html_text(value))


def number(value: float, fmt: str | Callable[[float], str] = "{:,}") -> Cell:
    """A right-aligned number, written by a format string or a function."""
    text = fmt(value) if callable(fmt) else fmt.format(value)
    return Cell(safetext.html_text(text), numeric=True)


def image(uri: str | None, size: int = 56) -> Cell:
    """A ``data:image/png`` picture (anything else is left out, never fetched)."""
    if not uri or not uri.startswith("data:image/png;base64,"):
        return Cell("")
    return Cell(f'<img src="{safetext.html_text(uri)}" width="{size}" height="{size}" alt="">')


def bar(fraction: float) -> Cell:
    """A share as a small bar and its percentage."""
    pct = max(0.0, min(1.0, float(fraction))) * 100
    return Cell(f'<div class="bar"><div style="width:{pct:.1f}%"></div></div>{pct:.1f} %')


def lines(values: list[str]) -> Cell:
    """Every line, as a list (never truncated)."""
    return Cell("<ul>" + "".join(f"<li>{safetext.html_text(v)}</li>" for v in values) + "</ul>")


def link(label: str, href: str, new_tab: bool = False) -> Cell:
    target = "_blank" if new_tab else "_self"
    return Cell(f'<a href="{safetext.html_text(href)}" target="{target}">{safetext.html_text(label)}</a>')


def figures(pairs: list[tuple[str, str]]) -> str:
    """A strip of labelled figures (what ``st.metric`` shows, without its code to fetch)."""
    cells = "".join(
        f'<div data-figure="{safetext.html_text(label)}"><div style="font-size:0.875rem">'
        f'{safetext.html_text(label)}</div><div style="font-size:2.25rem;line-height:1.2">'
        f"{safetext.html_text(value)}</div></div>"
        for label, value in pairs
    )
    return f'<div style="display:flex;gap:1rem;flex-wrap:wrap;justify-content:space-between">{cells}</div>'


def _link_attrs(href: str | None, key: str) -> str:
    """The ``data-href`` (what a click opens) and ``data-key`` attributes of a row or picture, escaped."""
    attrs = f' data-href="{safetext.html_text(href)}"' if href else ""
    return attrs + (f' data-key="{safetext.html_text(key)}"' if key else "")


def render(headers: list[str], rows: list[Row], name: str) -> Markup:
    """The table as HTML (``name`` becomes its ``data-table`` attribute, for tests and the benchmark)."""
    head = "".join(f"<th>{safetext.html_text(h)}</th>" for h in headers)
    body = []
    for r in rows:
        attrs = _link_attrs(r.href, r.key)
        cells = "".join(f"<td{NUM if c.numeric else ''}>{c.html}</td>" for c in r.cells)
        body.append(f"<tr{attrs}>{cells}</tr>")
    return Markup(
        f'{STYLE}<table class="spray-table" data-table="{safetext.html_text(name)}">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        + (NAVIGATE if any(r.href for r in rows) else "")
    )


@dataclass
class Picture:
    """One picture of a grid: a ``data:image/png`` URI, its caption, and what a click on it opens."""

    uri: str
    caption: str
    href: str | None = None
    key: str = ""


def picture_grid(pictures: list[Picture], name: str, *, width: int) -> Markup:
    """Pictures ``width`` pixels wide (small ones enlarged without smoothing), each with its caption.

    ``name`` becomes the grid's ``data-grid`` attribute (for tests and the benchmark).
    """
    figures = []
    for p in pictures:
        attrs = _link_attrs(p.href, p.key)
        figures.append(
            f'<figure{attrs} style="width:{int(width)}px">{image(p.uri, width).html}'
            f"<figcaption>{safetext.html_text(p.caption)}</figcaption></figure>"
        )
    return Markup(
        f'{STYLE}<div class="spray-grid" data-grid="{safetext.html_text(name)}">{"".join(figures)}</div>'
        + (NAVIGATE if any(p.href for p in pictures) else "")
    )

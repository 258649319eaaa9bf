"""The dashboard's static HTML tables (``dashboard/htmltable.py``) read back in AppTest, as a browser would."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any, TypeVar

P = TypeVar("P", bound=HTMLParser)


class _Table(HTMLParser):
    def __init__(self, name: str) -> None:
        super().__init__(convert_charrefs=True)
        self.name, self.inside, self.headers = name, False, []  # type: ignore[var-annotated]
        self.rows: list[dict[str, Any]] = []
        self.cell: list[str] | None = None
        self.imgs: list[str] = []
        self.row: list[str] = []
        self.meta: dict[str, Any] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self.inside = a.get("data-table") == self.name
        elif not self.inside:
            return
        elif tag == "tr":
            self.row, self.meta, self.imgs = [], {"_href": a.get("data-href"), "_key": a.get("data-key")}, []
        elif tag in ("td", "th"):
            self.cell = []
        elif tag == "img" and self.cell is not None:
            self.cell.append(a.get("src") or "")
        elif tag == "li" and self.cell is not None and self.cell:
            self.cell.append(" ▸ ")

    def handle_endtag(self, tag: str) -> None:
        if not self.inside:
            return
        if tag in ("td", "th") and self.cell is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tr":
            if not self.headers:
                self.headers = self.row
            else:
                self.rows.append({**dict(zip(self.headers, self.row, strict=True)), **self.meta})
        elif tag == "table":
            self.inside = False

    def handle_data(self, data: str) -> None:
        if self.inside and self.cell is not None:
            self.cell.append(data)


def html_tables(at: Any) -> list[str]:
    """The bodies of every ``st.html`` element of the page."""
    return [h.proto.body for h in at.get("html")]


def html_table(at: Any, name: str) -> list[dict[str, Any]]:
    """Rows of the page's table ``name`` as {header: cell text, "_href": row link, "_key": row key}.

    An image cell reads as its ``src``; list items are joined with `` ▸ ``. Raises when there is none.
    """
    return _parse(at, f'data-table="{name}"', _Table(name), f"no table {name!r} on the page").rows


def follow_row_link(at: Any, href: str) -> Any:
    """What a click on a row does in the browser: Streamlit's in-app navigation to ``href``'s page and query."""
    from urllib.parse import parse_qsl, urlsplit

    url = urlsplit(href)
    page = {"cluster": "views/cluster.py", "class": "views/class_view.py", "sample": "views/sample.py"}[
        url.path
    ]
    for k in list(at.query_params):
        del at.query_params[k]
    for k, v in parse_qsl(url.query):
        at.query_params[k] = v
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


class _Grid(HTMLParser):
    def __init__(self, name: str) -> None:
        super().__init__(convert_charrefs=True)
        self.name, self.depth = name, 0
        self.pictures: list[dict[str, Any]] = []
        self.caption: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "div" and a.get("data-grid") == self.name:
            self.depth = 1
        elif not self.depth:
            return
        elif tag == "figure":
            self.pictures.append({"href": a.get("data-href"), "sample_id": a.get("data-key"), "src": ""})
        elif tag == "img" and self.pictures:
            self.pictures[-1]["src"] = a.get("src") or ""
        elif tag == "figcaption":
            self.caption = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "figcaption" and self.caption is not None and self.pictures:
            self.pictures[-1]["caption"] = "".join(self.caption)
            self.caption = None
        elif tag == "div" and self.depth:
            self.depth = 0

    def handle_data(self, data: str) -> None:
        if self.caption is not None:
            self.caption.append(data)


def html_grid(at: Any, name: str = "samples") -> list[dict[str, Any]]:
    """The pictures of the page's picture grid ``name``: {"src", "caption", "href", "sample_id"} each, in
    order. Raises when there is none."""
    return _parse(at, f'data-grid="{name}"', _Grid(name), f"no picture grid {name!r} on the page").pictures


def _parse(at: Any, marker: str, parser: P, missing: str) -> P:
    """``parser`` fed with the first static HTML block of the page that holds ``marker``."""
    for body in html_tables(at):
        if marker in body:
            parser.feed(body)
            return parser
    raise AssertionError(missing)

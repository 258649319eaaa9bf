"""Strings that come from data (class, dataset and sample names, evidence, notes) shown as text, never as markup.

Streamlit renders labels, captions, titles and ``st.markdown`` as GitHub-flavoured Markdown: a class name
``![x](http://host/track.png)`` would make every viewer's browser fetch that URL, ``[click](javascript:…)``
would be a link, and HTML would be inserted where ``unsafe_allow_html`` or ``st.html`` is used. Every
data string goes through :func:`md` (Markdown contexts) or :func:`html_text` (HTML contexts) first; widget
options and table cells are plain text already. This module imports no streamlit so it can be tested alone.
"""

from __future__ import annotations

import html
import re
from typing import Any

# Every ASCII punctuation character can be backslash-escaped in CommonMark; escaping all of them turns any
# Markdown construct (links, images, emphasis, code, headings, tables, HTML, Streamlit's :colour[...] and
# :material/icon: directives, $math$) into literal text.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:&=\"'^%@;,/?])")
# Line breaks would start new Markdown blocks (a "# heading", a "> quote", a table row).
_BREAKS = re.compile(r"[\r\n\u2028\u2029]+")
# GitHub-flavoured autolinks ("http://…", "www.…", "a@b.c") are found in the text after escapes are
# resolved: an invisible word joiner (U+2060) after "://", "www" and before "@" keeps them plain text.
_WJ = "\u2060"
_AUTOLINK = re.compile(r"(?i)(://|\bwww(?=\.)|(?=@))")
MAX_LABEL_CHARS = 300


def md(value: Any, *, limit: int | None = None) -> str:
    """``value`` as Markdown that displays exactly its characters (one line; cut at ``limit`` with …)."""
    text = _BREAKS.sub(" ", str(value))
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    text = _AUTOLINK.sub(lambda m: m.group(1) + _WJ if m.group(1) else _WJ, text)
    return _MD_SPECIAL.sub(r"\\\1", text)


def code(value: Any, *, limit: int | None = MAX_LABEL_CHARS) -> str:
    """``value`` as a Markdown code span (shown verbatim, monospace), safe whatever backticks it holds."""
    text = _BREAKS.sub(" ", str(value))
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}"


def html_text(value: Any) -> str:
    """``value`` escaped for HTML text or a quoted attribute."""
    return html.escape(str(value), quote=True)


def plain(value: Any, *, limit: int = MAX_LABEL_CHARS) -> str:
    """``value`` for a plain-text place (widget options, table cells): one line, at most ``limit`` chars."""
    text = _BREAKS.sub(" ", str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"

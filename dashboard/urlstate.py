"""View state in the URL: every page writes what it shows into the query string, a pasted link restores it.

The canonical view state lives in session state (it survives page switches, which drop query parameters).
Each page mirrors its part into ``st.query_params`` so the URL addresses the view, and a URL value the
session has not seen yet (a pasted link, a ``page_link``'s query_params, a reload) wins over the state.

A selection travels as sample ids (:func:`encode_ids`): sorted integer ids as zlib-compressed deltas,
any other ids as zlib-compressed JSON, both base64url — 150 scattered ids take ~300 characters.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import safetext
import streamlit as st

_INT_IDS = "i"
_ANY_IDS = "s"


# ---------------------------------------------------------------------------------------------------------
# Sample ids in a URL


def encode_ids(sample_ids: Sequence[str]) -> str:
    """A compact, URL-safe form of a set of sample ids (order is not kept)."""
    ids = sorted(set(map(str, sample_ids)))
    if ids and all(s.isdecimal() and (s == "0" or not s.startswith("0")) for s in ids):
        nums = sorted(int(s) for s in ids)
        deltas = [b - a for a, b in zip([0, *nums[:-1]], nums, strict=True)]
        kind, payload = _INT_IDS, ",".join(map(str, deltas)).encode()
    else:
        kind, payload = _ANY_IDS, json.dumps(ids, separators=(",", ":")).encode()
    return kind + base64.urlsafe_b64encode(zlib.compress(payload, 9)).decode().rstrip("=")


def decode_ids(text: str) -> list[str]:
    """The sample ids of :func:`encode_ids`.

    Raises
    ------
    ValueError
        When ``text`` is not such a value (a truncated or edited link).
    """
    if not text or text[0] not in (_INT_IDS, _ANY_IDS):
        raise ValueError("not an encoded selection")
    body = text[1:] + "=" * (-len(text[1:]) % 4)
    try:
        raw = zlib.decompress(base64.urlsafe_b64decode(body.encode()), bufsize=1 << 16)
        if text[0] == _INT_IDS:
            total, out = 0, []
            for d in raw.decode().split(","):
                total += int(d)
                out.append(str(total))
            return out
        ids = json.loads(raw)
    except (binascii.Error, zlib.error, UnicodeDecodeError, ValueError):
        raise ValueError("the selection in this link is truncated or damaged and cannot be read") from None
    if not isinstance(ids, list):
        raise ValueError("the selection in the link is not a list of sample ids")
    return [str(s) for s in ids]


# ---------------------------------------------------------------------------------------------------------
# Session view state <-> URL


def nav() -> dict[str, str]:
    """The session's view state (``run``, ``cls``, ``k``, ``cluster``, ``page``, ...)."""
    state: dict[str, str] = st.session_state.setdefault("_nav", {})
    return state


def pull_url(names: Sequence[str]) -> dict[str, str]:
    """Take values from the URL that this session has not applied yet (their names: :func:`fresh`)."""
    state = nav()
    seen = st.session_state.setdefault("_nav_seen", {})
    applied = set()
    for name in names:
        v = st.query_params.get(name)
        if v is not None and seen.get(name) != v:
            state[name] = v
            seen[name] = v
            applied.add(name)
    st.session_state["_nav_fresh"] = applied
    return state


def fresh() -> set[str]:
    """The view values this script run took from a URL (a followed link), not from the session."""
    got: set[str] = st.session_state.get("_nav_fresh", set())
    return got


def push_url(**values: Any) -> None:
    """Make the URL show exactly these view values (None drops a key)."""
    state = nav()
    seen = st.session_state.setdefault("_nav_seen", {})
    want = {k: str(v) for k, v in values.items() if v is not None}
    for k in [k for k in seen if k not in want]:
        del seen[k]  # no longer in the URL: a link that brings it back is a new request
    for k, v in want.items():
        state[k] = v
        seen[k] = v
    if dict(st.query_params) != want:
        st.query_params.from_dict(want)


def nav_widget(
    factory: Callable[..., Any],
    label: str,
    name: str,
    *,
    default: Any,
    parse: Callable[[str], Any] = str,
    fmt: Callable[[Any], str] | None = None,
    valid: Callable[[Any], bool] = lambda _v: True,
    **kwargs: Any,
) -> Any:
    """Any widget whose value is the view state ``name`` (and so the URL parameter ``name``).

    ``factory`` is the Streamlit widget (``st.toggle``, ``st.segmented_control``, ``c1.selectbox``...);
    ``parse`` turns the URL's text into a value, ``valid`` rejects values the widget cannot show (the
    ``default`` is used instead); ``fmt`` writes a value back as URL text.
    """
    text = fmt or _text
    state = nav()
    try:
        cur = parse(state[name]) if name in state else default
    except (TypeError, ValueError):
        cur = default
        _unusable(name, state[name], text(default))
    if not valid(cur):
        if name in state:
            _unusable(name, state[name], text(default))
        cur = default
    state[name] = text(cur)
    wkey = f"w_{name}"
    st.session_state[wkey] = cur

    def changed() -> None:
        state[name] = text(st.session_state[wkey])

    return factory(label, key=wkey, on_change=changed, **kwargs)


def _unusable(name: str, value: str, shown: str) -> None:
    """Say that a link's view value cannot be shown, instead of dropping it without a word."""
    said = safetext.md(
        f"This link's {name}={value[:40]!r} cannot be shown here; showing {name}={shown!r} instead."
    )
    st.caption(said)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def parse_bool(text: str) -> bool:
    """URL text of a toggle: ``1`` / ``true`` / ``yes`` → True."""
    return text.lower() in ("1", "true", "yes", "on")


def nav_select(
    label: str,
    options: Sequence[Any],
    name: str,
    *,
    default: Any = None,
    format_func: Callable[[Any], str] = str,
    container: Any = None,
    then: Callable[[], None] | None = None,
    **kwargs: Any,
) -> Any:
    """A selectbox whose value is the view state ``name`` (and so the URL parameter ``name``).

    ``then`` runs after the user changed the value (e.g. to drop view state that belonged to the old one).
    """
    if not options:
        return None
    state = nav()
    as_str = [str(o) for o in options]
    cur = state.get(name)
    if cur not in as_str:
        fallback = str(default) if default is not None and str(default) in as_str else as_str[0]
        if cur is not None:
            _unusable(name, cur, fallback)
        cur = fallback
        state[name] = cur
    wkey = f"w_{name}"
    st.session_state[wkey] = options[as_str.index(cur)]

    def changed() -> None:
        state[name] = str(st.session_state[wkey])
        if then is not None:
            then()

    box = container if container is not None else st
    return box.selectbox(label, options, key=wkey, format_func=format_func, on_change=changed, **kwargs)

"""Who may use this dashboard and who is flagging: the access token, read-only mode, the author of flags.

- ``SPRAY_DASHBOARD_TOKEN`` set (``spray dashboard`` sets one whenever it binds beyond 127.0.0.1): every
  session must present it, as ``?token=...`` in the first URL or in the login box, before any page runs.
  The token is compared in constant time and dropped from the URL by the first page, so shared links
  never carry it.
- ``SPRAY_READ_ONLY=1`` (``--read-only``): no flag form anywhere; the flag database is opened read-only.
- The author recorded with a flag: the visitor's login (``st.user``, when Streamlit authentication is
  configured), else the name typed in the sidebar (kept in a ``spray_author`` cookie of this browser, so a
  reload or a new tab does not silently fall back to the server's name), else ``SPRAY_AUTHOR``
  (``--author``, default the OS user that runs the server).
"""

from __future__ import annotations

import hmac
import json
import os
from urllib.parse import unquote

import safetext
import streamlit as st

from spray.flags import default_author

TOKEN_ENV = "SPRAY_DASHBOARD_TOKEN"
READ_ONLY_ENV = "SPRAY_READ_ONLY"
_OK = "_access_ok"
_AUTHOR = "_author"
_AUTHOR_CHANGED = "_author_changed"
AUTHOR_COOKIE = "spray_author"


def read_only() -> bool:
    """Whether this dashboard only browses (``spray dashboard --read-only``)."""
    return os.environ.get(READ_ONLY_ENV, "").strip().lower() in ("1", "true", "yes")


def _matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def require_access() -> None:
    """Stop the script run with a login box unless this session has shown the access token."""
    token = os.environ.get(TOKEN_ENV, "")
    if not token or st.session_state.get(_OK):
        return
    if _matches(st.query_params.get("token"), token):
        st.session_state[_OK] = True
        return
    st.title("spray")
    st.caption("This dashboard needs the access token printed by `spray dashboard` when it started.")
    with st.form("login"):
        given = st.text_input("Access token", type="password", key="login_token")
        name = st.text_input("Your name (recorded with the flags you set)", key="login_name")
        submitted = st.form_submit_button("Open", type="primary")
    if submitted:
        if _matches(given, token):
            st.session_state[_OK] = True
            if name.strip():
                st.session_state[_AUTHOR] = name.strip()
                st.session_state[_AUTHOR_CHANGED] = True
            st.rerun()
        st.error("That is not the access token.")
    st.stop()


def _login_name() -> str | None:
    try:
        if st.user.is_logged_in:
            return str(st.user.get("email") or st.user.get("name") or "") or None
    except (AttributeError, KeyError, RuntimeError):  # authentication not configured
        return None
    return None


def author() -> str:
    """The author recorded with this session's flags (see the module docstring)."""
    login = _login_name()
    if login:
        return login
    typed = str(st.session_state.get(_AUTHOR, "")).strip()
    return typed or os.environ.get("SPRAY_AUTHOR", "").strip() or default_author()


def _cookie_author() -> str:
    try:
        raw = st.context.cookies.get(AUTHOR_COOKIE)
    except (AttributeError, KeyError, RuntimeError):  # no browser behind this session
        return ""
    return unquote(raw).strip() if isinstance(raw, str) else ""


def _remember_author() -> None:
    st.session_state[_AUTHOR_CHANGED] = True


def _write_cookie(name: str) -> None:
    """Store the author in this browser (a script element; the name is a JSON string literal, `<` escaped)."""
    literal = json.dumps(name).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    st.html(
        f"<script>document.cookie = '{AUTHOR_COOKIE}=' + encodeURIComponent({literal}) + "
        "'; path=/; max-age=31536000; SameSite=Strict';</script>",
        unsafe_allow_javascript=True,
    )


def author_box() -> None:
    """The sidebar field that sets this session's author (read-only text when logged in)."""
    login = _login_name()
    if login:
        st.caption(f"Flagging as {safetext.code(login)} (login)")
        return
    if read_only():
        st.caption("Read-only dashboard: browsing only, no flagging.")
        return
    fallback = os.environ.get("SPRAY_AUTHOR", "").strip() or default_author()
    st.session_state.setdefault(_AUTHOR, _cookie_author() or fallback)
    st.text_input(
        "Flag as",
        key=_AUTHOR,
        on_change=_remember_author,
        help="Recorded with every flag you set; kept in this browser.",
    )
    if st.session_state.pop(_AUTHOR_CHANGED, False) and str(st.session_state[_AUTHOR]).strip():
        _write_cookie(str(st.session_state[_AUTHOR]).strip())

"""Cluster keys: ``"<class>/k<k>/c<cluster>"`` (pixel space) and ``"<class>/concept/k<k>/c<cluster>"``.

``docs/run_layout.md`` ("Identities") documents them.
"""

from __future__ import annotations


def parse_cluster_key(key: str) -> tuple[int, int, int]:
    """``"6/k5/c4"`` → ``(6, 5, 4)``: class index, k, cluster id (also of a concept-space key
    ``"6/concept/k5/c4"``: :func:`key_space` tells the two apart).

    Raises
    ------
    ValueError
        ``key`` is not of that form.
    """
    try:
        parts = key.split("/")
        if len(parts) == 4 and parts[1] == "concept":
            parts = [parts[0], parts[2], parts[3]]
        c, k, cid = parts
        if not (k.startswith("k") and cid.startswith("c")):
            raise ValueError
        return int(c), int(k[1:]), int(cid[1:])
    except ValueError:
        raise ValueError(
            f"not a cluster key: {key!r} (expected '<class>/k<k>/c<cluster>' or '<class>/concept/k<k>/c<cluster>')"
        ) from None


def key_space(key: str) -> str:
    """``"concept"`` for a key of the concept labellings (``"6/concept/k5/c4"``), else ``"pixel"``."""
    return "concept" if key.count("/") == 3 and key.split("/")[1] == "concept" else "pixel"

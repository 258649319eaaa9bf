"""Cluster keys: ``"<class>/k<k>/c<cluster>"`` (pixel space) and ``"<class>/concept/k<k>/c<cluster>"``.

``docs/run_layout.md`` ("Identities") documents them.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

#: Prefix of a finding's key given as the key only, never read as a class name (``key:2/k3/c1``).
KEY_PREFIX = "key:"

#: ``k`` of the hot-spot candidates (they come from no labelling; their labelling is stored as this k, -1
#: for the samples in no group); their ``cluster_id`` is their rank.
HOTSPOT_K = 0

if TYPE_CHECKING:
    from spray.records import ClassSkipped
    from spray.runs.reader import RunReader
    from spray.runs.summary import FindingSummary

#: Below this share of common members (of the union), a key names another group in the previous run.
SAME_GROUP = 0.5


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
        out = int(c), int(k[1:]), int(cid[1:])
        if min(out) < 0:  # "-1" in a labelling is "in no hot-spot group", not a cluster
            raise ValueError
        return out
    except ValueError:
        raise ValueError(
            f"not a cluster key: {key!r} (expected '<class>/k<k>/c<cluster>' or '<class>/concept/k<k>/c<cluster>')"
        ) from None


def key_space(key: str) -> str:
    """``"concept"`` for a key of the concept labellings (``"6/concept/k5/c4"``), else ``"pixel"``."""
    return "concept" if key.count("/") == 3 and key.split("/")[1] == "concept" else "pixel"


def _names(f: FindingSummary, label: str) -> set[str]:
    """What a user may call a finding: the report's cluster column (``k6/c4+C``, ``C:k6/c2``), without the
    ``+C`` mark (the name it had before concept space was on), each alone or after the class name or
    index (``Shirt/k6/c4``, ``6/C:k6/c2``)."""
    labels = {label, label.removesuffix("+C")}
    return labels | {f"{prefix}/{name}" for prefix in (f.class_name, str(f.class_index)) for name in labels}


def sample_ids_in(texts: Sequence[str], known: Collection[str]) -> dict[str, str | None]:
    """The run's sample id each of ``texts`` names: itself; else without the spaces typed around it (a class
    folder may begin with a space); else the one id equal to it in Unicode's composed form (macOS and zips
    made there store ``é`` as ``e`` and an accent, which looks the same typed); None when none is. The
    composed forms of ``known`` are made once, and only when some text needs them."""
    out: dict[str, str | None] = {}
    composed: dict[str, list[str]] | None = None
    for text in texts:
        trimmed = text.strip()
        if text in known or trimmed in known:
            out[text] = text if text in known else trimmed
            continue
        typed = unicodedata.normalize("NFC", trimmed)
        if typed.isascii():
            out[text] = None
            continue
        if composed is None:
            composed = {}
            for k in known:
                composed.setdefault(unicodedata.normalize("NFC", k), []).append(k)
        same = composed.get(typed, [])
        out[text] = same[0] if len(same) == 1 else None
    return out


def sample_id_in(text: str, known: Collection[str]) -> str | None:
    """:func:`sample_ids_in` for one text."""
    return sample_ids_in([text], known)[text]


def named_by(
    findings: Sequence[FindingSummary], text: str, names: dict[str, set[str]] | None = None
) -> list[FindingSummary]:
    """The findings ``text`` names as the report shows them (:func:`_names`; ``names`` when already made).
    "shirt/k10/c7" names class Shirt's: a name, not a byte string (:func:`finding_key` lets the exact
    spelling win a tie between classes "Cat" and "cat")."""
    from spray.report import cluster_label

    if names is None:
        names = {f.key: _names(f, cluster_label(f)) for f in findings}
    # as typed, and trimmed (a class folder may begin or end with a space), in Unicode's composed form
    typed = {unicodedata.normalize("NFC", t).casefold() for t in (text, text.strip())}
    return [f for f in findings if typed & {unicodedata.normalize("NFC", n).casefold() for n in names[f.key]}]


def finding_key(
    findings: Sequence[FindingSummary],
    text: str,
    run: Path,
    option: str,
    skipped: Sequence[ClassSkipped] = (),
) -> str:
    """The key of the finding ``text`` names: its key (``1/k2/c0``), or the report's class and cluster
    columns (``dog/k2/c0``, ``1/k2/c0+C``; the ``+C`` mark may be left out), or the cluster column alone
    (``k2/c0``) when one class has it; ``key:1/k2/c0`` is the key and nothing else.

    Class folders named by numbers make a key and a name collide (class "2" at index 1: ``2/k2/c0`` is the
    key of class index 2's cluster and the name of class "2"'s): that is refused, naming both.

    Parameters
    ----------
    findings : sequence of FindingSummary
        The run's findings (``RunSummary.findings``).
    text : str
        What the user typed.
    run : Path
        The run folder (named in the messages).
    option : str
        The command-line option the name came from (``--finding``, ``--cluster-key``), named in the messages.
    skipped : sequence of ClassSkipped
        The run's classes that were not analysed (``RunSummary.classes_skipped``): a name of one of them is
        answered with why it has no finding.

    Raises
    ------
    ConfigError
        No finding, or several, go by that name (the message lists them with their keys).
    """
    from spray.errors import ConfigError
    from spray.report import cluster_label

    typed = text.strip()
    if typed.startswith(KEY_PREFIX):
        key = typed[len(KEY_PREFIX) :].strip()
        if any(f.key == key for f in findings):
            return key
        known = ", ".join(f.key for f in findings[:10]) or "none (the run has no finding)"
        raise ConfigError(f"No finding has the key {key!r} in {run}; the top findings' keys are {known}.")
    names = {f.key: _names(f, cluster_label(f)) for f in findings}
    found = named_by(findings, text, names)
    by_name = [f for f in found if f.key != typed]
    if any(f.key == typed for f in findings):
        if not by_name:
            return typed
        # A folder named by a number: its name reads as another class's index.
        keyed = next(f for f in findings if f.key == typed)
        named = ", ".join(f"{f.key} (class {f.class_name!r})" for f in by_name[:5])
        raise ConfigError(
            f"{text!r} names two findings of {run}: the one whose key it is ({keyed.key}, class "
            f"{keyed.class_name!r}, index {keyed.class_index}) and, by class name and cluster, {named}. "
            f"Give the key with its prefix: {option} {KEY_PREFIX}{keyed.key} for the first, "
            f"{option} {KEY_PREFIX}{by_name[0].key} for the other."
        )
    # the exact spelling wins a tie: as typed first (" cat/k2/c0" is class " cat"'s), then trimmed
    exact = [f for f in found if text in names[f.key]] or [f for f in found if typed in names[f.key]]
    if len(found) > 1 and len(exact) == 1:
        found = exact
    if len(found) == 1:
        return found[0].key
    if found:
        named = ", ".join(f"{f.key} ({f.class_name})" for f in found[:10])
        has_class = typed.count("/") >= 2  # "Cat/k2/c0", "6/C:k6/c2"; "k2/c0" names no class
        example = f"{KEY_PREFIX}{found[0].key}" if has_class else f"{found[0].class_name}/{typed}"
        raise ConfigError(
            f"Several findings of {run} go by {text!r}: {named}. Give the class too, or the key, "
            f"e.g. {option} {example}."
        )
    raise _no_finding(findings, text, run, skipped)


def _no_finding(
    findings: Sequence[FindingSummary], text: str, run: Path, skipped: Sequence[ClassSkipped]
) -> Exception:
    """The error for a name no finding goes by: its class was not analysed, the run has none, or the top ones."""
    from spray.errors import ConfigError
    from spray.records import skipped_size
    from spray.report import cluster_label

    head = text.strip().split("/", 1)[0]
    unanalysed = next((c for c in skipped if head in (c.class_name, str(c.class_index))), None)
    if unanalysed is not None:
        return ConfigError(
            f"No finding {text!r} in {run}: class {unanalysed.class_name!r} was not analysed in this run "
            f"({skipped_size(unanalysed.n, unanalysed.reason)}), so it has no finding."
        )
    if not findings:
        return ConfigError(f"No finding {text!r} in {run}: the run has no finding.")
    keys = [f"{f.key} ({f.class_name} {cluster_label(f)})" for f in findings[:10]]
    return ConfigError(
        f"No finding {text!r} in {run}; the top findings are {', '.join(keys)}. Give one of these keys, or "
        "the class and cluster columns of the report (e.g. dog/k2/c0)."
    )


def renumbered_message(reader: RunReader, run: Path, key: str) -> str:
    """When the previous run of ``run``'s audit has a finding under the same ``key`` that shares under
    :data:`SAME_GROUP` of the members (by content): keys are numbered per run, so a key copied from an older
    report names another group now. '' otherwise (also without a previous run or that key in it).

    Parameters
    ----------
    reader : RunReader
        The run the key was resolved in.
    run : Path
        Its folder.
    key : str
        The finding's key in that run.
    """
    from spray.runs.changes import MemberKeys
    from spray.runs.errors import RunReadError
    from spray.runs.publish import newest_run_where
    from spray.runs.reader import RunReader

    me, now = run.resolve(), reader.summary
    found = newest_run_where(
        me.parent, lambda x: x.name == now.name and x.dataset == now.dataset, before=me.name
    )
    if found is None:
        return ""
    try:
        before = RunReader.open(found[0])
        old = before.finding(key)
        previous = before.content_hashes() or {}
    except RunReadError:
        return ""
    finding = reader.finding(key)
    if old is None or finding is None:
        return ""
    # by content when both runs record it, else by sample id (as the nightly comparison matches clusters)
    keys = MemberKeys(reader.content_hashes() or {}, previous)
    a, b = keys.of(finding, "current"), keys.of(old, "previous")
    if len(a & b) >= SAME_GROUP * len(a | b):
        return ""
    p = found[0]
    return (
        f"finding {key} of this run ({len(a)} members) shares {len(a & b)} of them with finding {key} of the "
        f"previous run {p.name} ({len(b)} members): keys are numbered per run, so a key copied from an older "
        f"report can name another group; if you meant that one, unset these flags and flag it with --run {p}"
    )

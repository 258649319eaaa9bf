"""Copies of one image within a class: the same content (a copied file, a symlink, a repeated item) filed
more than once under one label.

The audit explains and clusters each copy as a separate image, so copies of a few images can make a cluster
of their own, and its share of the class and its tests count every copy as fresh evidence. spray says so
instead of passing such a group off as many images: in the run (``extra.copies``, worded by :func:`notes`
for the log, the report, the dashboard and the nightly status) and in the evidence of every candidate whose
members include copies of each other (:func:`members_line`). Copies under different labels are
:mod:`spray.label_conflicts`.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["Copies", "find_copies", "members_line", "notes"]

#: Groups of copies kept as examples in the record.
EXAMPLES = 5


@dataclass
class Copies:
    """Contents filed more than once under one label.

    Attributes
    ----------
    n_groups : int
        Distinct contents with two or more samples of one label.
    n_samples : int
        Samples in those groups.
    n_classes : int
        Labels holding such a group.
    examples : list[list[str]]
        The sample ids of the :data:`EXAMPLES` largest groups (ties by first sample id).
    """

    n_groups: int
    n_samples: int
    n_classes: int
    examples: list[list[str]]


def find_copies(sample_ids: Sequence[str], labels: Any, content_hashes: Sequence[str]) -> Copies | None:
    """The groups of samples of one label and one content hash (None when there is none, or the hashes are
    not one per sample); logs a warning saying how many.

    Parameters
    ----------
    sample_ids : Sequence[str]
        ``(N,)`` ids.
    labels : array-like
        ``(N,)`` labels.
    content_hashes : Sequence[str]
        ``(N,)`` content hashes (equal for equal images).
    """
    if len(content_hashes) != len(sample_ids) or not len(sample_ids):
        return None
    labels = np.asarray(labels)
    groups: dict[tuple[int, str], list[int]] = defaultdict(list)
    for i, h in enumerate(content_hashes):
        groups[(int(labels[i]), h)].append(i)
    copied = {key: rows for key, rows in groups.items() if len(rows) > 1}
    if not copied:
        return None
    ordered = sorted(copied.values(), key=lambda rows: (-len(rows), min(sample_ids[r] for r in rows)))
    found = Copies(
        n_groups=len(copied),
        n_samples=sum(len(rows) for rows in copied.values()),
        n_classes=len({label for label, _ in copied}),
        examples=[sorted(sample_ids[r] for r in rows) for rows in ordered[:EXAMPLES]],
    )
    for sentence in notes(found.__dict__):
        log.warning("%s", sentence)
    return found


def notes(rec: dict[str, Any]) -> list[str]:
    """The sentence for a recorded check (the fields of :class:`Copies`); empty when there were none."""
    n = int(rec.get("n_groups") or 0)
    if n == 0:
        return []
    first = (rec.get("examples") or [[]])[0]
    example = f" (the most copied: {len(first)} copies, e.g. {', '.join(first[:3])})" if first else ""
    return [
        f"{int(rec.get('n_samples') or 0)} images in {int(rec.get('n_classes') or 0)} class(es) are copies of "
        f"{n} image{'s' if n > 1 else ''} filed more than once under the same label{example}: each copy is analysed as a separate "
        "image, so copies can make a cluster of their own and count several times in its tests (a finding says "
        "how many distinct images its members are); remove the copies if they are not meant."
    ]


def members_line(member_ids: Sequence[str], content_of: Mapping[str, str]) -> str | None:
    """``"its 39 members are 9 distinct images: 31 are copies of each other"`` when some members share their
    content, else None (also when a member's content is unknown)."""
    contents = [content_of.get(s) for s in member_ids]
    if not contents or any(c is None for c in contents):
        return None
    counts = Counter(contents)
    distinct = len(counts)
    if distinct == len(contents):
        return None
    copied = sum(n for n in counts.values() if n > 1)
    originals = sum(1 for n in counts.values() if n > 1)
    if distinct == 1:
        return (
            f"its {len(contents)} members are copies of one image (the same file content), each counted in the "
            "share and the tests"
        )
    return (
        f"its {len(contents)} members are {distinct} distinct images: {copied} are copies of "
        f"{'one image' if originals == 1 else f'{originals} images'} (the same file content), each counted in the "
        "share and the tests"
    )

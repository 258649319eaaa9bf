"""Images that appear under more than one label: the same content (a copy, a symlink) in two classes.

The audit explains each copy under its own label and the model can be right for at most one of them; a
tool that audits a dataset says so, since a label conflict is itself a defect of the data (and two copies
of one image in different classes pull clusters apart). Recorded in ``summary.json``
(``extra.label_conflicts``) and worded by :func:`problems` for the log, the report, the dashboard and the
nightly status.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["LabelConflicts", "find_label_conflicts", "problems"]

#: Groups of conflicting copies kept as examples in the record.
EXAMPLES = 5


@dataclass
class LabelConflicts:
    """Contents found under more than one label.

    Attributes
    ----------
    n_groups : int
        Distinct contents with copies under two or more labels.
    n_samples : int
        Samples in those groups.
    examples : list[list[str]]
        The sample ids of the first :data:`EXAMPLES` groups (by first sample id).
    """

    n_groups: int
    n_samples: int
    examples: list[list[str]]


def find_label_conflicts(
    sample_ids: Sequence[str], labels: Any, content_hashes: Sequence[str]
) -> LabelConflicts | None:
    """The groups of samples with one content hash and several labels (None when there is none, or the
    hashes are not one per sample); logs a warning naming them.

    Parameters
    ----------
    sample_ids : list[str]
        ``(N,)`` ids.
    labels : array-like
        ``(N,)`` labels.
    content_hashes : list[str]
        ``(N,)`` content hashes (equal for equal images).
    """
    if len(content_hashes) != len(sample_ids) or not len(sample_ids):
        return None
    labels = np.asarray(labels)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(content_hashes):
        groups[h].append(i)
    mixed = [rows for rows in groups.values() if len(rows) > 1 and len({int(labels[r]) for r in rows}) > 1]
    if not mixed:
        return None
    mixed.sort(key=lambda rows: min(sample_ids[r] for r in rows))
    found = LabelConflicts(
        n_groups=len(mixed),
        n_samples=sum(len(rows) for rows in mixed),
        examples=[sorted(sample_ids[r] for r in rows) for rows in mixed[:EXAMPLES]],
    )
    for sentence in problems(found.__dict__):
        log.warning("%s", sentence)
    return found


def problems(rec: dict[str, Any]) -> list[str]:
    """The sentence for a recorded check (the fields of :class:`LabelConflicts`)."""
    n = int(rec.get("n_groups") or 0)
    if n == 0:
        return []
    examples = "; ".join(" = ".join(group) for group in (rec.get("examples") or [])[:3])
    return [
        f"{int(rec.get('n_samples') or 0)} images are copies of {n} contents filed under more than one label "
        f"(e.g. {examples}): each copy is explained under its own label, and the model can be right for "
        "one of them at most; remove the wrong copy or fix its label."
    ]

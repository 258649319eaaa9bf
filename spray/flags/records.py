"""What the flag store holds and returns: statuses, events, current flags, actions, conflicts.

``content_hash`` is the hash of the sample's content (its file's bytes, or for a factory dataset its model
input) in the run the flag was set on; None for flags set before spray recorded it (flag database schema 1)
or from a run without it (run layout < 5). :mod:`spray.flags.content` compares it with a later run.
``class_name`` and ``class_index`` are the sample's class in that run (None for flags set before flag database
schema 4).
"""

from __future__ import annotations

from dataclasses import dataclass

from spray.errors import SprayError

STATUSES = ("unlearn", "investigate", "ok")
UNFLAG = "unflag"


@dataclass(frozen=True)
class FlagEvent:
    """One row of the history: one sample in one flag / unflag action."""

    id: int
    action_id: str
    dataset: str
    sample_id: str
    status: str
    note: str
    run_id: str | None
    cluster_key: str | None
    source: str | None
    author: str | None
    created_at: str
    content_hash: str | None = None
    class_name: str | None = None
    class_index: int | None = None


@dataclass(frozen=True)
class Flag:
    """The current flag of one sample (its latest event, unless that was an unflag)."""

    dataset: str
    sample_id: str
    status: str
    note: str
    run_id: str | None
    cluster_key: str | None
    source: str | None
    author: str | None
    flagged_at: str
    action_id: str
    event_id: int
    content_hash: str | None = None
    class_name: str | None = None
    class_index: int | None = None


@dataclass(frozen=True)
class FlagAction:
    """One flag / unflag click: the history grouped by action."""

    action_id: str
    dataset: str
    status: str
    note: str
    run_id: str | None
    cluster_key: str | None
    source: str | None
    author: str | None
    created_at: str
    n_samples: int


class FlagConflict(SprayError):
    """Another decision on some of the samples came in after the writer's ``since`` (nothing was written).

    Attributes
    ----------
    events : list[FlagEvent]
        The newer events on those samples, newest first.
    """

    def __init__(self, events: list[FlagEvent]) -> None:
        self.events = events
        who = sorted({e.author or "unknown" for e in events})
        super().__init__(
            f"{len({e.sample_id for e in events})} of these samples got another decision meanwhile "
            f"(by {', '.join(who)}); nothing was written. Look at their history and apply again to override."
        )

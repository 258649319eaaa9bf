"""What an export of the flags leaves out: flags whose ids no longer name the images they were set on in a
run, said in warnings with the flags the export holds but cannot check or that changed class."""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path

from spray.flags.content import bind_flags, describe, relabel_message, relabelled
from spray.flags.store import FlagStore

log = logging.getLogger(__name__)


def left_out_of_export(
    db: Path,
    run: Path,
    *,
    say: bool = True,
    status: str | None = None,
    known: Collection[tuple[str, str]] = (),
    first: bool = True,
) -> set[tuple[str, str]]:
    """The ``(dataset, sample_id)`` of flags whose ids no longer name the images they were set on in the
    newest run (moved, replaced, gone), said in a warning; they are left out of the export.

    Parameters
    ----------
    db : Path
        The flag database.
    run : Path
        The newest run of the dataset, to check the flags against.
    say : bool
        Whether to log the warning.
    status : str, optional
        The status the export holds (None: every status): the warning counts and describes the left-out
        flags of that status, and only counts those of other statuses, which the export never held.
    known : collection of (str, str)
        Flags already left out (against another run): not said again.
    first : bool
        The first run the export checks against: the flags that cannot be checked are said here only.
    """
    from spray.runs.errors import RunReadError
    from spray.runs.reader import RunReader

    try:
        reader = RunReader.open(run)
        hashes = reader.content_hashes()
    except (RunReadError, OSError):  # no run yet, or an unreadable one: nothing to check against
        log.warning("no readable run at %s: the flags are exported without checking their content", run)
        return set()
    if hashes is None or not db.is_file():
        return set()
    dataset = reader.summary.dataset
    binding = bind_flags(FlagStore(db, read_only=True).current(dataset), hashes, run=run)
    binding = replace(
        binding, changed=[c for c in binding.changed if (dataset, c.flag.sample_id) not in known]
    )
    if binding.changed and say:
        exported = [c for c in binding.changed if status is None or c.flag.status == status]
        others = len(binding.changed) - len(exported)
        besides = (
            f"{others} flags of other statuses (not in this export) no longer name the images they were set on "
            "either: `spray flags check` names them."
        )
        if exported:
            log.warning(
                "left out of the export: %d flags that no longer name the images they were set on. %s%s",
                len(exported),
                describe(replace(binding, changed=exported), str(run)),
                " " + besides if others else "",
            )
        else:
            log.warning("%s", besides)
    relabel = (
        relabel_message(relabelled(binding.bound, run, binding.of_kind("moved"))) if say and first else ""
    )
    if relabel:  # the export's class columns are the class each was flagged in: said, as flags check says it
        log.warning("%s The export's class_name and class_index are the class each was flagged in.", relabel)
    if binding.unchecked and say and first:
        log.warning(
            "%d flags of %s were set before flags recorded the content of their images, on runs no longer in %s "
            "or that kept none: they are not checked, and where ids are positions (IDX records, a factory's "
            "items) a record removed or reordered since makes them name other images. Look at their images "
            "(spray flags check, the dashboard) and set them again from a current run to record their content.",
            binding.unchecked, dataset, run.parent,
        )  # fmt: skip
    return {(dataset, c.flag.sample_id) for c in binding.changed}

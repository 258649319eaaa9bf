"""Errors of the runs folder: a run that cannot be read, a place that cannot be written."""

from __future__ import annotations

from pathlib import Path

from spray.errors import SprayError

#: The fix of a published run whose file is damaged: published runs are never repaired in place, and a plain
#: audit refuses to reuse one whose files cannot be read.
REWRITE_RUN = "audit again with --force (spray audit --force) to write a new run, or delete that run's folder"


class RunReadError(SprayError):
    """A published run (or one of its files) cannot be read: missing, truncated, damaged or too new.

    Attributes
    ----------
    path : Path
        The file (or run folder) at fault; the message names it too.
    """

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class RunWriteError(SprayError):
    """A file of the runs folder cannot be written (no space left, read-only, no permission).

    Attributes
    ----------
    path : Path
        What could not be written.
    """

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        super().__init__(problem)

"""The run an export reads (through spray's run reader) and the folder it writes (staged, renamed at the end)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spray.errors import ConfigError, DataError
from spray.runs.atomic import translate_write_errors
from spray.runs.errors import RunReadError, RunWriteError
from spray.runs.layout import CORRECTIONS_DIR, REAUDIT_DIR, RunFiles
from spray.runs.publish import list_runs
from spray.runs.reader import ClassData, RunReader
from spray.runs.summary import ClassSummary, FindingSummary, RunSummary

log = logging.getLogger(__name__)


@dataclass
class ExportSource:
    """A published run, opened read-only for an export.

    The export's own sample order is the run's storage order (:attr:`sample_ids`); the files an export
    writes index samples by their position in it.

    Attributes
    ----------
    reader : RunReader
        The run.
    sample_ids : list[str]
        Every sample, in storage order.
    samples : pandas.DataFrame
        The per-sample table, indexed by ``sample_id``.
    heatmaps : np.ndarray
        ``(N, h, w)`` float16 in storage order, memory-mapped.
    thumbs : np.ndarray or None
        ``(N, t, t, 3)`` uint8 in storage order, memory-mapped, when the run stored thumbnails.
    """

    reader: RunReader
    sample_ids: list[str]
    samples: Any
    heatmaps: np.ndarray
    thumbs: np.ndarray | None

    @property
    def path(self) -> Path:
        """The run folder."""
        return self.reader.path

    @property
    def runs_dir(self) -> Path:
        """The project's runs folder, whose ``flags.sqlite`` holds this run's flags: the run's parent, or for
        a correction's re-audit the runs folder the correction belongs to."""
        return project_runs_dir(self.path)

    @property
    def summary(self) -> RunSummary:
        """The typed summary.json."""
        return self.reader.summary

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.summary.run_id

    @property
    def dataset(self) -> str:
        """The dataset key flags are stored under."""
        return self.summary.dataset or self.summary.name or "unknown"

    @property
    def class_names(self) -> list[str]:
        """Class names by index."""
        return list(self.summary.class_names)

    def classes(self) -> list[ClassSummary]:
        """The analysed classes."""
        return list(self.summary.classes)

    def findings(self) -> list[FindingSummary]:
        """Every scored cluster, most suspicious first."""
        return list(self.summary.findings)

    def class_data(self, class_index: int) -> ClassData:
        """The arrays of an analysed class (by sample id)."""
        try:
            return self.reader.class_data(class_index)
        except RunReadError as err:
            raise DataError(f"{err}; re-run the audit to rewrite the run.") from None

    def positions(self, sample_ids: list[str]) -> np.ndarray:
        """Positions of these samples in the export's order (:attr:`sample_ids`)."""
        row_of = {s: i for i, s in enumerate(self.sample_ids)}
        return np.fromiter((row_of[s] for s in sample_ids), dtype=np.int64, count=len(sample_ids))


def project_runs_dir(run: Path) -> Path:
    """The runs folder a run belongs to: ``run``'s parent, or ``<runs>`` for a correction's re-audit
    ``<runs>/corrections/<correction>/reaudit/<run>`` (its own runs folder holds no flags)."""
    parent = Path(run).parent
    if parent.name == REAUDIT_DIR and parent.parent.parent.name == CORRECTIONS_DIR:
        return parent.parent.parent.parent
    return parent


def _not_a_run(run: Path) -> ConfigError:
    """What to say about a folder that holds no run: a correction's folder points at its re-audit."""
    if (run / REAUDIT_DIR).is_dir() and run.parent.name == CORRECTIONS_DIR:
        return ConfigError(
            f"{run} is a correction's folder, not a run: its re-audit is the run to export, give "
            f"{run / REAUDIT_DIR} (its newest run)."
        )
    if run.parent.name == CORRECTIONS_DIR:
        return ConfigError(
            f"{run} is a correction's folder without a re-audit (correction.reaudit was off): export the run "
            "it corrected, or re-run spray correct with the re-audit on."
        )
    return ConfigError(f"{run} is neither a published run (no summary.json) nor a runs folder with one.")


def _resolve(run: Path) -> Path:
    run = Path(run).expanduser()
    if not run.exists():
        raise ConfigError(
            f"{run} does not exist: give a run folder (runs/<run>) or a runs folder (its newest run)."
        )
    if RunFiles(run).summary.exists():
        return run
    found = list_runs(run)
    if not found:
        raise _not_a_run(run)
    log.info("exporting the newest run of %s: %s", run, found[0].name)
    return found[0]


def open_source(run: str | Path) -> ExportSource:
    """Open a run folder, or the newest run of a runs folder, for export.

    Raises
    ------
    ConfigError
        ``run`` is not a run nor a runs folder.
    DataError
        A file of the run cannot be read (named).
    """
    path = _resolve(Path(run))
    try:
        reader = RunReader.open(path)
        ids = reader.sample_ids()
        return ExportSource(reader, ids, reader.samples(), reader.heatmaps(), reader.thumbs())
    except RunReadError as err:
        raise DataError(f"{err}; re-run the audit to rewrite the run.") from None


def _size(n: int) -> str:
    """Bytes for people, in MB."""
    return f"{n / 1e6:.1f} MB"


def require_space(out: str | Path, need: int, what: str) -> None:
    """Refuse to start an export of up to ``need`` bytes where the folder of ``out`` has less free space.

    Raises
    ------
    RunWriteError
        Less than ``need`` bytes are free there (named, with the fix).
    """
    folder = Path(out).expanduser().parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:  # cannot tell (the write itself will say what is wrong)
        return
    if free < need:
        raise RunWriteError(
            folder,
            f"no space for {what} on {folder}: it needs up to {_size(need)} and {_size(free)} are free. Free some "
            "space there or point -o at a larger disk.",
        )


@contextmanager
def staged_output(out: str | Path) -> Iterator[Path]:
    """A private folder beside ``out``; renamed to ``out`` when the block finishes without error.

    Raises
    ------
    ConfigError
        ``out`` exists already, or its parent folder does not.
    RunWriteError
        The folder of ``out`` is read-only, not ours, or full (named, with the fix).
    """
    out = Path(out).expanduser()
    if out.exists():
        raise ConfigError(f"-o {out} exists already: choose a new folder (an export never overwrites one).")
    if not out.parent.is_dir():
        raise ConfigError(f"The folder of -o {out} does not exist ({out.parent}): create it first.")
    with translate_write_errors(out, "-o"):
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            yield tmp
            os.chmod(tmp, 0o755)
            os.rename(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

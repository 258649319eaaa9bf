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
from spray.runs.errors import REWRITE_RUN, RunReadError, RunWriteError
from spray.runs.layout import CORRECTION_RECORD, CORRECTIONS_DIR, REAUDIT_DIR, RunFiles, project_root
from spray.runs.publish import list_runs, newest_runs
from spray.runs.reader import ClassData, RunReader, read_json
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
            raise DataError(f"{err}; {REWRITE_RUN}.") from None

    def positions(self, sample_ids: list[str]) -> np.ndarray:
        """Positions of these samples in the export's order (:attr:`sample_ids`)."""
        row_of = {s: i for i, s in enumerate(self.sample_ids)}
        return np.fromiter((row_of[s] for s in sample_ids), dtype=np.int64, count=len(sample_ids))


#: The factory a corrected model's config names (:data:`spray.correct.checkpoint.FACTORY`, spelled here for the
#: same reason): a run that records it audited a corrected model.
CORRECTED_FACTORY = "spray.correct.checkpoint:corrected_model"
#: The correction methods (``correction.method``), as a corrected model's config name ends in one.
_METHODS = ("pclarc", "rrclarc", "retrain")


def project_runs_dir(run: Path) -> Path:
    """The runs folder a run belongs to: ``run``'s parent, or ``<runs>`` for a correction's re-audit
    ``<runs>/corrections/<correction>/reaudit/<run>`` (:func:`project_root`)."""
    return project_root(Path(run).parent)


@dataclass(frozen=True)
class CorrectedFrom:
    """The correction whose corrected model a run audited (its re-audit).

    Attributes
    ----------
    correction_id : str
        The correction's id (its first 8 characters only when its record was not found; empty when not known).
    method : str or None
        ``pclarc``, ``rrclarc`` or ``retrain``, when known.
    source_run_id : str or None
        The run the correction was made from, when its record was found.
    folder : Path or None
        The correction folder, when its record was found.
    """

    correction_id: str
    method: str | None = None
    source_run_id: str | None = None
    folder: Path | None = None

    def sentence(self) -> str:
        """``the re-audit of correction 4248c89aa700 (pclarc, from run 9436e75897b7)``."""
        if not self.correction_id:
            return "an audit of a model corrected by spray correct"
        said = [s for s in (self.method, self.source_run_id and f"from run {self.source_run_id[:12]}") if s]
        return f"the re-audit of correction {self.correction_id[:12]}" + (
            f" ({', '.join(said)})" if said else ""
        )


def _record_folder(run: Path, model: dict[str, Any]) -> Path | None:
    """The correction folder next to the run's ``reaudit/`` folder, else the one holding the corrected model's
    checkpoint (a re-audit run copied elsewhere); None when neither holds ``correction.json``."""
    ckpt = model.get("checkpoint") if model.get("factory") == CORRECTED_FACTORY else None
    for folder in (
        run.parent.parent if run.parent.name == REAUDIT_DIR else None,
        Path(ckpt).parent if ckpt else None,
    ):
        if folder is not None and (folder / CORRECTION_RECORD).is_file():
            return folder
    return None


def corrected_from(run: str | Path, config: dict[str, Any]) -> CorrectedFrom | None:
    """Which correction's model the run audited, or None for a run of any other model.

    A run is a correction's re-audit when its recorded config names the corrected model's factory
    (:data:`CORRECTED_FACTORY`: any audit of a correction's ``config.yaml``) or it sits in a correction's
    ``reaudit/`` folder next to ``correction.json``. The correction's id, method and source run come from that
    record; without it (the re-audit's own report.html, written before the record) from the config's name,
    which the correction sets to ``<name>-<method>-<id8>``.

    Parameters
    ----------
    run : str or Path
        The run folder.
    config : dict
        The run's recorded config (``summary.config``).
    """
    run = Path(run)
    model = config.get("model")
    model = model if isinstance(model, dict) else {}
    folder = _record_folder(run, model)
    if folder is None and model.get("factory") != CORRECTED_FACTORY:
        return None
    if folder is not None:
        try:
            rec = read_json(folder / CORRECTION_RECORD)
            return CorrectedFrom(
                str(rec["correction_id"]), str(rec["method"]), str(rec["source_run_id"]), folder
            )
        except (RunReadError, KeyError, TypeError) as err:  # a damaged record: what the config says
            log.warning("%s cannot be read (%s): the re-audit is named from its config", folder, err)
    parts = str(config.get("name") or "").rsplit("-", 2)
    if len(parts) == 3 and parts[1] in _METHODS:
        return CorrectedFrom(parts[2], parts[1])
    return CorrectedFrom(folder.name.rsplit("-", 1)[-1] if folder else "")


def correction_folder_note(folder: Path, option: str = "") -> str | None:
    """What to say when a command is given a correction's folder or its emptied ``reaudit/`` folder instead of
    a run or a runs folder (``spray export``; ``spray dashboard``, whose ``option`` ``--runs-dir`` is then
    named in the advice); None for any other folder."""
    folder, give = Path(folder), f"give {option} " if option else "give "
    if folder.name == REAUDIT_DIR and folder.parent.parent.name == CORRECTIONS_DIR:
        return (
            f"{folder} is a correction's re-audit folder and holds no published run (its run was removed): "
            f"re-run spray correct with --force to audit the corrected model again, or {give}"
            f"{project_root(folder)}, the project's runs folder."
        )
    if folder.parent.name != CORRECTIONS_DIR:
        return None
    if (folder / REAUDIT_DIR).is_dir():
        return (
            f"{folder} is a correction's folder, not a run: its re-audit is the run to open, {give}"
            f"{folder / REAUDIT_DIR} (its runs folder)."
        )
    return (
        f"{folder} is a correction's folder without a re-audit (correction.reaudit was off): open the run it "
        "corrected, or re-run spray correct with the re-audit on."
    )


def _not_a_run(run: Path) -> ConfigError:
    """What to say about a folder that holds no run: a correction's folder points at its re-audit."""
    note = correction_folder_note(run)
    if note is not None:
        return ConfigError(note)
    return ConfigError(f"{run} is neither a published run (no summary.json) nor a runs folder with one.")


def _resolve(run: Path) -> Path:
    run = Path(run).expanduser()
    if not run.exists():
        raise ConfigError(
            f"{run} does not exist: give a run folder (runs/<run>) or a runs folder (its newest run)."
        )
    if RunFiles(run).summary.exists():
        return run
    if not list_runs(run):
        raise _not_a_run(run)
    # as the flag commands choose: a dataset's newest full run (a data.limit trial lacks most samples)
    newest = newest_runs(run, full_first=True)
    if len(newest) != 1:
        raise ConfigError(
            f"{run} holds runs of {len(newest)} datasets ({', '.join(sorted(newest))}): give the run folder "
            f"to export (e.g. {run}/<run>)."
            if newest
            else f"{run} holds no readable run: give a run folder, or audit first."
        )
    chosen = next(iter(newest.values()))
    log.info("exporting the newest run of %s: %s", run, chosen.name)
    return chosen


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
        raise DataError(f"{err}; {REWRITE_RUN}.") from None


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

"""The run an export reads (read-only) and the folder it writes (staged, renamed into place at the end)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spray.errors import ConfigError, DataError
from spray.runs.storage import SUMMARY, RunData, list_runs

log = logging.getLogger(__name__)

_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


@dataclass
class ExportSource:
    """A published run, opened read-only for an export.

    Attributes
    ----------
    path : Path
        Run folder.
    summary : dict
        summary.json.
    samples : pandas.DataFrame
        samples.parquet (row order = heatmaps.npy order).
    heatmaps : np.ndarray
        ``(N, h, w)`` float16, memory-mapped.
    thumbs : np.ndarray or None
        ``(N, t, t, 3)`` uint8, memory-mapped, when the run stored thumbnails.
    """

    path: Path
    summary: dict[str, Any]
    samples: Any
    heatmaps: np.ndarray
    thumbs: np.ndarray | None
    _data: RunData = field(repr=False)

    @property
    def run_id(self) -> str:
        """The run's id."""
        return str(self.summary.get("run_id", ""))

    @property
    def dataset(self) -> str:
        """The dataset key flags are stored under."""
        return str(self.summary.get("dataset") or self.summary.get("name") or "unknown")

    @property
    def class_names(self) -> list[str]:
        """Class names by index (from the summary, else from samples.parquet)."""
        names = self.summary.get("class_names")
        if names:
            return [str(n) for n in names]
        t = self.samples
        n = int(max(t["label"].max(), t["prediction"].max())) + 1 if len(t) else 0
        by_index = dict(zip(t["label"], t["label_name"], strict=True))
        return [str(by_index.get(i, i)) for i in range(n)]

    def classes(self) -> list[dict[str, Any]]:
        """The analysed classes' summary entries."""
        return list(self.summary.get("classes", []))

    def class_arrays(self, class_index: int) -> dict[str, np.ndarray]:
        """classes/<c>.npz (rows, eigenvalues, eigenvectors, embedding, labels_k<k>)."""
        try:
            return self._data.class_arrays(class_index)
        except _READ_ERRORS as err:
            raise DataError(
                f"{self.path / 'classes' / f'{class_index}.npz'} cannot be read ({err})."
            ) from None


def _resolve(run: Path) -> Path:
    run = Path(run).expanduser()
    if not run.exists():
        raise ConfigError(
            f"{run} does not exist: give a run folder (runs/<run>) or a runs folder (its newest run)."
        )
    if (run / SUMMARY).is_file():
        return run
    found = list_runs(run)
    if not found:
        raise ConfigError(f"{run} is neither a published run (no {SUMMARY}) nor a runs folder with one.")
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
    current = SUMMARY
    try:
        data = RunData.open(path)
        if not isinstance(data.summary, dict):
            raise ValueError("not a spray summary")
        current = "samples.parquet"
        samples = data.samples()
        current = "heatmaps.npy"
        heat = data.heatmaps()
        if heat.ndim != 3 or len(heat) != len(samples):
            raise ValueError(f"shape {heat.shape} does not match the {len(samples)} samples")
        current = "thumbs.npy"
        thumbs = data.thumbs()
    except _READ_ERRORS as err:
        raise DataError(
            f"{path / current} cannot be read ({err}); re-run the audit to rewrite the run."
        ) from None
    return ExportSource(path, data.summary, samples, heat, thumbs, data)


@contextmanager
def staged_output(out: str | Path) -> Iterator[Path]:
    """A private folder beside ``out``; renamed to ``out`` when the block finishes without error.

    Raises
    ------
    ConfigError
        ``out`` exists already, or its parent folder does not.
    """
    out = Path(out).expanduser()
    if out.exists():
        raise ConfigError(f"-o {out} exists already: choose a new folder (an export never overwrites one).")
    if not out.parent.is_dir():
        raise ConfigError(f"The folder of -o {out} does not exist ({out.parent}): create it first.")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

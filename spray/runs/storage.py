"""The dashboard's view of a run in the shape of layout 1 (a transition module; remove with its last user).

The dashboard (``dashboard/common.py``) still reads runs through :class:`RunData`, whose ``summary`` is
the layout-1 dictionary (each cluster also under ``classes[].clusters``, ``findings[].member_ids``) and
whose ``class_arrays`` and ``samples`` speak row positions. It is built here from
:class:`spray.runs.reader.RunReader`, so the dashboard reads layout-2 runs unchanged until it moves to
the reader; nothing else in spray uses this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spray.runs.publish import list_runs
from spray.runs.reader import RunReader
from spray.runs.writer import finding_entry

__all__ = ["RunData", "list_runs"]


@dataclass
class RunData:
    """A published run in the layout-1 shape the dashboard reads (see the module docstring).

    Attributes
    ----------
    path : Path
        Run directory.
    summary : dict
        summary.json with ``findings[].member_ids`` and ``classes[].clusters`` / ``eigenvalues`` filled in.
    """

    path: Path
    summary: dict[str, Any]
    reader: RunReader

    @classmethod
    def open(cls, path: str | Path) -> RunData:
        """Open a published run (raises :class:`~spray.runs.errors.RunReadError` when it cannot be read)."""
        reader = RunReader.open(path)
        s = reader.summary
        summary = dict(reader._raw)
        entries = {}
        for f in s.findings:
            e = finding_entry(reader._full(f), f.rank)
            e["member_ids"] = reader.members(f.key) or []
            entries[f.key] = e
        summary["findings"] = [entries[f.key] for f in s.findings]
        classes = []
        for c in summary.get("classes", []):
            c = dict(c)
            c["clusters"] = [entries[k] for k in c.get("cluster_keys", [])]
            c["eigenvalues"] = reader.class_data(c["class_index"]).eigenvalues.tolist()
            classes.append(c)
        summary["classes"] = classes
        return cls(Path(path), summary, reader)

    def samples(self) -> Any:
        """The per-sample table with a ``row`` column (row order = heatmaps.npy order)."""
        table = self.reader.samples().reset_index(drop=True)
        table.insert(1, "row", np.arange(len(table)))
        return table

    def heatmaps(self) -> np.ndarray:
        """``(N, h, w)`` float16, memory-mapped."""
        return self.reader.heatmaps()

    def thumbs(self) -> np.ndarray | None:
        """``(N, t, t, 3)`` uint8, memory-mapped, or None when the run stored none."""
        return self.reader.thumbs()

    def class_arrays(self, class_index: int) -> dict[str, np.ndarray]:
        """Arrays of one class: rows, eigenvalues, eigenvectors, embedding, labels_k<k>, cluster_keys,
        mean_heatmaps."""
        return dict(self.reader._class_file(class_index))

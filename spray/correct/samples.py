"""The samples a correction works on: the audited data (and an optional held-out set) as model inputs.

Every access to :class:`spray.data.AuditDataset` of the correction package goes through here, so that a
change of the dataset's item format touches one module.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from spray.config import DataConfig
from spray.data import AuditDataset, build_dataset
from spray.data.dataset import in_section
from spray.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass
class RowLookup:
    """Rows of some sample ids.

    Attributes
    ----------
    rows : np.ndarray
        ``(n,)`` int64 rows of the ids found, in the order given.
    missing : list[str]
        Ids that are not in the dataset.
    """

    rows: np.ndarray
    missing: list[str]


@dataclass
class SampleSet:
    """A dataset seen as model inputs, addressed by row (position in the dataset).

    Attributes
    ----------
    dataset : AuditDataset
        The source.
    sample_ids : list[str]
        Ids, row order, length ``N``.
    labels : np.ndarray
        ``(N,)`` int64 true labels.
    """

    dataset: AuditDataset
    sample_ids: list[str]
    labels: np.ndarray

    @classmethod
    def build(cls, cfg: DataConfig, section: str = "data") -> SampleSet:
        """Build the dataset of ``cfg`` (a :class:`~spray.errors.DataError` names what is wrong), whose settings
        are the config's ``section`` (messages name it)."""
        try:
            ds = build_dataset(cfg, thumbnail_size=8)
        except (ConfigError, DataError) as err:
            if section == "data":
                raise
            # the dataset's messages name the audit's own keys (data.class_names): name this section's instead
            raise type(err)(in_section(str(err), section)) from None
        ds.section = section
        return cls(ds, list(ds.sample_ids), np.asarray(ds.labels, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.sample_ids)

    @property
    def class_names(self) -> list[str]:
        """Names in label order."""
        return list(self.dataset.class_names)

    def match_model(self, model: torch.nn.Module) -> None:
        """Bring the inputs to the model's channels as the audit does (grey images for an RGB model)."""
        self.dataset.match_model(model)

    def input_bounds(self) -> tuple[float, float]:
        """Lowest and highest value a model input can take (for LRP's box rule)."""
        return self.dataset.transform.input_bounds()

    def rows_of(self, sample_ids: Sequence[str]) -> RowLookup:
        """Rows of the given ids, and the ids that are not in this dataset."""
        row = {s: i for i, s in enumerate(self.sample_ids)}
        found = [row[s] for s in sample_ids if s in row]
        missing = [s for s in sample_ids if s not in row]
        return RowLookup(np.asarray(found, dtype=np.int64), missing)

    def content_hashes(self, rows: Sequence[int] | np.ndarray) -> list[str]:
        """The content hash of each of ``rows`` as the audit's batch stage computes it: of the file's (or
        IDX record's) bytes, else of the model input (factory datasets; call :meth:`match_model` first)."""
        return [self.dataset.content_hash_of(int(r)) for r in rows]

    def inputs(self, rows: Sequence[int] | np.ndarray) -> torch.Tensor:
        """``(n, C, H, W)`` model inputs of ``rows``.

        Raises
        ------
        DataError
            A sample cannot be read (the message names it).
        """
        xs = [self.dataset.load_input(int(r)) for r in rows]
        if not xs:
            raise DataError("no samples to load")
        shapes = {tuple(x.shape) for x in xs}
        if len(shapes) > 1:
            raise DataError(
                f"samples have different shapes {sorted(shapes)}; set data.transform.resize and center_crop"
            )
        return torch.stack(xs)

    def batches(self, rows: Sequence[int] | np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
        """Model inputs of ``rows`` in batches of ``batch_size`` (row order kept)."""
        rows = np.asarray(rows, dtype=np.int64)
        for s in range(0, len(rows), batch_size):
            yield self.inputs(rows[s : s + batch_size])


def seeded_subset(rows: np.ndarray, n: int, seed: int, salt: str) -> np.ndarray:
    """At most ``n`` of ``rows``, drawn without replacement with a seed (sorted)."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) <= n:
        return np.sort(rows)
    rng = np.random.default_rng([seed, *salt.encode()])
    return np.sort(rng.choice(rows, size=n, replace=False))

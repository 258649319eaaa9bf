"""The dataset item record, the batch of them a data loader yields, and content hashes.

Every item of an :class:`~spray.data.dataset.AuditDataset` is either a :class:`Sample` (readable) or a
:class:`~spray.records.SkippedSample` (unreadable, with the reason), so that one bad file never stops a
run: :func:`collate_samples` stacks the readable ones and lists the others.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from spray.errors import DataError
from spray.records import SkippedSample


class UnreadableSample(Exception):
    """Raised while loading one sample that must be skipped; ``reason`` says why (and is recorded)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def spread_positions(n: int, k: int) -> list[int]:
    """Up to ``k`` distinct positions of ``range(n)`` spread evenly from the first to the last, in order:
    the items a spot check reads (``[]`` when ``n`` is 0)."""
    if n <= 0 or k <= 0:
        return []
    return [int(i) for i in np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(int))]


def content_hash(data: bytes) -> str:
    """Short content hash of a sample's bytes (128-bit BLAKE2b, hex)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


# Pillow names in-memory files by their repr ("<_io.BytesIO object at 0x7f...>"): meaningless to a user.
OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def clean_reason(text: str, sample_id: str) -> str:
    """``text`` with every ``<... object at 0x...>`` repr replaced by the sample's id."""
    return OBJECT_REPR.sub(repr(sample_id), text)


@dataclass
class Sample:
    """One readable sample of a dataset.

    Attributes
    ----------
    sample_id : str
        Stable id (path relative to the root, IDX index, or the factory's id).
    index : int
        Position in the dataset.
    label : int
        True label.
    content_hash : str
        Hash of the raw bytes (or of the decoded tensor when the source has no bytes).
    x : torch.Tensor or None
        ``(C, H, W)`` float32 model input; None when the content hash is already known to the cache
        (the sample was not decoded).
    thumbnail : np.ndarray or None
        ``(t, t, c)`` uint8 thumbnail, ``c`` 1 (grey) or 3 (RGB); None when not decoded or not asked for.
    encoded : torch.Tensor or None
        ``(nbytes,)`` uint8: a JPEG file left for the device to decode (``data.transform.decode_device:
        cuda``; see :mod:`spray.data.jpeg`). ``x`` is then None until
        :meth:`~spray.data.dataset.AuditDataset.finish_batch`.
    """

    sample_id: str
    index: int
    label: int
    content_hash: str
    x: torch.Tensor | None = None
    thumbnail: np.ndarray | None = None
    encoded: torch.Tensor | None = None


@dataclass
class SampleBatch:
    """The readable samples of one loader batch, stacked, and the skipped ones.

    Attributes
    ----------
    sample_ids, content_hashes, indices : list
        One entry per readable sample (length ``n``).
    labels : torch.Tensor
        ``(n,)`` int64.
    x : torch.Tensor or None
        ``(d, C, H, W)`` inputs of the ``d`` decoded samples (None when none was decoded).
    decoded : list[int]
        Positions (into ``sample_ids``) of the decoded samples, length ``d``.
    thumbnails : np.ndarray or None
        ``(d, t, t, c)`` uint8 thumbnails of the decoded samples.
    skipped : list[SkippedSample]
        Unreadable samples of the batch, with reasons.
    pending : list[int]
        Positions (into ``sample_ids``) of JPEG files the device decodes
        (:meth:`~spray.data.dataset.AuditDataset.finish_batch` decodes them and empties this list).
    encoded : list[torch.Tensor]
        Their bytes, one ``(nbytes,)`` uint8 tensor per entry of ``pending``.
    """

    sample_ids: list[str]
    content_hashes: list[str]
    indices: list[int]
    labels: torch.Tensor
    x: torch.Tensor | None
    decoded: list[int]
    thumbnails: np.ndarray | None
    skipped: list[SkippedSample] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    encoded: list[torch.Tensor] = field(default_factory=list)

    def pin_memory(self) -> SampleBatch:
        """Pin the inputs (the DataLoader calls this with ``pin_memory=True``) for asynchronous copies."""
        if self.x is not None:
            self.x = self.x.pin_memory()
        return self


def collate_samples(items: Sequence[Sample | SkippedSample]) -> SampleBatch:
    """Stack the readable samples of a batch; list the unreadable ones under ``skipped``.

    Raises
    ------
    DataError
        When decoded samples have different shapes (the dataset skips those it can tell apart; this
        only guards against a source whose size could not be probed).
    """
    good = [it for it in items if isinstance(it, Sample)]
    skipped = [it for it in items if isinstance(it, SkippedSample)]
    dec = [it for it in good if it.x is not None]
    if dec:
        shapes = {tuple(it.x.shape) for it in dec if it.x is not None}
        if len(shapes) > 1:
            raise DataError(
                f"Samples in one batch have different shapes {sorted(shapes)}. "
                "Set data.transform.resize and center_crop so every image has the same size."
            )
    thumbs = [it.thumbnail for it in dec]
    return SampleBatch(
        sample_ids=[it.sample_id for it in good],
        content_hashes=[it.content_hash for it in good],
        indices=[it.index for it in good],
        labels=torch.tensor([it.label for it in good], dtype=torch.long),
        x=torch.stack([it.x for it in dec if it.x is not None]) if dec else None,
        decoded=[j for j, it in enumerate(good) if it.x is not None],
        thumbnails=np.stack([t for t in thumbs if t is not None])
        if thumbs and all(t is not None for t in thumbs)
        else None,
        skipped=skipped,
        pending=[j for j, it in enumerate(good) if it.encoded is not None],
        encoded=[it.encoded for it in good if it.encoded is not None],
    )

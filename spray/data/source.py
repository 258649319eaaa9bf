"""A data source: what each format (IDX, image folder, factory) hands to the dataset."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from spray.records import SkippedSample


@dataclass
class Source:
    """Samples of one format, before the transform.

    Attributes
    ----------
    sample_ids : list[str]
        Stable ids, length ``N``.
    labels : list[int]
        True labels, length ``N``.
    class_names : list[str]
        Names in label order.
    loader : callable
        ``loader(i) -> (image (C, H, W) float32 in [0, 1], raw bytes for hashing or None)``; raises
        :class:`~spray.data.sample.UnreadableSample` for a sample to skip.
    raw_reader : callable or None
        ``raw_reader(i) -> bytes``: the same bytes ``loader`` returns, without decoding (lets a sample
        whose hash the cache knows skip the decode).
    pre_skipped : list[SkippedSample]
        Entries found while listing the source that are not samples (non-image files, symlink loops).
    channels : int or None
        Channels of most samples (1 grey, 3 colour), when the source can tell.
    input_sizes : list[tuple[int, int]]
        Native ``(H, W)`` of a spread of samples (all of them share one for IDX).
    notes : list[str]
        Sentences on files that torchvision's ImageFolder reads otherwise (recorded in the run).
    fingerprint : str or None
        A factory dataset's own fingerprint (see the factory contract), else None.
    file_bytes : list[bytes]
        IDX: the images and labels files' bytes as read (the data fingerprint hashes them), else empty.
    """

    sample_ids: list[str]
    labels: list[int]
    class_names: list[str]
    loader: Callable[[int], tuple[torch.Tensor, bytes | None]]
    raw_reader: Callable[[int], bytes] | None = None
    pre_skipped: list[SkippedSample] = field(default_factory=list)
    channels: int | None = None
    input_sizes: list[tuple[int, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fingerprint: str | None = None
    file_bytes: list[bytes] = field(default_factory=list)

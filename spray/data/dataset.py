"""The audit dataset: samples of any source, transformed, hashed, and skipped with a reason when bad."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from spray.config import DataConfig
from spray.data.channels import model_input_channels, to_model_channels
from spray.data.decoding import DecodeOptions
from spray.data.factory import factory_source
from spray.data.folder import folder_source
from spray.data.idx import idx_source
from spray.data.sample import (
    Sample,
    SampleBatch,
    UnreadableSample,
    clean_reason,
    collate_samples,
    content_hash,
)
from spray.data.source import Source
from spray.data.thumbnails import thumbnail_side
from spray.data.transform import Transform
from spray.errors import ConfigError, DataError
from spray.records import SkippedSample

log = logging.getLogger(__name__)


class AuditDataset(Dataset[Sample | SkippedSample]):
    """Map-style dataset over a source, yielding :class:`Sample` or :class:`SkippedSample` records.

    A sample whose content hash is in :attr:`known_hashes` (the batch stage's cache) is hashed from its
    raw bytes and not decoded (``x`` and ``thumbnail`` are None): a nightly rerun skips the decoding,
    resizing and thumbnail of every unchanged sample.

    Parameters
    ----------
    sample_ids : list[str]
        Stable sample ids, length N.
    labels : list[int]
        True labels, length N.
    loader : callable
        ``loader(i) -> (image (C,H,W) float32 in [0,1], raw bytes for hashing or None)``.
    transform : Transform
        Applied after loading.
    class_names : list[str]
        Names in label order.
    pre_skipped : sequence of SkippedSample
        Entries of the source that are not samples (listed in the run's skipped samples).
    raw_reader : callable, optional
        ``raw_reader(i) -> bytes``: the same bytes ``loader`` returns, without decoding.
    input_size : tuple of int, optional
        ``(H, W)`` every model input must have; a sample of another size is skipped with a reason.
    """

    def __init__(
        self,
        sample_ids: list[str],
        labels: list[int],
        loader: Callable[[int], tuple[torch.Tensor, bytes | None]],
        transform: Transform,
        class_names: list[str],
        pre_skipped: Sequence[SkippedSample] = (),
        raw_reader: Callable[[int], bytes] | None = None,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        self.sample_ids = sample_ids
        self.labels = labels
        self.raw_reader = raw_reader
        #: Content hashes whose samples need no input (set by the batch stage to its cache's hashes).
        self.known_hashes: frozenset[str] = frozenset()
        self._loader = loader
        self.transform = transform
        self.class_names = class_names
        self.pre_skipped = list(pre_skipped)
        self.input_size = input_size
        #: A factory dataset's own fingerprint (None for files: the audit fingerprints those itself).
        self.fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self.sample_ids)

    @property
    def channels(self) -> int | None:
        """Channels of the model inputs (1 or 3), when known."""
        return self.transform.channels

    def match_model(self, model: nn.Module) -> None:
        """Feed grey images to a model whose first convolution takes 3 channels (unless the config decides).

        Only the well-defined direction is taken: colour images are not made grey for a 1-channel model
        (the model's own shape check then names data.transform; ``channels: 1`` says to try).
        """
        c = model_input_channels(model)
        cfg = self.transform.cfg
        fixed = cfg.channels is not None or cfg.grayscale_to_rgb or cfg.mean is not None
        if c == 3 and not fixed and self.transform.channels == 1:
            log.info("the model's first convolution takes %d channels: images are converted to that", c)
            self.transform.channels = c
            self.transform.thumbnail_channels = c

    def _read(self, i: int, *, thumbnail: bool) -> tuple[torch.Tensor, bytes | None, np.ndarray | None] | str:
        """Load and transform sample ``i``: ``(x, raw bytes, thumbnail)``, or why it is unreadable.

        A :class:`DataError` (a problem of the config, not of one sample) propagates.
        """
        sid = self.sample_ids[i]
        try:
            img, raw = self._loader(i)
            img = to_model_channels(img, self.transform.channels)
            x, thumb = self.transform(img, thumbnail=thumbnail)
        except UnreadableSample as err:
            return clean_reason(err.reason, sid)
        except DataError:
            raise
        except Exception as err:  # a corrupt sample must not kill the run: report it instead
            return clean_reason(f"{type(err).__name__}: {err}", sid)
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            h, w = self.input_size
            return (
                f"image is {img.shape[-2]}×{img.shape[-1]} pixels (model input {x.shape[-2]}×{x.shape[-1]}) but "
                f"the dataset's inputs are {h}×{w}; set data.transform.resize and center_crop to bring every "
                "image to one size"
            )
        if not torch.isfinite(x).all():
            return "image contains NaN or inf values"
        return x, raw, thumb

    def first_batch(self, n: int = 2) -> SampleBatch:
        """The first ``n`` readable samples, decoded (for checking the model before any work).

        Raises
        ------
        DataError
            When no sample can be read, with the first reasons.
        """
        items: list[Sample] = []
        skipped: list[SkippedSample] = []
        for i in range(len(self)):
            it = self[i]
            if isinstance(it, Sample):
                items.append(it)
                if len(items) == n:
                    break
            else:
                skipped.append(it)
        if not items:
            reasons = "\n".join(f"  {s.sample_id}: {s.reason}" for s in skipped[:3])
            more = f"\n  ... and {len(skipped) - 3} more" if len(skipped) > 3 else ""
            raise DataError(
                f"No sample of the dataset could be read ({len(skipped)} tried). Check the data section of the "
                f"config; the first reasons:\n{reasons}{more}"
            )
        return collate_samples(items)

    def load_input(self, i: int) -> torch.Tensor:
        """The model input of sample ``i`` only: no thumbnail, no content hash (for the paste test).

        Raises
        ------
        DataError
            If the sample cannot be read or holds NaN/inf (it was readable when the batch stage ran).
        """
        got = self._read(i, thumbnail=False)
        if isinstance(got, str):
            raise DataError(f"sample {self.sample_ids[i]!r} became unreadable during the audit: {got}")
        return got[0]

    def __getitem__(self, i: int) -> Sample | SkippedSample:
        sid = self.sample_ids[i]
        label = int(self.labels[i])
        if self.raw_reader is not None and self.known_hashes:
            try:
                h: str | None = content_hash(self.raw_reader(i))
            except OSError:
                h = None  # unreadable now: the full read below reports why
            if h is not None and h in self.known_hashes:
                # Same bytes as a sample already explained (it decoded and was finite then): no decode.
                return Sample(sid, i, label, h)
        got = self._read(i, thumbnail=True)
        if isinstance(got, str):
            return SkippedSample(sid, got)
        x, raw, thumb = got
        h = content_hash(raw if raw is not None else x.numpy().tobytes())
        return Sample(sid, i, label, h, x, thumb)


def _model_channels(cfg: DataConfig, source: Source) -> int | None:
    t = cfg.transform
    if t.channels is not None:
        return t.channels
    if t.grayscale_to_rgb:
        return 3
    if t.mean is not None:
        return len(t.mean)
    return source.channels


def _input_size(transform: Transform, sizes: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The model-input size most probed samples have; a ConfigError when no size is shared by most."""
    if not sizes:
        return None
    counts = Counter(transform.output_size(h, w) for h, w in sizes)
    (size, n), *_ = counts.most_common(1)
    if 2 * n < len(sizes):
        seen = ", ".join(f"{h}×{w} ({k})" for (h, w), k in counts.most_common(5))
        raise ConfigError(
            f"data.transform: the images have different sizes after the transform ({seen}{', ...' if len(counts) > 5 else ''} "
            f"of {len(sizes)} probed). Set data.transform.resize and center_crop so that every image has one size."
        )
    return size


def build_dataset(cfg: DataConfig, *, thumbnail_size: int = 64) -> AuditDataset:
    """Build the dataset described by ``cfg`` (``limit`` applied).

    ``thumbnail_size`` is the largest thumbnail edge; thumbnails are never larger than the model input.

    Raises
    ------
    DataError, ConfigError
        With the problem and the fix.
    """
    decode = DecodeOptions(
        max_pixels=cfg.max_image_pixels,
        alpha_background=cfg.transform.alpha_background,
        draft_side=cfg.transform.resize,
    )
    if cfg.kind == "idx":
        source = idx_source(cfg)
    elif cfg.kind == "image_folder":
        source = folder_source(cfg, decode)
    else:
        source = factory_source(cfg, decode)
    if not source.sample_ids:
        where = {"idx": "data.images", "image_folder": "data.path", "factory": "data.factory"}[cfg.kind]
        raise DataError(f"The dataset is empty: {where} has no samples.")
    transform = Transform(cfg.transform, thumbnail_size)
    transform.channels = _model_channels(cfg, source)
    # Thumbnails have the model input's channels: grey for a grey model, and the same shape in every run
    # of one config and model (shards of one cache directory are stacked together).
    transform.thumbnail_channels = 1 if transform.channels == 1 else 3
    size = _input_size(transform, source.input_sizes)
    if size is not None:
        transform.thumbnail_size = thumbnail_side(thumbnail_size, *size)
    ds = AuditDataset(
        source.sample_ids, source.labels, source.loader, transform, source.class_names,
        source.pre_skipped, source.raw_reader, size,
    )  # fmt: skip
    ds.fingerprint = source.fingerprint
    if cfg.limit is not None and cfg.limit < len(ds):
        ds.sample_ids, ds.labels = ds.sample_ids[: cfg.limit], ds.labels[: cfg.limit]
    log.info("dataset: %d samples, %d classes", len(ds), len(ds.class_names))
    return ds

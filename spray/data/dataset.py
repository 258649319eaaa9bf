"""The audit dataset: samples of any source, transformed, hashed, and skipped with a reason when bad."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, get_worker_info

from spray.config import DataConfig
from spray.data.channels import model_input_channels, to_model_channels
from spray.data.decoding import DecodeOptions
from spray.data.factory import factory_source
from spray.data.folder import folder_source
from spray.data.idx import idx_source
from spray.data.jpeg import JpegDecoder
from spray.data.memo import InputMemo
from spray.data.sample import (
    Sample,
    SampleBatch,
    UnreadableSample,
    clean_reason,
    collate_samples,
    content_hash,
    spread_positions,
)
from spray.data.source import Source
from spray.data.thumbnails import thumbnail_pixels, thumbnail_side
from spray.data.transform import Transform, draft_side
from spray.errors import ConfigError, DataError
from spray.records import SkippedSample

log = logging.getLogger(__name__)


#: Unreadable samples in a row, all for the same reason, after which the first batch stops with it.
SAME_REASON_STOP = 256


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
        #: IDX: the files' bytes the samples were read from (the data fingerprint hashes these, not a re-read).
        self.file_bytes: list[bytes] = []
        #: Sentences on files torchvision's ImageFolder reads otherwise (the run records them).
        self.loader_notes: list[str] = []
        #: Decodes JPEG files on a device (``data.transform.decode_device: cuda``), else None: Pillow.
        self.jpeg: JpegDecoder | None = None
        #: Samples decoded by :attr:`jpeg` in this process (for the run's timings).
        self.n_device_decoded = 0
        #: Inputs decoded in this process, for :meth:`load_input` (the audit sets its budget; 0: none).
        self.input_memo = InputMemo()
        #: Samples :meth:`load_input` found with other bytes than the ``expect``-ed (explained) ones.
        self.changed_since_read: list[str] = []
        #: The config section the settings come from, as messages name them (``correction.test_data``).
        self.section = "data"
        #: Channels most probed files are stored with (None: not known).
        self.stored_channels: int | None = None

    def __len__(self) -> int:
        return len(self.sample_ids)

    @property
    def empty_classes(self) -> list[str]:
        """Names of the classes without a sample (an empty class folder still counts as a class)."""
        present = set(self.labels)
        return [n for c, n in enumerate(self.class_names) if c not in present]

    @property
    def channels(self) -> int | None:
        """Channels of the model inputs (1 or 3), when known."""
        return self.transform.channels

    def match_model(self, model: nn.Module) -> None:
        """Bring the images to the channels of the model's first convolution (unless the config decides).

        Grey images become RGB for a 3-channel model. For a 1-channel model, images that are mostly colour
        are taken as grey: a grey image saved as RGB is grey already, and a truly colour one is converted
        or skipped with a reason as ``data.transform.colour_to_grey`` says.
        """
        c = model_input_channels(model)
        cfg = self.transform.cfg
        fixed = (
            cfg.channels is not None or cfg.grayscale_to_rgb or (cfg.mean is not None and len(cfg.mean) == 3)
        )
        if not (fixed or c is None or self.transform.channels in (None, c) or c not in (1, 3)):
            log.info("the model's first convolution takes %d channels: images are converted to that", c)
            self.transform.channels = c
            self.transform.thumbnail_channels = c
        # said however the channels came to 1 (the model, data.transform.channels or a one-value mean)
        if self.transform.channels == 1 and self.stored_channels == 3 and cfg.colour_to_grey == "refuse":
            log.warning(
                "the model takes 1 channel but most images are stored with three channels (RGB or a palette): "
                "those whose three channels are equal (grey images saved as RGB) are audited as grey, colour "
                "ones are skipped with the reason; set %s.transform.colour_to_grey: luma to convert those to grey",
                self.section,
            )

    def _read(self, i: int, *, thumbnail: bool) -> tuple[torch.Tensor, bytes | None, np.ndarray | None] | str:
        """Load and transform sample ``i``: ``(x, raw bytes, thumbnail)``, or why it is unreadable.

        A :class:`DataError` (a problem of the config, not of one sample) propagates.
        """
        sid = self.sample_ids[i]
        try:
            img, raw = self._load_image(i)
        except UnreadableSample as err:
            return clean_reason(err.reason, sid)
        except DataError:
            raise
        except Exception as err:  # a corrupt sample must not kill the run: report it instead
            return clean_reason(f"{type(err).__name__}: {err}", sid)
        got = self._transformed(i, img, thumbnail=thumbnail)
        # A sample read one at a time is a host tensor, whichever device decoded and resized it (only
        # finish_batch leaves a batch on the device, for the batch stage).
        return got if isinstance(got, str) else (got[0].cpu(), raw, got[1])

    def _load_image(self, i: int) -> tuple[torch.Tensor, bytes | None]:
        """The decoded image of sample ``i`` and its bytes: a JPEG on the device when :attr:`jpeg` is set
        (not inside a DataLoader worker, where CUDA cannot be used), anything else by the source."""
        if self.jpeg is not None and self.raw_reader is not None and get_worker_info() is None:
            raw = self.raw_reader(i)
            if self.jpeg.accepts(raw):
                img = self.jpeg.decode([_as_tensor(raw)])[0]
                if isinstance(img, str):
                    raise UnreadableSample(img)
                self.n_device_decoded += 1
                return img, raw
        return self._loader(i)

    def _transformed(
        self, i: int, img: torch.Tensor, *, thumbnail: bool
    ) -> tuple[torch.Tensor, np.ndarray | None] | str:
        """A decoded image of sample ``i`` → ``(model input, thumbnail)``, or why it is unusable."""
        sid = self.sample_ids[i]
        try:
            img = to_model_channels(img, self.transform.channels, self.transform.cfg.colour_to_grey)
            x, thumb = self.transform(img, thumbnail=thumbnail)
        except UnreadableSample as err:
            return clean_reason(err.reason, sid)
        except DataError:
            raise
        except Exception as err:  # a corrupt sample must not kill the run: report it instead
            return clean_reason(f"{type(err).__name__}: {err}", sid)
        wrong = self._wrong_size(img, x)
        if wrong is not None:
            return wrong
        if not _finite(x):
            return "image contains NaN or inf values"
        return x, thumb

    def _wrong_size(self, img: torch.Tensor, x: torch.Tensor) -> str | None:
        """Why the model input ``x`` made from ``img`` does not fit the dataset's input size, or None."""
        if self.input_size is None or tuple(x.shape[-2:]) == self.input_size:
            return None
        h, w = self.input_size
        return (
            f"image is {img.shape[-1]}×{img.shape[-2]} pixels (width×height), which the transform makes a "
            f"{x.shape[-1]}×{x.shape[-2]} input, but the dataset's inputs are {w}×{h}; set "
            "data.transform.resize and center_crop to bring every image to one size"
        )

    def _on_device(self, i: int, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | str:
        """A JPEG decoded on the device → ``(model input, thumbnail pixels)``, both left on the device.

        Nothing here waits for the device: no NaN check (decoded 8-bit pixels are finite, and so is what
        the resize and a validated mean/std make of them) and no per-image copy of the thumbnail.
        """
        sid = self.sample_ids[i]
        t = self.transform
        try:
            img = to_model_channels(img, t.channels, t.cfg.colour_to_grey)
            x = t.geometry(img)
            thumb = thumbnail_pixels(x, t.thumbnail_size, t.thumbnail_channels)
            x = t.normalise(x)
        except UnreadableSample as err:
            return clean_reason(err.reason, sid)
        except DataError:
            raise
        except Exception as err:  # a corrupt sample must not kill the run: report it instead
            return clean_reason(f"{type(err).__name__}: {err}", sid)
        wrong = self._wrong_size(img, x)
        return (x, thumb) if wrong is None else wrong

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
                # Not a few bad files but one cause for all (colour files for a grey model, a wrong
                # transform): say so now rather than after decoding the whole dataset.
                if len(skipped) == SAME_REASON_STOP and len({s.reason for s in skipped}) == 1:
                    raise DataError(
                        f"The first {SAME_REASON_STOP} samples of {self.section} cannot be read, all for one "
                        f"reason: {self._named(skipped[0].reason)} (e.g. {skipped[0].sample_id}). Fix that first."
                    )
        if not items:
            reasons = "\n".join(f"  {s.sample_id}: {self._named(s.reason)}" for s in skipped[:3])
            more = f"\n  ... and {len(skipped) - 3} more" if len(skipped) > 3 else ""
            raise DataError(
                f"No sample of {self.section} could be read ({len(skipped)} tried). Check the {self.section} "
                f"section of the config; the first reasons:\n{reasons}{more}"
            )
        return self.finish_batch(collate_samples(items))

    def finish_batch(self, b: SampleBatch) -> SampleBatch:
        """Decode the batch's JPEG files left for the device (:mod:`spray.data.jpeg`), in one call.

        The loader's workers only read and hash those files; this runs in the main process, after the
        batch is collated. Every other sample is as the workers made it; a file the device cannot decode
        moves to ``skipped`` with the reason. A batch without pending files is returned as it is.

        Returns
        -------
        SampleBatch
            ``x`` holds every decoded input in position order, on the decoder's device when any was
            decoded there; ``pending`` is empty.
        """
        if not b.pending:
            return b
        assert self.jpeg is not None, "a batch with pending JPEG files from a dataset without a decoder"
        made: dict[int, torch.Tensor] = {}
        thumbs: list[torch.Tensor] = []
        skipped = list(b.skipped)
        for pos, img in zip(b.pending, self.jpeg.decode(b.encoded), strict=True):
            got = img if isinstance(img, str) else self._on_device(b.indices[pos], img)
            if isinstance(got, str):
                skipped.append(SkippedSample(b.sample_ids[pos], clean_reason(got, b.sample_ids[pos])))
            else:
                made[pos] = got[0]
                thumbs.append(got[1])
        self.n_device_decoded += len(made)
        # One copy of the batch's thumbnails to the host (one wait for the device, not one per image).
        host = torch.stack(thumbs).cpu().numpy() if thumbs else None
        pairs = {pos: (x, None if host is None else host[k]) for k, (pos, x) in enumerate(made.items())}
        return _merge_decoded(b, pairs, skipped, self.jpeg.device)

    def decode(self, i: int) -> tuple[torch.Tensor, np.ndarray | None]:
        """Model input and thumbnail of sample ``i``, decoded even when its hash is in :attr:`known_hashes`.

        Raises
        ------
        DataError
            If the sample cannot be read or holds NaN/inf (it was readable when the batch stage hashed it).
        """
        got = self._read(i, thumbnail=True)
        if isinstance(got, str):
            raise self._unreadable(i, got)
        return got[0], got[2]

    def _named(self, why: str) -> str:
        """A reason, with the settings it names in this dataset's own config section."""
        return in_section(why, self.section)

    def _unreadable(self, i: int, why: str) -> SampleReadError:
        """Sample ``i`` cannot be read (now): its reason, naming this dataset's own config section."""
        if self.section == "data":
            return SampleReadError(f"sample {self.sample_ids[i]!r} became unreadable during the audit: {why}")
        return SampleReadError(
            f"{self.section}'s sample {self.sample_ids[i]!r} cannot be read: {self._named(why)}"
        )

    def load_input(self, i: int, expect: str | None = None) -> torch.Tensor:
        """The model input of sample ``i`` only: no thumbnail (for the paste test); from :attr:`input_memo`
        when this process decoded it before. When its content hash (of the file's bytes, or of the input a
        factory dataset gave) is not ``expect``, the sample changed since it was explained (a rewritten file,
        random augmentation) and its id is added to :attr:`changed_since_read`.

        Raises
        ------
        DataError
            If the sample cannot be read or holds NaN/inf (it was readable when the batch stage ran).
        """
        held = self.input_memo.get(i)
        if held is not None:
            return held
        got = self._read(i, thumbnail=False)
        if isinstance(got, str):
            raise self._unreadable(i, got)
        if expect is not None and _hash_of(got[1], got[0]) != expect:
            self.changed_since_read.append(self.sample_ids[i])
        self.input_memo.put(i, got[0])
        return got[0]

    def __getitem__(self, i: int) -> Sample | SkippedSample:
        sid = self.sample_ids[i]
        label = int(self.labels[i])
        in_worker = get_worker_info() is not None
        if self.raw_reader is not None and (self.known_hashes or (self.jpeg is not None and in_worker)):
            try:
                raw: bytes | None = self.raw_reader(i)
            except OSError:
                raw = None  # unreadable now: the full read below reports why
            h = None if raw is None else content_hash(raw)
            if h is not None and h in self.known_hashes:
                # Same bytes as a sample already explained (it decoded and was finite then): no decode.
                return Sample(sid, i, label, h)
            if (
                raw is not None
                and h is not None
                and self.jpeg is not None
                and in_worker
                and self.jpeg.accepts(raw)
            ):
                # CUDA cannot be used in a worker: the main process decodes the batch (finish_batch).
                return Sample(sid, i, label, h, encoded=_as_tensor(raw))
        got = self._read(i, thumbnail=True)
        if isinstance(got, str):
            return SkippedSample(sid, got)
        x, raw, thumb = got
        return Sample(sid, i, label, _hash_of(raw, x), x, thumb)

    def content_hash_of(self, i: int) -> str:
        """Sample ``i``'s content hash as :meth:`__getitem__` gives it (its bytes, else its model input),
        reading only the bytes when there are any; raises like :meth:`load_input` otherwise."""
        raw = self.raw_reader(i) if self.raw_reader is not None else None
        return _hash_of(raw, None if raw is not None else self.load_input(i))


def in_section(text: str, section: str) -> str:
    """``text`` with the ``data.<key>`` settings it names moved to config section ``section`` (a dataset
    read under another section, such as ``correction.test_data``, names that section's keys)."""
    return text if section == "data" else re.sub(r"\bdata\.(?=[a-z_])", f"{section}.", text)


class SampleReadError(DataError):
    """A sample of a dataset cannot be read by :meth:`AuditDataset.load_input` (its message names it)."""


def spread_inputs(
    dataset: Any, k: int, skip: frozenset[str] = frozenset(), order: Sequence[int] | None = None
) -> list[tuple[int, torch.Tensor]]:
    """Up to ``k`` readable inputs spread evenly over ``dataset`` (folders are read in class order, so every
    class takes part), or over ``order`` (dataset positions in another order), as ``(position, input)``; the ids
    in ``skip`` and unreadable samples are passed over.

    ``dataset`` needs ``load_input(i)`` and ``len``; ``sample_ids`` only when ``skip`` is given.
    """
    ids = list(getattr(dataset, "sample_ids", [])) if skip else []
    listed = range(len(dataset)) if order is None else order
    rows = [i for i in listed if not ids or ids[i] not in skip]
    out = []
    for j in spread_positions(len(rows), k):
        try:
            out.append((rows[j], dataset.load_input(rows[j])))
        except (UnreadableSample, SampleReadError):  # listed by the audit; not a spot check's business
            continue
    return out


def _hash_of(raw: bytes | None, x: torch.Tensor | None) -> str:
    """A sample's content hash: of its file's (or record's) bytes, else of its model input (factories)."""
    if raw is not None:
        return content_hash(raw)
    assert x is not None
    return content_hash(x.numpy().tobytes())


def _finite(x: torch.Tensor) -> bool:
    """Whether every value of ``x`` is finite (numpy on the CPU: cheaper per call for small images)."""
    if x.device.type == "cpu":
        return bool(np.isfinite(x.numpy()).all())
    return bool(torch.isfinite(x).all())


def _as_tensor(raw: bytes) -> torch.Tensor:
    """A file's bytes as the ``(nbytes,)`` uint8 tensor torchvision decodes (one copy)."""
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


def _merge_decoded(
    b: SampleBatch,
    made: dict[int, tuple[torch.Tensor, np.ndarray | None]],
    skipped: list[SkippedSample],
    device: torch.device,
) -> SampleBatch:
    """``b`` with the device-decoded inputs ``made`` (by position) merged in and the failed ones dropped."""
    failed = set(b.pending) - set(made)
    keep = [j for j in range(len(b.sample_ids)) if j not in failed]
    new_pos = {j: n for n, j in enumerate(keep)}
    row = {pos: r for r, pos in enumerate(b.decoded)}
    decoded = sorted(set(b.decoded) | set(made))
    xs, thumbs = [], []
    for pos in decoded:
        if pos in made:
            xs.append(made[pos][0])
            thumbs.append(made[pos][1])
        else:
            assert b.x is not None
            xs.append(b.x[row[pos]].to(device))
            thumbs.append(None if b.thumbnails is None else b.thumbnails[row[pos]])
    return SampleBatch(
        sample_ids=[b.sample_ids[j] for j in keep],
        content_hashes=[b.content_hashes[j] for j in keep],
        indices=[b.indices[j] for j in keep],
        labels=b.labels[torch.tensor(keep, dtype=torch.long)],
        x=torch.stack(xs) if xs else None,
        decoded=[new_pos[j] for j in decoded],
        thumbnails=np.stack(thumbs) if thumbs and all(t is not None for t in thumbs) else None,  # type: ignore[arg-type]
        skipped=skipped,
    )


def _model_channels(cfg: DataConfig, source: Source) -> int | None:
    t = cfg.transform
    if t.channels is not None:
        return t.channels
    if t.grayscale_to_rgb:
        return 3
    if t.mean is not None:
        # one value: a grey model unless its first convolution takes 3 channels (match_model), as
        # torchvision's Normalize broadcasts one value over an RGB model's channels
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


def _within_trial(skipped: list[SkippedSample], classes: set[str]) -> list[SkippedSample]:
    """The folder's skipped entries that a ``data.limit`` trial read: those in the class folders of its
    samples (``classes``: their ids' first folder), and those outside every class folder (a trial never
    reached the other classes' files)."""
    return [s for s in skipped if "/" not in s.sample_id or s.sample_id.split("/", 1)[0] in classes]


def build_dataset(
    cfg: DataConfig, *, thumbnail_size: int = 64, jpeg_device: torch.device | None = None
) -> AuditDataset:
    """Build the dataset described by ``cfg`` (``limit`` applied).

    ``thumbnail_size`` is the largest thumbnail edge; thumbnails are never larger than the model input.
    ``jpeg_device``: decode an image folder's JPEG files there in batches (:mod:`spray.data.jpeg`; the
    audit passes CUDA when ``data.transform.decode_device`` resolves to ``cuda``); None: Pillow.

    Raises
    ------
    DataError, ConfigError
        With the problem and the fix.
    """
    decode = DecodeOptions(
        max_pixels=cfg.max_image_pixels,
        alpha_background=cfg.transform.alpha_background,
        draft_side=draft_side(cfg.transform.resize),
        high_bit_depth=cfg.transform.high_bit_depth,
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
    ds.fingerprint, ds.loader_notes, ds.file_bytes = source.fingerprint, list(source.notes), source.file_bytes
    ds.stored_channels = source.channels
    if jpeg_device is not None and cfg.kind == "image_folder":
        ds.jpeg = JpegDecoder(jpeg_device, decode)
    if cfg.limit is not None and cfg.limit < len(ds):
        ds.sample_ids, ds.labels = ds.sample_ids[: cfg.limit], ds.labels[: cfg.limit]
        if cfg.kind == "image_folder":
            ds.pre_skipped = _within_trial(ds.pre_skipped, {i.split("/", 1)[0] for i in ds.sample_ids})
    log.info("dataset: %d samples, %d classes", len(ds), len(ds.class_names))
    return ds

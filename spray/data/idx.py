"""IDX files (the MNIST / Fashion-MNIST format): reading, writing, and the ``idx`` data source."""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spray.config import DataConfig
from spray.data.source import Source
from spray.errors import DataError

_DTYPES: dict[int, Any] = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array.

    Raises
    ------
    DataError
        When the file is not a valid IDX file.
    """
    return read_idx_file(path)[0]


def read_idx_file(path: str | Path) -> tuple[np.ndarray, bytes]:
    """Read an IDX file (optionally gzip-compressed): its array and the file's bytes as they were on disk.

    The bytes are what the data fingerprint hashes, so a run's id describes the very bytes its samples came
    from even when the file is rewritten while the audit sets up.

    Raises
    ------
    DataError
        When the file is not a valid IDX file.
    """
    p = Path(path)
    try:
        on_disk = p.read_bytes()
        raw = gzip.decompress(on_disk) if p.suffix == ".gz" else on_disk
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"Cannot read IDX file {str(p)!r}: {err}. Check the path and that the file is complete."
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"{str(p)!r} is not an IDX file (bad magic number). Point data.images/labels at IDX files."
        )
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code not in _DTYPES:
        raise DataError(f"{str(p)!r}: unknown IDX data type 0x{dtype_code:02x}.")
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{str(p)!r}: the IDX header is truncated.")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_DTYPES[dtype_code])
    body = len(raw) - 4 - 4 * ndim
    if body % dtype.itemsize or body // dtype.itemsize != int(np.prod(shape)):
        raise DataError(
            f"{str(p)!r}: header says shape {shape} but the file holds {body // dtype.itemsize} values "
            "(truncated?)."
        )
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim)
    return data.reshape(shape), on_disk


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip-compressed when the name ends in .gz)."""
    arr = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    p = Path(path)
    opener: Callable[..., Any] = gzip.open if p.suffix == ".gz" else open
    with opener(p, "wb") as fh:
        fh.write(header + arr.tobytes())


def _checked_labels(cfg: DataConfig, raw: np.ndarray) -> list[int]:
    """The labels as ints, each in ``0..K-1`` (``K`` = len(class_names) when given), or a DataError naming one."""
    if raw.ndim != 1 or not np.issubdtype(raw.dtype, np.integer):
        raise DataError(
            f"data.labels {str(cfg.labels)!r} must hold one integer label per image, got shape {raw.shape} "
            f"of {raw.dtype}."
        )
    labels = raw.astype(np.int64)
    k = len(cfg.class_names) if cfg.class_names is not None else None
    bad = np.flatnonzero((labels < 0) | (labels >= (k if k is not None else np.iinfo(np.int64).max)))
    if len(bad):
        i = int(bad[0])
        allowed = f"0..{k - 1} (data.class_names has {k} names)" if k is not None else ">= 0"
        raise DataError(
            f"data.labels {str(cfg.labels)!r}: label {int(labels[i])} of sample {i} is outside {allowed}; "
            f"{len(bad)} labels are out of range. Fix the labels file or data.class_names."
        )
    return labels.tolist()


def _check_range(cfg: DataConfig, images: np.ndarray, scale: float) -> None:
    """Refuse pixels outside the scale the format's type implies (a float file on 0-255 would be read as
    mostly white, a 16-bit one as far above 1), naming the values and the fix."""
    if images.size == 0 or images.dtype == np.uint8:
        return
    if np.issubdtype(images.dtype, np.floating) and not np.isfinite(images).all():
        raise DataError(
            f"data.images {str(cfg.images)!r} holds NaN or infinite pixel values; fix the file (floats in [0, 1], or "
            "uint8)."
        )
    lo, hi = float(images.min()), float(images.max())
    top = 1.0 if scale == 1.0 else 255.0
    if lo >= 0.0 and hi <= top + 1e-6:
        return
    kind = (
        "float pixels, read as [0, 1]"
        if scale == 1.0
        else f"{images.dtype.name} pixels, read as 8-bit (0-255)"
    )
    raise DataError(
        f"data.images {str(cfg.images)!r} holds {kind}, but its values lie in [{lo:g}, {hi:g}]. Save the images "
        "as uint8 (0-255), or as floats in [0, 1] (un-normalised: data.transform normalises)."
    )


def idx_source(cfg: DataConfig) -> Source:
    """The ``idx`` data source: images ``(N, H, W)`` or ``(N, H, W, C)`` uint8 and their labels."""
    assert cfg.images is not None and cfg.labels is not None
    images, image_bytes = read_idx_file(cfg.images)
    raw_labels, label_bytes = read_idx_file(cfg.labels)
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
        raise DataError(
            f"data.images {str(cfg.images)!r}: IDX images must be N×H×W or N×H×W×C (C 1 or 3), got shape "
            f"{images.shape}."
        )
    if len(images) != len(raw_labels):
        raise DataError(
            f"data.images {str(cfg.images)!r} holds {len(images)} images but data.labels "
            f"{str(cfg.labels)!r} holds {len(raw_labels)} labels."
        )
    labels = _checked_labels(cfg, raw_labels)
    # Integer pixels are 8-bit by the format's convention; float pixels are taken as [0, 1].
    scale = 1.0 if np.issubdtype(images.dtype, np.floating) else 255.0
    _check_range(cfg, images, scale)

    def load(i: int) -> tuple[torch.Tensor, bytes | None]:
        a = images[i]
        t = torch.from_numpy(np.array(a, dtype=np.float32) / scale)
        t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
        return t, a.tobytes()

    n = len(images)
    names = cfg.class_names or [str(c) for c in range(max(labels, default=0) + 1)]
    return Source(
        sample_ids=[str(i) for i in range(n)],
        labels=labels,
        class_names=names,
        loader=load,
        raw_reader=lambda i: images[i].tobytes(),
        channels=1 if images.ndim == 3 else int(images.shape[-1]),
        input_sizes=[tuple(images.shape[1:3])],
        file_bytes=[image_bytes, label_bytes],
    )

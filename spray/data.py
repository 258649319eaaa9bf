"""Datasets with stable sample ids, content hashes and corrupt-sample tolerance.

Every item of an :class:`AuditDataset` is a dict. A readable sample gives
``{"ok": True, "x": (C,H,W) float32, "label": int, "id": str, "hash": str, "thumb": (t,t,3) uint8}``;
an unreadable one gives ``{"ok": False, "id": str, "reason": str}`` so that :func:`collate_samples` can
drop it and the run can report it instead of dying. A sample whose content hash is in
:attr:`AuditDataset.known_hashes` (the batch stage's cache) is hashed from its raw bytes and not
decoded: ``"x"`` and ``"thumb"`` are None. A nightly rerun thus skips the decoding, resizing and
thumbnail of every unchanged sample (with a GPU doing the LRP, decoding is the CPU's largest share).

Sample ids are stable across runs: the path relative to the root for image folders, the index for IDX
files and factories (or the factory dataset's own ``sample_ids`` attribute when it has one).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from spray.config import DataConfig, TransformConfig
from spray.errors import ConfigError, DataError
from spray.factories import import_callable
from spray.records import SkippedSample

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def content_hash(data: bytes) -> str:
    """Short content hash of a sample's bytes (128-bit BLAKE2b, hex)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


# ---------------------------------------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST format)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array.

    Raises
    ------
    DataError
        When the file is not a valid IDX file.
    """
    p = Path(path)
    opener: Callable[..., Any] = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise DataError(
            f"Cannot read IDX file {str(p)!r}: {err}. Check the path and that the file is complete."
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"{str(p)!r} is not an IDX file (bad magic number). Point data.images/labels at IDX files."
        )
    dtype_code, ndim = raw[2], raw[3]
    dtypes: dict[int, Any] = {
        0x08: np.uint8,
        0x09: np.int8,
        0x0B: ">i2",
        0x0C: ">i4",
        0x0D: ">f4",
        0x0E: ">f8",
    }
    if dtype_code not in dtypes:
        raise DataError(f"{str(p)!r}: unknown IDX data type 0x{dtype_code:02x}.")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=dtypes[dtype_code], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(
            f"{str(p)!r}: header says shape {shape} but the file holds {data.size} values (truncated?)."
        )
    return data.reshape(shape)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip-compressed when the name ends in .gz)."""
    arr = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    p = Path(path)
    opener: Callable[..., Any] = gzip.open if p.suffix == ".gz" else open
    with opener(p, "wb") as fh:
        fh.write(header + arr.tobytes())


# ---------------------------------------------------------------------------------------------------------
# Transform


@dataclass
class Transform:
    """Resize / crop / grey→RGB / normalise, applied to a ``(C,H,W)`` float tensor in [0, 1].

    Returns both the model input and a uint8 thumbnail of the un-normalised image.
    """

    cfg: TransformConfig
    thumbnail_size: int = 64

    def __call__(
        self, img: torch.Tensor, *, thumbnail: bool = True
    ) -> tuple[torch.Tensor, np.ndarray | None]:
        """``img`` (C,H,W) float32 in [0,1] → (model input (C',H',W'), thumbnail (t,t,3) uint8 or None)."""
        x = img
        if self.cfg.resize is not None:
            h, w = x.shape[-2:]
            s = self.cfg.resize / min(h, w)
            size = (max(1, round(h * s)), max(1, round(w * s)))
            x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
        if self.cfg.center_crop is not None:
            c = self.cfg.center_crop
            h, w = x.shape[-2:]
            if c > h or c > w:
                x = F.interpolate(x[None], size=(max(c, h), max(c, w)), mode="bilinear", align_corners=False)[
                    0
                ]
                h, w = x.shape[-2:]
            top, left = (h - c) // 2, (w - c) // 2
            x = x[:, top : top + c, left : left + c]
        if self.cfg.grayscale_to_rgb and x.shape[0] == 1:
            x = x.repeat(3, 1, 1)
        thumb = make_thumbnail(x, self.thumbnail_size) if thumbnail else None
        if self.cfg.mean is not None and self.cfg.std is not None:
            if len(self.cfg.mean) != x.shape[0]:
                raise DataError(
                    f"transform.mean has {len(self.cfg.mean)} values but images have {x.shape[0]} channels. "
                    "Fix data.transform.mean/std (or set grayscale_to_rgb)."
                )
            mean = torch.tensor(self.cfg.mean, dtype=x.dtype)[:, None, None]
            std = torch.tensor(self.cfg.std, dtype=x.dtype)[:, None, None]
            x = (x - mean) / std
        return x.contiguous(), thumb

    def input_bounds(self) -> tuple[float, float]:
        """The lowest and highest value a normalised input can take (for the ZBox rule)."""
        if self.cfg.mean is None or self.cfg.std is None:
            return 0.0, 1.0
        lows = [(0.0 - m) / s for m, s in zip(self.cfg.mean, self.cfg.std, strict=True)]
        highs = [(1.0 - m) / s for m, s in zip(self.cfg.mean, self.cfg.std, strict=True)]
        return min(lows), max(highs)


def make_thumbnail(x: torch.Tensor, size: int) -> np.ndarray:
    """(C,H,W) float in [0,1] → (size, size, 3) uint8 RGB thumbnail (aspect squashed to a square)."""
    t = F.interpolate(
        x[None].float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )[0]
    if t.shape[0] == 1:
        t = t.repeat(3, 1, 1)
    t = t[:3]
    return (t.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image → (C,H,W) float32 in [0,1]; keeps grey images single-channel, drops alpha."""
    if img.mode in ("L", "I;16", "I", "F", "1"):
        img = img.convert("L")
    elif img.mode != "RGB":
        img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0


# ---------------------------------------------------------------------------------------------------------
# Dataset


class AuditDataset(Dataset[dict[str, Any]]):
    """Map-style dataset over a source, yielding dicts (see module docstring).

    Parameters
    ----------
    ids : list[str]
        Stable sample ids, length N.
    labels : list[int]
        True labels, length N.
    loader : callable
        ``loader(i) -> (image (C,H,W) float32 in [0,1], raw bytes for hashing or None)``.
    transform : Transform
        Applied after loading.
    class_names : list[str]
        Names in label order.
    raw_reader : callable, optional
        ``raw_reader(i) -> bytes``: the same bytes ``loader`` returns for hashing, without decoding.
        Lets a sample in :attr:`known_hashes` skip the decode (sources without raw bytes always decode).
    """

    def __init__(
        self,
        ids: list[str],
        labels: list[int],
        loader: Callable[[int], tuple[torch.Tensor, bytes | None]],
        transform: Transform,
        class_names: list[str],
        pre_skipped: Sequence[SkippedSample] = (),
        raw_reader: Callable[[int], bytes] | None = None,
    ) -> None:
        self.ids = ids
        self.raw_reader = raw_reader
        #: Content hashes whose samples need no input (set by the batch stage to its cache's hashes).
        self.known_hashes: frozenset[str] = frozenset()
        self.labels = labels
        self._loader = loader
        self.transform = transform
        self.class_names = class_names
        self.pre_skipped = list(pre_skipped)

    def __len__(self) -> int:
        return len(self.ids)

    def _read(self, i: int, *, thumbnail: bool) -> tuple[torch.Tensor, bytes | None, np.ndarray | None] | str:
        """Load and transform sample ``i``: ``(x, raw bytes, thumbnail)``, or why it is unreadable.

        A :class:`DataError` (a problem of the config, not of one sample) propagates.
        """
        try:
            img, raw = self._loader(i)
            x, thumb = self.transform(img, thumbnail=thumbnail)
        except DataError:
            raise
        except Exception as err:  # a corrupt sample must not kill the run: report it instead
            return f"{type(err).__name__}: {err}"
        if not torch.isfinite(x).all():
            return "image contains NaN or inf values"
        return x, raw, thumb

    def load_input(self, i: int) -> torch.Tensor:
        """The model input of sample ``i`` only: no thumbnail, no content hash (for the paste test).

        Raises
        ------
        DataError
            If the sample cannot be read or holds NaN/inf (it was readable when the batch stage ran).
        """
        got = self._read(i, thumbnail=False)
        if isinstance(got, str):
            raise DataError(f"sample {self.ids[i]!r} became unreadable during the audit: {got}")
        return got[0]

    def __getitem__(self, i: int) -> dict[str, Any]:
        sid = self.ids[i]
        if self.raw_reader is not None and self.known_hashes:
            try:
                h = content_hash(self.raw_reader(i))
            except OSError:
                h = None  # unreadable now: the full read below reports why
            if h is not None and h in self.known_hashes:
                # Same bytes as a sample already explained (it decoded and was finite then): no decode.
                return {"ok": True, "x": None, "label": int(self.labels[i]), "id": sid, "hash": h,
                        "thumb": None, "index": i}  # fmt: skip
        got = self._read(i, thumbnail=True)
        if isinstance(got, str):
            return {"ok": False, "id": sid, "reason": got}
        x, raw, thumb = got
        h = content_hash(raw if raw is not None else x.numpy().tobytes())
        return {
            "ok": True,
            "x": x,
            "label": int(self.labels[i]),
            "id": sid,
            "hash": h,
            "thumb": thumb,
            "index": i,
        }


def collate_samples(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the readable samples of a batch; list the unreadable ones under ``"skipped"``.

    ``"x"`` and ``"thumb"`` stack only the decoded samples (``"x"`` is None when there are none);
    ``"decoded"`` gives their positions in ``"id"``.
    """
    good = [it for it in items if it["ok"]]
    skipped = [SkippedSample(it["id"], it["reason"]) for it in items if not it["ok"]]
    dec = [it for it in good if it["x"] is not None]
    if dec:
        shapes = {tuple(it["x"].shape) for it in dec}
        if len(shapes) > 1:
            raise DataError(
                f"Samples in one batch have different shapes {sorted(shapes)}. "
                "Set data.transform.resize and center_crop so every image has the same size."
            )
    return {
        "x": torch.stack([it["x"] for it in dec]) if dec else None,
        "decoded": [j for j, it in enumerate(good) if it["x"] is not None],
        "label": torch.tensor([it["label"] for it in good], dtype=torch.long),
        "id": [it["id"] for it in good],
        "hash": [it["hash"] for it in good],
        "index": [it["index"] for it in good],
        "thumb": np.stack([it["thumb"] for it in dec]) if dec and dec[0]["thumb"] is not None else None,
        "skipped": skipped,
    }


def _idx_dataset(cfg: DataConfig, transform: Transform) -> AuditDataset:
    assert cfg.images is not None and cfg.labels is not None
    images = read_idx(cfg.images)
    labels = read_idx(cfg.labels).astype(np.int64)
    if images.ndim not in (3, 4):
        raise DataError(f"IDX images must be N×H×W or N×H×W×C, got shape {images.shape}.")
    if len(images) != len(labels):
        raise DataError(
            f"{str(cfg.images)!r} holds {len(images)} images but {str(cfg.labels)!r} holds {len(labels)} labels."
        )

    def load(i: int) -> tuple[torch.Tensor, bytes | None]:
        a = images[i]
        t = torch.from_numpy(np.array(a, dtype=np.float32) / 255.0)
        t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
        return t, a.tobytes()

    n = len(images)
    names = cfg.class_names or [str(c) for c in range(int(labels.max()) + 1)]
    return AuditDataset(
        [str(i) for i in range(n)], labels.tolist(), load, transform, names,
        raw_reader=lambda i: images[i].tobytes(),
    )  # fmt: skip


def _folder_dataset(cfg: DataConfig, transform: Transform) -> AuditDataset:
    assert cfg.path is not None
    root = Path(cfg.path)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(
            f"Image folder {str(root)!r} has no class subfolders. Expected root/<class>/<image> (ImageFolder layout)."
        )
    if cfg.class_names is not None and len(cfg.class_names) != len(classes):
        raise ConfigError(
            f"data.class_names has {len(cfg.class_names)} names but {str(root)!r} has {len(classes)} class folders."
        )
    ids: list[str] = []
    labels: list[int] = []
    skipped: list[SkippedSample] = []
    for c, cls in enumerate(classes):
        for f in sorted((root / cls).rglob("*")):
            if not f.is_file() or f.name.startswith("."):
                continue
            rel = f.relative_to(root).as_posix()
            if f.suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append(SkippedSample(rel, f"not an image file (extension {f.suffix or 'none'!r})"))
                continue
            ids.append(rel)
            labels.append(c)
    if skipped:
        log.warning("ignoring %d non-image files in %s (listed in the run report)", len(skipped), root)

    def load(i: int) -> tuple[torch.Tensor, bytes | None]:
        raw = (root / ids[i]).read_bytes()
        try:
            with Image.open(io.BytesIO(raw)) as im:
                im.load()
                t = pil_to_tensor(im)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise ValueError(f"corrupt or unreadable image ({err})") from None
        return t, raw

    return AuditDataset(
        ids, labels, load, transform, cfg.class_names or classes, skipped,
        raw_reader=lambda i: (root / ids[i]).read_bytes(),
    )  # fmt: skip


def _factory_dataset(cfg: DataConfig, transform: Transform) -> AuditDataset:
    assert cfg.factory is not None
    base = import_callable(cfg.factory, "data.factory")(**cfg.factory_kwargs)
    if not hasattr(base, "__getitem__") or not hasattr(base, "__len__"):
        raise DataError(f"data.factory returned {type(base).__name__}, not a map-style torch Dataset.")
    n = len(base)
    ids = [str(s) for s in getattr(base, "sample_ids", range(n))]
    if len(set(ids)) != n:
        raise DataError("The factory dataset's sample_ids are not unique; every sample needs its own id.")
    targets = getattr(base, "targets", None)
    labels = [int(t) for t in targets] if targets is not None and len(targets) == n else None

    def load(i: int) -> tuple[torch.Tensor, bytes | None]:
        item = base[i]
        img = item[0] if isinstance(item, tuple | list) else item
        if isinstance(img, Image.Image):
            t = pil_to_tensor(img)
        elif isinstance(img, np.ndarray):
            t = torch.from_numpy(img).float()
            t = t / 255.0 if img.dtype == np.uint8 else t
            t = t[None] if t.ndim == 2 else t
        elif isinstance(img, torch.Tensor):
            t = img.float()
            t = t[None] if t.ndim == 2 else t
        else:
            raise DataError(
                f"The factory dataset returned a {type(img).__name__}; expected a tensor, array or PIL image."
            )
        return t, None

    if labels is None:
        labels = []
        for i in range(n):
            item = base[i]
            if not isinstance(item, tuple | list) or len(item) < 2:
                raise DataError(
                    "The factory dataset must return (image, label) pairs or have a 'targets' attribute."
                )
            labels.append(int(item[1]))
    names = cfg.class_names or list(getattr(base, "classes", [])) or [str(c) for c in range(max(labels) + 1)]
    return AuditDataset(ids, labels, load, transform, [str(c) for c in names])


def build_dataset(cfg: DataConfig, *, thumbnail_size: int = 64) -> AuditDataset:
    """Build the dataset described by ``cfg`` (``limit`` applied).

    Raises
    ------
    DataError, ConfigError
        With the problem and the fix.
    """
    transform = Transform(cfg.transform, thumbnail_size)
    builders = {"idx": _idx_dataset, "image_folder": _folder_dataset, "factory": _factory_dataset}
    ds = builders[cfg.kind](cfg, transform)
    if len(ds) == 0:
        raise DataError("The dataset is empty. Check data.path / data.images.")
    if cfg.limit is not None and cfg.limit < len(ds):
        ds.ids, ds.labels = ds.ids[: cfg.limit], ds.labels[: cfg.limit]
    log.info("dataset: %d samples, %d classes", len(ds), len(ds.class_names))
    return ds

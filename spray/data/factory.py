"""The ``factory`` data source: a map-style dataset returned by the user's function.

The contract (also in docs/config.md and the README):

- ``data.factory: "package.module:function"`` is called as ``function(**data.factory_kwargs)``; the
  module is looked up in the config file's folder first, then on ``sys.path``.
- It returns an object with ``__len__`` and ``__getitem__(i)`` for ``i`` in ``0..len-1``.
- Item ``i`` is ``(image, label, ...)`` (the first two entries are used) or, when the dataset has a
  ``targets`` attribute with one label per sample, just the image.
- ``image``: a PIL image (decoded like a file), a numpy array or a tensor — ``(H, W)``, ``(C, H, W)`` or
  ``(H, W, C)`` (last axis 1–4 long, first axis longer), C 1 or 3 (4 or 2 with alpha) — **un-normalised**: uint8 is divided by 255,
  uint16 by 65535, floats are taken as ``[0, 1]``. Resizing and normalisation belong in
  ``data.transform``, so that thumbnails, the paste test and the ZBox rule see the real pixels.
- Optional attributes: ``targets`` (labels, avoids loading every item to learn them), ``classes`` or
  ``class_names`` (names in label order; ``data.class_names`` wins), ``sample_ids`` (stable, unique ids:
  flags and the incremental cache follow samples by id, so use ids that survive a reordering — file
  names, database keys; the default is the position), ``fingerprint`` (a string that changes whenever
  the data changes; without it every sample is read to fingerprint the dataset).
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image

from spray.config import DataConfig
from spray.data.channels import array_to_tensor
from spray.data.decoding import DecodeOptions, image_to_tensor, source_channels
from spray.data.sample import UnreadableSample, clean_reason, spread_positions
from spray.data.source import Source
from spray.errors import DataError
from spray.factories import call_factory, call_user
from spray.records import SkippedSample

log = logging.getLogger(__name__)

#: Items, spread over the dataset, read twice at build time to learn the usual size and channels, to catch
#: random augmentation (a flip with p = 0.5 passes 32 rereads once in 4 billion; RandomErasing with p = 0.1
#: once in 850) and to check ``targets`` against the labels the items carry.
PROBE_ITEMS = 32
#: Values this far outside [0, 1] mean the dataset normalises its images itself.
NORMALISED_MARGIN = 0.5


def _image_of(item: Any, has_targets: bool) -> Any:
    if isinstance(item, tuple | list):
        if not item:
            raise UnreadableSample("the factory dataset returned an empty tuple")
        return item[0]
    if not has_targets:
        raise DataError(
            f"data.factory: the dataset returned a {type(item).__name__}, not an (image, label) pair, and has "
            "no 'targets' attribute. Return (image, label) or give the dataset a 'targets' list."
        )
    return item


def _to_tensor(img: Any, decode: DecodeOptions) -> torch.Tensor:
    if isinstance(img, Image.Image):
        return image_to_tensor(img, decode.alpha_background, decode.high_bit_depth)
    if isinstance(img, np.ndarray | torch.Tensor):
        return array_to_tensor(img, decode.alpha_background)
    raise UnreadableSample(
        f"the factory dataset returned a {type(img).__name__}; expected a PIL image, a numpy array or a tensor"
    )


def label_index(value: Any) -> int:
    """The class index a dataset's label stands for: an int, a one-element tensor or array, a whole float
    (``3.0``) or a numeral string.

    Raises
    ------
    ValueError
        A fraction (``2.9999999`` is not rounded down to class 2, nor up), or several values (one-hot).
    TypeError
        Not a number at all.
    """
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    elif isinstance(value, np.ndarray | np.generic):
        value = value.item() if value.size == 1 else value.tolist()
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{value!r} is not a whole number")
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    if isinstance(value, list | tuple):
        raise ValueError(f"{len(value)} values, not one class index")
    return operator.index(value)


def _labels(base: Any, n: int) -> tuple[list[int], dict[int, str]]:
    """Every item's label, and why each item that raised when read for it cannot be read (its label
    placeholder is 0); from ``targets`` when the dataset has them (nothing read then)."""
    targets = getattr(base, "targets", None)
    if targets is not None:
        try:
            if len(targets) == n:
                return [label_index(t) for t in targets], {}
        except (TypeError, ValueError) as err:
            raise DataError(
                f"data.factory: the dataset's 'targets' are not integer labels ({err})."
            ) from None
        raise DataError(f"data.factory: the dataset has {n} samples but {len(targets)} 'targets'.")
    labels: list[int] = []
    failed: dict[int, str] = {}
    for i in range(n):
        try:
            item = base[i]
        except Exception as err:
            # one bad row (a missing file) is skipped and listed, as when the audit reads it; most rows failing
            # is the dataset's own problem, said with the first one's traceback below
            failed[i] = clean_reason(f"cannot be read: {type(err).__name__}: {err}", str(i))
            labels.append(0)
            continue
        if not isinstance(item, tuple | list) or len(item) < 2:
            raise DataError(
                f"data.factory: item {i} of the dataset is a {type(item).__name__}, not an (image, label) pair, "
                "and the dataset has no 'targets' attribute."
            )
        try:
            labels.append(label_index(item[1]))
        except (TypeError, ValueError):
            raise DataError(
                f"data.factory: item {i} has label {item[1]!r}, not an integer class index (a fraction is never "
                "rounded: return the class index as an int)."
            ) from None
    if 2 * len(failed) > n:
        call_user(
            f"data.factory: {len(failed)} of {n} items cannot be read; reading item {min(failed)} (to learn its "
            "label; a 'targets' attribute avoids this)",
            DataError, base.__getitem__, min(failed),
        )  # fmt: skip
    return labels, failed


class _Readable:
    """The factory's dataset without the items that could not be read (positions renumbered)."""

    def __init__(self, base: Any, keep: list[int]) -> None:
        self.base, self.keep = base, keep

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, j: int) -> Any:
        return self.base[self.keep[j]]


def _class_names(cfg: DataConfig, base: Any, labels: list[int]) -> list[str]:
    if bad := [(i, v) for i, v in enumerate(labels) if v < 0][:1]:
        raise DataError(f"data.factory: sample {bad[0][0]} has the negative label {bad[0][1]}.")
    names = cfg.class_names or _names_in_label_order(
        getattr(base, "class_names", None) or _torchvision_names(base) or getattr(base, "classes", None) or []
    )
    if not names:
        return [str(c) for c in range(max(labels, default=0) + 1)]
    if bad := [(i, v) for i, v in enumerate(labels) if v >= len(names)][:1]:
        raise DataError(
            f"data.factory: sample {bad[0][0]} has label {bad[0][1]} but there are {len(names)} class names."
        )
    return [str(c) for c in names]


def _torchvision_names(base: Any) -> list[str] | None:
    """The class names of a torchvision-style dataset in label order, from ``class_to_idx``: its ``classes``
    are sorted by name (torchvision's contract), which is the label order only when ``find_classes`` is not
    overridden."""
    mapping = getattr(base, "class_to_idx", None)
    if not isinstance(mapping, Mapping) or not mapping:
        return None
    names = [str(c) for c in _names_in_label_order(mapping)]
    classes = getattr(base, "classes", None)
    if classes is not None and [str(c) for c in classes] != names:
        log.info(
            "data.factory: the dataset's classes (%s, ...) are not in label order; its class_to_idx gives the "
            "names (%s, ...)",
            ", ".join(map(str, list(classes)[:3])),
            ", ".join(names[:3]),
        )
    return names


def _names_in_label_order(names: Any) -> list[Any]:
    """A dataset's class names as a list indexed by label: a sequence as it is; a mapping name → index
    (``class_to_idx``-style) or index → name put in index order.

    Raises
    ------
    DataError
        A mapping whose indices are not 0..n-1 each once.
    """
    if not isinstance(names, Mapping):
        return list(names)
    pairs = list(names.items())
    if all(isinstance(v, str) for _, v in pairs):
        pairs = [(v, k) for k, v in pairs]  # index -> name
    try:
        by_index = {label_index(i): str(name) for name, i in pairs}
    except (TypeError, ValueError):
        by_index = {}
    if sorted(by_index) != list(range(len(pairs))):
        raise DataError(
            f"data.factory: the dataset's class names are a mapping ({dict(list(names.items())[:4])!r}...) that "
            "is neither name -> index nor index -> name for the indices 0..n-1; give 'classes' as a list in label "
            "order, or set data.class_names."
        )
    return [by_index[i] for i in range(len(pairs))]


def _probe(
    base: Any, labels: list[int], has_targets: bool, decode: DecodeOptions, normalises: bool
) -> tuple[int | None, list[tuple[int, int]], list[str]]:
    """Most common channel count and the sizes of up to PROBE_ITEMS items spread over the dataset, each
    read twice, and the run's notes on the data: a warning about values outside [0, 1] (normalised images,
    or pixels on the 0-255 scale: the contract asks for un-normalised ones in [0, 1]).

    Raises
    ------
    DataError
        Values outside [0, 1] while ``data.transform`` normalises too (``normalises``); an item that is
        another image when read again; an item whose label is not its ``targets`` entry.
    """
    channels: list[int] = []
    sizes: list[tuple[int, int]] = []
    lo, hi = 0.0, 1.0
    n = len(labels)
    for i in spread_positions(n, PROBE_ITEMS):
        try:
            item = base[i]
            img = _image_of(item, has_targets)
            t = _to_tensor(img, decode)
        except DataError:
            raise
        except Exception:  # a bad item is reported when it is loaded, not here
            continue
        if has_targets:
            _check_target(item, i, labels[i])
        _check_same_twice(base, i, t, has_targets, decode)
        channels.append(source_channels(img.mode) if isinstance(img, Image.Image) else int(t.shape[0]))
        sizes.append((int(t.shape[-2]), int(t.shape[-1])))
        if t.numel() and not isinstance(img, Image.Image):
            lo, hi = min(lo, float(t.min())), max(hi, float(t.max()))
    note = _check_range(lo, hi, normalises)
    return (max((1, 3), key=channels.count) if channels else None), sizes, [] if note is None else [note]


def _check_target(item: Any, i: int, target: int) -> None:
    """Refuse a dataset whose ``targets`` entry is not the label its item carries: spray takes the labels
    from ``targets``, while training read them from the items."""
    if not isinstance(item, tuple | list) or len(item) < 2:
        return
    try:
        label = label_index(item[1])
    except (TypeError, ValueError):
        return  # not a class index: the label is not comparable (a dict of annotations, say)
    if label != target:
        raise DataError(
            f"data.factory: item {i} of the dataset carries label {label}, but the dataset's 'targets' say "
            f"{target}. spray reads the labels from 'targets' (so as not to load every item), and the model was "
            "trained on the labels the items carry: torchvision's ImageFolder with a target_transform keeps "
            "its 'targets' unmapped, for example. Make 'targets' hold the labels the items return (apply the "
            "target_transform to them), or remove the 'targets' attribute."
        )


def _check_range(lo: float, hi: float, normalises: bool) -> str | None:
    """Refuse (with ``normalises``) or warn about values of the probed items outside [0, 1]; the warning is
    returned for the run's record (its report, the dashboard and the nightly status say it, not only the log)."""
    if lo >= -0.01 and hi > 1 + NORMALISED_MARGIN:
        # no negative value: pixel values on the 0-255 scale in an int or float array, not normalised ones
        message = (
            f"data.factory: the dataset returns values in [{lo:.3g}, {hi:.3g}]: pixel values not scaled to [0, 1]. "
            "spray divides uint8 images by 255 and uint16 by 65535, and takes other integer and float arrays as "
            "they are. Return uint8 arrays (np.uint8, torch.uint8) or PIL images, or divide by 255"
        )
        if normalises:
            raise DataError(
                message + "; with data.transform.mean/std the model would see other inputs than in training."
            )
        message += " (spray takes them as they are: thumbnails saturate, and a model trained on [0, 1] sees other inputs)"
        log.warning("%s", message)
        return message
    # Far outside [0, 1], not a resize's overshoot (bicubic rings by a few percent): mean/std applied.
    if (lo < -NORMALISED_MARGIN or hi > 1 + NORMALISED_MARGIN) and normalises:
        raise DataError(
            f"data.factory: the dataset returns values in [{lo:.3g}, {hi:.3g}], outside [0, 1]: they look "
            "normalised already, and data.transform.mean/std would normalise them a second time, so the model "
            "would see other inputs than in training. Remove the normalisation (e.g. transforms.Normalize) "
            "from the dataset and keep data.transform.mean/std (thumbnails and the paste test then see the "
            "real pixels), or remove data.transform.mean/std."
        )
    if lo < -0.01 or hi > 1.01:
        message = (
            f"data.factory: the dataset returns values in [{lo:.3g}, {hi:.3g}], outside [0, 1]; spray takes them "
            "as they are. Return un-normalised images and put mean/std in data.transform (thumbnails and the "
            "ZBox rule assume [0, 1])."
        )
        log.warning("%s", message)
        return message
    return None


def _check_same_twice(
    base: Any, i: int, first: torch.Tensor, has_targets: bool, decode: DecodeOptions
) -> None:
    """Refuse a dataset that gives another image each time an item is read (random augmentation): the
    heatmap, the paste test and the thumbnail would each see another view, and every run other content."""
    try:
        again = _to_tensor(_image_of(base[i], has_targets), decode)
    except Exception:  # an item that fails the second time is reported when it is loaded
        return
    if again.shape != first.shape or not torch.equal(torch.nan_to_num(again), torch.nan_to_num(first)):
        raise DataError(
            f"data.factory: item {i} of the dataset is a different image each time it is read (shapes "
            f"{tuple(first.shape)} and {tuple(again.shape)}): the dataset applies random augmentation "
            "(RandomCrop, RandomHorizontalFlip, ColorJitter, ...). spray audits what the model sees at test "
            "time, and every read must give the same image: build the dataset with its evaluation transform "
            "(or none; put resizing and mean/std in data.transform)."
        )


def factory_source(cfg: DataConfig, decode: DecodeOptions) -> Source:
    """The ``factory`` data source (the contract is in the module docstring)."""
    assert cfg.factory is not None
    base = call_factory(cfg.factory, cfg.factory_kwargs, "data.factory", DataError)
    if not hasattr(base, "__getitem__") or not hasattr(base, "__len__"):
        raise DataError(
            f"data.factory returned a {type(base).__name__}, not a map-style dataset (with __len__ and __getitem__)."
        )
    n = call_user("data.factory: len(dataset)", DataError, len, base)
    has_targets = getattr(base, "targets", None) is not None
    # a tensor's or an array's elements as their values ("1000", not "tensor(1000)")
    ids = [str(s.item() if hasattr(s, "item") else s) for s in getattr(base, "sample_ids", range(n))]
    if len(ids) != n:
        raise DataError(f"data.factory: the dataset has {n} samples but {len(ids)} sample_ids.")
    if len(set(ids)) != n:
        from collections import Counter

        twice = [(s, c) for s, c in Counter(ids).most_common() if c > 1]
        shown = ", ".join(f"{s!r} ({c}×)" for s, c in twice[:3])
        raise DataError(
            f"data.factory: the dataset's sample_ids are not unique: {len(twice)} ids are used more than once "
            f"({shown}{', ...' if len(twice) > 3 else ''}); every sample needs its own id (flags and caches are "
            "keyed by it): derive it from the file path or the record's index."
        )
    labels, failed = _labels(base, n)
    skipped = [SkippedSample(ids[i], why) for i, why in sorted(failed.items())]
    rows: Any = base
    if failed:
        log.warning("data.factory: %d items cannot be read and are skipped (e.g. %s: %s)", len(failed),
                    skipped[0].sample_id, skipped[0].reason)  # fmt: skip
        keep = [i for i in range(n) if i not in failed]
        ids, labels, rows = [ids[i] for i in keep], [labels[i] for i in keep], _Readable(base, keep)

    def load(i: int) -> tuple[torch.Tensor, bytes | None]:
        item = rows[i]
        if has_targets:
            # every item, not only the probed ones: a few stale 'targets' entries are otherwise audited under
            # the wrong class without a word, and the item is read here anyway
            _check_target(item, rows.keep[i] if isinstance(rows, _Readable) else i, labels[i])
        return _to_tensor(_image_of(item, has_targets), decode), None

    t = cfg.transform
    channels, sizes, notes = _probe(
        rows, labels, has_targets, decode, t.mean is not None and t.std is not None
    )
    fp = getattr(base, "fingerprint", None)
    return Source(
        sample_ids=ids,
        labels=labels,
        class_names=_class_names(cfg, base, labels),
        loader=load,
        channels=channels,
        input_sizes=sizes,
        fingerprint=None if fp is None else str(fp),
        pre_skipped=skipped,
        notes=notes,
    )

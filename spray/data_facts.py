"""What ``spray init`` finds in the data it is given: an image folder's classes and image sizes, an IDX file
and its labels file, a dataset factory's classes and sizes (:func:`inspect_data`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spray.config import DataConfig
from spray.errors import ConfigError, DataError
from spray.factories import SPEC_PATTERN


@dataclass
class DataFacts:
    """What :func:`inspect_data` found."""

    section: dict[str, Any]
    n_samples: int | None = None
    classes: list[str] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    grey: bool = False
    notes: list[str] = field(default_factory=list)


def rel_path(p: Path, config_dir: Path) -> str:
    """``p`` relative to the config's folder when it lies below it, else absolute (the config stays portable)."""
    p = p.resolve()
    try:
        return p.relative_to(config_dir.resolve()).as_posix()
    except ValueError:
        return str(p)


def _idx_labels_for(images: Path) -> Path | None:
    name = images.name.replace("images", "labels").replace("idx3", "idx1")
    guess = images.with_name(name)
    return guess if guess != images and guess.is_file() else None


def dataset_name(label: str, where: Path) -> str:
    """``data.name`` for a new config: ``label`` plus 8 hex digits of ``where``'s absolute path.

    The name is the key of the dataset's flags and runs. A folder's name alone ("train") is shared by many
    projects, whose flags would then mix in a shared database; the absolute path alone changes when the
    project moves, cutting the flags and the history off. Written once into the config, this is neither.
    """
    digest = hashlib.sha256(str(Path(where).resolve()).encode()).hexdigest()[:8]
    return f"{label}-{digest}"


def _idx_rank(path: Path) -> int | None:
    """The rank of an IDX file (gzipped or not; 1 for a labels file, 3 or 4 for images), None for another
    file: IDX files start with two zero bytes, a type code and the rank."""
    import gzip
    import zlib

    try:
        with path.open("rb") as fh:
            head = fh.read(4)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as gz:
                head = gz.read(4)
    except (OSError, EOFError, zlib.error):
        return None
    idx = len(head) == 4 and head[:2] == b"\0\0" and head[2] in (8, 9, 11, 12, 13, 14) and 1 <= head[3] <= 4
    return head[3] if idx else None


def _looks_like_idx(path: Path) -> bool:
    """Whether the file (gzipped or not) starts like an IDX file."""
    return _idx_rank(path) is not None


def _labels_given_as_data(spec: str, path: Path) -> ConfigError:
    """The error for an IDX labels file (rank 1: one number per image) given as ``--data``, naming the images
    file beside it when there is one (the labels file then needs no --labels: it is found next to it)."""
    name = path.name.replace("labels", "images").replace("idx1", "idx3")
    images = path.with_name(name)
    found = images != path and images.is_file()
    return ConfigError(
        f"--data {spec!r} is an IDX labels file (one number per image), not the images: "
        + (
            f"pass the images file, --data {str(images)!r} (this labels file is found next to it)."
            if found
            else f"pass the IDX images file with --data and this file with --labels {spec!r}."
        )
    )


def inspect_data(spec: str, config_dir: Path, *, labels: Path | None = None) -> DataFacts:
    """Describe the dataset named by ``spec`` (folder, IDX images file or factory) as a ``data`` section.

    Raises
    ------
    ConfigError
        When ``spec`` is none of these, or the IDX labels file cannot be found.
    """
    from spray.data.folder import (
        IMAGE_EXTENSIONS,
        _probe,
        list_image_folder,
        loader_differences,
        reading_notes,
    )
    from spray.data.idx import read_idx

    p = Path(spec).expanduser()
    if p.is_dir():
        listing = list_image_folder(p, "--data")
        if not listing.sample_ids:
            raise DataError(f"--data {spec!r}: no image files below its class folders {listing.classes[:8]}.")
        probe = _probe(p, listing.sample_ids)
        facts = DataFacts(
            {"kind": "image_folder", "path": rel_path(p, config_dir), "name": dataset_name(p.resolve().name, p)},
            len(listing.sample_ids), listing.classes, probe.sizes, probe.channels == 1,
        )  # fmt: skip
        facts.notes += [f"empty class folder {c!r} (still a class)" for c in listing.empty_classes]
        facts.notes += loader_differences(probe, listing.sample_ids) + reading_notes(probe, "ignore")
        return facts
    if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
        raise ConfigError(
            f"--data {spec!r} is one image; give the folder that holds a subfolder per class "
            f"({p.resolve().parent.parent}/<class>/<image>, torchvision's ImageFolder layout)."
        )
    if p.is_file() and not _looks_like_idx(p):
        archive = any(p.name.lower().endswith(x) for x in (".zip", ".tar", ".tar.gz", ".tgz", ".7z", ".rar"))
        raise ConfigError(
            f"--data {spec!r} is a file, but not an IDX images file (its first bytes are not IDX's)"
            + (": an archive? Unpack it into root/<class>/<image> and give that root" if archive else "")
            + ". Give the root of an image folder (root/<class>/<image>), an IDX images file, or a dataset "
            "factory 'package.module:function'."
        )
    if p.is_file() and _idx_rank(p) == 1:
        raise _labels_given_as_data(spec, p)
    if p.is_file():
        lab = labels or _idx_labels_for(p)
        if lab is None:
            raise ConfigError(
                f"--data {spec!r} looks like an IDX images file: give its labels file with --labels."
            )
        images, y = read_idx(p), read_idx(lab)
        n_classes = int(y.max()) + 1 if len(y) else 0
        section: dict[str, Any] = {
            "kind": "idx",
            "images": rel_path(p, config_dir),
            "labels": rel_path(lab, config_dir),
            "name": dataset_name(p.name.split(".")[0], p),
        }
        grey = images.ndim == 3 or images.shape[-1] == 1
        return DataFacts(section, len(images), [str(c) for c in range(n_classes)], [images.shape[1:3]], grey)
    if SPEC_PATTERN.match(spec):
        from spray.data.decoding import DecodeOptions
        from spray.data.factory import factory_source
        from spray.factories import locate_module

        locate_module(spec, "--data", config_dir)
        src = factory_source(DataConfig(kind="factory", factory=spec), DecodeOptions())
        name = dataset_name(spec.split(":")[-1], config_dir / spec)
        section = {"kind": "factory", "factory": spec, "name": name}
        return DataFacts(section, len(src.sample_ids), src.class_names, src.input_sizes, src.channels == 1)
    raise ConfigError(
        f"--data {spec!r} is not a folder, a file or a 'package.module:function' factory. Give the root of "
        "an image folder (root/<class>/<image>), an IDX images file, or a dataset factory."
    )

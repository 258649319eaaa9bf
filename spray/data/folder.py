"""The ``image_folder`` data source: ``root/<class>/<image>`` (torchvision's ImageFolder layout).

Class ``c`` is the ``c``-th class folder in sorted order, as in ImageFolder, so the labels line up with
the outputs of a model trained on that layout. An empty class folder therefore still counts as a class
(dropping it would shift every later label); spray logs a warning naming it.

Files are found recursively; symlinked folders are followed, and a symlink that leads back into one of
its own parent folders (a loop) or points at nothing is listed in the run's skipped samples instead of
being followed or silently ignored. Hidden files (``.name``) are ignored; a file whose extension is not
an image extension is listed as skipped, and so is an image lying directly in the root (it has no class).
A root without class folders is refused with what spray expects. A single class folder is a dataset of
one class (label 0): it fits a model with one output; for a model with more, its label would be wrong,
and :meth:`spray.config.AuditConfig.check_class_count` refuses it.
"""

from __future__ import annotations

import itertools
import logging
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from spray.config import DataConfig
from spray.data.decoding import (
    HIGH_BIT_MODES,
    DecodeOptions,
    HighBitDepth,
    _pillow_size_check_off,
    decode_image,
    source_channels,
)
from spray.data.sample import spread_positions
from spray.data.source import Source
from spray.errors import ConfigError, DataError
from spray.records import SkippedSample
from spray.runs.layout import CACHE_DIR, FLAGS_DB, LATEST, LOCK, STAGING_DIR, WORK_DIR

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}

#: Image extensions that torchvision's ImageFolder does not list either (a model trained through it never
#: saw such a file): skipped with that reason, not called "not an image".
JPEG_ALIASES = {".jfif", ".jpe", ".pjpeg", ".pjp"}
UNLISTED_IMAGE_EXTENSIONS = JPEG_ALIASES | {".avif", ".heic", ".heif", ".jp2", ".ico"}


def _not_listed(suffix: str) -> str:
    """Why a file of this extension is not audited."""
    if suffix.lower() in UNLISTED_IMAGE_EXTENSIONS:
        fix = "rename it to .jpg" if suffix.lower() in JPEG_ALIASES else "convert it to PNG"
        return (
            f"an image, but extension {suffix!r} is not one torchvision's ImageFolder lists (a model trained "
            f"through it never saw the file): not audited; {fix} to audit it"
        )
    return f"not an image file (extension {suffix!r})" if suffix else "not an image file (no extension)"


#: Files whose headers are read to learn the dataset's usual size and channels (spread over the list).
PROBE_FILES = 32


@dataclass
class FolderListing:
    """What :func:`list_image_folder` found."""

    classes: list[str]
    sample_ids: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    skipped: list[SkippedSample] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)


@dataclass
class FolderProbe:
    """What the headers of up to PROBE_FILES files of an image folder say (see :func:`_probe`)."""

    channels: int | None
    sizes: list[tuple[int, int]]
    #: How many of the depth-probed files hold more than 8 bits per value (Pillow's ``I;16`` modes, ``I``, ``F``).
    sixteen_bit: int = 0
    #: How many files were read for their bit depth (PNG, PNM and TIFF ones, at most DEPTH_PROBE_FILES).
    probed: int = 0
    #: Integer ones among ``sixteen_bit`` decoded for their largest value (at most VALUE_PROBE_FILES) ...
    valued: int = 0
    #: ... and how many of those hold no value above 255 (8-bit values stored in a 16-bit file) ...
    eight_bit_values: int = 0
    #: ... or none above 4095 (12-bit data): read at 1/16 of full scale at most.
    twelve_bit_values: int = 0
    #: Files among the depth probe's spread (every format) with an EXIF orientation other than upright ...
    rotated: int = 0
    #: ... and with several frames or pages (only the first is read, as ImageFolder reads it) ...
    multi_frame: int = 0
    #: ... of how many.
    spread: int = 0
    #: Files among the first PROBE_FILES with transparent pixels (their stored colours are what is read).
    transparent: int = 0
    #: JPEGs among the first PROBE_FILES above ``data.max_image_pixels``, decoded at a reduced scale.
    drafted: int = 0


def _is_runs_dir(d: Path) -> bool:
    """A folder that spray publishes runs into: its lock file, and its run cache or nothing but spray's own
    entries (a first audit lists the data after taking the lock and before making the cache)."""
    if not (d / LOCK).is_file():
        return False
    if (d / CACHE_DIR).is_dir():
        return True
    try:
        entries = list(os.scandir(d))
    except OSError:
        return False
    from spray.runs.publish import list_runs

    own = {LOCK, WORK_DIR, STAGING_DIR, LATEST} | {p.name for p in list_runs(d)}
    return all(e.name in own or e.name.startswith(FLAGS_DB) for e in entries)


#: Folders that file managers and NAS boxes add beside images (their thumbnails are not the dataset's).
HIDDEN_FOLDERS = frozenset({"@eaDir", "__MACOSX", "$RECYCLE.BIN", "#recycle"})


def _walk(
    folder: Path,
    rel: str,
    ancestors: frozenset[tuple[int, int]],
    out: list[str],
    skipped: list[SkippedSample],
) -> None:
    """Depth-first, name-sorted walk below ``folder`` (ids relative to the root, like a sorted rglob)."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as err:
        skipped.append(SkippedSample(rel, f"folder cannot be listed ({err.strerror or err})"))
        return
    for e in entries:
        if not _utf8(e.name):
            # a hidden entry is left out whatever its name, so renaming it would change nothing
            why = "hidden (its name starts with '.'): not audited" if e.name.startswith(".") else NOT_UTF8
            skipped.append(SkippedSample(f"{rel}/{printable_name(e.name)}", why))
            continue
        child = f"{rel}/{e.name}"
        try:
            is_dir = e.is_dir(follow_symlinks=True)
            is_file = not is_dir and e.is_file(follow_symlinks=True)
        except OSError as err:  # e.g. ELOOP on a symlink to itself
            skipped.append(SkippedSample(child, f"cannot be read ({err.strerror or err})"))
            continue
        if is_dir and (e.name.startswith(".") or e.name in HIDDEN_FOLDERS):
            # thumbnail caches and the like (.thumbnails, Synology's @eaDir), as hidden files are: said once
            skipped.append(SkippedSample(child, "hidden or system folder: not audited, nor anything in it"))
            continue
        if is_dir:
            st = os.stat(e.path)
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                target = os.readlink(e.path) if e.is_symlink() else e.path
                skipped.append(
                    SkippedSample(
                        child, f"symlink loop: points back to its parent folder {target!r}; not followed"
                    )
                )
                continue
            _walk(Path(e.path), child, ancestors | {key}, out, skipped)
        elif is_file:
            if not e.name.startswith("."):
                out.append(child)
            elif e.name.lower().endswith(tuple(IMAGE_EXTENSIONS)):
                # said, not silently dropped (torchvision's ImageFolder would load it, by the name's ending: ".jpg"
                # itself too); .DS_Store and the like are not
                skipped.append(SkippedSample(child, "hidden file (its name starts with '.'): not audited"))
        elif e.is_symlink():
            skipped.append(
                SkippedSample(child, f"broken symlink (its target {os.readlink(e.path)!r} does not exist)")
            )
        else:
            skipped.append(SkippedSample(child, "not a regular file"))


def _class_folders(root: Path, what: str) -> list[str]:
    """The class folders' names, sorted: the folders of ``root`` but hidden, system and spray's runs folders
    (each said aloud); a name that is not UTF-8 is refused (leaving the class out would shift the labels)."""
    try:
        every = [d for d in root.iterdir() if d.is_dir()]
    except OSError as err:
        raise DataError(f"{what} {str(root)!r} cannot be listed: {err.strerror or err}.") from None
    folders = [d for d in every if not d.name.startswith(".")]
    for d in folders:
        if not _utf8(d.name):
            raise DataError(
                f"{what}: the class folder {printable_name(d.name)!r} has a name that is not valid UTF-8 "
                f"(bytes of another encoding, e.g. from an old zip archive). {NOT_UTF8_FIX}"
            )
    _say_hidden_classes([d for d in every if d.name.startswith(".")])
    for d in [d for d in folders if d.name in HIDDEN_FOLDERS]:
        # a NAS's thumbnails (@eaDir sorts first: every label would shift by one) or a zip's __MACOSX
        log.warning(
            "%s is a system folder (file manager or NAS thumbnails), not a class: left out of the classes "
            "(torchvision's ImageFolder would count it; if the model was trained that way, its labels are "
            "shifted: remove the folder there too)",
            d,
        )
        folders.remove(d)
    for d in [d for d in folders if _is_runs_dir(d)]:
        # `spray audit` run inside the image folder writes its runs there: they are not a class.
        log.warning("%s is a spray runs directory, not a class folder: left out of the classes", d)
        folders.remove(d)
    return sorted(d.name for d in folders)


def list_image_folder(root: Path, what: str = "data.path") -> FolderListing:
    """Classes (sorted folder names) and the files below each, with the entries that are not samples.

    ``what`` names the folder in messages (``--data`` for ``spray init``).

    Raises
    ------
    DataError
        When ``root`` has no class folders.
    """
    classes = _class_folders(root, what)
    loose = _loose_images(root)
    if not classes:
        held = f"its {len(loose)} image files lie directly in it" if loose else "it holds no image files"
        raise DataError(
            f"{what} {str(root)!r} has no class subfolders ({held}). spray audits each class on its own and "
            "takes an image's class from the folder it is in: root/<class>/<image>, torchvision's ImageFolder "
            "layout, the labels being the folders' positions in name order. Move the images into one folder "
            f"per class of the model (e.g. root/cat/..., root/dog/...), and make {what} the folder above them."
        )
    if all(c.isdecimal() for c in classes) and classes != sorted(classes, key=int):
        # A model trained with label = int(folder name) would be explained for the wrong classes.
        log.warning(
            "the class folders of %s are numbers; spray gives them labels in name order, as torchvision's "
            "ImageFolder does (%s, ...), not in numeric order. If your model's label i is the folder 'i', "
            "rename the folders with leading zeros (00, 01, ..., 10) so that both orders agree.",
            root,
            ", ".join(f"{c} → {i}" for i, c in enumerate(classes[:4])),
        )
    listing = FolderListing(classes)
    listing.skipped += [
        SkippedSample(
            name, "image directly in data.path, not in a class folder: move it into its class's folder"
        )
        for name in loose
    ]
    root_stat = os.stat(root)
    for c, cls in enumerate(classes):
        st = os.stat(root / cls)
        files: list[str] = []
        _walk(
            root / cls,
            cls,
            frozenset({(root_stat.st_dev, root_stat.st_ino), (st.st_dev, st.st_ino)}),
            files,
            listing.skipped,
        )
        n_images = 0
        for rel in files:
            suffix = Path(rel).suffix
            if suffix.lower() not in IMAGE_EXTENSIONS:
                # "a.jpg." has no extension for Python (nor for ImageFolder): said as such, not as "'none'"
                listing.skipped.append(SkippedSample(rel, _not_listed(suffix or rel[len(rel.rstrip(".")) :])))
                continue
            listing.sample_ids.append(rel)
            listing.labels.append(c)
            n_images += 1
        if n_images == 0:
            listing.empty_classes.append(cls)
    return listing


#: Hidden folders of version control and data tools: never a class, and their trees can be huge.
TOOL_FOLDERS = frozenset({".git", ".hg", ".svn", ".dvc", ".venv"})
#: Entries of a hidden folder looked at for an image (a cap: the listing runs on every rank, every run).
HIDDEN_SCAN = 2000


def _say_hidden_classes(hidden: list[Path]) -> None:
    """Warn of hidden root folders holding images: torchvision's ImageFolder lists them too, and one holding
    images is its class 0 (``.ipynb_checkpoints``), while spray leaves them out."""
    for d in hidden:
        if d.name not in TOOL_FOLDERS and _holds_images(d):
            log.warning(
                "%s is a hidden folder holding images: left out of the classes (torchvision's ImageFolder counts "
                "it as a class, the first in name order; if the model was trained that way, its labels are "
                "shifted: remove the folder there too)",
                d,
            )


def _holds_images(folder: Path) -> bool:
    """Whether an image file lies below ``folder`` among its first :data:`HIDDEN_SCAN` entries."""
    try:
        entries = itertools.islice(folder.rglob("*"), HIDDEN_SCAN)
        return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in entries)
    except OSError:
        return False


def _loose_images(root: Path) -> list[str]:
    """Names of the image files directly in ``root`` (an image folder's images belong in class folders)."""
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return []
    return [
        printable_name(e.name)
        for e in entries
        if not e.name.startswith(".") and Path(e.name).suffix.lower() in IMAGE_EXTENSIONS and _is_file(e)
    ]


#: How to rename files whose names are in another encoding than UTF-8.
NOT_UTF8_FIX = (
    "Rename it to UTF-8, e.g. `convmv -f latin1 -t utf8 -r --notest FOLDER` (the names are stored in the run's "
    "tables, reports and flags, which need valid text)"
)
NOT_UTF8 = f"its name is not valid UTF-8 (bytes of another encoding): not audited. {NOT_UTF8_FIX}"


def _utf8(name: str) -> bool:
    """Whether a name listed from the file system is valid UTF-8 (Python keeps other bytes as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable_name(name: str) -> str:
    """A file name with the bytes that are not UTF-8 written as escapes (``caf\\xe9.png``)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file(follow_symlinks=True)
    except OSError:
        return False


#: Files of the formats that can hold more than 8 bits per value whose headers are read for it: a few
#: 16-bit files among 8-bit ones are found (PROBE_FILES alone missed 3 among 93), for ~0.1 ms a file.
DEPTH_PROBE_FILES = 2000
DEEP_FORMATS = (".png", ".pgm", ".ppm", ".tif", ".tiff")
#: Integer high-bit files decoded for their largest value (8-bit values in 16-bit files read almost black).
VALUE_PROBE_FILES = 64


#: Formats that can hold several frames or pages (GIF, TIFF, WebP, APNG).
MULTI_FRAME_FORMATS = (".gif", ".tif", ".tiff", ".webp", ".png")
_EXIF_ORIENTATION = 0x0112


#: Largest image (pixels) whose values the probe decodes (alpha, 16-bit maxima): headers only above it.
PROBE_PIXELS = 16_000_000


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1: upright) from the header only: ``getexif`` decodes a whole PNG to find it."""
    if im.format in ("JPEG", "MPO", "TIFF"):
        return int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    raw = im.info.get("exif")  # PNG's eXIf chunk before the pixels, WebP's EXIF chunk
    if not isinstance(raw, bytes | bytearray):
        return 1
    exif = Image.Exif()
    try:
        exif.load(bytes(raw))
    except Exception:  # a damaged EXIF block says nothing about the pixels
        return 1
    return int(exif.get(_EXIF_ORIENTATION, 1) or 1)


def _transparent(im: Image.Image) -> bool:
    """Whether an image has pixels that are not opaque (decodes its alpha)."""
    if im.size[0] * im.size[1] > PROBE_PIXELS:
        return False
    if im.mode in ("RGBA", "LA", "PA") or (im.mode in ("1", "L", "P", "RGB") and "transparency" in im.info):
        alpha = im.convert("RGBA").getchannel("A")
        return bool(np.asarray(alpha).min(initial=255) < 255)
    return False


def _probe(root: Path, sample_ids: list[str], draft_above: int | None = None) -> FolderProbe:
    """Most common channel count, the ``(H, W)`` sizes and the transparent files among up to PROBE_FILES
    files; the files with more than 8 bits per value, an EXIF orientation or several frames among up to
    DEPTH_PROBE_FILES (headers only)."""
    channels: list[int] = []
    sizes: list[tuple[int, int]] = []
    sixteen = read = rotated = frames = transparent = drafted = 0
    largest: list[int] = []
    shape_rows = set(spread_positions(len(sample_ids), PROBE_FILES))
    spread = spread_positions(len(sample_ids), DEPTH_PROBE_FILES)
    depth_rows = {i for i in spread if sample_ids[i].lower().endswith(DEEP_FORMATS)}
    with _pillow_size_check_off():
        for i in sorted(shape_rows | set(spread)):  # each file opened once
            try:
                with Image.open(root / sample_ids[i]) as im:
                    if i in shape_rows:
                        channels.append(source_channels(im.mode))
                        sizes.append((im.size[1], im.size[0]))
                        transparent += _transparent(im)
                        big = draft_above is not None and im.size[0] * im.size[1] > draft_above
                        drafted += big and im.format == "JPEG"
                    rotated += _orientation(im) not in (0, 1)
                    multi = sample_ids[i].lower().endswith(MULTI_FRAME_FORMATS)
                    frames += multi and getattr(im, "n_frames", 1) > 1
                    if i in depth_rows:
                        sixteen += im.mode in HIGH_BIT_MODES
                        read += 1
                        small = im.size[0] * im.size[1] <= PROBE_PIXELS
                        if small and im.mode in HIGH_BIT_MODES - {"F"} and len(largest) < VALUE_PROBE_FILES:
                            largest.append(int(np.asarray(im).max(initial=0)))
            except Exception:  # an unreadable file is reported when it is loaded, not here
                continue
    common = max((1, 3), key=channels.count) if channels else None
    eight, twelve = sum(v <= 255 for v in largest), sum(255 < v <= 4095 for v in largest)
    return FolderProbe(
        common,
        sizes,
        sixteen,
        read,
        len(largest),
        eight,
        twelve,
        rotated,
        frames,
        len(spread),
        transparent,
        drafted,
    )


def loader_differences(
    probe: FolderProbe, sample_ids: list[str], high_bit_depth: HighBitDepth = "scale"
) -> list[str]:
    """Sentences on files that torchvision's ImageFolder reads differently from spray (empty when none).

    A model trained through ImageFolder never saw a ``.gif`` (not in its extensions), and saw a 16-bit
    image clipped at 255 by ``convert("RGB")``, while spray reads it at its true scale (unless
    ``data.transform.high_bit_depth`` is ``"clip"``).
    """
    notes: list[str] = []
    gifs = sum(s.lower().endswith(".gif") for s in sample_ids)
    if gifs:
        notes.append(
            f"{gifs} .gif file{'s are' if gifs > 1 else ' is'} audited; torchvision's ImageFolder does not list "
            ".gif files, so a model trained through it never saw them (move them out of the folder to audit "
            "what it was trained on)"
        )
    deep = (
        f"{probe.sixteen_bit} of {probe.probed} probed files are 16-bit grey images (or 32-bit integer or float "
        "ones); "
    )
    if probe.sixteen_bit and high_bit_depth == "clip":
        notes.append(
            deep
            + "data.transform.high_bit_depth: clip reads them as torchvision's ImageFolder does (every value "
            "above 255 white)"
        )
    elif probe.sixteen_bit:
        notes.append(
            deep + "spray reads them at their true scale (a 16-bit value / 65535; floats in [0, 1] as they "
            "are; other 32-bit ones are skipped with the reason), while torchvision's ImageFolder loader "
            "(convert('RGB')) clips every value above 255 to white (a float one to black or white): if the model "
            "was trained through it, it saw other images than "
            "the audit shows it (its accuracy on its own images, checked by the audit, tells)"
        )
        if n := probe.eight_bit_values:
            notes.append(
                f"{n} of the {probe.valued} 16-bit files read for their values {'holds' if n == 1 else 'hold'} "
                "none above 255 (8-bit values stored in 16 bits): at the 16-bit scale they read almost black "
                "(at most 255/65535); if the model was trained on them through ImageFolder or another 8-bit "
                "loader, set data.transform.high_bit_depth: clip"
            )
        if n := probe.twelve_bit_values:
            notes.append(
                f"{n} of the {probe.valued} 16-bit files read for their values {'holds' if n == 1 else 'hold'} "
                "none above 4095 (12-bit data?): at the 16-bit scale they read at 1/16 of full brightness at "
                "most; if the model was trained on them rescaled, save them rescaled to 16 bits (or as 8 bits)"
            )
    return notes


def reading_notes(probe: FolderProbe, alpha_background: str) -> list[str]:
    """Sentences on files spray reads as torchvision's ImageFolder does, but a training pipeline may not:
    an EXIF orientation (read as stored), several frames (the first read), with ``alpha_background``
    ``"ignore"`` transparent pixels (their stored colours read); and JPEGs above ``data.max_image_pixels``,
    which spray decodes at a reduced scale where ImageFolder would decode them in full."""
    notes: list[str] = []
    if probe.rotated:
        notes.append(
            f"{probe.rotated} of {probe.spread} probed files carry an EXIF orientation (shown turned or mirrored "
            "by image viewers): spray reads them as stored, as torchvision's ImageFolder does; if the model was "
            "trained on them turned upright (ImageOps.exif_transpose), turn the files themselves"
        )
    if probe.multi_frame:
        notes.append(
            f"{probe.multi_frame} of {probe.spread} probed files hold several frames or pages (animated GIF, "
            "multi-page TIFF): only the first is audited, as ImageFolder reads them"
        )
    if probe.drafted:
        notes.append(
            f"{probe.drafted} of {len(probe.sizes)} probed files are JPEGs above data.max_image_pixels: they are "
            "decoded at a reduced scale (1/2 to 1/8, in the JPEG's own frequency domain) before the resize, close "
            "to but not the same pixels as a full decode and resize (raise data.max_image_pixels to decode them "
            "in full)"
        )
    if probe.transparent and alpha_background == "ignore":
        notes.append(
            f"{probe.transparent} of {len(probe.sizes)} probed files have transparent pixels: with "
            "data.transform.alpha_background: ignore the model sees the colours stored under them, as through "
            "ImageFolder; set 'black' or 'white' if it was trained on the images composited"
        )
    return notes


def _folder_named(name: str, classes: list[str]) -> int | None:
    """The position of the class folder ``name`` names: the same name, else the one folder equal to it up to
    letter case and Unicode form (a list that only recases folder names still names them)."""
    if name in classes:
        return classes.index(name)
    key = unicodedata.normalize("NFC", name).strip().casefold()
    hits = [i for i, c in enumerate(classes) if unicodedata.normalize("NFC", c).strip().casefold() == key]
    return hits[0] if len(hits) == 1 else None


def folder_source(cfg: DataConfig, decode: DecodeOptions) -> Source:
    """The ``image_folder`` data source (see the module docstring)."""
    assert cfg.path is not None
    root = Path(cfg.path)
    listing = list_image_folder(root)
    classes = listing.classes
    if cfg.class_names is not None and len(cfg.class_names) != len(classes):
        raise ConfigError(
            f"data.class_names has {len(cfg.class_names)} names but data.path {str(root)!r} has "
            f"{len(classes)} class folders ({', '.join(classes[:12])}{', ...' if len(classes) > 12 else ''})."
        )
    named = [(i, n, _folder_named(n, classes)) for i, n in enumerate(cfg.class_names or [])]
    moved = [(i, n, j) for i, n, j in named if j is not None and j != i]
    if moved:
        i, name, j = moved[0]
        raise ConfigError(
            f"data.class_names names the folders in another order than spray labels them: label {i} is the "
            f"folder {classes[i]!r} (labels follow the folders' name order, as in torchvision's ImageFolder), "
            f"but data.class_names calls it {name!r}, the name of another folder ({classes[j]!r}). "
            "data.class_names only renames; "
            "to match the model's class order, rename the folders (e.g. 0_triangle, 1_square, ...)."
        )
    for cls in listing.empty_classes:
        log.warning(
            "class folder %r (label %d) has no image files; it still counts as a class so that the labels of "
            "the other folders match the model's outputs",
            str(root / cls),
            classes.index(cls),
        )
    if listing.skipped:
        # not only non-images: hidden files, loose images, broken links, names that are not UTF-8
        log.warning(
            "%d entries of %s are left out (each with its reason in the run report)",
            len(listing.skipped),
            root,
        )
    ids = listing.sample_ids

    def read(i: int) -> bytes:
        return (root / ids[i]).read_bytes()

    def load(i: int) -> tuple[torch.Tensor, bytes | None]:
        raw = read(i)
        return decode_image(raw, decode), raw

    drafts = decode.max_pixels if decode.draft_side is not None else None
    probe = _probe(root, ids, drafts) if ids else FolderProbe(None, [])
    notes = loader_differences(probe, ids, cfg.transform.high_bit_depth)
    notes += reading_notes(probe, cfg.transform.alpha_background)
    for note in notes:
        # a warning, shown under -q too: a .gif's findings are on images the model may never have seen, and a
        # 16-bit file may be a different image from the one trained on
        log.warning("%s: %s", root, note)
    return Source(
        sample_ids=ids,
        labels=listing.labels,
        class_names=cfg.class_names or classes,
        loader=load,
        raw_reader=read,
        pre_skipped=listing.skipped,
        channels=probe.channels,
        input_sizes=probe.sizes,
        notes=notes,
    )

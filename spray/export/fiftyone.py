"""Export a run as a FiftyOne dataset folder, with spray's findings and flags as per-sample fields.

FiftyOne's own importer reads it::

    import fiftyone as fo
    ds = fo.Dataset.from_dir("OUT", dataset_type=fo.types.FiftyOneDataset, name="spray-demo")
    ds.match_tags("suspicious")                      # members of suspicious clusters
    ds.sort_by("spray_suspicion", reverse=True)      # most suspicious samples first

Layout (FiftyOne's serialized dataset format in its version-free form, which ``FiftyOneDataset`` imports
through its legacy importer: ``metadata.json`` without a ``version`` key)::

    metadata.json     {name, media_type: "image", info: {classes, spray_run_id, spray_dataset, ...}}
    samples.json      {"samples": [{filepath, tags, metadata, ground_truth, prediction, relevance,
                                    spray_sample_id, spray_cluster, spray_cluster_score, spray_suspicious,
                                    spray_suspicion, spray_map, spray_flag, spray_flag_note, spray_flag_author}]}
    data/<row>.png    the stored thumbnail of each sample (or, with ``data_root``, the original file's
                      absolute path when it exists; the file as the audit decoded it when a viewer would
                      show it otherwise: EXIF rotation, transparency, 16-bit, TIFF, animation)
    fields/relevance/<row>.png  the heatmap as an 8-bit grey map: 128 = no relevance, 128 ± 127 · R / max|R|
                      (255 / 1 at the map's largest positive / negative relevance) (``Heatmap`` label with ``range`` [0, 255])

Every path inside the folder is written relative to it, so the folder can be moved or copied: FiftyOne's
importer joins a relative ``filepath`` to the dataset folder, and a relative media path of a label to it when
the label's field has its own folder ``fields/<field>`` (as FiftyOne's own exporter lays them out).

``spray_cluster`` is the sample's cluster at the k and in the space of its class's top-ranked finding
(the class page opens at it; ``<class>/concept/k<k>/c<id>`` for a concept-space one; None for a sample
in no cluster there, outside every hot-spot group of a class whose top finding is one), ``spray_suspicious``
whether it is a member of a suspicious finding, ``spray_suspicion`` the per-sample suspicion of samples.parquet, ``spray_flag``
the current flag in the flag database (None when unflagged). Labels are ``Classification`` documents
(``_cls``), as in FiftyOne's own serialisation.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from spray.data.originals import decode_original, input_box, original_under
from spray.data.sample import content_hash
from spray.errors import ConfigError
from spray.export.source import ExportSource, open_source, staged_output
from spray.flags import Flag, FlagStore, bind_flags, default_db_path
from spray.flags.content import describe
from spray.imaging import heat_in_box

log = logging.getLogger(__name__)

SAMPLES = "samples.json"
METADATA = "metadata.json"
DATA_DIR = "data"
# FiftyOne resolves a label's relative media path only for a field with a folder of its name under fields/
RELEVANCE_DIR = "fields/relevance"
SUSPICIOUS_TAG = "suspicious"


def _cluster_of(
    src: ExportSource,
) -> tuple[list[str | None], list[float | None], np.ndarray, np.ndarray]:
    """Per sample (storage order): cluster key at the k and in the space (pixel or concept) of its class's
    top finding, that cluster's score, member of a suspicious finding (by the findings' own members, in
    either space), and its 2-D map coordinates (NaN when its class was not analysed)."""
    n = len(src.sample_ids)
    keys: list[str | None] = [None] * n
    scores: list[float | None] = [None] * n
    xy = np.full((n, 2), np.nan)
    suspicious = np.zeros(n, bool)
    findings = src.findings()
    for entry in src.classes():
        own = [f for f in findings if f.class_index == entry.class_index]
        top = min(own, key=lambda f: f.rank) if own else None
        k = top.k if top is not None else entry.chosen_k
        concept = top is not None and top.space == "concept"
        data = src.class_data(entry.class_index)
        rows = src.positions(data.sample_ids)
        xy[rows] = data.embedding
        for f in own:
            if f.suspicious:  # its own members, in its own space (a concept group is no pixel cluster)
                suspicious[rows[data.labelling(f.k, f.space) == f.cluster_id]] = True
        lab = data.labelling(k, "concept" if concept else "pixel")
        if lab is None:
            continue
        prefix = f"{entry.class_index}/concept" if concept else f"{entry.class_index}"
        score_of = {f.key: f.score for f in own}
        for r, cid in zip(rows.tolist(), lab.tolist(), strict=True):
            if cid < 0:  # outside every hot-spot group (k = 0 marks them -1): in no cluster, not in "c-1"
                continue
            keys[r] = f"{prefix}/k{k}/c{cid}"
            scores[r] = score_of.get(keys[r])
    return keys, scores, suspicious, xy


def _flags(src: ExportSource, flags_db: Path | None) -> dict[str, Flag]:
    """The current flag of each sample of the run, from ``flags_db`` or the project's database.

    Raises
    ------
    ConfigError
        ``flags_db`` was given and holds flags of other datasets but none of the run's.
    """
    db = flags_db if flags_db is not None else default_db_path(src.runs_dir)
    if not Path(db).is_file():
        if flags_db is not None:
            log.warning("no flag database at %s: the export has no flags", db)
        else:
            log.info("no flag database at %s: the export has no flags", db)
        return {}
    store = FlagStore(db, read_only=True)
    keys = store.datasets()
    if keys and src.dataset not in keys:
        problem = (
            f"{db} holds no flags of this run's dataset key {src.dataset!r} (its keys: {', '.join(keys)})"
        )
        # asked for this database's flags: an export without any is not what was meant
        if flags_db is not None:
            raise ConfigError(
                f"--flags-db {problem}: give the flag database of this run's project, or leave out --flags-db."
            )
        log.warning("%s: the export has no flags", problem)
    flags = store.current(src.dataset)
    hashes = src.reader.content_hashes()
    if hashes is None:
        return {f.sample_id: f for f in flags}
    binding = bind_flags(flags, hashes, run=src.path)
    if binding.wrong:
        # A flag whose id names another image in this run would tag the wrong sample: left out, said aloud.
        log.warning("flags left out of the export: %s", describe(binding, str(src.path)))
    return {f.sample_id: f for f in binding.bound}


def _grey(heat: np.ndarray) -> np.ndarray:
    """Signed relevance → uint8 around 128, scaled by the map's largest |R|."""
    h = np.asarray(heat, dtype=np.float32)
    m = float(np.abs(h).max()) or 1.0
    return np.clip(np.round(128 + 127 * h / m), 0, 255).astype(np.uint8)


def _picture(thumb: np.ndarray) -> np.ndarray:
    """A stored thumbnail ``(h, w, 3)`` or ``(h, w, 1)`` as PIL takes it (a grey one as ``(h, w)``)."""
    t = np.asarray(thumb)
    return np.ascontiguousarray(t[..., 0] if t.ndim == 3 and t.shape[-1] == 1 else t)


def _number(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _sample(src: ExportSource, r: int, media: str, relevance: str, fields: dict[str, Any]) -> dict[str, Any]:
    row = src.samples.loc[src.sample_ids[r]]
    flag: Flag | None = fields["flag"]
    tags = ([SUSPICIOUS_TAG] if fields["suspicious"] else []) + ([f"flag:{flag.status}"] if flag else [])
    return {
        "filepath": media,
        "tags": tags,
        "metadata": None,
        "ground_truth": {"_cls": "Classification", "label": str(row["label_name"])},
        "prediction": {
            "_cls": "Classification",
            "label": str(row["prediction_name"]),
            "confidence": _number(float(row["confidence"])),
        },
        "relevance": {"_cls": "Heatmap", "map_path": relevance, "range": [0, 255]},
        "spray_sample_id": str(row["sample_id"]),
        "spray_cluster": fields["cluster"],
        "spray_cluster_score": _number(fields["score"]),
        "spray_suspicious": bool(fields["suspicious"]),
        "spray_suspicion": _number(float(row["score"])),
        "spray_map": [_number(float(fields["xy"][0])), _number(float(fields["xy"][1]))],
        "spray_flag": flag.status if flag else None,
        "spray_flag_note": flag.note if flag else None,
        "spray_flag_author": flag.author if flag else None,
    }


def _original(root: Path | None, sample_id: str, known_hash: str | None) -> tuple[Path | None, bool]:
    """``(the sample's original file under root, or None; whether a file is there but changed or unreadable)``:
    None without a root, for an id leading outside it or to no file, and for a file whose bytes' hash is not
    the run's (or that cannot be read to tell)."""
    p = original_under(root, sample_id)
    if p is None:
        return None, False
    if known_hash is not None:
        try:
            same = content_hash(p.read_bytes()) == known_hash
        except OSError:
            return None, True
        if not same:
            return None, True
    return p, False


#: Formats every browser (so FiftyOne's app) shows as stored; others (TIFF, PPM) are not shown at all.
_SHOWN_AS_STORED = {"JPEG", "PNG", "GIF", "BMP", "WEBP"}


@dataclass(frozen=True)
class _Header:
    """What an original file's header tells the export (read once per file)."""

    #: Why a viewer would show the file otherwise than the model saw it ("" when it would not).
    shown_otherwise: str = ""
    #: ``(height, width)`` as stored (None when the file cannot be read now).
    size: tuple[int, int] | None = None


def _header(original: Path) -> _Header:
    """``original``'s header: why a viewer would show it otherwise than the model saw it, an EXIF rotation
    (browsers apply it, the audit, as torchvision, does not), transparency, a bit depth or colour space the
    audit converted, frames after the first, or a format browsers cannot show; and its stored size."""
    try:
        with Image.open(original) as im:
            size = (im.height, im.width)
            if im.getexif().get(0x0112) not in (None, 1):
                why = "EXIF rotation"
            elif im.format not in _SHOWN_AS_STORED:
                why = f"{im.format} file"
            elif im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                why = "transparency"
            elif im.mode not in ("1", "L", "P", "RGB"):
                why = f"{im.mode} pixels"
            else:
                why = "animation" if getattr(im, "is_animated", False) else ""
            return _Header(why, size)
    except Exception:  # unreadable now: the hash check, when on, has excluded changed files
        return _Header()


def _media(
    src: ExportSource, r: int, original: Path | None, why: str, tmp: Path, decoded: dict[str, int]
) -> str:
    """The ``filepath`` of row ``r``: its original file, the original as the audit decoded it when a viewer would
    show it otherwise (``why``, counted in ``decoded``), its stored thumbnail, or without one its relevance map;
    written under ``tmp``."""
    name = f"{r:08d}.png"
    if original is not None and why:
        # a viewer would turn or recolour the file: the export holds it as the audit decoded it
        Image.fromarray(decode_original(original, src.summary.config)).save(tmp / DATA_DIR / name)
        decoded[why] = decoded.get(why, 0) + 1
        return f"{DATA_DIR}/{name}"
    if original is not None:
        return str(original)
    if src.thumbs is not None:
        Image.fromarray(_picture(src.thumbs[r])).save(tmp / DATA_DIR / name)
        return f"{DATA_DIR}/{name}"
    return f"{RELEVANCE_DIR}/{name}"  # no input stored: the relevance map stands in for the image


def _box(src: ExportSource, size: tuple[int, int] | None) -> tuple[float, float, float, float]:
    """The part of an original of stored ``size`` the model input shows (the whole file without a centre crop,
    or when its size is unknown: unreadable, and the hash check, when on, has excluded changed files)."""
    if size is None or not ((src.summary.config.get("data") or {}).get("transform") or {}).get("center_crop"):
        return 0.0, 0.0, 1.0, 1.0
    return input_box(src.summary.config, *size)


def _known_hashes(src: ExportSource, check: bool) -> dict[str, str]:
    """The run's content hash per sample id where an original file can be checked against it: an image
    folder's hash is its file's bytes' (a file replaced since the audit is not the image the run explained);
    {} otherwise."""
    folder = (src.summary.config.get("data") or {}).get("kind") == "image_folder"
    return (src.reader.content_hashes() or {}) if check and folder else {}


def _metadata(src: ExportSource) -> dict[str, Any]:
    """The dataset's metadata.json."""
    return {
        "name": f"spray-{src.summary.name or 'run'}-{src.run_id[:12]}",
        "media_type": "image",
        "info": {
            "classes": src.class_names,
            "spray_run_id": src.run_id,
            "spray_dataset": src.dataset,
            "spray_fields": "spray_cluster: cluster at the k and in the space of the class's top finding; spray_suspicion: "
            "per-sample suspicion; spray_flag: current flag (unlearn, investigate, ok or null)",
        },
    }


def _data_root(data_root: str | Path | None) -> Path | None:
    """``--data-root`` resolved; a path that is no folder is refused (the export would link nothing)."""
    root = Path(data_root).expanduser().resolve() if data_root else None
    if root is not None and not root.is_dir():
        raise ConfigError(
            f"--data-root {data_root} is not a folder: give the root your sample ids are relative to."
        )
    return root


def _say_unlinked(n: int, total: int, root: Path, example: str, fallback: str) -> None:
    """Warn that ``n`` sample ids name no file under the data root (one folder too high or low links nothing,
    which looked like a successful export); ``fallback`` says what stands in for them."""
    log.warning(
        "%d of %d sample ids name no file under --data-root %s (e.g. %s): those samples are exported with %s; "
        "give the folder the ids are relative to (the one holding the class folders, the audit's data.path)",
        n, total, root, root / example, fallback,
    )  # fmt: skip


def _say_how_linked(
    src: ExportSource,
    root: Path | None,
    samples: list[dict[str, Any]],
    counts: tuple[int, int, str],
    decoded: dict[str, int],
) -> None:
    """Say what stands in for the originals the export could not link: ``counts`` is (changed or unreadable
    files, linked files, the first sample id naming no file), ``decoded`` the originals exported as decoded."""
    changed, linked, absent = counts
    fallback = (
        "the run's stored thumbnails" if src.thumbs is not None else "their relevance maps (no thumbnails)"
    )
    if changed:
        log.warning(
            "%d files under the data root changed after the audit or cannot be read (their content is not "
            "known to be what the run explained): exported with %s instead",
            changed, fallback,
        )  # fmt: skip
    if decoded:
        log.info(
            "%d originals are exported as the audit decoded them, not linked (%s): a viewer would show the "
            "file otherwise than the model saw it", sum(decoded.values()),
            ", ".join(f"{n} {why}" for why, n in sorted(decoded.items())),
        )  # fmt: skip
    if root is not None and linked + changed < len(samples):
        _say_unlinked(len(samples) - linked - changed, len(samples), root, absent, fallback)
    if standins := sum(1 for sample in samples if sample["filepath"].startswith(f"{RELEVANCE_DIR}/")):
        # the viewer shows a heatmap where the image should be: say so (a run without thumbnails)
        log.warning(
            "%d of %d samples have neither an original file nor a stored thumbnail (the run was audited with "
            "batch.thumbnails off): their image in FiftyOne is their relevance map. Give --data-root, the "
            "folder the sample ids are relative to, to link the originals", standins, len(samples),
        )  # fmt: skip


def write_fiftyone_dataset(
    run: str | Path,
    out: str | Path,
    *,
    flags_db: str | Path | None = None,
    data_root: str | Path | None = None,
    check_originals: bool = True,
) -> Path:
    """Write a FiftyOne dataset folder of a run into the new folder ``out``; returns ``out``.

    Parameters
    ----------
    run : str or Path
        A run folder, or a runs folder (its newest run).
    out : str or Path
        Folder to create (must not exist).
    flags_db : str or Path, optional
        Flag database (default ``<runs folder>/flags.sqlite`` when it exists; for a correction's re-audit,
        that of the runs folder holding the correction).
    data_root : str or Path, optional
        Folder the sample ids are relative to (image folders): samples whose original file exists there
        point at it instead of the stored thumbnail.
    check_originals : bool
        Read each original file to check it is still the audited image (its bytes' content hash); one that
        changed or cannot be read gets the thumbnail. False: link without reading (large data).
    """
    src = open_source(run)
    keys, scores, suspicious, xy = _cluster_of(src)
    flags = _flags(src, Path(flags_db) if flags_db else None)
    root = _data_root(data_root)
    out = Path(out)
    with staged_output(out) as tmp:
        (tmp / DATA_DIR).mkdir()
        (tmp / RELEVANCE_DIR).mkdir(parents=True)
        samples = []
        ids = src.sample_ids
        known = _known_hashes(src, root is not None and check_originals)
        changed = linked = 0
        decoded: dict[str, int] = {}  # originals exported as decoded, by why
        absent = ""  # the first sample id that names no file under the root
        for r, sid in enumerate(tqdm(ids, desc="fiftyone export", unit="sample", disable=None)):
            name = f"{r:08d}.png"
            original, was_changed = _original(root, sid, known.get(sid))
            changed, linked = changed + was_changed, linked + (original is not None)
            absent = absent or ("" if original is not None or was_changed else sid)
            header = _Header() if original is None else _header(original)
            media = _media(src, r, original, header.shown_otherwise, tmp, decoded)
            heat = src.heatmaps[r]
            if original is not None:
                # FiftyOne stretches a heatmap over the whole image: place it where the model saw it
                heat = heat_in_box(heat, _box(src, header.size))
            Image.fromarray(_grey(heat), "L").save(tmp / RELEVANCE_DIR / name)
            fields = {
                "cluster": keys[r],
                "score": scores[r],
                "suspicious": suspicious[r],
                "flag": flags.get(sid),
                "xy": xy[r],
            }
            # relative (resolved against the dataset folder on import): a moved export keeps its own maps
            samples.append(_sample(src, r, media, f"{RELEVANCE_DIR}/{name}", fields))
        _say_how_linked(src, root, samples, (changed, linked, absent), decoded)
        (tmp / METADATA).write_text(json.dumps(_metadata(src), indent=1, ensure_ascii=False))
        (tmp / SAMPLES).write_text(json.dumps({"samples": samples}, ensure_ascii=False, allow_nan=False))
    log.info("wrote %d samples of run %s as a FiftyOne dataset to %s", len(samples), src.run_id[:12], out)
    return out

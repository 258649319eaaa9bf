"""``spray init``: write a first, commented audit config from what is on disk, and check it.

Given a dataset (an image folder ``root/<class>/<image>``, an IDX images file, or a
``package.module:function`` factory) and a model (a torchvision or timm architecture name, or a
factory), :func:`scaffold_config` looks at the data (classes, image sizes, grey or colour) and writes a
YAML config whose every key carries a comment; :func:`check_config` then loads one batch through it
(and builds the model and runs it once when one is given), so the first ``spray audit`` does not fail
on the config. Lines marked ``CHECK`` are the guesses a person should confirm (the input size and
normalisation the model was trained with).
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from spray.config import DataConfig, TransformConfig
from spray.config.data import given_transform
from spray.data_facts import DataFacts, inspect_data, rel_path
from spray.errors import ClassCountError, ConfigError, DataError
from spray.init_output import refuse_output, write_output
from spray.model_facts import (
    ModelFacts,
    inspect_model,
    timm_if_its_keys,
    with_factory_size,
    with_model_args,
)

log = logging.getLogger(__name__)

#: Images whose sides are all at most this are taken at their native size (MNIST-like data).
SMALL_IMAGE = 64
#: When at least this share of the probed images has one size, the others are strays the audit skips with a
#: reason (as it does), not a reason to resize every image to the architecture's default.
MOSTLY_ONE_SIZE = 0.9
#: The batch size ``spray init`` writes holds about this many input pixels (32 images at 224²), so small
#: images get larger batches: per-batch overhead dominated the batch stage of 28×28 images at 32 a batch.
BATCH_PIXELS = 32 * 224 * 224
#: At most this many: at 256 a layer's activations outgrow the CPU cache (the small CNN's LRP of 4,000
#: 28×28 images took 4.7-5.3 CPU s at 256, 4.3-4.5 s at 128; docs/first_run.md).
MAX_INIT_BATCH = 128


def _transform(data: DataFacts, model: ModelFacts | None) -> tuple[dict[str, Any], list[str]]:
    """The ``data.transform`` section and the CHECK notes on its guesses."""
    t: dict[str, Any] = {}
    notes: list[str] = []
    sizes = Counter(data.sizes)
    strays = ""
    if len(sizes) > 1 and (top := sizes.most_common(1)[0])[1] >= MOSTLY_ONE_SIZE * sizes.total():
        (h, w), n = top
        others = ", ".join(f"{a}×{b}" for (b, a), _ in sizes.most_common()[1:4])
        strays = (
            f"CHECK: {sizes.total() - n} of {sizes.total()} images probed are not {w}×{h} ({others}): the audit "
            "skips images of another size with the reason; set resize/center_crop to bring them to one size"
        )
        sizes = Counter({(h, w): n})
    side = model.input_size if model is not None else None
    crop_pct = model.crop_pct if model is not None else 0.875
    if len(sizes) > 1 or (side and len(sizes) == 1 and max(next(iter(sizes))) > SMALL_IMAGE):
        (h, w), _ = sizes.most_common(1)[0]
        side = side or 224
        if len(sizes) > 1 or (h, w) != (side, side):
            # the evaluation transform's resize where it is known, else timm's rule (floor(side / crop_pct))
            resize = model.resize if model is not None and model.resize else math.floor(side / crop_pct)
            t.update(resize=resize, center_crop=side)
            if model is not None and model.interpolation != "bilinear":
                t["interpolation"] = model.interpolation
            notes.append(
                f"CHECK resize/center_crop/interpolation: the input size the model was trained at (guessed {side}) "
                "and how it was resized (here the architecture's evaluation transform)"
                if model is not None and model.kind != "factory"
                else f"CHECK resize/center_crop: the input size the model was trained at (guessed {side})"
            )
    elif side and sizes:
        (h, w), _ = sizes.most_common(1)[0]
        if (h, w) != (side, side) and model is not None and model.fixed_size:
            t.update(resize=side, center_crop=side)
            if model.interpolation != "bilinear":
                t["interpolation"] = model.interpolation
            cut = f", and the centre crop cuts the longer side to {side}" if h != w else ""
            notes.append(
                f"CHECK resize/center_crop/interpolation: the architecture takes only {side}×{side} inputs, so the "
                f"{h}×{w} images are resized to {side} ({model.interpolation}){cut}; set the size and "
                f"interpolation the model was trained with (resize: [{side}, {side}] squashes instead of cropping)"
            )
        elif (h, w) != (side, side):
            notes.append(
                f"CHECK: the {h}×{w} images are used at their size; the architecture's default is {side}"
            )
    if strays and "center_crop" not in t:  # a crop brings every image to one size: nothing is skipped
        notes.append(strays)
    if model is not None and model.channels == 1:
        t["channels"] = 1
    elif model is not None and model.kind != "factory" and data.grey:
        t["grayscale_to_rgb"] = True
    if model is not None and model.mean is not None:
        t.update(mean=model.mean, std=model.std)
        notes.append("CHECK mean/std: the normalisation used in training (the architecture's default here)")
    elif model is None or model.kind == "factory":
        notes.append("CHECK mean/std: add the normalisation used in training, if any")
    TransformConfig.model_validate(t)  # a guess that does not validate is a bug here, not the user's
    return t, notes


def _comment(section: type[Any], key: str) -> str:
    """The first sentence of the field's description (a period followed by a capital ends it)."""
    f = section.model_fields.get(key)
    text = (f.description or "") if f is not None else ""
    return re.split(r"\.\s+(?=[A-Z])", text)[0].rstrip(".")


def _yaml_value(v: Any) -> str:
    return yaml.safe_dump(v, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def _section_lines(name: str, values: dict[str, Any], model: type[Any], indent: str = "  ") -> list[str]:
    lines = [f"{name}:"]
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, dict) and key == "transform":
            lines += [indent + line for line in _section_lines("transform", value, TransformConfig)]
            continue
        comment = _comment(model, key)
        lines.append(f"{indent}{key}: {_yaml_value(value)}" + (f"    # {comment}" if comment else ""))
    return lines


def init_batch_size(data: DataFacts) -> int:
    """The batch size for the model's input: a power of two holding about ``BATCH_PIXELS`` pixels, 8 to ``MAX_INIT_BATCH``."""
    crop = (data.section.get("transform") or {}).get("center_crop")
    if crop:
        pixels = int(crop) ** 2
    elif data.sizes:
        (h, w), _ = Counter(data.sizes).most_common(1)[0]
        pixels = h * w
    else:
        return 32
    fit = max(1, BATCH_PIXELS // max(1, pixels))
    return int(min(MAX_INIT_BATCH, max(8, 2 ** (fit.bit_length() - 1))))


#: Name parts of vision transformers (torchvision's and timm's), for the composite note of ``spray init``.
TRANSFORMER_NAMES = ("vit", "deit", "swin", "beit", "eva", "cait", "xcit", "transformer")


def _model_name(model_section: dict[str, Any]) -> str:
    kwargs = model_section.get("factory_kwargs") or {}
    return str(model_section.get("architecture") or kwargs.get("model_name") or "").lower()


def _flat_under_z_plus(model_section: dict[str, Any]) -> bool:
    """A ConvNeXt: EpsilonPlusFlat gives it nearly flat heatmaps (docs/lrp.md, "Flat heatmaps")."""
    return "convnext" in _model_name(model_section)


#: The composite advice for a transformer, by name (the config's note) or by its attention layers (init's check).
VIT_ADVICE = (
    "AttnLRP at the input's. Neither was better on every ViT tried: if the findings look like noise, audit with "
    "the other (docs/lrp.md, 'Which composite for a ViT')"
)


def _composite_notes(model: ModelFacts | None) -> list[str]:
    """What the written ``lrp.composite`` says about this architecture (a ConvNeXt, a transformer)."""
    if model is None:
        return []
    if _flat_under_z_plus(model.section):
        return [
            "lrp.composite is EpsilonGammaBox: EpsilonPlusFlat gives a ConvNeXt nearly flat heatmaps (docs/lrp.md)"
        ]
    if model.attention is not False and any(part in _model_name(model.section) for part in TRANSFORMER_NAMES):
        return [
            f"CHECK lrp.composite: EpsilonPlusFlat explains a transformer at patch resolution; {VIT_ADVICE}"
        ]
    return []


def render_config(data: DataFacts, model: ModelFacts | None, checkpoint: str | None, notes: list[str]) -> str:
    """The commented YAML text of the config."""
    from spray.config import AuditConfig, BatchConfig, ModelConfig

    head = [
        "# spray audit config, written by `spray init` (reference: docs/config.md).",
        "# Relative paths are resolved against this file's folder.",
        *[f"# {n}" for n in notes],
        "",
        f"name: {_yaml_value(str(data.section.get('name') or 'audit'))}    # {_comment(AuditConfig, 'name')}",
        "seed: 0    # every random choice derives from it: same inputs and seed, same findings",
    ]
    m = dict(model.section) if model is not None else {"factory": "my_project.models:build"}
    if checkpoint:
        m["checkpoint"] = checkpoint
    body = _section_lines("model", m, ModelConfig)
    body += _section_lines("data", data.section, DataConfig)
    transform = data.section.get("transform") or {}
    if "mean" not in transform:
        # a template where the guess was none: a model trained on normalised inputs needs them
        example = "[0.5]" if data.grey or transform.get("channels") == 1 else "[0.5, 0.5, 0.5]"
        check = "CHECK: your training's normalisation, if any (uncomment)"
        body += (
            [f"    # mean: {example}    # {check}", f"    # std: {example}"]
            if transform
            else [f"  # transform: {{mean: {example}, std: {example}}}    # {check}"]
        )
    composite = "EpsilonGammaBox" if _flat_under_z_plus(m) else "EpsilonPlusFlat"
    body += [
        "lrp:",
        f"  composite: {composite}    # zennit's names: EpsilonPlusFlat, EpsilonGammaBox, EpsilonAlpha2Beta1Flat",
        "  target: label    # explain the true label's logit ('pred': the predicted one)",
        "batch:",
        f"  batch_size: {init_batch_size(data)}    # {_comment(BatchConfig, 'batch_size')}, sized for the input",
        "  device: auto    # CUDA when available",
        "output:",
        "  runs_dir: runs    # published runs; open them with `spray dashboard --runs-dir runs`",
    ]
    return "\n".join([*head, *body]) + "\n"


def scaffold_config(
    data_spec: str,
    model_spec: str | None,
    output: Path,
    *,
    checkpoint: Path | None = None,
    checkpoint_key: str | None = None,
    labels: Path | None = None,
    num_classes: int | None = None,
    force: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    transform_args: dict[str, Any] | None = None,
) -> list[str]:
    """Write a commented config for ``data_spec`` and ``model_spec`` to ``output``; returns the notes.

    Raises
    ------
    ConfigError
        When ``output`` exists (without ``force``) or an argument names nothing usable.
    DataError
        When the data cannot be labelled (no class folders, or a single one without ``num_classes``).
    """
    refuse_output(output, force=force)
    config_dir = output.resolve().parent
    data = inspect_data(data_spec, config_dir, labels=labels)
    _one_class_folder(data_spec, data, num_classes)
    k = num_classes or (len(data.classes) or None)
    channels = None if not data.sizes else 1 if data.grey else 3
    if model_kwargs and not model_spec:
        raise ConfigError("--model-arg needs --model: there is no model to pass the arguments to")
    if checkpoint_key is not None and checkpoint is None:
        raise ConfigError("--checkpoint-key needs --checkpoint: it says where the weights are in that file")
    model = inspect_model(model_spec, k, config_dir, channels) if model_spec else None
    twin_note = None
    if model is not None and model_spec and model.kind == "torchvision" and checkpoint is not None:
        model, twin_note = timm_if_its_keys(model_spec, model, checkpoint, k)
    if model is not None and model_kwargs:
        model = with_model_args(model, model_kwargs)
    if model is not None:
        model = with_factory_size(model)
    if model is not None and "architecture" in model.section and k == 1:
        raise ConfigError(
            f"--model {model_spec!r}: a torchvision architecture needs model.num_classes of at least 2, and the "
            "data have 1 class. Give --num-classes with the model's class count, or use a factory (or timm) "
            "model for a single-output one."
        )
    if model is not None and model.kind != "factory" and not k:
        raise ConfigError(
            "--num-classes is needed: the number of classes cannot be told from a factory dataset."
        )
    transform, notes = _transform(data, model)
    if transform_args:  # the user's settings replace the guesses, and their CHECK notes
        transform, notes = given_transform(transform, transform_args, notes)
    notes = [*_model_notes(model, transform_args), *notes]
    if transform:
        data.section["transform"] = transform
    if twin_note:
        notes.append(twin_note)
    notes += _composite_notes(model)
    if model is None:
        notes.insert(0, "CHECK model: replace the placeholder factory with your model (or use --model)")
    elif checkpoint is None:
        notes.insert(
            0,
            "CHECK model.checkpoint: none given, so the weights are random; an audit explains your trained "
            "model only with its checkpoint (--checkpoint)",
        )
    found = [f"{data.n_samples} samples" if data.n_samples else "a factory dataset"]
    if data.classes:
        found.append(f"{len(data.classes)} classes")
    if data.sizes:
        found.append("sizes " + ", ".join(f"{w}×{h}" for (h, w), _ in Counter(data.sizes).most_common(3)))
    notes = [f"Found: {', '.join(found)}{' (grey)' if data.grey else ''}.", *data.notes, *notes]
    ckpt = rel_path(checkpoint, config_dir) if checkpoint is not None else None
    if model is not None and checkpoint_key is not None:
        model.section["checkpoint_key"] = checkpoint_key
    text = render_config(data, model, ckpt, notes)
    write_output(output, text)
    return notes


def _model_notes(model: ModelFacts | None, transform_args: dict[str, Any] | None) -> list[str]:
    """The model's CHECK notes, without the one ``--transform`` already answered (a googlenet's transform_input
    asks for mean and std)."""
    notes = model.notes if model is not None else []
    if {"mean", "std"} <= set(transform_args or {}):
        return [n for n in notes if "transform_input=True" not in n]
    return list(notes)


def _one_class_folder(data_spec: str, data: DataFacts, num_classes: int | None) -> None:
    """Refuse an image folder with a single class folder unless ``--num-classes`` says what the model has.

    Raises
    ------
    DataError
        Naming what spray expects: a folder per class of the model.
    """
    if data.section.get("kind") == "image_folder" and len(data.classes) == 1 and num_classes is None:
        raise DataError(
            f"--data {data_spec!r} has a single class folder ({data.classes[0]!r}). spray audits each class on "
            "its own and takes an image's label from its class folder's position in name order (as torchvision's "
            "ImageFolder does), so it needs a folder for every class of the model, named so that their name "
            "order is the model's label order; the others may be empty (an empty folder keeps its place and "
            "label). For a model with a single output (one logit), pass --num-classes 1."
        )


def check_config(path: Path, *, with_model: bool = True) -> list[str]:
    """Load ``path``, read one batch through it, and run the model on it once.

    Parameters
    ----------
    path : Path
        The config file.
    with_model : bool
        False when the model section is still a placeholder: only the other sections and the data are
        checked.

    Returns
    -------
    list[str]
        What was checked, for the user.

    Raises
    ------
    SprayError
        The first problem, with the key to fix.
    """
    from spray.config import config_from_dict, load_config
    from spray.data import build_dataset

    if with_model:
        cfg = load_config(path)
    else:
        raw = yaml.safe_load(path.read_text()) or {}
        # A stand-in model only so that the other sections validate; it is never built.
        raw["model"] = {"architecture": "alexnet", "num_classes": 2}
        cfg = config_from_dict(raw, base_dir=path.resolve().parent)
    ds = build_dataset(cfg.data, thumbnail_size=cfg.batch.thumbnail_size)
    report = [f"data: {len(ds)} samples, {len(ds.class_names)} classes"]
    model: Any = None
    if with_model:
        from spray.models import build_model

        try:
            model = build_model(cfg.model)
        except ClassCountError as err:
            # Only when the model's head was sized from the class folders is the folder count the thing to fix.
            if cfg.data.kind != "image_folder" or err.model_outputs != len(ds.class_names):
                raise
            names = ", ".join(ds.class_names[:8]) + (", ..." if len(ds.class_names) > 8 else "")
            fix = (
                "add the missing class folders (empty ones are fine)"
                if err.checkpoint_outputs > len(ds.class_names)
                else "remove the folders of classes the model does not know"
            )
            raise DataError(
                f"The checkpoint's last layer has {err.checkpoint_outputs} outputs, and --data has "
                f"{len(ds.class_names)} class folders ({names}). spray takes an image's label from its class "
                "folder's position in name order, so it needs one folder per class of the model, named in the "
                f"model's label order: {fix}, or give the checkpoint trained on these classes."
            ) from None
        ds.match_model(model)
    batch = ds.first_batch(2)
    assert batch.x is not None
    report.append(f"one batch read: inputs {tuple(batch.x.shape[1:])}")
    if model is not None:
        from spray.model_output import check_model_output

        k_out = check_model_output(model, batch.x, len(ds.class_names), ds.empty_classes)
        cfg.check_class_count(len(ds.class_names), k_out)
        report.append(f"model: {k_out} outputs on that batch")
        report.append(_spot_accuracy(model, ds))
        report.append(_lrp_check(cfg, model, ds, batch.x))
    return report


def _lrp_check(cfg: Any, model: Any, ds: Any, x: Any) -> str:
    """Explain the batch as the audit will: a layer without an LRP rule, or one the engine cannot place,
    stops ``spray init``'s check instead of the audit's first batch."""
    import torch

    from spray.attribution import audit_explainer
    from spray.config.lrp import TRANSFORMER_COMPOSITES
    from spray.lrp.composites import composite_key
    from spray.lrp.concepts import has_attention

    result = audit_explainer(cfg, model, ds, torch.device("cpu"))(x, "pred")
    empty = int((result.relevance.flatten(1).abs().amax(1) == 0).sum())
    if empty:
        # the explainer's warning above says why; an "ok" here would contradict it
        return (
            f"CHECK LRP: {cfg.lrp.composite} gave {empty} of {len(x)} maps of that batch that are exactly 0 "
            "(no evidence): with random weights this is expected, so give --checkpoint; with trained weights, "
            "see the warning above"
        )
    named = any(part in _model_name(cfg.model.model_dump()) for part in TRANSFORMER_NAMES)
    transformer_rules = composite_key(cfg.lrp.composite) in TRANSFORMER_COMPOSITES
    if not transformer_rules and not named and has_attention(model):
        # the name-based note (in the config) misses a transformer built by the user's own factory
        return (  # the advice of the config's note for a transformer named by its architecture
            f"CHECK lrp.composite: {cfg.lrp.composite} explained that batch, and the model has attention layers "
            f"(a transformer or a hybrid): EpsilonPlusFlat explains it at patch resolution; {VIT_ADVICE}"
        )
    flat_rules = composite_key(cfg.lrp.composite) == composite_key("EpsilonPlusFlat")
    if flat_rules and not _flat_under_z_plus(cfg.model.model_dump()) and _has_convnext_blocks(model):
        # the name-based choice of EpsilonGammaBox misses a ConvNeXt built by the user's own factory
        return (
            f"CHECK lrp.composite: {cfg.lrp.composite} explained that batch, but the model has ConvNeXt blocks, "
            "whose z+ heatmaps come out nearly flat: audit with lrp.composite: EpsilonGammaBox (docs/lrp.md, "
            "'Flat heatmaps')"
        )
    return f"LRP: {cfg.lrp.composite} explained that batch"


def _has_convnext_blocks(model: Any) -> bool:
    """Whether the model holds ConvNeXt blocks (torchvision's ``CNBlock``, timm's ``ConvNeXtBlock``)."""
    return any(type(m).__name__ in ("CNBlock", "ConvNeXtBlock") for m in model.modules())


def _spot_accuracy(model: Any, ds: Any, n: int = 64) -> str:
    """The model's accuracy on ``n`` images spread evenly over the dataset (folders are read in class order,
    so every class takes part): a wrong mean/std, size or channel order shows here, before a long audit."""
    import torch

    from spray.data.dataset import spread_inputs

    with torch.no_grad():
        right = [int(model(x[None]).argmax(1)) == ds.labels[i] for i, x in spread_inputs(ds, n)]
    if not right:
        return "model: no readable image to check its accuracy on"
    chance = 1.0 / max(1, len(ds.class_names))
    # Within 1.5× chance on a few dozen images: the model (or the transform) tells nothing apart.
    near = " (about chance level: " if np.mean(right) <= 1.5 * chance else " (chance level: "
    return (
        f"CHECK model: {100 * np.mean(right):.0f} % right on {len(right)} images spread over the classes"
        f"{near}{100 * chance:.0f} %); if that is far below the accuracy it was trained to, check "
        "data.transform: mean/std, size, channels"
    )

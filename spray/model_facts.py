"""What ``spray init`` learns from a model name: a torchvision or timm architecture, or a factory.

:func:`inspect_model` turns ``--model`` into a config's ``model`` section and the input size and
normalisation the architecture expects; :func:`with_model_args` adds the user's ``--model-arg`` values.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spray.errors import ConfigError
from spray.factories import SPEC_PATTERN

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
#: torchvision architectures that run only at the input size they were built for, and that size.
FIXED_SIZE_PREFIXES = {"vit_": 224, "maxvit_": 224, "inception_v3": 299}


@dataclass
class ModelFacts:
    """What :func:`inspect_model` found."""

    section: dict[str, Any]
    kind: str  # "torchvision", "timm" or "factory"
    input_size: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    crop_pct: float = 0.875
    notes: list[str] = field(default_factory=list)
    #: The architecture fails on any other input size than ``input_size`` (ViT, MaxViT).
    fixed_size: bool = False
    #: Input channels the constructor was told (``--model-arg in_chans=1``); None: the architecture's default.
    channels: int | None = None
    #: The resize side of the architecture's evaluation transform (None: from ``crop_pct``), and its
    #: interpolation (torchvision's weights' ``transforms()``, timm's ``pretrained_cfg``).
    resize: int | None = None
    interpolation: str = "bilinear"
    #: Whether the built architecture has attention layers (None: not built); a name with "vit" in it need not
    #: (RepViT, FastViT-T/S are convolutional).
    attention: bool | None = None


#: torchvision architectures that, built from its ImageNet weights, re-normalise their input inside forward()
#: (``transform_input=True``, a setting the state dict does not hold).
INPUT_TRANSFORMING = ("googlenet", "inception_v3")
TRANSFORM_INPUT_NOTE = (
    "CHECK model: torchvision builds {name} from its ImageNet weights with transform_input=True, which "
    "re-normalises each channel inside forward() to mean 0.5, std 0.5; the checkpoint does not say so, and spray "
    "builds it without. If yours was fine-tuned from those weights, give data.transform mean [0.5, 0.5, 0.5] and "
    "std [0.5, 0.5, 0.5] (spray init: --transform mean=0.5 --transform std=0.5): its logits are then the same, "
    "where with ImageNet's mean/std they differ"
)


def inspect_model(
    spec: str, num_classes: int | None, config_dir: Path, channels: int | None = None
) -> ModelFacts:
    """Describe the model named by ``spec`` (torchvision name, timm name or factory) as a ``model`` section.

    Raises
    ------
    ConfigError
        When ``spec`` is none of these (with the closest torchvision names).
    """
    kwargs: dict[str, Any]
    if spec.startswith("timm:"):  # a timm name that torchvision has too (convnext_tiny): timm's, as asked
        facts = timm_facts(spec.removeprefix("timm:"), num_classes, required=True)
        assert facts is not None  # required: raises instead
        return facts
    if SPEC_PATTERN.match(spec):
        import inspect

        from spray.factories import import_callable, locate_module

        locate_module(spec, "--model", config_dir)
        params = inspect.signature(import_callable(spec, "--model")).parameters
        kwargs = {"num_classes": num_classes} if num_classes and "num_classes" in params else {}
        if "in_channels" in params and channels is not None:
            kwargs["in_channels"] = channels
        return ModelFacts({"factory": spec, "factory_kwargs": kwargs}, "factory")
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if spec in names:
        fixed = [side for prefix, side in FIXED_SIZE_PREFIXES.items() if spec.startswith(prefix)]
        facts = ModelFacts(
            {"architecture": spec, "num_classes": num_classes},
            "torchvision",
            fixed[0] if fixed else 224,
            IMAGENET_MEAN,
            IMAGENET_STD,
            fixed_size=bool(fixed),
        )
        facts = _with_weights_transform(facts, spec)
        if spec in INPUT_TRANSFORMING:
            facts.notes.append(TRANSFORM_INPUT_NOTE.format(name=spec))
        return facts
    found = timm_facts(spec, num_classes, required=False)
    if found is not None:
        return found
    close = difflib.get_close_matches(spec, names, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(
        f"--model {spec!r} is not a torchvision model name nor a timm one (with timm installed), nor "
        f"'package.module:function'.{hint}"
    )


def fixed_input_side(net: Any) -> int | None:
    """The square input side a built model runs only at, or None (any size, or a size it does not state).

    Read from a torchvision ViT's ``image_size``, a timm patch embedding's ``img_size`` (when its
    ``strict_img_size`` holds and the model does not resize its position embeddings) or timm's
    ``pretrained_cfg`` (``fixed_input_size``).
    """
    side = getattr(net, "image_size", None)
    if isinstance(side, int) and not isinstance(side, bool) and side > 0:
        return side
    for module in net.modules():
        img = getattr(module, "img_size", None)
        if isinstance(img, tuple) and len(img) == 2 and all(isinstance(v, int) for v in img):
            strict = bool(getattr(module, "strict_img_size", False)) and not getattr(
                net, "dynamic_img_size", False
            )
            return img[0] if strict and img[0] == img[1] else None
    cfg = getattr(net, "pretrained_cfg", None)
    size = cfg.get("input_size") if isinstance(cfg, dict) and cfg.get("fixed_input_size") else None
    return int(size[2]) if isinstance(size, list | tuple) and len(size) == 3 and size[1] == size[2] else None


def with_factory_size(model: ModelFacts) -> ModelFacts:
    """``model`` (a factory) with the input side its built model runs only at (:func:`fixed_input_side`).

    The factory is called with the config's arguments; when that fails, ``model`` comes back unchanged and the
    check of the written config reports the failure with its own message.
    """
    if model.kind != "factory" or model.input_size is not None:
        return model
    from spray.factories import import_callable

    try:
        net = import_callable(model.section["factory"], "--model")(
            **(model.section.get("factory_kwargs") or {})
        )
        side = fixed_input_side(net)
    except Exception:  # the config check builds the model again and names the error
        return model
    if side is None:
        return model
    note = f"CHECK: the model runs only at {side}×{side} inputs (it says so itself)"
    return dataclasses.replace(model, input_size=side, fixed_size=True, notes=[*model.notes, note])


def _with_weights_transform(facts: ModelFacts, name: str) -> ModelFacts:
    """``facts`` with the sizes and interpolation of the evaluation transform torchvision publishes with the
    architecture's weights (its metadata only: nothing is downloaded); as they are when it has none."""
    import torchvision

    try:
        preset = torchvision.models.get_model_weights(name).DEFAULT.transforms()
        crop, resize = int(preset.crop_size[0]), int(preset.resize_size[0])
        interpolation = str(preset.interpolation.value)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return facts
    if interpolation not in ("bilinear", "bicubic", "nearest"):
        return facts
    return dataclasses.replace(
        facts, input_size=crop, crop_pct=crop / resize, resize=resize, interpolation=interpolation
    )


def timm_facts(name: str, num_classes: int | None, *, required: bool) -> ModelFacts | None:
    """The timm architecture ``name`` as a model section; None when it is not one (``required``: raise)."""
    timm: Any
    try:
        timm = importlib.import_module("timm")
    except ImportError:
        if required:
            raise ConfigError(f"--model timm:{name}: timm is not installed (pip install timm).") from None
        return None
    if not timm.is_model(name):
        if required:
            close = difflib.get_close_matches(name, timm.list_models(), n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"--model timm:{name}: not a timm architecture.{hint}")
        return None
    from spray.lrp.concepts import has_attention

    made = timm.create_model(name, pretrained=False, num_classes=num_classes or 2)
    cfg: dict[str, Any] = dict(getattr(made, "pretrained_cfg", {}) or {})
    kwargs = {"model_name": name, "num_classes": num_classes, "pretrained": False}
    return ModelFacts(
        {"factory": "timm:create_model", "factory_kwargs": kwargs}, "timm", int(cfg["input_size"][-1]),
        [float(v) for v in cfg["mean"]], [float(v) for v in cfg["std"]], float(cfg.get("crop_pct", 0.875)),
        fixed_size=bool(cfg.get("fixed_input_size", False)),
        interpolation="bicubic" if cfg.get("interpolation") == "bicubic" else "bilinear",
        attention=has_attention(made),
    )  # fmt: skip


def timm_if_its_keys(
    name: str, model: ModelFacts, checkpoint: Path, num_classes: int | None
) -> tuple[ModelFacts, str | None]:
    """timm's architecture instead of torchvision's of the same name when the checkpoint's keys are timm's
    (``efficientnet_b0``, ``resnet18``, ``convnext_tiny`` exist in both); the note says so."""
    import torchvision

    from spray.checkpoints import checkpoint_keys
    from spray.models import timm_twin_matches

    keys = checkpoint_keys(checkpoint)
    if not keys:
        return model, None
    # A checkpoint that fits torchvision's stays torchvision's (timm's ResNet, ResNeXt and DenseNet share its
    # names); checked first, as it is the common case and needs no timm model built.
    mine = torchvision.models.get_model(name, weights=None, num_classes=num_classes or 2).state_dict()
    if set(mine) == keys or not timm_twin_matches(name, keys):
        return model, None
    twin = timm_facts(name, num_classes, required=False)
    if twin is None:
        return model, None
    return twin, (
        f"CHECK model: {name!r} is both a torchvision and a timm architecture; the checkpoint's keys are "
        f"timm's, so this config builds timm's (--model timm:{name} says so explicitly)"
    )


def parse_model_args(items: list[str], option: str = "--model-arg") -> dict[str, Any]:
    """``--model-arg KEY=VALUE`` values as keyword arguments, each value read as YAML (``3``, ``true``,
    ``[1, 2]``, ``avg``).

    Raises
    ------
    ConfigError
        An item without ``=`` or with an empty or non-identifier key.
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError(
                f"{option} {item!r} is not KEY=VALUE with KEY a Python name (e.g. {option} "
                f"{'mean=none' if option == '--transform' else 'pool=avg'})"
            )
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(
                f"{option} {item!r}: the value is not valid YAML; quote a string (e.g. {key.strip()}='\"{value}\"') "
                f"or close the list (e.g. {key.strip()}=[1,2])"
            ) from None
    return out


#: Constructor arguments that set the input size (timm, torchvision's ViT) and the input channels.
SIZE_ARGS = ("img_size", "image_size")
CHANNEL_ARGS = ("in_chans", "in_channels")


def _side(value: Any, key: str) -> int:
    """A square input side from an ``img_size``-like argument (``32`` or ``[32, 32]``)."""
    sides = value if isinstance(value, list | tuple) else [value]
    if not sides or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sides):
        raise ConfigError(
            f"--model-arg {key}={value!r}: give a positive whole number of pixels (e.g. {key}=32)"
        )
    if len(set(sides)) > 1:
        raise ConfigError(
            f"--model-arg {key}={value!r}: spray init writes a square input size; give one side (e.g. {key}=32) "
            "and set data.transform by hand for a non-square one"
        )
    return int(sides[0])


def with_model_args(model: ModelFacts, kwargs: dict[str, Any]) -> ModelFacts:
    """``model`` whose constructor also gets ``kwargs`` (torchvision: ``architecture_kwargs``; timm and
    factories: ``factory_kwargs``, where they override what was found, e.g. ``num_classes``).

    An input size (``img_size``, ``image_size``) or channel count (``in_chans``, ``in_channels``) among them
    also changes the input the config's transform prepares: a ViT built for 32-pixel inputs gets 32-pixel
    images, a 1-channel model grey ones with one mean and std.

    Raises
    ------
    ConfigError
        An input size or channel count that is not a positive whole number (channels: 1 or 3).
    """
    if not kwargs:
        return model
    key = "architecture_kwargs" if model.kind == "torchvision" else "factory_kwargs"
    section = dict(model.section)
    section[key] = {**(section.get(key) or {}), **kwargs}
    out = dataclasses.replace(model, section=section)
    for name in SIZE_ARGS:
        if name in kwargs:
            out.input_size = _side(kwargs[name], name)
            out.resize = None  # the evaluation transform's resize is for the architecture's default size
    for name in CHANNEL_ARGS:
        if name in kwargs:
            if kwargs[name] not in (1, 3) or isinstance(kwargs[name], bool):
                raise ConfigError(
                    f"--model-arg {name}={kwargs[name]!r}: spray audits grey (1) or RGB (3) inputs; give 1 or 3"
                )
            out.channels = int(kwargs[name])
            if out.channels == 1 and out.mean is not None and out.std is not None and len(out.mean) > 1:
                # One channel: the mean of the architecture's per-channel values, as a grey copy of RGB has.
                out.mean = [round(sum(out.mean) / len(out.mean), 4)]
                out.std = [round(sum(out.std) / len(out.std), 4)]
    return out

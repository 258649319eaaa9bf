"""The ``data`` section and its ``transform``: which dataset to audit and how samples become tensors."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from spray.config.section import Section
from spray.errors import ConfigError

# Kept in step with spray.factories.SPEC_PATTERN (the config must not import the factories module's deps).
_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")

#: Largest edge accepted for resize / center_crop: far above any classifier input, low enough that a
#: typo (an extra zero or three) fails at load time instead of allocating gigabytes per image.
MAX_SIDE = 8192


class TransformConfig(Section):
    """Input transform applied to every sample before the model (and before hashing the tensor)."""

    # what spray always did (Pillow decoding, colour refused for grey models, bilinear resizing): left out of
    # the record at these defaults, existing runs keep their ids and heatmap cache keys
    omit_at_default = ("decode_device", "colour_to_grey", "interpolation", "high_bit_depth")

    resize: int | list[int] | None = Field(
        None,
        description="Resize the shorter side to this many pixels, keeping the aspect ratio (torchvision's "
        "Resize(256)); or [height, width]: to exactly that size, the aspect ratio not kept (Resize((224, 224)), "
        "a squash, which a resize and a centre crop do not reproduce).",
    )
    interpolation: Literal["bilinear", "bicubic", "nearest"] = Field(
        "bilinear",
        description="How resize interpolates, as torchvision's Resize(interpolation=...) does on PIL images: "
        "'bilinear' (torchvision's default), 'bicubic' (timm's models; torchvision's EfficientNet, Swin and "
        "MaxViT weights), 'nearest'. Set what the model was trained with: another one feeds it other pixels. "
        "8-bit pixels on the CPU are resized by Pillow itself, exactly torchvision's (images decoded on the "
        "GPU, 16-bit ones, and ones converted to grey by luma or composited over a background are resized by "
        "a torch emulation of Pillow: within 1/255 bilinear, up to ~15/255 at sharp edges bicubic). "
        "Part of the heatmap cache key and the run id.",
    )
    center_crop: int | None = Field(
        None,
        ge=1,
        le=MAX_SIDE,
        description="Centre-crop to this square size after resizing (an image smaller than it is padded with "
        "zeros, as torchvision's CenterCrop does).",
    )
    grayscale_to_rgb: bool = Field(
        False, description="Repeat a single grey channel three times (the same as channels: 3)."
    )
    channels: Literal[1, 3] | None = Field(
        None,
        description="Channels the model takes. Default: 3 with grayscale_to_rgb, else the number of "
        "mean values (one value: 3 when the model's first convolution takes 3 channels, the value applying to "
        "each), else what most images have (grey images become RGB when the model's first "
        "convolution takes 3 channels, colour images grey when it takes 1). Grey images are repeated for a "
        "3-channel model; colour images are skipped for a 1-channel model unless their three channels are "
        "equal or colour_to_grey is 'luma'.",
    )
    colour_to_grey: Literal["refuse", "luma"] = Field(
        "refuse",
        description="A colour image for a 1-channel (grey) model: 'refuse' skips it with a reason (only a "
        "grey image saved as RGB, three equal channels, is taken); 'luma' converts it with the ITU-R 601-2 "
        "luma weights 0.299 R + 0.587 G + 0.114 B, the conversion of PIL's convert('L') and torchvision's "
        "Grayscale (use it when the model was trained on colour files made grey that way). Part of the "
        "heatmap cache key and the run id.",
    )
    alpha_background: Literal["ignore", "black", "white"] = Field(
        "ignore",
        description="Transparent pixels (RGBA, LA, palette transparency, a PNG's colour key): 'ignore' keeps the colour stored "
        "under them, as torchvision's ImageFolder loader does; 'black' or 'white' composites the image "
        "over that colour.",
    )
    high_bit_depth: Literal["scale", "clip"] = Field(
        "scale",
        description="Grey images with more than 8 bits per value (16-bit PNG/TIFF, 32-bit integer or float): "
        "'scale' reads them at their true scale (a 16-bit value / 65535); 'clip' reads them as torchvision's "
        "ImageFolder loader does (convert('RGB'): every value above 255 white, a value / 255 below), for a "
        "model trained through it, e.g. on 8-bit values stored in 16-bit files, which 'scale' reads almost "
        "black. The audit says when it finds such files. 'clip' is part of the heatmap cache key and the "
        "run id.",
    )
    mean: list[float] | None = Field(
        None,
        description="Per-channel mean for normalisation: 3 values (RGB), or 1 value for every channel (as "
        "torchvision's Normalize broadcasts it).",
        min_length=1,
        max_length=3,
    )
    std: list[float] | None = Field(
        None,
        description="Per-channel std for normalisation: 3 values, or 1 value for every channel.",
        min_length=1,
        max_length=3,
    )
    decode_device: Literal["auto", "cpu", "cuda"] = Field(
        "cpu",
        description="Where an image folder's JPEG files are decoded. 'cpu' (the default): Pillow, in the "
        "loader's workers; 'cuda': each batch on the GPU (torchvision/nvJPEG), resized, cropped and normalised "
        "there; 'auto': 'cuda' when the batch stage runs on CUDA and data.kind is image_folder, else 'cpu'. "
        "nvJPEG upsamples chroma otherwise than Pillow (colours at sharp colour edges differ, mean 0.5/255 "
        "on photos) and was not faster end to end on an H200 with 12 workers (docs/batch_stage.md), so it is "
        "opt-in. Other formats, CMYK JPEGs and JPEGs above max_image_pixels always go through Pillow. The "
        "decoder used is part of the heatmap cache key and is recorded in the run (config and "
        "timings.decode_device). Batched GPU decoding needs batch.num_workers >= 1 (the workers read the "
        "files); with 0, files are decoded one by one.",
    )

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _one_number_is_one_value(cls, v: Any) -> Any:
        # "mean: 0.5" (or spray init's --transform mean=0.5) is the one value for every channel
        if isinstance(v, str) and v.strip().lower() == "none":
            raise ValueError(
                "write null (or leave the key out) for no normalisation: in YAML the word none is a string"
            )
        return [v] if isinstance(v, int | float) and not isinstance(v, bool) else v

    @field_validator("resize", mode="before")
    @classmethod
    def _resize_numbers(cls, v: Any) -> Any:
        sides = v if isinstance(v, list | tuple) else [v]
        if v is not None and any(not isinstance(s, int) for s in sides):  # booleans: Section refuses them
            raise ValueError(
                f"give one side (e.g. 256: the shorter side) or [height, width] (e.g. [224, 224]: that exact "
                f"size) as whole numbers, got {v!r}"
            )
        return v

    @field_validator("resize")
    @classmethod
    def _resize_side_or_size(cls, v: int | list[int] | None) -> int | list[int] | None:
        sides = [v] if isinstance(v, int) else v
        if sides is not None and (len(sides) not in (1, 2) or not all(1 <= s <= MAX_SIDE for s in sides)):
            raise ValueError(
                f"give one side (e.g. 256: the shorter side) or [height, width] (e.g. [224, 224]: that exact size) "
                f"of 1 to {MAX_SIDE} pixels, got {v!r}"
            )
        return sides[0] if isinstance(sides, list) and len(sides) == 1 else v

    @model_validator(mode="after")
    def _mean_std_together(self) -> TransformConfig:
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both 'mean' and 'std', or neither")
        if self.mean is not None and self.std is not None:
            if len(self.mean) != len(self.std):
                raise ValueError(f"'mean' has {len(self.mean)} values but 'std' has {len(self.std)}")
            if len(self.mean) == 2:
                raise ValueError("'mean' and 'std' need 3 values (RGB) or 1 (every channel), not 2")
            if not all(math.isfinite(v) for v in [*self.mean, *self.std]):
                raise ValueError("'mean' and 'std' must be finite numbers")
            if any(s <= 0 for s in self.std):
                raise ValueError("every 'std' value must be > 0")
            if any(v > 1 for v in self.mean):
                # pixels are in [0, 1] when mean/std apply (a factory's 0-255 values are refused then)
                mean, std = ([round(v / 255, 3) for v in vs] for vs in (self.mean, self.std))
                raise ValueError(
                    f"'mean' {self.mean} / 'std' {self.std} look like the 0-255 scale (mmpretrain's style), but "
                    "spray normalises pixels in [0, 1]: every input would be nearly constant. Divide them by "
                    f"255: mean {mean}, std {std}"
                )
        want = 3 if self.grayscale_to_rgb else self.channels
        if want is not None and self.mean is not None and len(self.mean) not in (1, want):
            why = "grayscale_to_rgb makes 3 channels" if self.grayscale_to_rgb else f"channels is {want}"
            raise ValueError(f"'mean'/'std' have {len(self.mean)} values but {why}")
        if self.grayscale_to_rgb and self.channels == 1:
            raise ValueError("'grayscale_to_rgb: true' contradicts 'channels: 1'")
        return self

    @model_validator(mode="after")
    def _luma_for_a_grey_model(self) -> TransformConfig:
        if self.colour_to_grey != "luma":
            return self
        if self.grayscale_to_rgb:
            why = "grayscale_to_rgb makes 3 channels"
        elif self.channels == 3:
            why = "channels is 3"
        elif self.mean is not None and len(self.mean) == 3:
            why = "'mean'/'std' have 3 values (an RGB model)"
        else:
            return self
        raise ValueError(
            f"'colour_to_grey: luma' makes colour images grey for a 1-channel model, but {why}; remove "
            "colour_to_grey, or describe the grey model (channels: 1)"
        )


#: The fields each data.kind reads.
_KIND_FIELDS = {
    "image_folder": ("path",),
    "idx": ("images", "labels"),
    "factory": ("factory", "factory_kwargs"),
}


def given_transform(
    guessed: dict[str, Any], given: dict[str, Any], notes: list[str]
) -> tuple[dict[str, Any], list[str]]:
    """``guessed`` (a ``data.transform`` section) with the keys a user gave (``spray init --transform``): a
    value of ``null`` or ``none`` removes the key (``mean=none`` for a model trained on unnormalised inputs);
    and ``notes`` without the CHECK notes on the keys given (``CHECK mean/std: ...``).

    Raises
    ------
    ConfigError
        A key that is no transform field, or a section that does not validate.
    """
    fields = set(TransformConfig.model_fields)
    unknown = sorted(set(given) - fields)
    if unknown:
        raise ConfigError(
            f"--transform {', '.join(unknown)}: not a data.transform key; the keys are {', '.join(sorted(fields))}"
        )
    out = dict(guessed)
    for key, value in given.items():
        if value is None or value == "none":
            out.pop(key, None)
        else:
            out[key] = value
    try:
        TransformConfig.model_validate(out)
    except ValidationError as err:
        said = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'transform'}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"--transform: data.transform {out} is not valid ({said})") from None
    kept = [n for n in notes if not any(k in n.split(":")[0] for k in given)]
    return out, kept + _crop_follows_resize(out, given, guessed)


def _crop_follows_resize(out: dict[str, Any], given: dict[str, Any], guessed: dict[str, Any]) -> list[str]:
    """Bring a guessed centre crop down to a resize the user gave, in place (``out``), with the note that says
    so: the architecture's crop (224, 256) around an image resized to 64 pads it with zeros to the crop's size,
    the image a small patch in a black frame."""
    resize, crop = out.get("resize"), out.get("center_crop")
    if "resize" not in given or "center_crop" in given or crop is None or resize is None:
        return []
    shorter = min(resize) if isinstance(resize, list | tuple) else int(resize)
    if crop <= shorter:
        return []
    out["center_crop"] = shorter
    return [
        f"CHECK center_crop: {shorter}, your resize (the architecture's crop {guessed.get('center_crop')} is larger "
        "than the resized image and would pad it with zeros); give --transform center_crop=N if the model was "
        "trained on another crop"
    ]


class DataConfig(Section):
    """Which dataset to audit."""

    kind: Literal["image_folder", "idx", "factory"] = Field(description="Dataset format.")
    path: Path | None = Field(
        None, description="Root folder (image_folder): path/<class>/<image>, classes in sorted order."
    )
    images: Path | None = Field(None, description="IDX images file, optionally .gz (idx).")
    labels: Path | None = Field(None, description="IDX labels file, optionally .gz (idx).")
    factory: str | None = Field(
        None,
        description="'package.module:function' returning a map-style dataset (factory); the module is "
        "looked up next to the config file first, then on sys.path. Contract: see 'Factory datasets' below.",
    )
    factory_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments for data.factory; checked against its signature when it is called.",
    )
    name: str | None = Field(
        None,
        description="Dataset name, the key of its flags and of the comparison with its previous runs. Default: "
        "the data's absolute path (data.path, data.images or data.factory), which changes when the project moves. "
        "spray init writes the folder's name plus 8 hex digits of its path (train-1a2b3c4d): unique, and kept "
        "when the project moves. Two datasets must never share a name, or each sees the other's flags (spray "
        "warns and spray correct refuses when a flagged id then names another image).",
    )
    class_names: list[str] | None = Field(
        None,
        description="Names of the classes, in label order: a rename only (an image folder's labels follow "
        "its folders' name order; naming a folder after another folder is refused).",
        min_length=1,
    )
    transform: TransformConfig = Field(default_factory=TransformConfig)
    limit: int | None = Field(
        None,
        ge=1,
        description="Use only the first N samples (for trials; an image folder's first N files in name order, "
        "so whole classes may be left out). A trial is an audit of its own, published as 'NAME (data.limit N)': "
        "its runs are not the full audit's previous runs, not in its retention, and not a correction's source "
        "when the full audit has a run; flags on samples it left out are not taken as deleted.",
    )
    max_image_pixels: int = Field(
        50_000_000,
        ge=1,
        description="Largest image decoded, in pixels (a 12000×12000 PNG is 144 million). A larger JPEG is "
        "decoded at reduced scale when transform.resize allows; anything else larger is skipped and listed.",
    )

    @field_validator("factory")
    @classmethod
    def _spec_form(cls, v: str | None) -> str | None:
        if v is not None and not _SPEC.match(v):
            raise ValueError(f"must look like 'package.module:function', got {v!r}")
        return v

    @field_validator("class_names")
    @classmethod
    def _unique_names(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            empty = [i for i, n in enumerate(v) if not n.strip()]
            if empty:
                raise ValueError(
                    f"class names must not be empty: label {empty[0]} has none; give every class a name"
                )
            dupes = sorted({n for n in v if v.count(n) > 1})
            if dupes:
                raise ValueError(f"class names must be unique; repeated: {dupes}")
        return v

    @model_validator(mode="after")
    def _kind_fields(self) -> DataConfig:
        need = {"image_folder": ["path"], "idx": ["images", "labels"], "factory": ["factory"]}[self.kind]
        missing = [k for k in need if getattr(self, k) is None]
        if missing:
            raise ValueError(f"data.kind={self.kind!r} needs {', '.join(repr(m) for m in missing)}")
        # another kind's field would be ignored without a word: a config half-switched from one kind to another
        others = [
            (k, kind)
            for kind, keys in _KIND_FIELDS.items()
            if kind != self.kind
            for k in keys
            if k in self.model_fields_set and getattr(self, k) not in (None, {})
        ]
        if others:
            key, kind = others[0]
            raise ValueError(
                f"data.{key} is for kind {kind}, and data.kind is {self.kind!r}: remove data.{key}, or set "
                f"data.kind: {kind}"
            )
        return self

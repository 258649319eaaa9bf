"""The config reference (docs/config.md), generated from the section models so it cannot drift."""

from __future__ import annotations

from pydantic import BaseModel

from spray.config.audit import AuditConfig

_FACTORY_CONTRACT = """## Factory datasets (`data.kind: factory`)

`data.factory: "package.module:function"` is called as `function(**data.factory_kwargs)`. The module is
looked up in the config file's folder first (a `my_data.py` or a `my_project/` package next to the config;
spray then puts that folder first on `sys.path`), then on `sys.path`. A missing module is reported when the
config is loaded; `factory_kwargs` the function does not take, and an exception raised by it ("data.factory
failed", with your traceback), before any work. An example: `configs/example_factory_dataset.yaml` with
`configs/digits_data.py`.

The function returns a map-style dataset:

| what | required | meaning |
|---|---|---|
| `__len__()`, `__getitem__(i)` | yes | `i` in `0..len-1` |
| item `i` | yes | `(image, label, ...)`; or just `image` when `targets` is given. The same image on every read: a dataset with random augmentation (random crops, flips, colour jitter) is refused (32 items spread over the dataset are each read twice before any work, and a sample that gives another input when the paste test reads it again is warned of), since the heatmap, the paste test and the thumbnail would each see another view; use its evaluation transform |
| `image` | yes | a PIL image (decoded like a file: every mode and bit depth), a numpy array or a tensor: `(H, W)`, `(C, H, W)` or `(H, W, C)` (last axis 1–4 long, first axis longer), C 1 or 3 (2 or 4 with alpha). **Un-normalised**: uint8 is divided by 255, uint16 by 65535, floats are taken as [0, 1]. Resizing and mean/std belong in `data.transform` (thumbnails, the paste test and the ZBox rule need the real pixels); values far outside [0, 1] (by more than 0.5) while `data.transform` sets mean/std are refused, since the images would be normalised twice; without mean/std they are taken as they are (a model may have been trained on them), with a warning that the run records (its report, the dashboard and `spray run`'s status line say it: pixels on the 0–255 scale blow out every thumbnail). |
| `targets` | no | one integer label per sample; saves loading every item to learn the labels. It must hold the labels the items carry (checked on the probed items: torchvision's ImageFolder with a `target_transform` keeps unmapped `targets`) |
| `classes` or `class_names` | no | class names in label order (`data.class_names` wins) |
| `sample_ids` | no | stable, unique ids (default: the position). Flags and the incremental cache follow samples by id: use ids that survive a reordering (file names, database keys); a flag whose id later names another image is reported, not applied (`spray flags check`). |
| `fingerprint` | no | a string that changes whenever the data changes; without it every sample is read to fingerprint the dataset |

A sample that raises in `__getitem__`, or cannot be converted, is skipped and listed with the reason in the
run's `summary.json`; the run goes on.

## How images are read

- Every Pillow mode and bit depth is scaled to [0, 1]: 8-bit by 255; 16-bit grey PNG/TIFF (`I;16*`) and
  16-bit PGM by 65535; 16-bit RGB(A) PNGs come from Pillow as 8-bit (correctly scaled, 8-bit precision);
  32-bit float images are used when their values lie in [0, 1]; 32-bit integer images and floats outside
  [0, 1] are skipped with the reason (their scale cannot be known).
- Channels are brought to what the model takes (`data.transform.channels`): grey → RGB by repetition;
  palette, CMYK, YCbCr, LAB and HSV → RGB by Pillow's conversion; alpha per `alpha_background`. A colour
  image for a grey model is skipped unless its three channels are equal, or converted to grey with
  `colour_to_grey: luma` (0.299 R + 0.587 G + 0.114 B, as PIL's `convert("L")` and torchvision's
  `Grayscale`, for a model trained on colour files made grey that way). The model's channels come from
  `channels`, `grayscale_to_rgb` or `mean`, else from the model's first convolution (or from what most
  images have).
- Every model input must have one size: spray reads the headers of a spread of files, takes the size most
  of them have after the transform, and skips (and lists) an image of another size. If no size is shared
  by most of them, the run stops before any work and asks for `resize` and `center_crop`.
- An image above `data.max_image_pixels` is skipped with the reason before it is decoded (a JPEG is first
  decoded at reduced scale when `resize` allows). Pillow's own decompression-bomb check is replaced by this
  limit.
- Image folders: class `c` is the `c`-th class folder in sorted order (as torchvision's ImageFolder), so an
  empty class folder still counts as a class (a warning names it); non-image files, images lying directly
  in `data.path` (they have no class), broken symlinks and symlink loops are listed as skipped, and so are
  hidden images and folders inside a class folder (`.x.png`, `.thumbnails/`, Synology's `@eaDir/`,
  `__MACOSX/`: thumbnails a file manager added are not the dataset's; a hidden file that is no image by its
  name, `.DS_Store`, is left out without a word, as torchvision's ImageFolder leaves it out). EXIF orientation is not applied,
  as torchvision's ImageFolder does not apply it: a photo is read as its pixels are stored. A folder
  without class folders is refused. One class folder is label 0: right for a model with one output, and
  refused for a model with more (it would be explained as the model's class 0). To audit one class of a
  multi-class model, give every class of the model a folder (the others may be empty): its candidates then get
  the appearance and the removal test (which need only its own images) but no paste test (no image of another
  class to paste into; the evidence says so), and the accuracy check compares with guessing among the classes.
- Where torchvision's ImageFolder reads a folder otherwise, the log and `spray init` say so: `.gif` files
  are audited (ImageFolder does not list them), and 16-bit grey images are scaled (ImageFolder's
  `convert("RGB")` clips every value above 255 to white, so a model trained through it saw other images).
"""


def config_reference_markdown() -> str:
    """The config reference (docs/config.md), generated from the models so it cannot drift."""
    sections: list[tuple[str, type[BaseModel]]] = [("(top level)", AuditConfig)]
    for name, field in AuditConfig.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            sections.append((name, ann))
    for name, model in list(sections[1:]):
        for sub, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                sections.append((f"{name}.{sub}", ann))
    out = [
        "# Config reference",
        "",
        "Generated from `spray/config/` by `python -m spray.config > docs/config.md`. Unknown keys are errors.",
        "Relative paths are resolved against the config file's folder.",
        "",
    ]
    for title, model in sections:
        out += [
            f"## `{title}`",
            "",
            # The docstring's first paragraph, joined: a summary wrapped over two lines must not be cut off.
            " ".join((model.__doc__ or "").strip().split("\n\n")[0].split()),
            "",
            "| key | type | default | meaning |",
            "|---|---|---|---|",
        ]
        for key, f in model.model_fields.items():
            ann = f.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                continue
            tname = (
                str(ann)
                .replace("typing.", "")
                .replace("pathlib.", "")
                .replace("<class '", "")
                .replace("'>", "")
            )
            tname = tname.replace("|", "\\|")  # a bare | would split the markdown table cell
            default = "required" if f.is_required() else repr(f.get_default(call_default_factory=True))
            out.append(f"| `{key}` | `{tname}` | `{default}` | {f.description or ''} |")
        out.append("")
    out.append(_FACTORY_CONTRACT)
    return "\n".join(out)

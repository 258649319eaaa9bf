"""Typed audit configuration, validated when loaded.

A config is a YAML (or JSON) file. Every section is a pydantic model with ``extra="forbid"``, so an
unknown key, a wrong type or a missing file fails in the first second with the key's dotted path and a
hint (the closest valid key), not three hours into a run.

See ``docs/config.md`` (generated from these models) for the reference.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from spray.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TransformConfig(_Section):
    """Input transform applied to every sample before the model (and before hashing the tensor)."""

    resize: int | None = Field(None, description="Resize the shorter side to this many pixels.")
    center_crop: int | None = Field(None, description="Centre-crop to this square size after resizing.")
    grayscale_to_rgb: bool = Field(False, description="Repeat a single grey channel three times.")
    mean: list[float] | None = Field(None, description="Per-channel mean for normalisation.")
    std: list[float] | None = Field(None, description="Per-channel std for normalisation.")

    @model_validator(mode="after")
    def _mean_std_together(self) -> TransformConfig:
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both 'mean' and 'std', or neither")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError(f"'mean' has {len(self.mean)} values but 'std' has {len(self.std)}")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError("every 'std' value must be > 0")
        return self


class ModelConfig(_Section):
    """Which model to audit: a torchvision architecture or a Python factory, plus a checkpoint."""

    architecture: str | None = Field(None, description="torchvision model name, e.g. 'resnet18'.")
    factory: str | None = Field(None, description="'package.module:function' returning an nn.Module.")
    factory_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments for the factory."
    )
    num_classes: int | None = Field(
        None, ge=2, description="Number of output classes (required for 'architecture')."
    )
    checkpoint: Path | None = Field(None, description="State dict file, loaded with weights_only=True.")
    allow_pickle: bool = Field(
        False,
        description="Allow a fully pickled model / non-weights checkpoint. Unpickling runs arbitrary code: "
        "only enable for files you trust.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if (self.architecture is None) == (self.factory is None):
            raise ValueError(
                "set exactly one of 'architecture' (torchvision name) or 'factory' ('pkg.mod:fn')"
            )
        if self.architecture is not None and self.num_classes is None:
            raise ValueError("'num_classes' is required with 'architecture'")
        if self.factory is not None and ":" not in self.factory:
            raise ValueError(f"'factory' must look like 'package.module:function', got {self.factory!r}")
        return self


class DataConfig(_Section):
    """Which dataset to audit."""

    kind: Literal["image_folder", "idx", "factory"] = Field(description="Dataset format.")
    path: Path | None = Field(None, description="Root folder (image_folder).")
    images: Path | None = Field(None, description="IDX images file, optionally .gz (idx).")
    labels: Path | None = Field(None, description="IDX labels file, optionally .gz (idx).")
    factory: str | None = Field(
        None, description="'package.module:function' returning a torch Dataset (factory)."
    )
    factory_kwargs: dict[str, Any] = Field(default_factory=dict)
    name: str | None = Field(
        None, description="Dataset name, used as the key of flags (defaults to the path)."
    )
    class_names: list[str] | None = Field(None, description="Names of the classes, in label order.")
    transform: TransformConfig = Field(default_factory=TransformConfig)
    limit: int | None = Field(None, ge=1, description="Use only the first N samples (for trials).")

    @model_validator(mode="after")
    def _kind_fields(self) -> DataConfig:
        need = {"image_folder": ["path"], "idx": ["images", "labels"], "factory": ["factory"]}[self.kind]
        missing = [k for k in need if getattr(self, k) is None]
        if missing:
            raise ValueError(f"data.kind={self.kind!r} needs {', '.join(repr(m) for m in missing)}")
        return self


class LRPConfig(_Section):
    """LRP settings for the batch stage."""

    composite: str = Field("EpsilonPlusFlat", description="Composite name (zennit's names).")
    composite_kwargs: dict[str, float] = Field(
        default_factory=dict, description="Composite parameters such as epsilon, gamma, low, high."
    )
    target: Literal["label", "pred"] | int = Field("label", description="Which logit to explain.")
    precision: Literal["fp32", "tf32", "bf16"] = Field("fp32", description="Compute precision.")
    canonize: bool = Field(True, description="Fold BatchNorm and canonize residual adds.")


class BatchConfig(_Section):
    """How the batch stage runs."""

    batch_size: int = Field(64, ge=1)
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto")
    grid: int = Field(
        32,
        ge=2,
        description="Analysis grid side; relevance is sum-pooled to grid×grid (or native if smaller).",
    )
    shard_size: int = Field(1024, ge=1, description="Samples per cache shard (the unit of resume).")
    store_full_relevance: bool = Field(False, description="Also keep full-resolution relevance (float16).")
    thumbnails: bool = Field(True, description="Store image thumbnails for the dashboard and report.")
    thumbnail_size: int = Field(64, ge=8, le=512)


class AnalysisConfig(_Section):
    """Spectral relevance analysis settings (per class)."""

    classes: Literal["all"] | list[int] = Field("all", description="Classes to analyse.")
    group_by: Literal["label", "prediction"] = Field(
        "label", description="Group samples by true label or prediction."
    )
    absolute: bool = Field(False, description="Use |relevance| before normalising.")
    blur_sigma: float = Field(
        0.0, ge=0.0, description="Gaussian blur (grid cells): a translation-tolerant distance."
    )
    pca_components: int = Field(128, ge=2)
    n_neighbors: int = Field(10, ge=2)
    n_eigenvectors: int = Field(32, ge=2)
    k_max: int = Field(
        12,
        ge=2,
        le=64,
        description="Largest k of the k-means sweep. 12 (was 8) isolates 5 %-of-class artifacts more often "
        "(detection benchmark, p = 0.05: ceiling F1 0.81 -> 0.87, top F1 0.66 -> 0.71; p >= 0.1 within "
        "0.01).",
    )
    embedding: Literal["umap", "tsne", "spectral"] = Field("umap", description="2-D map for display.")
    map_epochs: int = Field(
        200,
        ge=10,
        description="UMAP epochs of the 2-D map. 200 (UMAP's own default above 10k rows) keeps the "
        "trustworthiness of 500 within 0.005 on the demo's classes at 40 % of the time.",
    )
    min_class_size: int = Field(20, ge=3, description="Classes with fewer samples are skipped (reported).")


class ScoringConfig(_Section):
    """Suspicion scoring of clusters (see docs/detection.md for the calibration behind the defaults)."""

    intervention: bool = Field(
        True, description="Run the paste-the-hot-region test on the leading candidates."
    )
    intervention_candidates: int = Field(3, ge=0, description="Leading candidates per labelling to test.")
    intervention_samples: int = Field(200, ge=1, description="Other-class images to paste into.")
    flip_margin: float = Field(
        0.05, ge=0.0, le=1.0, description="Flag: paste flip rate minus same-class null at least this."
    )
    flip_alpha: float = Field(
        0.01, gt=0.0, lt=1.0, description="Flag: one-sided sign-test p-value below this."
    )
    flip_ratio: float = Field(
        2.0, ge=1.0, description="Flag: smoothed flip rate over the null at least this."
    )
    flag_min_map_score: float = Field(
        0.0, ge=0.0, description="Flag: map score at least this (with a probe)."
    )
    flag_max_fraction: float = Field(
        0.6, gt=0.0, le=1.0, description="Flag: cluster at most this share of its class."
    )
    flag_min_appearance: float = Field(
        0.4,
        ge=0.0,
        le=1.0,
        description="Flag: the members' pixels in the region must be at least this alike (the "
        "'appearance' signal: 1 = identical in every member, as a stamp; 0 = as varied as the class).",
    )
    map_threshold: float = Field(
        0.35, ge=0.0, description="Flag without a probe: map score at least this (weak)."
    )
    translation_tolerant: bool = Field(
        True, description="Also score per-sample windows (artifacts that move)."
    )
    carriers: bool = Field(
        True,
        description="For flagged clusters, list the other samples of the class that repeat the members' "
        "pixels where their relevance is (one scan of the class's inputs per flagged cluster).",
    )
    select_k: Literal["best", "chosen"] = Field(
        "best", description="Score the labelling whose top pattern is best isolated, or only the chosen k."
    )


class OutputConfig(_Section):
    """Where runs go and how many are kept."""

    runs_dir: Path = Field(Path("runs"), description="Directory holding published runs.")
    keep_runs: int = Field(10, ge=1, description="Retention: keep the newest N runs.")
    html_report: bool = Field(True, description="Write a static report.html into each run.")


class NightlyConfig(_Section):
    """Scheduling behaviour."""

    notify_command: str | None = Field(
        None, description="Command run with the summary path appended when there are new findings."
    )
    fail_on_findings: bool = Field(False, description="Exit 10 on any suspicious finding, not only new ones.")


class AuditConfig(_Section):
    """The whole audit configuration."""

    name: str = Field("audit", description="A label for this audit.")
    seed: int = Field(0, description="Seed for every random choice (PCA, kNN, k-means, 2-D map).")
    model: ModelConfig
    data: DataConfig
    lrp: LRPConfig = Field(default_factory=LRPConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    nightly: NightlyConfig = Field(default_factory=NightlyConfig)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    def dataset_key(self) -> str:
        """Key under which flags are stored: the dataset name, or its path."""
        d = self.data
        return d.name or str(d.path or d.images or d.factory)

    def section_hash(self, *sections: str) -> str:
        """Stable hash of the named sections (used for cache keys and the run id)."""
        payload = {s: getattr(self, s).model_dump(mode="json") for s in sections}
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()


def _resolve_paths(cfg: AuditConfig, base: Path) -> None:
    """Make relative paths relative to the config file's folder and check that input files exist."""
    checks: list[tuple[str, Path | None, object, str]] = [
        ("model.checkpoint", cfg.model.checkpoint, cfg.model, "checkpoint"),
        ("data.path", cfg.data.path, cfg.data, "path"),
        ("data.images", cfg.data.images, cfg.data, "images"),
        ("data.labels", cfg.data.labels, cfg.data, "labels"),
    ]
    for dotted, value, owner, attr in checks:
        if value is None:
            continue
        p = value if value.is_absolute() else (base / value)
        if not p.exists():
            raise ConfigError(
                f"{dotted}: file or folder {str(p)!r} does not exist. Fix the path in the config "
                f"(relative paths are resolved against the config file's folder {str(base)!r})."
            )
        setattr(owner, attr, p)
    if not cfg.output.runs_dir.is_absolute():
        cfg.output.runs_dir = base / cfg.output.runs_dir


def _format_validation_error(err: ValidationError, raw: dict[str, Any]) -> str:
    lines = []
    for e in err.errors():
        loc = [str(x) for x in e["loc"]]
        dotted = ".".join(loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            parent_model: type[BaseModel] = AuditConfig
            for part in loc[:-1]:
                field = parent_model.model_fields.get(part)
                ann = getattr(field, "annotation", None) if field else None
                if isinstance(ann, type) and issubclass(ann, BaseModel):
                    parent_model = ann
            close = difflib.get_close_matches(loc[-1], list(parent_model.model_fields), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            valid = ", ".join(parent_model.model_fields)
            lines.append(f"- {dotted}: unknown key.{hint} Valid keys here: {valid}.")
        elif e["type"] == "missing":
            lines.append(f"- {dotted}: required key is missing.")
        else:
            lines.append(f"- {dotted}: {e['msg']} (got {e.get('input')!r}).")
    return "Invalid config:\n" + "\n".join(lines)


def config_from_dict(
    raw: dict[str, Any], *, base_dir: Path | None = None, check_files: bool = True
) -> AuditConfig:
    """Validate a config given as a dict.

    Parameters
    ----------
    raw : dict
        Parsed YAML/JSON.
    base_dir : Path, optional
        Folder that relative paths are resolved against (default: current directory).
    check_files : bool
        Check that input files exist (set False to validate a config on another machine).

    Raises
    ------
    ConfigError
        With every problem, its dotted key and a hint.
    """
    if not isinstance(raw, dict):
        raise ConfigError(
            f"The config must be a mapping of sections (model, data, ...), got {type(raw).__name__}."
        )
    try:
        cfg = AuditConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, raw)) from None
    if check_files:
        _resolve_paths(cfg, (base_dir or Path.cwd()).resolve())
    return cfg


def load_config(path: str | Path, *, check_files: bool = True) -> AuditConfig:
    """Load and validate a YAML or JSON config file.

    Raises
    ------
    ConfigError
        If the file is missing, not YAML, or invalid.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Config file {str(p)!r} does not exist. Pass an existing file with --config.")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"Config file {str(p)!r} is not valid YAML: {err}") from None
    return config_from_dict(raw or {}, base_dir=p.parent, check_files=check_files)


def config_reference_markdown() -> str:
    """The config reference (docs/config.md), generated from the models so it cannot drift."""
    sections: list[tuple[str, type[BaseModel]]] = [("(top level)", AuditConfig)]
    for name, field in AuditConfig.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            sections.append((name, ann))
    sections.append(("data.transform", TransformConfig))
    out = [
        "# Config reference",
        "",
        "Generated from `spray/config.py` by `python -m spray.config > docs/config.md`. Unknown keys are errors.",
        "Relative paths are resolved against the config file's folder.",
        "",
    ]
    for title, model in sections:
        out += [
            f"## `{title}`",
            "",
            (model.__doc__ or "").strip().splitlines()[0],
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
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    sys.stdout.write(config_reference_markdown() + "\n")

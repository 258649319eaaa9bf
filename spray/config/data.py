"""The ``data`` section and its ``transform``: which dataset to audit and how samples become tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from spray.config.section import Section


class TransformConfig(Section):
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


class DataConfig(Section):
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

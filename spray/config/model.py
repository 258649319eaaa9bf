"""The ``model`` section: which model to audit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from spray.config.section import Section


class ModelConfig(Section):
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

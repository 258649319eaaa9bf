"""The ``model`` section: which model to audit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from spray.config.section import Section


class ModelConfig(Section):
    """Which model to audit: a torchvision or timm architecture or a Python factory, plus a checkpoint."""

    # added after runs were recorded: left out at its default, existing runs keep their ids
    omit_at_default = ("checkpoint_key",)

    architecture: str | None = Field(
        None,
        description="torchvision model name, e.g. 'resnet18', or a timm model as 'timm:NAME', e.g. "
        "'timm:convnext_tiny' (built with random weights, pretrained=False: the weights come from "
        "'checkpoint' only, nothing is downloaded).",
    )
    architecture_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Further keyword arguments for the architecture's constructor, e.g. {img_size: 64} "
        "for a timm ViT trained on 64x64 inputs.",
    )
    factory: str | None = Field(None, description="'package.module:function' returning an nn.Module.")
    factory_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments for the factory."
    )
    output: int | str | None = Field(
        None,
        description="For a model whose forward returns a tuple, list or dict (or an object with "
        "attributes): the index or key of the logits, e.g. 0 or 'logits'. Unset: the model must return "
        "the (batch, classes) logits tensor itself.",
    )
    num_classes: int | None = Field(
        None,
        ge=2,
        description="Number of output classes (required for 'architecture'). A factory is not given it (its "
        "factory_kwargs set the class count); when set, the model's outputs must number the same, or the "
        "audit stops.",
    )
    checkpoint: Path | None = Field(
        None,
        description="State dict file (torch.save, loaded with weights_only=True, or .safetensors when the "
        "safetensors package is installed); also a dict holding it under 'state_dict', "
        "'model_state_dict' or 'model' (a Lightning .ckpt: the keys under the prefix, e.g. 'model.', that "
        "match the model exactly; DataParallel's 'module.' is dropped).",
    )
    checkpoint_key: str | None = Field(
        None,
        description="Where the network's weights are in a checkpoint that holds several networks: an entry of "
        "its dict ('state_dict_ema', 'ema'), a key prefix ('student.', 'ema.', 'model.') or '' for the keys "
        "without a prefix. Key prefixes: when more than one fits the model (a distillation's student and "
        "teacher, a model and its EMA), the checkpoint is refused, naming them, rather than one picked. Dict "
        "entries: 'state_dict', 'model_state_dict' or 'model' is taken unless this names another (with a warning "
        "that names the other entries holding weights).",
    )
    allow_pickle: bool = Field(
        False,
        description="Allow a fully pickled model / non-weights checkpoint. Unpickling runs arbitrary code: "
        "only enable for files you trust.",
    )

    @field_validator("output", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        # YAML's true/false would otherwise become the index 1/0
        if isinstance(value, bool):
            raise ValueError(
                "must be the index (an integer) or the key (a string) of the logits, not a boolean"
            )
        return value

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
        if self.architecture_kwargs and self.architecture is None:
            raise ValueError("'architecture_kwargs' needs 'architecture' (a factory takes 'factory_kwargs')")
        if (
            self.architecture is not None
            and self.architecture.startswith("timm:")
            and not self.architecture[5:]
        ):
            raise ValueError(
                "'architecture' 'timm:' needs a model name after the colon, e.g. 'timm:vit_tiny_patch16_224'"
            )
        return self

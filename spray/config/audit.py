"""The whole audit configuration, made of its sections."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from spray.config.analysis import AnalysisConfig
from spray.config.batch import BatchConfig
from spray.config.concepts import ConceptsConfig
from spray.config.correction import CorrectionConfig
from spray.config.data import DataConfig
from spray.config.lrp import LRPConfig
from spray.config.model import ModelConfig
from spray.config.output import NightlyConfig, OutputConfig
from spray.config.scoring import ScoringConfig
from spray.config.section import Section
from spray.errors import ConfigError, DataError

#: Seeds are used by numpy, torch, scikit-learn and UMAP; the smallest common range is 32 bits.
MAX_SEED = 2**32 - 1


def removal_needed_but_off(intervention: bool, flag_rule: str, removal: bool) -> bool:
    """Concept-only findings are tested and their flag rule needs the removal test, which is switched off:
    none of them could ever be flagged."""
    return intervention and flag_rule != "any" and not removal


def pixel_only_reason(config: dict[str, Any]) -> str:
    """Why a run's config analyses pixel space only, in words ("" when concept space is on).

    ``config`` is the config as a run records it (``AuditConfig.model_dump(mode="json")``). Concept space is
    on by default; a config without a concept layer, or without the removal test the concept flag rule needs,
    keeps the pixel-only audit (see ``AuditConfig._concepts_consistent``), and the reason names that setting.
    """
    concepts = config.get("concepts") or {}
    if concepts.get("enabled", False):
        return ""
    if (config.get("lrp") or {}).get("concept_layer") == "none":
        return "lrp.concept_layer is 'none'"
    removal = (config.get("scoring") or {}).get("removal", True)
    if removal_needed_but_off(concepts.get("intervention", True), str(concepts.get("flag_rule")), removal):
        return f"scoring.removal is false, which concepts.flag_rule {concepts.get('flag_rule')!r} needs"
    return "concepts.enabled is false"


class AuditConfig(Section):
    """The whole audit configuration."""

    name: str = Field(
        "audit",
        description="The audit's name: its runs are found by it (changes since the previous run, alerts, "
        "retention) and it is part of the run id; audits sharing a runs folder need names of their own, and "
        "a renamed audit starts its own history.",
    )
    seed: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        strict=True,
        description="Seed for every random choice (PCA, kNN, k-means, 2-D map), 0 to 2**32 - 1.",
    )
    factory_dirs: list[Path] = Field(
        default_factory=list,
        description="Folders searched for factory modules (model.factory, data.factory) after the config's own "
        "folder and before sys.path; relative paths are against the config's folder. spray correct writes the "
        "original config's folder here, so a corrected model's config finds the user's modules.",
    )
    model: ModelConfig
    data: DataConfig
    lrp: LRPConfig = Field(default_factory=LRPConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    concepts: ConceptsConfig = Field(default_factory=ConceptsConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    nightly: NightlyConfig = Field(default_factory=NightlyConfig)
    correction: CorrectionConfig = Field(default_factory=CorrectionConfig)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @model_validator(mode="after")
    def _class_indices_fit(self) -> AuditConfig:
        # Checked here when the config already tells the number of classes; check_class_count does it
        # again at setup, once the dataset and the model are known.
        n = self.model.num_classes or (len(self.data.class_names) if self.data.class_names else None)
        if n is not None:
            for problem in self._class_problems(n, n):
                raise ValueError(problem)
        elif isinstance(self.lrp.target, int) and self.lrp.target < 0:
            raise ValueError(f"lrp.target: class index {self.lrp.target} is negative")
        return self

    @model_validator(mode="after")
    def _frames_fit_the_grid(self) -> AuditConfig:
        # a frame as wide as half the grid covers all of it, and the scoring stage would drop it unsaid
        wide = [w for w in self.scoring.frame_widths if 2 * w >= self.batch.grid]
        if wide:
            raise ValueError(
                f"scoring.frame_widths: a {wide[0]}-cell frame covers the whole {self.batch.grid}x"
                f"{self.batch.grid} analysis grid (batch.grid); give widths below {self.batch.grid / 2:g}"
            )
        return self

    @model_validator(mode="after")
    def _concepts_consistent(self) -> AuditConfig:
        c = self.concepts
        removal_off = removal_needed_but_off(c.intervention, c.flag_rule, self.scoring.removal)
        if (
            c.enabled
            and "enabled" not in c.model_fields_set
            and (self.lrp.concept_layer == "none" or removal_off)
        ):
            # Concept space is on by default: a config that says "no concept layer", or that turned off the
            # removal test its flag rule needs, keeps the pixel-only audit it had, and records it.
            c.enabled = False
        if c.enabled and self.lrp.concept_layer == "none":
            raise ValueError(
                "concepts.enabled is true but lrp.concept_layer is 'none', so the run would hold no concept "
                "vectors and be analysed in pixel space only: set lrp.concept_layer to 'auto' (or a module "
                "path of the model), or concepts.enabled: false"
            )
        if c.enabled and removal_off:
            raise ValueError(
                f"concepts.flag_rule is {c.flag_rule!r} (the removal test must clear its margins) but "
                "scoring.removal is false, so no concept-only finding could ever be flagged: set "
                "scoring.removal: true, concepts.flag_rule: any, or concepts.enabled: false"
            )
        return self

    def _class_problems(self, n_classes: int, n_outputs: int) -> list[str]:
        problems = []
        target = self.lrp.target
        if isinstance(target, int) and not 0 <= target < n_outputs:
            problems.append(
                f"lrp.target: class index {target} is outside 0..{n_outputs - 1} (the model has {n_outputs} "
                "outputs); use 'label', 'pred' or a valid index"
            )
        if isinstance(self.analysis.classes, list):
            bad = sorted(c for c in self.analysis.classes if not 0 <= c < n_classes)
            if bad:
                problems.append(
                    f"analysis.classes: {bad} outside 0..{n_classes - 1} (the dataset has {n_classes} classes)"
                )
        return problems

    def check_class_count(self, n_classes: int, n_outputs: int) -> None:
        """Check the class indices of the config against the dataset's classes and the model's outputs.

        Raises
        ------
        ConfigError
            Naming ``lrp.target`` or ``analysis.classes`` when they are out of range.
        DataError
            An image folder with fewer class folders than the model has outputs (its labels would shift).
        """
        if self.data.kind == "image_folder" and n_outputs > n_classes == 1:
            raise DataError(
                f"The model has {n_outputs} outputs but data.path has a single class folder. spray audits each "
                "class on its own and takes an image's label from its class folder's position in name order (as "
                "torchvision's ImageFolder does; data.class_names only renames), so every image would be "
                "explained and judged as the model's class 0, whichever class it is. To audit one class, give "
                "data.path a folder for every class of the model, named so that their name order is the "
                "model's label order: the others may be empty (an empty folder keeps its place and label, and a "
                "class without images is not analysed)."
            )
        if self.data.kind == "image_folder" and n_outputs > n_classes:
            raise DataError(
                f"The model has {n_outputs} outputs but data.path has {n_classes} class folders. An image "
                "folder's labels are the folders' positions in name order (as in torchvision's ImageFolder), so "
                "with a class folder missing every later folder would be explained and judged as another "
                "class. Restore the missing class folders: an empty folder keeps its place and its label."
            )
        problems = self._class_problems(n_classes, n_outputs)
        if problems:
            raise ConfigError("Invalid config:\n" + "\n".join(f"- {p}." for p in problems))
        declared = self.model.num_classes
        if declared is not None and declared != n_outputs:
            # a factory is not given num_classes (nor is an architecture whose architecture_kwargs override it)
            fix = (
                "the class count of model.factory_kwargs sets it for a factory): set model.num_classes to "
                f"{n_outputs}, or leave it out"
                if self.model.factory is not None
                else f"model.architecture_kwargs overrides it): set model.num_classes to {n_outputs} and drop "
                "num_classes from model.architecture_kwargs"
            )
            raise ConfigError(f"model.num_classes is {declared} but the model has {n_outputs} outputs ({fix}")

    def audit_name(self) -> str:
        """The name this config's runs are published under: ``name``, with ``data.limit`` appended for a trial
        on the first N samples, which is another audit (its runs are neither the full audit's previous run
        nor counted in its retention, and a correction does not take one for the full audit's)."""
        from spray.runs.summary import audit_name

        return audit_name(self.name, self.data.limit)

    def dataset_key(self) -> str:
        """Key under which flags are stored: the dataset name, or its path."""
        d = self.data
        return d.name or str(d.path or d.images or d.factory)

    def flags_db_path(self) -> Path:
        """The flag database: ``correction.flags_db``, else ``flags.sqlite`` beside the runs (output.runs_dir)."""
        from spray.flags.store import default_db_path

        db = self.correction.flags_db
        return Path(db) if db is not None else default_db_path(self.output.runs_dir)

    def section_hash(self, *sections: str, exclude: Mapping[str, set[str]] | None = None) -> str:
        """Stable hash of the named sections (used for cache keys and the run id), without the fields
        ``exclude`` names per section."""
        skip = exclude or {}
        # Fields at their defaults are left out: a release that adds a field (at a default that keeps the old
        # behaviour) keeps every run id, as a changed default comes with a version bump.
        payload = {
            s: getattr(self, s).model_dump(mode="json", exclude=skip.get(s), exclude_defaults=True)
            for s in sections
        }
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

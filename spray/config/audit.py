"""The whole audit configuration, made of its sections."""

from __future__ import annotations

import hashlib
import json

from pydantic import Field, field_validator

from spray.config.analysis import AnalysisConfig
from spray.config.batch import BatchConfig
from spray.config.correction import CorrectionConfig
from spray.config.data import DataConfig
from spray.config.lrp import LRPConfig
from spray.config.model import ModelConfig
from spray.config.output import NightlyConfig, OutputConfig
from spray.config.scoring import ScoringConfig
from spray.config.section import Section


class AuditConfig(Section):
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
    correction: CorrectionConfig = Field(default_factory=CorrectionConfig)

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

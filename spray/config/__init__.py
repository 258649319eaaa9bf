"""Typed audit configuration, validated when loaded.

A config is a YAML (or JSON) file. Every section is a pydantic model with ``extra="forbid"``, so an
unknown key, a wrong type or a missing file fails in the first second with the key's dotted path and a
hint (the closest valid key), not three hours into a run.

See ``docs/config.md`` (generated from these models) for the reference.
"""

from __future__ import annotations

from spray.config.analysis import AnalysisConfig
from spray.config.audit import AuditConfig
from spray.config.batch import BatchConfig
from spray.config.concepts import ConceptsConfig
from spray.config.data import DataConfig, TransformConfig
from spray.config.loading import config_from_dict, load_config
from spray.config.lrp import LRPConfig
from spray.config.model import ModelConfig
from spray.config.output import NightlyConfig, OutputConfig
from spray.config.reference import config_reference_markdown
from spray.config.scoring import ScoringConfig

__all__ = [
    "AnalysisConfig",
    "AuditConfig",
    "BatchConfig",
    "ConceptsConfig",
    "DataConfig",
    "LRPConfig",
    "ModelConfig",
    "NightlyConfig",
    "OutputConfig",
    "ScoringConfig",
    "TransformConfig",
    "config_from_dict",
    "config_reference_markdown",
    "load_config",
]

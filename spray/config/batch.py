"""The ``batch`` section: how the batch stage runs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from spray.config.section import Section


class BatchConfig(Section):
    """How the batch stage runs."""

    batch_size: int = Field(64, ge=1, le=65536, description="Samples per LRP batch.")
    num_workers: int = Field(0, ge=0, le=256, description="DataLoader worker processes.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto': CUDA when available.")
    grid: int = Field(
        32,
        ge=2,
        le=1024,
        description="Analysis grid side; relevance is sum-pooled to grid×grid by area, every pixel counted once "
        "(or native if smaller).",
    )
    shard_size: int = Field(
        1024, ge=1, le=10_000_000, description="Samples per cache shard (the unit of resume)."
    )
    store_full_relevance: bool = Field(False, description="Also keep full-resolution relevance (float16).")
    thumbnails: bool = Field(True, description="Store image thumbnails for the dashboard and report.")
    thumbnail_size: int = Field(
        64,
        ge=8,
        le=512,
        description="Largest thumbnail edge; thumbnails are never larger than the model input (28×28 "
        "inputs get 28×28 thumbnails), grey for a 1-channel model.",
    )
    input_memory_mb: int = Field(
        512,
        ge=0,
        le=1_000_000,
        description="Decoded model inputs kept in memory for the rest of the audit, up to this many MB (the "
        "analysis's paste tests load many samples again; the least recently used leave first); 0: none.",
    )
    dist_timeout_s: int = Field(
        1800,
        ge=10,
        le=7 * 24 * 3600,
        description="Under torchrun: seconds a rank waits for the slowest one where they meet (the end of "
        "the batch stage, rank 0's merge, the end of the analysis) before the run fails. Raise it when one "
        "class is far larger than the others: its rank analyses it alone while the others wait.",
    )

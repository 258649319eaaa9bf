"""The ``analysis`` section: spectral relevance analysis per class."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from spray.config.section import Section


class AnalysisConfig(Section):
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

"""The ``analysis`` section: spectral relevance analysis per class."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from spray.config.section import Section


class KnnSearchConfig(Section):
    """How a class's kNN graph is searched (measured in docs/clustering.md, "The kNN graph")."""

    exact_below: int = Field(
        5000,
        ge=0,
        description="Classes with fewer rows are searched exactly (blocked brute force); larger ones cell by "
        "cell (k-means cells, dense distance blocks to the rows of each row's nearest cells).",
    )
    ivf_dims: int = Field(
        48,
        ge=1,
        le=4096,
        description="Leading principal directions the k-means cells are built in (distances to the "
        "candidates are always taken in all dimensions).",
    )
    cells_per_sqrt_n: float = Field(
        2.0, gt=0.0, le=64.0, description="The index has this times sqrt(n) k-means cells."
    )
    probes: int = Field(
        9,
        ge=1,
        le=1024,
        description="Nearest cells (its own included) whose rows are each row's candidates (recall@10 on "
        "Fashion-MNIST pixels at 50k rows: 0.977 with 8, 0.983 with 9, 0.986 with 10).",
    )
    kmeans_iters: int = Field(5, ge=1, le=1000, description="k-means iterations that place the cells.")
    kmeans_points_per_cell: int = Field(
        32,
        ge=1,
        le=4096,
        description="Training rows per cell for that k-means (a seeded subsample: the cells only choose "
        "candidates, whose distances are exact, so a rough k-means costs little recall).",
    )
    block_mb: int = Field(
        32,
        ge=1,
        le=65_536,
        description="Memory of one block of distances of the approximate search, in MB (a block is a cell's "
        "rows against the rows that probe it, split to fit).",
    )


class KChoiceConfig(Section):
    """The k-means sweep of a class and how its k is chosen (docs/clustering.md)."""

    n_init: int = Field(10, ge=1, le=100, description="k-means restarts per fit of the sweep.")
    max_fit: int = Field(
        50_000,
        ge=100,
        description="Above this many rows k-means is fitted on a seeded subsample of this size and every row "
        "is assigned to its nearest centre (keeps the sweep linear at 1M rows).",
    )
    stability_min: float = Field(
        0.9,
        ge=0.0,
        le=1.0,
        description="A k is stable when refits on subsamples agree with its labelling at least this well "
        "(mean adjusted Rand index).",
    )
    resamples: int = Field(3, ge=1, le=50, description="Subsample refits per k for the stability score.")
    resample_fraction: float = Field(0.8, gt=0.0, le=1.0, description="Share of the rows each refit sees.")
    resample_max: int = Field(
        10_000,
        ge=10,
        description="At most this many rows per refit (agreement is well estimated there); must exceed "
        "analysis.k_max.",
    )
    resample_n_init: int = Field(3, ge=1, le=100, description="k-means restarts of each refit.")
    silhouette_sample: int = Field(
        5000, ge=10, description="The silhouette (quadratic in n) is evaluated on at most this many rows."
    )
    silhouette_slack: float = Field(
        0.1,
        ge=0.0,
        le=2.0,
        description="Stable k whose silhouette is more than this below the best stable silhouette are not "
        "chosen.",
    )
    eigengap_real: float = Field(
        0.25,
        gt=0.0,
        le=1.0,
        description="An eigengap of at least this fraction of the largest candidate's is a real gap; the "
        "smallest k ending at a real gap is chosen.",
    )


class AnalysisConfig(Section):
    """Spectral relevance analysis settings (per class)."""

    classes: Literal["all"] | list[int] = Field(
        "all", description="Classes to analyse: 'all' or a list of class indices."
    )
    group_by: Literal["label", "prediction"] = Field(
        "label", description="Group samples by true label or prediction."
    )
    absolute: bool = Field(False, description="Use |relevance| before normalising.")
    blur_sigma: float = Field(
        0.0,
        ge=0.0,
        le=64.0,
        description="Gaussian blur (grid cells): a translation-tolerant distance.",
    )
    pca_components: int = Field(
        128, ge=2, le=4096, description="Dimensions kept by the randomized PCA before the kNN graph."
    )
    n_neighbors: int = Field(
        10, ge=2, le=512, description="Neighbours per sample in the kNN graph (capped at class size - 1)."
    )
    n_eigenvectors: int = Field(
        32,
        ge=3,
        le=512,
        description="Leading eigenvectors computed per class; must exceed k_max (the k-means sweep uses the "
        "first k for every k up to k_max, and the eigengap one more).",
    )
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
        le=10_000,
        description="UMAP epochs of the 2-D map. 200 (UMAP's own default above 10k rows) keeps the "
        "trustworthiness of 500 within 0.005 on the demo's classes at 40 % of the time.",
    )
    min_class_size: int = Field(20, ge=3, description="Classes with fewer samples are skipped (reported).")
    knn: KnnSearchConfig = Field(
        default_factory=KnnSearchConfig, description="How the kNN graph is searched (`analysis.knn`)."
    )
    k_choice: KChoiceConfig = Field(
        default_factory=KChoiceConfig,
        description="The k-means sweep and the choice of k (`analysis.k_choice`).",
    )

    @field_validator("classes")
    @classmethod
    def _class_indices(cls, v: Literal["all"] | list[int]) -> Literal["all"] | list[int]:
        if isinstance(v, list):
            if not v:
                raise ValueError("give at least one class index, or 'all'")
            if any(c < 0 for c in v):
                raise ValueError(f"class indices are >= 0, got {sorted(c for c in v if c < 0)}")
        return v

    @model_validator(mode="after")
    def _sweep_fits(self) -> AnalysisConfig:
        if self.n_eigenvectors <= self.k_max:
            raise ValueError(
                f"n_eigenvectors ({self.n_eigenvectors}) must be greater than k_max ({self.k_max}): the "
                "k-means sweep needs the first k eigenvectors for every k up to k_max, the eigengap one more"
            )
        if self.k_choice.resample_max <= self.k_max:
            raise ValueError(
                f"k_choice.resample_max ({self.k_choice.resample_max}) must be greater than k_max ({self.k_max}): "
                f"each stability refit clusters a resample of at most resample_max rows into up to k_max "
                f"clusters; give resample_max {self.k_max + 1} or more, or lower k_max"
            )
        return self

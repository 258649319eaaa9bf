"""Synthetic classes, toy inputs and toy models shared by the scoring tests (no training)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from spray.analysis.clustering import cluster_sweep
from spray.analysis.preprocess import normalize_heatmaps, reduce_dimension
from spray.analysis.scoring import InterventionProbe, score_class
from spray.analysis.spectral import spectral_embedding
from spray.config import ScoringConfig
from spray.config.analysis import KChoiceConfig
from spray.lab.synthetic import make_heatmaps
from spray.records import ClusterFinding, ClusteringResult, SpectralResult

N = 600
SIZE = 32
CLASS = 3
NAME = "Sandal"


@dataclass
class Case:
    """A synthetic class: ids, maps, true strategy labels (``small`` is the planted one), spectrum."""

    ids: list[str]
    maps: np.ndarray
    labels: np.ndarray
    small: int
    spectral: SpectralResult
    clustering: ClusteringResult

    @property
    def truth(self) -> np.ndarray:
        """``(N,)`` bool: the planted samples."""
        return self.labels == self.small


def make_case(small_fraction: float, n_clusters: int = 5, seed: int = 2) -> Case:
    heat, labels, small = make_heatmaps(
        N, n_clusters=n_clusters, small_fraction=small_fraction, size=SIZE, seed=seed
    )
    feats = normalize_heatmaps(heat)
    spectral = spectral_embedding(
        reduce_dimension(feats, n_components=64, seed=0), n_neighbors=10, n_eigenvectors=16
    )
    clustering = cluster_sweep(spectral, k_max=6, seed=0, choice=KChoiceConfig(n_init=4))
    ids = [f"s{i:04d}" for i in range(N)]
    return Case(ids, feats.reshape(N, SIZE, SIZE), labels, small, spectral, clustering)


def rows_of(finding_ids: list[str]) -> np.ndarray:
    """Row numbers of ids ``s0042``."""
    return np.array([int(s[1:]) for s in finding_ids])


def score(
    case: Case, probe: InterventionProbe | None = None, seed: int = 0, config: ScoringConfig | None = None
) -> list[ClusterFinding]:
    return score_class(
        CLASS,
        NAME,
        case.ids,
        case.maps,
        case.spectral,
        case.clustering,
        config=config or ScoringConfig(),
        probe=probe,
        seed=seed,
    )


def images(case: Case, bright_members: bool) -> dict[str, torch.Tensor]:
    """Toy inputs (1, SIZE, SIZE): planted samples carry a bright top-left patch, the rest do not."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 0.5, size=(N, 1, SIZE, SIZE)).astype(np.float32)
    if bright_members:
        x[case.truth, :, 1:5, 1:5] = 1.0
    return {sid: torch.from_numpy(x[i]) for i, sid in enumerate(case.ids)}


def other_images(n: int = 100) -> dict[str, torch.Tensor]:
    """Images of other classes: dark noise."""
    return {
        f"o{j}": torch.rand(1, SIZE, SIZE, generator=torch.Generator().manual_seed(j)) * 0.5 for j in range(n)
    }


def make_probe(
    case: Case, predict: Callable[[torch.Tensor], torch.Tensor], carriers: np.ndarray | None = None
) -> InterventionProbe:
    """Paste probe over the toy inputs; ``carriers`` (samples outside the planted cluster, whose maps
    do not show it) get the members' bright patch at the bottom right instead."""
    imgs = images(case, bright_members=True)
    for i in carriers if carriers is not None else []:
        x = imgs[case.ids[i]].clone()
        x[:, 26:30, 26:30] = 1.0
        imgs[case.ids[i]] = x
    others = other_images()
    imgs.update(others)
    return InterventionProbe(
        predict=predict,
        load_inputs=lambda ids: torch.stack([imgs[i] for i in ids]),
        other_ids=list(others),
        other_labels=np.arange(100) % 3 + 4,  # classes 4..6, never CLASS
    )


def patch_predictor(x: torch.Tensor) -> torch.Tensor:
    """Class CLASS iff the top-left patch is bright, else class 0: a pure shortcut model."""
    bright = x[:, 0, 1:5, 1:5].mean(dim=(1, 2)) > 0.8
    return torch.where(bright, torch.tensor(CLASS), torch.tensor(0))


def blind_predictor(x: torch.Tensor) -> torch.Tensor:
    """Ignores the patch entirely."""
    return torch.zeros(len(x), dtype=torch.long)

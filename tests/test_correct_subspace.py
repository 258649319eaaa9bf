"""The artifact subspace: the CAV first, the rest against a dense SVD, the paired effect against a direct
computation, and the penalty over several directions as the sum of single ones."""

from __future__ import annotations

from typing import cast

import numpy as np
import pytest
import torch
from torch import nn

from spray.correct.cav import ArtifactDirection, Separation
from spray.correct.rrclarc import rr_penalty
from spray.correct.samples import SampleSet
from spray.correct.subspace import SubspaceSummary, artifact_subspace, measure_subspace, paired_effect


def _direction(vector: np.ndarray, pooling: str = "none", layer: str = "0") -> ArtifactDirection:
    v = (vector / np.linalg.norm(vector)).astype(np.float32)
    return ArtifactDirection(layer, pooling, v, np.zeros_like(v), Separation(1.0, 1.0, 1, 1, 1.0, 0.0), {})


def test_the_cav_comes_first_and_the_rest_is_the_svd_of_what_it_leaves() -> None:
    rng = np.random.default_rng(0)
    effect = rng.normal(size=(50, 12)) @ np.diag(np.linspace(3, 0.1, 12))
    direction = _direction(effect.mean(0))
    sub = artifact_subspace(direction, torch.from_numpy(effect).float(), 4, 50)
    v = direction.vector.astype(np.float64)
    assert sub.n_directions == 4 and sub.n_pairs == 50
    np.testing.assert_allclose(sub.vectors[0], v, atol=1e-6)
    np.testing.assert_allclose(sub.vectors @ sub.vectors.T, np.eye(4), atol=1e-5)  # orthonormal
    rest = effect - np.outer(effect @ v, v)
    _, _, vh = np.linalg.svd(rest, full_matrices=False)
    for got, want in zip(sub.vectors[1:], vh[:3], strict=True):  # the same lines (signs may differ)
        assert abs(float(got @ want)) == pytest.approx(1.0, abs=1e-5)
    total = (effect**2).sum()
    assert sub.cav_captured == pytest.approx(((effect @ v) ** 2).sum() / total, rel=1e-5)
    assert sub.captured == pytest.approx(
        ((effect @ sub.vectors.T.astype(np.float64)) ** 2).sum() / total, rel=1e-4
    )
    assert sub.cav_captured < sub.captured <= 1.0
    one = artifact_subspace(direction, torch.from_numpy(effect).float(), 1, 50)
    assert one.n_directions == 1 and one.captured == pytest.approx(one.cav_captured)
    assert SubspaceSummary.of(sub).n_directions == 4


def test_a_low_rank_effect_gives_fewer_directions_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.normal(size=(10, 2)))[0].T  # the effect lives in a plane
    effect = rng.normal(size=(30, 2)) @ basis
    sub = artifact_subspace(_direction(effect.mean(0)), torch.from_numpy(effect).float(), 6, 30)
    assert sub.n_directions == 2
    assert sub.captured == pytest.approx(1.0, abs=1e-5)
    assert "only 1 further direction" in caplog.text


def test_paired_effect_is_the_layer_change_of_the_pasted_images() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 36, 2)).eval()
    targets, donors = torch.randn(5, 1, 6, 6), torch.randn(2, 1, 6, 6)
    mask = np.zeros((6, 6), dtype=bool)
    mask[:2, :2] = True
    got = paired_effect(model, "1", targets, donors, mask, False, torch.device("cpu"), batch_size=2)
    pasted = targets.clone()
    for i in range(5):
        pasted[i, :, :2, :2] = donors[i % 2, :, :2, :2]
    with torch.no_grad():
        want = (model[1](model[0](pasted)) - model[1](model[0](targets))).flatten(1)
    torch.testing.assert_close(got, want)
    pooled = paired_effect(model, "1", targets, donors, mask, True, torch.device("cpu"), batch_size=2)
    assert pooled.shape == (5 * 36, 3)  # every position's channel vector is a row
    torch.testing.assert_close(pooled[:36], want[0].view(3, 36).T)


@pytest.mark.parametrize("aggregation", ["position", "whole"])
@pytest.mark.parametrize("pooled", [False, True])
def test_the_penalty_of_several_directions_is_the_sum_of_single_ones(aggregation: str, pooled: bool) -> None:
    torch.manual_seed(2)
    grad = torch.randn(4, 3, 2, 2)
    dim = 3 if pooled else 12
    vectors = torch.linalg.qr(torch.randn(dim, 3))[0].T  # (3, dim) orthonormal
    total = rr_penalty(grad, vectors, aggregation)
    single = sum(rr_penalty(grad, v, aggregation) for v in vectors)
    torch.testing.assert_close(total, single)
    torch.testing.assert_close(
        rr_penalty(grad, vectors[:1], aggregation), rr_penalty(grad, vectors[0], aggregation)
    )


class _Inputs:
    """The one method of a SampleSet that measure_subspace reads."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def inputs(self, rows: np.ndarray) -> torch.Tensor:
        return self.x[torch.from_numpy(rows)]


@pytest.mark.parametrize("pooling", ["none", "max"])
def test_measure_subspace_counts_images_not_rows(pooling: str) -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()).eval()
    x = torch.randn(12, 1, 6, 6)
    mask = np.zeros((6, 6), dtype=bool)
    mask[0, :] = True
    dim = 4 if pooling == "max" else 4 * 36
    direction = _direction(np.random.default_rng(0).normal(size=dim), pooling=pooling, layer="1")
    sub = measure_subspace(model, direction, cast(SampleSet, _Inputs(x)), np.arange(8), np.arange(8, 12), mask,
                           3, torch.device("cpu"), batch_size=5)  # fmt: skip
    assert sub.n_pairs == 8 and sub.n_directions == 3 and sub.vectors.shape == (3, dim)

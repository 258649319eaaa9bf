"""The region's footprint at a layer, against the receptive fields (LRP sends a position's relevance only
into its receptive field), and the region term of RR-ClArC against a direct computation."""

from __future__ import annotations

from typing import cast

import numpy as np
import pytest
import torch
from torch import nn

from spray.config import LRPConfig
from spray.correct.footprint import FootprintSummary, NoGridError, measure_footprint
from spray.correct.rrclarc import region_share
from spray.correct.samples import SampleSet
from spray.errors import ConfigError


class _Samples:
    """What measure_footprint reads of a SampleSet."""

    def __init__(self, x: torch.Tensor, labels: np.ndarray) -> None:
        self.x, self.labels = x, labels

    def inputs(self, rows: np.ndarray) -> torch.Tensor:
        return self.x[torch.from_numpy(np.asarray(rows))]

    def input_bounds(self) -> tuple[float, float]:
        return float(self.x.min()), float(self.x.max())


def _model(side: int = 12) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * (side // 2) ** 2, 3),
    ).eval()
    with torch.no_grad():  # positive convolutions: every position carries relevance (none is a dead ReLU)
        for conv in (model[0], model[3]):
            conv.weight.abs_()
            conv.bias.fill_(0.1)
    return model


def _receptive_fields(model: nn.Module, x: torch.Tensor, layer: int) -> np.ndarray:
    """``(h, w, H, W)`` bool: the input pixels each position of layer ``layer``'s output depends on."""
    x = x[:1].clone().requires_grad_(True)
    out = model[: layer + 1](x)[0].sum(0)  # (h, w)
    fields = np.zeros((*out.shape, *x.shape[-2:]), dtype=bool)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            (g,) = torch.autograd.grad(out[i, j], x, retain_graph=True)
            # a weight sum of the conv kernels: the pixel is inside where any path reaches it
            fields[i, j] = g[0].abs().sum(0).numpy() > 0
    return fields


def test_positions_outside_and_inside_the_region_get_zero_and_one() -> None:
    model = _model()
    torch.manual_seed(1)
    x = torch.rand(6, 1, 12, 12) + 0.1  # positive inputs: every path of the receptive field is used
    samples = cast(SampleSet, _Samples(x, np.array([0, 1, 2, 0, 1, 2])))
    region = np.zeros((12, 12), dtype=bool)
    region[:, :5] = True  # the left five columns
    fp = measure_footprint(model, "4", samples, np.arange(6), region, LRPConfig(), torch.device("cpu"), 16)
    assert fp.weights.shape == (6, 6) and fp.tiles == (6, 6) and fp.n_samples == 6
    fields = _receptive_fields(_model(), x, 4)
    outside = ~(fields & region).any(axis=(2, 3))
    inside = (fields <= region).all(axis=(2, 3))
    assert outside.any() and inside.any()
    np.testing.assert_allclose(fp.weights[outside], 0.0, atol=1e-6)
    np.testing.assert_allclose(fp.weights[inside], 1.0, atol=1e-6)
    between = fp.weights[~outside & ~inside]
    assert bool(((between >= 0) & (between <= 1)).all()) and ((between > 0.01) & (between < 0.99)).any()
    # the whole image and no pixel at all
    full = measure_footprint(
        model, "4", samples, np.arange(3), np.ones((12, 12), dtype=bool), LRPConfig(), torch.device("cpu"), 4
    )
    np.testing.assert_allclose(full.weights, 1.0, atol=1e-6)
    summary = FootprintSummary.of(fp)
    params = {"rr_region_weight": 30.0, "rr_region_target": "artifact_class"}
    assert summary.peak == pytest.approx(1.0) and "on a 6×6 grid" in summary.text(params)
    assert summary.text(params).startswith(
        "region term 30 on the artifact class's relevance (the footprint of 6"
    )
    assert summary.text({"rr_region_weight": 10.0, "rr_region_target": "label"}).startswith(
        "region term 10 on each sample's own class's relevance ("
    )
    flagged = {**params, "rr_region_scope": "flagged"}
    assert summary.text(flagged).startswith(
        "region term 30 on the artifact class's relevance, flagged samples only ("
    )
    # a record from before rr_region_target: the term explained each sample's own class
    assert "on each sample's own class's relevance" in summary.text({"rr_region_weight": 10.0})


def test_a_large_grid_is_measured_in_bands() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 256, 2)
    ).eval()
    x = torch.rand(2, 1, 16, 16) + 0.1
    region = np.zeros((16, 16), dtype=bool)
    region[0] = True
    fp = measure_footprint(
        model, "1", cast(SampleSet, _Samples(x, np.array([0, 1]))), np.arange(2), region, LRPConfig(),
        torch.device("cpu"), 64,
    )  # fmt: skip
    assert fp.tiles == (8, 8)
    blocks = fp.weights.reshape(8, 2, 8, 2)
    np.testing.assert_array_equal(blocks, np.broadcast_to(blocks[:, :1, :, :1], blocks.shape))
    assert fp.weights[0].min() > 0.0 and fp.weights[2:].max() == 0.0  # only the top band reaches row 0


def test_a_layer_without_a_grid_is_refused() -> None:
    model = _model()
    x = torch.rand(2, 1, 12, 12)
    with pytest.raises(ConfigError, match=r"rr_region_weight needs a layer with a \(B, C, H, W\) output"):
        measure_footprint(
            model, "6", cast(SampleSet, _Samples(x, np.array([0, 1]))), np.arange(2),
            np.ones((12, 12), dtype=bool), LRPConfig(), torch.device("cpu"), 4,
        )  # fmt: skip


def test_a_layer_with_a_1x1_output_has_no_grid() -> None:
    # a global pool's (B, C, 1, 1): one position, a constant share, a region term without a gradient
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()  # fmt: skip
    x = torch.rand(2, 1, 12, 12)
    with pytest.raises(NoGridError, match=r"'2' gives \(-1, 4, 1, 1\): .*spatial grid, H×W > 1"):
        measure_footprint(
            model, "2", cast(SampleSet, _Samples(x, np.array([0, 1]))), np.arange(2),
            np.ones((12, 12), dtype=bool), LRPConfig(), torch.device("cpu"), 4,
        )  # fmt: skip


def test_region_share_is_the_footprint_weighted_relevance_share() -> None:
    torch.manual_seed(3)
    a, g = torch.rand(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    fp = torch.rand(4, 4)
    r = np.abs(a.numpy() * g.numpy()).sum(1)
    want = ((r * fp.numpy()).sum((1, 2)) / r.sum((1, 2))).mean()
    assert float(region_share(a, g, fp)) == pytest.approx(want, rel=1e-5)
    assert float(region_share(a, g, torch.zeros(4, 4))) == 0.0
    assert float(region_share(a, g, torch.ones(4, 4))) == pytest.approx(1.0)
    # differentiable in what produced the gradient (the head's weights during fine-tuning)
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    region_share(a, g * w[None, :, None, None], fp).backward()
    assert w.grad is not None and bool(w.grad.abs().sum() > 0)

"""``Explainer(elementwise="compile")``: the rules' element-wise work fused by ``torch.compile`` gives the
eager path's maps (checked on the CPU; on CUDA the same kernels are compiled by Triton)."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn

from spray.errors import ConfigError
from spray.lrp import Explainer, fused
from spray.lrp.fused import fused_active, ratio, ratio_nonneg, scaled_self_ratio
from spray.lrp.numerics import _ratio, _ratio_nonneg_den, _scaled_self_ratio


def _net() -> nn.Module:
    """Conv/BN/ReLU (z+ fused with the ReLU), SiLU (a fused Pass activation), a residual sum (Norm),
    average pooling (Norm) and dense layers (ε)."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1)
            self.act = nn.SiLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.act(self.conv(x))

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        Block(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 16),
        nn.ReLU(),
        nn.Linear(16, 5),
    ).eval()


def test_the_pure_kernels_equal_the_eager_in_place_ones() -> None:
    """The functions handed to torch.compile compute what the eager rules compute (same formulas,
    also at 0 and for negative denominators)."""
    torch.manual_seed(0)
    num, den, g = torch.randn(4, 6, 5, 5), torch.randn(4, 6, 5, 5), torch.randn(4, 6, 5, 5)
    den[0, 0] = 0.0
    assert torch.equal(ratio(num, den, 1e-3), _ratio(num, den.clone(), 1e-3, torch.float32))
    assert torch.equal(ratio_nonneg(num, den, 1e-3), _ratio_nonneg_den(num, den.clone(), 1e-3, torch.float32))
    assert torch.equal(scaled_self_ratio(g, den, 1e-3), _scaled_self_ratio(g.clone(), den, 1e-3))
    assert not fused_active()


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown elementwise mode 'triton'.*eager.*compile"):
        Explainer(_net(), elementwise="triton")


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None, reason="needs a C++ compiler"
)
@pytest.mark.parametrize("composite", ["EpsilonPlusFlat", "EpsilonGammaBox"])
def test_compiled_kernels_give_the_eager_maps(composite: str) -> None:
    model = _net()
    x = torch.randn(3, 3, 8, 8)
    kwargs = {"low": -3.0, "high": 3.0} if composite == "EpsilonGammaBox" else {}
    eager = Explainer(model, composite, composite_kwargs=kwargs)(x)
    compiled = Explainer(model, composite, composite_kwargs=kwargs, elementwise="compile")
    for _ in range(2):  # the first call compiles (and runs the checks), the second reuses the kernels
        result = compiled(x)
        scale = float(eager.relevance.abs().max())
        assert torch.allclose(result.relevance, eager.relevance, rtol=1e-5, atol=1e-6 * scale)
        assert torch.equal(result.targets, eager.targets)
    assert not fused_active()  # the mode is restored after the call
    # the compiled kernels really ran: z+ ratios and ε/Norm rescales, and γ's general ratio
    expected = {"ratio_nonneg", "scaled_self_ratio"} if composite == "EpsilonPlusFlat" else {"ratio"}
    assert expected <= set(fused._COMPILED)

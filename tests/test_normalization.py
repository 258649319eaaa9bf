"""spray/lrp/normalization.py: the normalisation layers explained with σ held constant."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spray import explain


@pytest.mark.parametrize("composite", ["AttnLRP", "CPLRP", "EpsilonPlusFlat"])
def test_timm_rms_norm_is_explained_as_torch_s(composite: str) -> None:
    """An outside check: timm's RmsNorm (no subclass of nn.RMSNorm; it computes x / rms(x) itself) was refused as a
    layer without a rule, though the docs list RMSNorm as supported. Its maps are nn.RMSNorm's, whose rule the LXT
    oracle tests check."""
    from timm.layers.norm import RmsNorm

    def net(norm: nn.Module) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), norm, nn.GELU(), nn.Linear(16, 3)).eval()

    torch.manual_seed(0)
    theirs, ours = net(nn.RMSNorm(16, eps=1e-5)), net(RmsNorm(16, eps=1e-5))
    with torch.no_grad():
        theirs[2].weight.uniform_(0.5, 1.5)
    ours.load_state_dict(theirs.state_dict())
    x = torch.rand(4, 3, 2, 2)
    want = explain(theirs, x, target="pred", composite=composite)
    assert torch.allclose(explain(ours, x, target="pred", composite=composite), want, atol=1e-7)

"""Element-wise activations (spray.lrp.activations): those other libraries build from a child module."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spray.lrp import Explainer
from spray.lrp.activations import is_activation, is_composite_activation
from spray.lrp.composites import get_composite


def test_metaformer_activations_take_pass_as_one_unit() -> None:
    """An outside check: PoolFormer-v2 (StarReLU, s·relu(x)² + b around an nn.ReLU) and ConvFormer/CAFormer's
    head (SquaredReLU) were refused: the square in their forward() had no rule. As element-wise activations
    they take Pass as a whole; their ReLU gets no rule of its own."""
    timm = pytest.importorskip("timm")
    from timm.models.metaformer import SquaredReLU, StarReLU

    from tests.lrp_oracles import realistic_bn

    for act in (StarReLU(), SquaredReLU()):
        assert is_activation(act) and is_composite_activation(act)
    assert not is_composite_activation(nn.Sequential(nn.ReLU()))
    torch.manual_seed(0)
    model = realistic_bn(
        timm.create_model("poolformerv2_s12", pretrained=False, num_classes=10), (3, 32, 32), zero_bias=True
    )
    rules, unsupported = get_composite("EpsilonGammaBox", low=-3.0, high=3.0).assign(model)
    acts = [p for p, m in model.named_modules() if isinstance(m, StarReLU)]
    assert acts and not unsupported
    assert all(type(rules[p]).__name__ == "Pass" and f"{p}.relu" not in rules for p in acts)
    torch.manual_seed(2)
    result = Explainer(model, "EpsilonGammaBox", composite_kwargs={"low": -3.0, "high": 3.0})(
        torch.randn(2, 3, 32, 32)
    )
    ratio = result.relevance.flatten(1).sum(1) / result.logits.gather(1, result.targets[:, None]).squeeze(1)
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-3), ratio.tolist()

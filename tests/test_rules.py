"""Single-layer checks of spray.lrp.rules against zennit 0.5.1 (the test-only reference).

Inputs are mixed-sign here (randn), so the general x⁺/x⁻ paths of z+, αβ and γ are exercised; the
model-level tests in test_lrp.py cover the post-ReLU fast paths.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spray.errors import ConfigError
from spray.lrp.rules import (
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    LeanMaxPool,
    Norm,
    Pass,
    Rule,
    RuleContext,
    RuleModule,
    WSquare,
    ZBox,
    ZPlus,
    stabilize,
)

zennit_rules = pytest.importorskip("zennit.rules")
zennit_composites = pytest.importorskip("zennit.composites")
zennit_attribution = pytest.importorskip("zennit.attribution")


def _zennit_rule(rule: Rule) -> object:
    zr = zennit_rules
    if isinstance(rule, ZPlus):
        return zr.ZPlus(stabilizer=rule.stabilizer)
    if isinstance(rule, AlphaBeta):
        return zr.AlphaBeta(alpha=rule.alpha, beta=rule.beta, stabilizer=rule.stabilizer)
    if isinstance(rule, Gamma):
        return zr.Gamma(gamma=rule.gamma, stabilizer=rule.stabilizer)
    if isinstance(rule, WSquare):
        return zr.WSquare(stabilizer=rule.stabilizer)
    if isinstance(rule, Flat):
        return zr.Flat(stabilizer=rule.stabilizer)
    if isinstance(rule, ZBox):
        return zr.ZBox(low=rule.low, high=rule.high, stabilizer=rule.stabilizer)
    if isinstance(rule, Epsilon):
        return zr.Epsilon(epsilon=rule.epsilon)
    if isinstance(rule, Norm):
        return zr.Norm(stabilizer=rule.stabilizer)
    if isinstance(rule, Pass):
        return zr.Pass()
    raise AssertionError(rule)


def _spray(layer: nn.Module, rule: Rule, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    wrapped = RuleModule(layer, rule, "layer", is_first=True, context=RuleContext())
    xx = x.clone().requires_grad_(True)
    out = wrapped(xx)
    (rel,) = torch.autograd.grad(out, xx, grad_outputs=g)
    return rel


def _zennit(layer: nn.Module, rule: Rule, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    model = nn.Sequential(layer)
    composite = zennit_composites.LayerMapComposite([((type(layer),), _zennit_rule(rule))])
    with zennit_attribution.Gradient(model, composite) as attributor:
        _, rel = attributor(x, lambda out: out * g)  # zennit takes relevance R_out = z ⊙ g
    return rel


def _layers() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    dense = nn.Linear(12, 7)
    grouped = nn.Conv2d(4, 6, 3, padding=1, groups=2)  # flat cannot use the channel-sum backward
    return {
        "conv": (conv, torch.randn(2, 3, 9, 9)),
        "conv_nonneg": (conv, torch.rand(2, 3, 9, 9)),
        "conv_grouped": (grouped, torch.rand(2, 4, 7, 7)),
        "dense": (dense, torch.randn(3, 12)),
    }


RULES = [
    ZPlus(),
    AlphaBeta(),
    AlphaBeta(alpha=1.0, beta=0.0),
    Gamma(),
    Gamma(gamma=1.0),
    Epsilon(),
    Epsilon(0.1),
]
DIRECT = [Flat(), WSquare(), ZBox(low=-2.0, high=2.0), ZBox(low=torch.full((1, 3, 1, 1), -3.0), high=3.0)]


@pytest.mark.parametrize("layer_name", ["conv", "conv_nonneg", "conv_grouped", "dense"])
@pytest.mark.parametrize("rule", RULES + DIRECT, ids=repr)
def test_rule_matches_zennit(layer_name: str, rule: Rule) -> None:
    layer, x = _layers()[layer_name]
    if (
        isinstance(rule, ZBox)
        and layer_name in ("dense", "conv_grouped")
        and isinstance(rule.low, torch.Tensor)
    ):
        pytest.skip("the per-channel bounds are for 3-channel images")
    torch.manual_seed(1)
    g = torch.randn_like(layer(x))
    ours, ref = _spray(layer, rule, x, g), _zennit(layer, rule, x, g)
    ref = ref.detach()
    scale = float(ref.abs().max())
    assert float((ours - ref).abs().max()) <= 1e-5 * scale
    assert torch.nn.functional.cosine_similarity(ours.flatten(), ref.flatten(), dim=0) > 0.99999


def test_norm_and_pass_rules_match_zennit() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    pool = nn.AvgPool2d(2)
    g = torch.randn(2, 3, 4, 4)
    assert torch.allclose(_spray(pool, Norm(), x, g), _zennit(pool, Norm(), x, g), atol=1e-6)
    act = nn.Tanh()
    g = torch.randn_like(x)
    ref = _zennit(act, Pass(), x, g)  # relevance in = relevance out = tanh(x) * g
    # after the first layer (gradient frame): relevance = x * modified gradient
    context = RuleContext()
    context.first_done = True
    xx = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(RuleModule(act, Pass(), "act", False, context)(xx), xx, g)
    assert torch.allclose(x * grad, ref, atol=1e-6)
    # before the first layer the backward carries relevance, which Pass leaves unchanged
    xx = x.clone().requires_grad_(True)
    (rel,) = torch.autograd.grad(RuleModule(act, Pass(), "act", False, RuleContext())(xx), xx, ref)
    assert torch.allclose(rel, ref)


def test_stabilize_follows_zennit_sign_convention() -> None:
    z = torch.tensor([-2.0, 0.0, 3.0])
    assert stabilize(z, 0.5).tolist() == [-2.5, 0.5, 3.5]
    assert stabilize(z.bfloat16(), 0.5).dtype == torch.float32  # division always in fp32


def test_alpha_beta_validates_parameters() -> None:
    with pytest.raises(ConfigError, match="alpha - beta"):
        AlphaBeta(alpha=2.0, beta=2.0)


def test_weight_rule_on_weightless_module_is_config_error() -> None:
    with pytest.raises(ConfigError, match="weight"):
        RuleModule(nn.ReLU(), ZPlus(), "act", is_first=False, context=RuleContext())


def test_bf16_autocast_keeps_fp32_denominators() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.rand(2, 3, 6, 6)
    g = torch.randn(2, 4, 6, 6)
    ref = _spray(conv, ZPlus(), x, g)
    wrapped = RuleModule(conv, ZPlus(), "c", is_first=True, context=RuleContext())
    xx = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = wrapped(xx)
    (rel,) = torch.autograd.grad(out, xx, grad_outputs=g.to(out.dtype))
    assert torch.isfinite(rel).all()
    assert torch.nn.functional.cosine_similarity(rel.float().flatten(), ref.flatten(), dim=0) > 0.99


@pytest.mark.parametrize(
    ("pool", "shape"),
    [
        (nn.MaxPool2d(3, 2, 1), (2, 3, 9, 9)),  # overlapping windows (ResNet stem)
        (nn.MaxPool2d(2), (2, 3, 8, 8)),
        (nn.MaxPool2d(3, 2, ceil_mode=True), (2, 3, 8, 8)),
        (nn.MaxPool2d(2, 1, dilation=2), (2, 3, 7, 7)),
        (nn.MaxPool1d(3, 2, 1), (2, 3, 11)),
        (nn.MaxPool3d(2), (1, 2, 4, 4, 4)),
        (nn.MaxPool2d(3, 1), (3, 7, 7)),  # unbatched
    ],
    ids=repr,
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_lean_maxpool_matches_autograd(pool: nn.Module, shape: tuple[int, ...], channels_last: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(*shape).round(decimals=1)  # ties: both must pick the same winner
    if channels_last:
        if x.dim() != 4:
            pytest.skip("channels_last is a 4-D layout")
        x = x.contiguous(memory_format=torch.channels_last)
    lean = LeanMaxPool(pool)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = pool(xa), lean(xb)
    assert torch.equal(ya, yb)
    g = torch.randn_like(ya)
    (ga,) = torch.autograd.grad(ya, xa, g)
    (gb,) = torch.autograd.grad(yb, xb, g)
    assert torch.allclose(ga, gb, atol=1e-6)


@pytest.mark.parametrize("rule", [ZPlus(), Flat(), AlphaBeta(), Gamma()], ids=repr)
def test_pointwise_conv_on_channels_last_uses_onednn_and_matches(rule: Rule) -> None:
    import spray.lrp.kernels as kernels

    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 1)
    x = torch.rand(2, 6, 5, 5)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    assert kernels._LinearOp(conv)._onednn(x_cl, conv.weight)
    assert not kernels._LinearOp(conv)._onednn(x, conv.weight)  # contiguous: PyTorch's dispatch
    g = torch.randn_like(conv(x))
    ours = _spray(conv, rule, x_cl, g.contiguous(memory_format=torch.channels_last))
    plain = _spray(conv, rule, x, g)
    ref = _zennit(conv, rule, x, g).detach()
    assert torch.allclose(ours, plain, rtol=1e-5, atol=1e-6 * float(plain.abs().max()))
    assert float((ours - ref).abs().max()) <= 1e-5 * float(ref.abs().max())


def test_nonneg_denominator_clamps_round_off_negatives() -> None:
    # z+ denominators are >= 0 in exact arithmetic, but Winograd/FFT convolutions (cuDNN) can return
    # tiny negative values; without the clamp, den + eps could be 0 (inf) or negative (sign flip).
    import spray.lrp.numerics as numerics

    eps = 1e-6
    num = torch.tensor([1.0, 1.0, 2.0, 0.0])
    den = torch.tensor([-1e-6, -3e-7, 1.0, 0.0])
    ratio = numerics._ratio_nonneg_den(num, den.clone(), eps, torch.float32)
    assert torch.isfinite(ratio).all()
    expected = num / (den.clamp(min=0) + eps)
    assert torch.equal(ratio, expected)
    assert bool((ratio >= 0).all())

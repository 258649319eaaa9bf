"""spray.lrp against zennit 0.5.1 on real architectures (random weights, randomised BN statistics).

Reference side: zennit's own composites and canonizers (SequentialMergeBatchNorm, VGGCanonizer,
ResNetCanonizer). zennit 0.5.1's BatchNorm merge (#208, fixed in 1.0.0) leaves the BN module in
place with ``running_var = 1`` but the original ``eps``, so every merged BN still scales by
``1/sqrt(1 + eps)``; over the ~20-50 BNs of a ResNet that moves the maps by ~1e-4 of their maximum.
The reference therefore uses zennit's canonizers with that one line corrected (``running_var =
1 - eps``), see ``FixedMergeBatchNorm``; ``test_zennit_bn_merge_bug_is_the_only_difference`` shows
the uncorrected reference differs and the corrected one agrees to ~1e-6.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from spray.errors import ConfigError, ModelError, UnsupportedLayerError
from spray.lrp import Explainer, LRPResult, explain
from spray.lrp.rules import Pass

zc = pytest.importorskip("zennit.composites")
zcan = pytest.importorskip("zennit.canonizers")
ztv = pytest.importorskip("zennit.torchvision")
zattr = pytest.importorskip("zennit.attribution")

ZENNIT_NAMES = {
    "EpsilonPlusFlat": "epsilon_plus_flat",
    "EpsilonGammaBox": "epsilon_gamma_box",
    "EpsilonAlpha2Beta1Flat": "epsilon_alpha2_beta1_flat",
    "EpsilonPlus": "epsilon_plus",
    "EpsilonAlpha2Beta1": "epsilon_alpha2_beta1",
}
BOX = {"low": -3.0, "high": 3.0}


class FixedMergeBatchNorm(zcan.SequentialMergeBatchNorm):
    """zennit's SequentialMergeBatchNorm with the 0.5.1 identity-BN bug corrected (see module doc)."""

    @staticmethod
    def merge_batch_norm(modules: Any, batch_norm: Any) -> None:
        zcan.MergeBatchNorm.merge_batch_norm(modules, batch_norm)
        batch_norm.running_var.data = torch.full_like(batch_norm.running_var, 1.0 - batch_norm.eps)


def _resnet_canonizers(fixed: bool = True) -> list[Any]:
    if not fixed:
        return [ztv.ResNetCanonizer()]
    return [FixedMergeBatchNorm(), ztv.ResNetBottleneckCanonizer(), ztv.ResNetBasicBlockCanonizer()]


# --------------------------------------------------------------------------------------------------
# models


def _randomise_bn(model: nn.Module, zero_bias: bool = False) -> nn.Module:
    """Random BN statistics so that folding is really tested; optionally make all effective biases 0."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) * 0.6 - 0.3)
                if zero_bias:  # folded bias (b - mean)·scale + beta = 0
                    m.bias.copy_(m.running_mean * m.weight / torch.sqrt(m.running_var + m.eps))
            elif zero_bias and isinstance(m, nn.Conv2d | nn.Linear) and m.bias is not None:
                m.bias.zero_()
    return model.eval()


class SmallCNN(nn.Module):
    """Conv/BN/ReLU(inplace)/MaxPool/AvgPool/Flatten/Linear/Dropout, 32×32 input."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.5),
            nn.Linear(256, 32),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(32, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _vgg11_bn() -> nn.Module:
    # torchvision's VGG11-BN feature extractor and 7×7 adaptive pool; the 4096-wide classifier is
    # narrowed to 64 so the test stays fast (same layer types, same structure).
    model = torchvision.models.vgg11_bn(num_classes=10)
    model.classifier = nn.Sequential(
        nn.Linear(512 * 7 * 7, 64),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(64, 64),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(64, 10),
    )
    return model


MODELS: dict[str, tuple[Callable[[], nn.Module], int, Callable[[], list[Any]]]] = {
    "small_cnn": (SmallCNN, 32, lambda: [FixedMergeBatchNorm()]),
    "vgg11_bn": (_vgg11_bn, 32, lambda: [FixedMergeBatchNorm()]),  # VGGCanonizer == SequentialMerge
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=10), 64, _resnet_canonizers),
    "resnet50": (lambda: torchvision.models.resnet50(num_classes=10), 64, _resnet_canonizers),
}


_MODELS: dict[tuple[str, bool], nn.Module] = {}


def _model(name: str, zero_bias: bool = False, fresh: bool = False) -> nn.Module:
    """Seeded model; cached (the Explainer never modifies it) unless ``fresh``."""
    key = (name, zero_bias)
    if fresh or key not in _MODELS:
        torch.manual_seed(0)
        model = _randomise_bn(MODELS[name][0](), zero_bias)
        if fresh:
            return model
        _MODELS[key] = model
    return _MODELS[key]


def _inputs(name: str, batch: int = 2) -> torch.Tensor:
    torch.manual_seed(2)
    size = MODELS[name][1]
    return torch.randn(batch, 3, size, size).clamp(-2.5, 2.5)  # inside the ZBox bounds


def _kwargs(composite: str) -> dict[str, Any]:
    return dict(BOX) if composite == "EpsilonGammaBox" else {}


def _zennit(
    model: nn.Module, x: torch.Tensor, composite: str, targets: torch.Tensor, canonizers: list[Any]
) -> torch.Tensor:
    comp = zc.COMPOSITES[ZENNIT_NAMES[composite]](canonizers=canonizers, **_kwargs(composite))
    with zattr.Gradient(model, comp) as attributor:
        _, rel = attributor(x, lambda out: torch.zeros_like(out).scatter_(1, targets[:, None], 1.0) * out)
    return rel.detach()


_CACHE: dict[tuple[str, str], tuple[LRPResult, torch.Tensor]] = {}


def _pair(model_name: str, composite: str) -> tuple[LRPResult, torch.Tensor]:
    key = (model_name, composite)
    if key not in _CACHE:
        model, x = _model(model_name), _inputs(model_name)
        ours = Explainer(model, composite, composite_kwargs=_kwargs(composite))(x)
        ref = _zennit(model, x, composite, ours.targets, MODELS[model_name][2]())
        _CACHE[key] = (ours, ref)
    return _CACHE[key]


def _assert_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    cos = nn.functional.cosine_similarity(ours.flatten(1), ref.flatten(1), dim=1)
    assert bool((cos >= 0.9999).all()), cos.tolist()
    err = float((ours - ref).abs().max())
    assert err <= 1e-4 * float(ref.abs().max()), (err, float(ref.abs().max()))


# --------------------------------------------------------------------------------------------------
# agreement with zennit

# Cost on 2 busy cores is dominated by zennit (γ and αβ re-run 4-5 forwards per layer). Every
# composite runs on the small CNN, VGG11-BN and ResNet-18; the two composites without a special first
# layer differ from their Flat variants only in the first layer, so they run on the small CNN and
# VGG11-BN; ResNet-50 (the benchmark model) runs the default composite.
CASES = [
    *[(m, c) for m in ("small_cnn", "vgg11_bn") for c in ZENNIT_NAMES],
    *[
        ("resnet18", c)
        for c in ("EpsilonPlusFlat", "EpsilonGammaBox", "EpsilonAlpha2Beta1Flat", "EpsilonPlus")
    ],
    ("resnet50", "EpsilonPlusFlat"),
]


@pytest.mark.parametrize(("model_name", "composite"), CASES)
def test_matches_zennit(model_name: str, composite: str) -> None:
    ours, ref = _pair(model_name, composite)
    assert ours.relevance.shape == ref.shape and ours.relevance.dtype == torch.float32
    _assert_close(ours.relevance, ref)


def test_zennit_bn_merge_bug_is_the_only_difference() -> None:
    ours, fixed = _pair("resnet18", "EpsilonPlusFlat")
    model, x = _model("resnet18"), _inputs("resnet18")
    buggy = _zennit(model, x, "EpsilonPlusFlat", ours.targets, _resnet_canonizers(fixed=False))
    scale = float(fixed.abs().max())
    assert float((ours.relevance - fixed).abs().max()) < 1e-5 * scale
    assert float((buggy - fixed).abs().max()) > 1e-5 * scale  # the 1/sqrt(1+eps) per merged BN


# --------------------------------------------------------------------------------------------------
# conservation (zero effective biases: every bias absorbs relevance otherwise)

# αβ is conservative only where both the positive and negative parts of a pre-activation are
# non-zero; with random weights that holds almost everywhere, so all composites pass at 1e-3.
CONSERVATION = [
    *[("small_cnn", c) for c in ZENNIT_NAMES],
    *[
        (m, c)
        for m in ("vgg11_bn", "resnet18")
        for c in ("EpsilonPlusFlat", "EpsilonGammaBox", "EpsilonAlpha2Beta1Flat")
    ],
    ("resnet50", "EpsilonPlusFlat"),
]


@pytest.mark.parametrize(("model_name", "composite"), CONSERVATION)
def test_conservation_with_zero_biases(model_name: str, composite: str) -> None:
    model, x = _model(model_name, zero_bias=True), _inputs(model_name)
    result = Explainer(model, composite, composite_kwargs=_kwargs(composite))(x)
    target_logit = result.logits.gather(1, result.targets[:, None]).squeeze(1)
    ratio = result.relevance.flatten(1).sum(1) / target_logit
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-3), ratio.tolist()


# --------------------------------------------------------------------------------------------------
# targets


def test_targets_pred_label_int_tensor() -> None:
    model, x = _model("small_cnn"), _inputs("small_cnn", batch=4)
    explainer = Explainer(model)
    pred = explainer(x)
    assert pred.targets.dtype == torch.int64
    assert torch.equal(pred.targets, pred.logits.argmax(1))
    labels = torch.tensor([3, 1, 4, 1])
    by_label = explainer(x, target="label", labels=labels)
    assert torch.equal(by_label.targets, labels)
    assert torch.equal(explainer(x, target=7).targets, torch.full((4,), 7))
    per_sample = explainer(x, target=labels)
    assert torch.allclose(per_sample.relevance, by_label.relevance)
    # each sample is explained independently of the others in the batch
    single = explainer(x[1:2], target=1)
    assert torch.allclose(single.relevance[0], per_sample.relevance[1], atol=1e-6)
    with pytest.raises(ConfigError, match="labels"):
        explainer(x, target="label")
    with pytest.raises(ConfigError, match="range"):
        explainer(x, target=10)
    with pytest.raises(ConfigError, match="shape"):
        explainer(x, target=torch.tensor([1, 2]))
    with pytest.raises(ConfigError):
        explainer(x, target="best")


def test_explain_one_liner() -> None:
    model, x = _model("small_cnn"), _inputs("small_cnn")
    rel = explain(model, x, target=2, composite="EpsilonPlus")
    assert torch.allclose(rel, Explainer(model, "EpsilonPlus")(x, target=2).relevance)


# --------------------------------------------------------------------------------------------------
# the user's model is never changed


def _hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
    )


@pytest.mark.parametrize("train_mode", [False, True])
def test_user_model_is_unchanged(train_mode: bool) -> None:
    model = _model("resnet18", fresh=True)
    model.train(train_mode)
    model.layer1.register_forward_hook(lambda *args: None)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads_before = {n: p.requires_grad for n, p in model.named_parameters()}
    hooks, x = _hook_count(model), _inputs("resnet18")
    explainer = Explainer(model, "EpsilonGammaBox", composite_kwargs=BOX)
    explainer(x)
    explain(model, x)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bitwise, incl. BN running stats
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads_before
    assert _hook_count(model) == hooks
    assert model.training == train_mode
    assert all(m.training == train_mode for m in model.modules())
    assert type(model.layer1[0]).forward is torchvision.models.resnet.BasicBlock.forward
    assert "forward" not in vars(model.layer1[0])
    assert not explainer.model.training
    assert explainer.model is not model


# --------------------------------------------------------------------------------------------------
# errors


class _Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class _ScaledAct(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sign(x) * x.abs().sqrt()


class _MyNorm(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.std(1, keepdim=True) * self.weight


def test_unsupported_layers_are_named_before_any_forward() -> None:
    calls: list[int] = []
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        _ScaledAct(),
        _Custom(),
        _MyNorm(4),
        nn.GELU(),  # supported now (Pass), as is LayerNorm (Normalize)
        nn.Flatten(),
        nn.LayerNorm(4 * 6 * 6),
        nn.Linear(4 * 6 * 6, 3),
    )
    model.register_forward_pre_hook(lambda *args: calls.append(1))
    with pytest.raises(UnsupportedLayerError) as info:
        Explainer(model)
    message = str(info.value)
    assert "3 module(s)" in message
    assert "1: tests.test_lrp._ScaledAct (an element-wise activation)" in message
    assert "2: tests.test_lrp._Custom (a layer with weights)" in message
    assert "3: tests.test_lrp._MyNorm (a normalisation layer)" in message
    assert "_ScaledAct: Pass()" in message and "_MyNorm: Normalize()" in message
    assert "GELU" not in message and "LayerNorm" not in message.split("Supported")[0]
    assert "extra_rules" in message and "register_layer_rule" in message
    assert not calls
    # registering rules makes it work; Pass on an element-wise module
    rules = {_ScaledAct: Pass(), _Custom: Pass(), _MyNorm: Pass()}
    explainer = Explainer(model, extra_rules=rules)
    assert explainer(torch.randn(2, 3, 8, 8)).relevance.shape == (2, 3, 8, 8)


def test_an_instance_norm_is_pointed_at_the_group_norm_that_computes_the_same() -> None:
    """An outside check: the refusal suggested Normalize() or Epsilon(), which were refused in turn; the way
    that works is GroupNorm(C, C) in its place (the same computation, which spray explains)."""
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.InstanceNorm2d(4, affine=True), nn.Flatten(), nn.Linear(144, 3)
    )
    with pytest.raises(UnsupportedLayerError) as info:
        Explainer(model)
    message = str(info.value)
    assert "(an instance normalisation)" in message and "nn.GroupNorm(C, C" in message
    assert "extra_rules={InstanceNorm2d" not in message  # no rule to give it
    torch.manual_seed(0)
    x = torch.randn(2, 1, 8, 8)
    twin = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(4, 4), nn.Flatten(), nn.Linear(144, 3))
    twin.load_state_dict(model.state_dict())
    assert torch.allclose(model(x), twin(x), atol=1e-5)  # the replacement computes the same
    assert Explainer(twin)(x).relevance.shape == x.shape


def test_lstm_is_unsupported() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LSTM(4, 4))
    with pytest.raises(UnsupportedLayerError, match=r"1: torch\.nn\.modules\.rnn\.LSTM"):
        Explainer(model)


def test_nan_logits_raise_model_error() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x = torch.randn(2, 3, 2, 2)
    x[1, 0, 0, 0] = float("nan")
    with pytest.raises(ModelError, match="NaN"):
        Explainer(model)(x)


def test_bad_composite_and_precision() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with pytest.raises(ConfigError, match="EpsilonPlusFlat"):
        Explainer(model, "EpsilonMinus")
    with pytest.raises(ConfigError, match="precision"):
        Explainer(model, precision="fp8")


def test_bf16_precision_runs_and_roughly_agrees() -> None:
    model, x = _model("small_cnn"), _inputs("small_cnn")
    ref = Explainer(model)(x).relevance
    low = Explainer(model, precision="bf16")(x).relevance
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    cos = nn.functional.cosine_similarity(low.flatten(1), ref.flatten(1), dim=1)
    assert bool((cos > 0.95).all()), cos.tolist()


def test_mlp_on_flattened_images() -> None:
    # first layer behind a Flatten: the relevance-out layer hands relevance to the Flatten gradient
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    x = torch.randn(3, 3, 4, 4)
    for composite in ("EpsilonPlusFlat", "EpsilonPlus"):
        ours = Explainer(model, composite)(x)
        ref = _zennit(model, x, composite, ours.targets, [])
        _assert_close(ours.relevance, ref)


# --------------------------------------------------------------------------------------------------
# engine internals that must not change the maps: ReLU fusion, lean max-pool, channels_last layout


def _rule_modules(explainer: Explainer) -> dict[str, Any]:
    from spray.lrp.rules import RuleModule

    return {p: m for p, m in explainer.model.named_modules() if isinstance(m, RuleModule)}


@pytest.mark.parametrize("model_name", ["small_cnn", "vgg11_bn", "resnet18"])
@pytest.mark.parametrize("composite", ["EpsilonPlusFlat", "EpsilonAlpha2Beta1Flat"])
def test_fusion_pooling_and_layout_do_not_change_maps(
    model_name: str, composite: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import spray.lrp.preparation as lrp

    model, x = _model(model_name), _inputs(model_name)
    default = Explainer(model, composite)
    assert default.channels_last  # CPU + Conv2d
    fast = default(x)
    assert fast.relevance.is_contiguous()
    plain_layout = Explainer(model, composite, channels_last=False)(x)
    monkeypatch.setattr(lrp, "_fuse_relus", lambda m, unfused=None: [])
    monkeypatch.setattr(lrp, "lean_maxpools", lambda m: 0)
    unfused = Explainer(model, composite, channels_last=False)
    assert not any(m.fuse_relu for m in _rule_modules(unfused).values())
    plain = unfused(x)
    for other in (plain_layout, plain):
        assert torch.equal(other.targets, fast.targets)
        scale = float(other.relevance.abs().max())
        assert float((fast.relevance - other.relevance).abs().max()) <= 1e-5 * scale


def test_relu_fusion_only_where_the_relu_is_the_sole_consumer() -> None:
    explainer = Explainer(_model("resnet18"))
    blocks = [m for m in explainer.model.modules() if hasattr(m, "lrp_fused")]
    assert blocks and all(all(b.lrp_fused) and b.lrp_add.fuse_relu for b in blocks)
    ruled = _rule_modules(explainer)
    assert ruled["layer1.0.conv1"].fuse_relu
    assert not ruled["conv1"].fuse_relu  # the stem ReLU runs in ResNet.forward, which spray cannot see
    assert not ruled["layer1.0.conv2"].fuse_relu  # BasicBlock: conv2 feeds the residual sum
    assert not ruled["fc"].fuse_relu

    class MyReLU(nn.ReLU):  # a subclass may do anything in forward(): never fused
        pass

    torch.manual_seed(0)
    seq = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),  # folded into the conv, becomes Identity: skipped over
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        MyReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 3),
    )
    ex = Explainer(seq.eval())
    ruled = _rule_modules(ex)
    assert ruled["0"].fuse_relu and isinstance(ex.model[2], nn.Identity)
    assert not ruled["3"].fuse_relu and isinstance(ex.model[4], MyReLU)
    assert torch.isfinite(ex(torch.rand(2, 3, 8, 8)).relevance).all()
    # ReLUs outside an exact nn.Sequential (custom forward) are never fused
    small = Explainer(_model("small_cnn"))
    assert any(m.fuse_relu for m in _rule_modules(small).values())


class _ViewNet(nn.Module):
    """``.view()`` on activations: fails on channels_last tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.conv(x))
        return self.fc(y.view(y.shape[0], -1))


def test_channels_last_falls_back_once_when_the_forward_needs_contiguous(
    caplog: pytest.LogCaptureFixture,
) -> None:
    torch.manual_seed(0)
    model, x = _ViewNet().eval(), torch.randn(2, 3, 6, 6)
    explainer = Explainer(model)
    assert explainer.channels_last
    with caplog.at_level("WARNING", logger="spray.lrp"):
        first = explainer(x)
    assert not explainer.channels_last and "channels_last" in caplog.text
    ref = Explainer(model, channels_last=False)(x)
    assert torch.allclose(first.relevance, ref.relevance, rtol=1e-5, atol=1e-7)
    assert torch.allclose(explainer(x).relevance, ref.relevance, rtol=1e-5, atol=1e-7)
    # an error that is not about the layout is raised, and the layout is kept
    ex2 = Explainer(SmallCNN().eval())
    with pytest.raises(RuntimeError):
        ex2(torch.randn(2, 5, 32, 32))
    assert ex2.channels_last


def test_resnet_without_canonization_runs() -> None:
    # Unfolded BNs get Pass; torchvision then adds the identity in place (`out += identity`) to the
    # Pass output, which must be a fresh tensor (it used to be an autograd view error).
    model, x = _model("resnet18"), _inputs("resnet18")
    result = Explainer(model, canonize=False)(x)
    assert torch.isfinite(result.relevance).all()
    ref = Explainer(model)(x)
    cos = nn.functional.cosine_similarity(result.relevance.flatten(1), ref.relevance.flatten(1), dim=1)
    assert bool((cos > 0.99).all()), cos.tolist()  # measured 0.9996: the sums lose the Norm rule


# --------------------------------------------------------------------------------------------------
# ReLU fusion must not change what a parent module sees


class _Taps(nn.Module):
    """Iterates its Sequential and keeps the pre-ReLU conv outputs (hypercolumn style)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.tail = nn.Sequential(nn.Conv2d(16, 4, 1), nn.ReLU())  # called as a whole: may fuse
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps = []
        for i, m in enumerate(self.features):
            x = m(x)
            if i % 2 == 0:
                taps.append(x)
        return self.fc(self.flat(self.pool(self.tail(torch.cat(taps, 1)))))


class _Indexed(nn.Module):
    """Calls the layers of its Sequential by index and reads the (pre-ReLU) output of the first."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.features = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.flat = nn.Flatten()
        self.fc = nn.Linear(2 * 4 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.features[0](self.stem(x))
        post = self.features[1](pre)
        return self.fc(self.flat(torch.cat([pre, post], 1)))


@pytest.mark.parametrize("canonize", [True, False])
@pytest.mark.parametrize("model_cls", [_Taps, _Indexed])
def test_fusion_is_undone_where_the_parent_reads_the_layer_output(
    model_cls: type[nn.Module], canonize: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import spray.lrp.preparation as lrp

    torch.manual_seed(0)
    model, x = model_cls().eval(), torch.randn(2, 3, 6, 6)
    explainer = Explainer(model, canonize=canonize)
    ruled = _rule_modules(explainer)
    assert ruled["features.0"].fuse_relu  # structurally a candidate before the first call
    result = explainer(x, target=0)
    with torch.no_grad():
        assert torch.allclose(result.logits, model(x), rtol=1e-5, atol=1e-6)
    assert not ruled["features.0"].fuse_relu
    assert isinstance(explainer.model.features[1], nn.ReLU)  # the ReLU is back in place
    if model_cls is _Taps:
        assert ruled["tail.0"].fuse_relu  # a Sequential that runs as a whole keeps its fusion
    monkeypatch.setattr(lrp, "_fuse_relus", lambda m, unfused=None: [])
    expected = Explainer(model, canonize=canonize)(x, target=0)
    assert torch.allclose(result.relevance, expected.relevance, rtol=1e-5, atol=1e-7)
    # later calls keep the same (unfused) copy and results
    assert torch.equal(explainer(x, target=0).relevance, result.relevance)


def test_fusion_never_crosses_a_module_registered_twice_in_one_sequential() -> None:
    class Shift(nn.Module):  # does not commute with ReLU
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x - 0.5

    from spray.lrp.rules import Gradient

    torch.manual_seed(0)
    shift = Shift()
    seq = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        shift,
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        shift,  # the same module again: named_children() skips it
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 3),
    ).eval()
    x = torch.rand(2, 3, 6, 6)
    for canonize in (False, True):
        ex = Explainer(seq, extra_rules={Shift: Gradient()}, canonize=canonize)
        assert not any(m.fuse_relu for m in _rule_modules(ex).values())
        with torch.no_grad():
            assert torch.allclose(ex(x, target=0).logits, seq(x), rtol=1e-5, atol=1e-6)


def test_reference_check_undoes_fusion_before_blaming_canonization(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import spray.lrp.fusion as lrp_fusion

    torch.manual_seed(0)
    model, x = _Taps().eval(), torch.randn(2, 3, 6, 6)
    # if the structural check missed a reader, the numeric reference check (canonize=True) catches it
    monkeypatch.setattr(lrp_fusion._FusionWatch, "violations", lambda self: [])
    explainer = Explainer(model)
    with caplog.at_level("INFO", logger="spray.lrp"):
        result = explainer(x, target=0)
    assert "fusion undone" in caplog.text
    assert not any(m.fuse_relu for m in _rule_modules(explainer).values())
    with torch.no_grad():
        assert torch.allclose(result.logits, model(x), rtol=1e-5, atol=1e-6)

    class Misordered(nn.Module):  # bn is registered after conv_a but applied after conv_b
        def __init__(self) -> None:
            super().__init__()
            self.seq = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
            self.conv_a = nn.Conv2d(4, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.conv_b = nn.Conv2d(4, 4, 3, padding=1)
            self.fc = nn.Linear(8 * 6 * 6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.seq(x)
            a, b = self.conv_a(h), self.bn(self.conv_b(h))
            return self.fc(torch.cat([a, b], 1).flatten(1))

    bad = _randomise_bn(Misordered())
    with pytest.raises(ModelError, match=r"other logits than the model .*with ReLU fusion off.*BatchNorm"):
        Explainer(bad)(x)
    assert torch.isfinite(Explainer(bad, canonize=False)(x).relevance).all()


def test_lean_maxpool_is_inserted_in_the_copy() -> None:
    from spray.lrp.rules import LeanMaxPool

    explainer = Explainer(_model("vgg11_bn"))
    lean = [m for m in explainer.model.modules() if type(m) is LeanMaxPool]
    wrapped = {id(m.pool) for m in lean}
    pools = [m for m in explainer.model.modules() if isinstance(m, nn.MaxPool2d)]
    assert all(id(m) in wrapped for m in pools)  # every max-pool of the copy sits inside a LeanMaxPool
    originals = [m for m in _model("vgg11_bn").modules() if isinstance(m, nn.MaxPool2d)]
    assert len(lean) == len(originals) > 0  # and the user's model keeps its own
    # a pool with a user rule keeps its own module inside the RuleModule
    ruled = Explainer(_model("small_cnn"), extra_rules={nn.MaxPool2d: Pass()})
    inner = [m.inner for m in _rule_modules(ruled).values() if isinstance(m.inner, nn.MaxPool2d)]
    assert inner and not any(isinstance(m, LeanMaxPool) for m in ruled.model.modules())


def _tiny_bottleneck_net() -> nn.Module:
    from torchvision.models.resnet import Bottleneck

    torch.manual_seed(0)
    down = nn.Sequential(nn.Conv2d(16, 32, 1, stride=2, bias=False), nn.BatchNorm2d(32))
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
        Bottleneck(16, 4),
        Bottleneck(16, 8, stride=2, downsample=down),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 5),
    )
    return _randomise_bn(model)


@pytest.mark.parametrize("composite", ["EpsilonPlusFlat", "EpsilonAlpha2Beta1Flat"])
def test_bottleneck_fusion_and_onednn_pointwise_match_the_plain_engine(
    composite: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import spray.lrp.kernels as kernels
    import spray.lrp.preparation as lrp

    model = _tiny_bottleneck_net()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 12, 12)
    hits = {"onednn": 0}
    original = kernels._LinearOp._onednn

    def counting(self: Any, t: torch.Tensor, w: torch.Tensor) -> bool:
        used = original(self, t, w)
        hits["onednn"] += int(used)
        return used

    monkeypatch.setattr(kernels._LinearOp, "_onednn", counting)
    fast_explainer = Explainer(model, composite)
    assert fast_explainer.channels_last
    fast = fast_explainer(x)
    assert hits["onednn"] > 0  # the 1×1 convs of the blocks went through oneDNN
    blocks = [m for m in fast_explainer.model.modules() if hasattr(m, "lrp_fused")]
    assert len(blocks) == 2 and all(b.lrp_fused[-1] for b in blocks)  # fusions survived the check
    if composite == "EpsilonPlusFlat":  # z+ fuses its ReLU (αβ does not)
        assert all(all(b.lrp_fused) for b in blocks)
        assert _rule_modules(fast_explainer)["3.conv1"].fuse_relu

    monkeypatch.setattr(kernels, "ONEDNN_POINTWISE", False)
    monkeypatch.setattr(lrp, "_fuse_relus", lambda m, unfused=None: [])
    hits["onednn"] = 0
    plain = Explainer(model, composite, channels_last=False)(x)
    assert hits["onednn"] == 0
    assert torch.equal(plain.targets, fast.targets)
    assert torch.allclose(plain.logits, fast.logits, rtol=1e-5, atol=1e-6)
    scale = float(plain.relevance.abs().max())
    assert float((fast.relevance - plain.relevance).abs().max()) <= 1e-5 * scale


# --------------------------------------------------------------------------------------------------
# layout: 5-D models and the channels_last fallback


class _Mixed(nn.Module):
    """A Conv3d stem (video/volume) followed by a Conv2d on the time-pooled map."""

    def __init__(self) -> None:
        super().__init__()
        self.c3 = nn.Conv3d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.c3(x)).mean(2)
        return self.fc(self.flat(self.relu(self.c2(y))))


def test_models_with_5d_weights_run_by_default_and_with_channels_last() -> None:
    torch.manual_seed(0)
    model, x = _Mixed().eval(), torch.randn(2, 3, 4, 6, 6)
    default = Explainer(model)
    assert not default.channels_last  # channels_last is a 4-D layout: off for 3-D models
    ref = default(x)
    assert ref.relevance.shape == x.shape
    forced = Explainer(model, channels_last=True)  # only the 4-D tensors are converted
    assert forced.channels_last
    assert forced.model.c2.inner.weight.is_contiguous(memory_format=torch.channels_last)
    assert forced.model.c3.inner.weight.is_contiguous()
    assert torch.allclose(forced(x).relevance, ref.relevance, rtol=1e-5, atol=1e-7)


_FAILURES_LEFT: dict[str, int] = {}


class _Failing(nn.Module):
    """Raises ``error`` on the first ``times`` forward passes of it and its copies together (the explained
    copy and the reference copy of the output check share the count), then behaves like ``SmallCNN``."""

    def __init__(self, error: BaseException, times: int = 1) -> None:
        super().__init__()
        self.net = SmallCNN()
        self.error, self.token = error, f"failing-{id(self)}"
        _FAILURES_LEFT[self.token] = times

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _FAILURES_LEFT[self.token] > 0:
            _FAILURES_LEFT[self.token] -= 1
            raise self.error
        return self.net(x)


def test_channels_last_fallback_only_for_layout_errors(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    # out of memory: raised as is, no retry, layout kept
    ex = Explainer(_Failing(torch.OutOfMemoryError("CPU out of memory (stride 4)")).eval(), canonize=False)
    with pytest.raises(torch.OutOfMemoryError):
        ex(x)
    assert ex.channels_last
    assert torch.isfinite(ex(x).relevance).all() and ex.channels_last
    # a layout-looking error that the contiguous run raises too: the original error, layout kept
    view_error = RuntimeError("view size is not compatible with input tensor's size and stride")
    ex = Explainer(_Failing(view_error, times=2).eval(), canonize=False)
    with caplog.at_level("WARNING", logger="spray.lrp"), pytest.raises(RuntimeError) as info:
        ex(x)
    assert str(info.value) == str(view_error) and ex.channels_last
    assert "contiguous layout from now on" not in caplog.text
    assert any("contiguous layout failed too" in note for note in getattr(info.value, "__notes__", []))
    # one that only the channels_last run raises: switched, and the log says so
    ex = Explainer(_Failing(RuntimeError("input is not contiguous (stride)"), times=1).eval(), canonize=False)
    with caplog.at_level("WARNING", logger="spray.lrp"):
        assert torch.isfinite(ex(x).relevance).all()
    assert not ex.channels_last and "contiguous layout from now on" in caplog.text


def test_bf16_on_a_bottleneck_resnet_passes_the_reference_check() -> None:
    """bf16 round-off over a deep residual net exceeded the old 1 % reference tolerance (a ModelError)."""
    from torchvision.models.resnet import Bottleneck, ResNet

    torch.manual_seed(0)
    m = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=7).eval()
    with torch.no_grad():
        m.fc.weight.mul_(30)  # large logits: the round-off is relative to them
    x = torch.rand(2, 3, 64, 64)
    full = Explainer(m)(x, target=1).relevance
    low = Explainer(m, precision="bf16")(x, target=1).relevance
    cos = torch.nn.functional.cosine_similarity(full.flatten(1), low.flatten(1), dim=1)
    assert bool((cos > 0.99).all()), cos


def test_a_float64_model_is_refused_with_the_fix() -> None:
    """The Python API met a raw "Input type (float) and bias type (double)" error."""
    from spray.errors import ConfigError
    from spray.lab.cnn import small_cnn

    with pytest.raises(ConfigError, match=r"float32 model.*torch.float64.*model.float\(\)"):
        Explainer(small_cnn(num_classes=3).double())
    # a float64 buffer the forward never uses is no reason to refuse a float32 model (a review found this)
    model = small_cnn(num_classes=3).eval()
    model.register_buffer("history", torch.zeros(4, dtype=torch.float64))
    assert Explainer(model)(torch.rand(2, 1, 28, 28), target=0).relevance.shape == (2, 1, 28, 28)

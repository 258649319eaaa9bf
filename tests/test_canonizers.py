"""Canonization: exact BN folding on a copy, ResNet residual sums as modules, composite layer maps."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from spray.errors import ConfigError
from spray.lrp.canonizers import ResidualAdd, canonize, fold_batchnorm, resolve_canonizers
from spray.lrp.composites import COMPOSITES, get_composite, register_layer_rule
from spray.lrp.rules import AlphaBeta, Epsilon, Flat, Gamma, Norm, Pass, ZBox, ZPlus


def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 6),
        nn.BatchNorm1d(6),
        nn.ReLU(),
        nn.Linear(6, 3),
    )
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model


def test_fold_batchnorm_is_exact_and_leaves_original_alone() -> None:
    model = _bn_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copy = canonize(model)
    assert model.training and not copy.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(copy[1], nn.Identity) and isinstance(copy[5], nn.Identity)
    assert not any(p.requires_grad for p in copy.parameters())
    assert not copy[2].inplace and model[2].inplace
    x = torch.randn(4, 3, 5, 5)
    with torch.no_grad():
        expected = model.eval()(x)
        assert torch.allclose(copy(x), expected, atol=1e-5)


def test_fold_only_adjacent_pairs() -> None:
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 3, 1), nn.ReLU(), nn.BatchNorm2d(3))
    assert fold_batchnorm(model) == []


def test_resnet_blocks_route_sum_through_module() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    assert resolve_canonizers(model, "auto") == ["merge_batchnorm", "resnet"]
    copy = canonize(model)
    adds = [m for m in copy.modules() if isinstance(m, ResidualAdd)]
    assert len(adds) == 8
    calls: list[int] = []
    for add in adds:
        add.register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(copy(x), model(x), atol=1e-4)
    assert len(calls) == 8
    assert "forward" not in vars(model.layer1[0])  # the original blocks keep their forward


def test_bottleneck_and_canonizer_names() -> None:
    model = torchvision.models.resnet50(num_classes=3).eval()
    copy = canonize(model, ["merge_batchnorm", "resnet"])
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(copy(x), model(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError, match="known"):
        canonize(model, ["fold_everything"])


def test_user_hooks_are_not_copied() -> None:
    model = _bn_model()
    seen: list[int] = []
    model[0].register_forward_hook(lambda *args: seen.append(1))
    with torch.no_grad():
        canonize(model)(torch.randn(1, 3, 5, 5))
    assert seen == []
    assert len(model[0]._forward_hooks) == 1


# --------------------------------------------------------------------------------------------------
# composite layer maps (same mapping as zennit 0.5.1's composites)


def _rules(name: str, model: nn.Module, **kwargs: object) -> dict[str, type]:
    rules, unsupported = get_composite(name, **kwargs).assign(canonize(model))
    assert unsupported == []
    return {k: type(v) for k, v in rules.items()}


def test_layer_maps_match_zennit_semantics() -> None:
    model = torchvision.models.resnet18(num_classes=5)
    epf = _rules("EpsilonPlusFlat", model)
    assert epf["conv1"] is Flat and epf["layer1.0.conv1"] is ZPlus and epf["fc"] is Epsilon
    assert epf["avgpool"] is Norm and epf["layer1.0.lrp_add"] is Norm
    assert "maxpool" not in epf and "relu" not in epf  # plain gradient
    egb = _rules("EpsilonGammaBox", model)
    assert egb["conv1"] is ZBox and egb["layer4.1.conv2"] is Gamma and egb["fc"] is Epsilon
    ab = _rules("EpsilonAlpha2Beta1Flat", model)
    assert ab["conv1"] is Flat and ab["layer2.0.downsample.0"] is AlphaBeta
    ep = _rules("EpsilonPlus", model)
    assert ep["conv1"] is ZPlus
    assert _rules("EpsilonAlpha2Beta1", model)["conv1"] is AlphaBeta
    # zennit's flat first layer is the first *linear* layer (dense or conv); its box layer the first conv
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 2))
    assert _rules("EpsilonPlusFlat", mlp)["1"] is Flat
    assert _rules("EpsilonGammaBox", mlp)["1"] is Epsilon


def test_unfolded_batchnorm_gets_pass() -> None:
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2, 2))
    assert _rules("EpsilonPlusFlat", model)["0"] is Pass


def test_get_composite_names_and_errors() -> None:
    assert set(COMPOSITES) >= {"EpsilonPlusFlat", "EpsilonGammaBox", "EpsilonAlpha2Beta1Flat", "EpsilonPlus"}
    assert get_composite("epsilon_plus_flat").name == "EpsilonPlusFlat"  # zennit's registry key works too
    comp = get_composite("EpsilonGammaBox", low=-2.0, high=2.0, gamma=0.5, epsilon=0.01)
    rules = {type(r): r for _, r in comp.layer_map + comp.first_map}
    assert rules[Gamma].gamma == 0.5 and rules[Epsilon].epsilon == 0.01 and rules[ZBox].low == -2.0
    with pytest.raises(ConfigError, match=r"EpsilonPlusFlat, EpsilonGammaBox"):
        get_composite("Zennit")
    with pytest.raises(ConfigError, match="bad parameters"):
        get_composite("EpsilonPlus", gamma=1.0)


def test_register_layer_rule() -> None:
    class Scale(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * x

    model = nn.Sequential(nn.Conv2d(3, 2, 3), Scale(), nn.Flatten(), nn.Linear(2, 2))
    _, unsupported = get_composite("EpsilonPlusFlat").assign(canonize(model))
    assert [p for p, _ in unsupported] == ["1"]
    register_layer_rule(Scale, Pass())
    try:
        assert _rules("EpsilonPlusFlat", model)["1"] is Pass
    finally:
        from spray.lrp import composites

        composites._USER_RULES.pop(Scale)
    with pytest.raises(ConfigError):
        register_layer_rule(Scale, "pass")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["FrozenBatchNorm2d", "SyncBatchNorm"])
def test_frozen_and_sync_batchnorm_are_explained_as_batchnorm(kind: str) -> None:
    """An outside check: torchvision's FrozenBatchNorm2d and nn.SyncBatchNorm were refused as having no rule, and
    the advised Epsilon rule gave maps at median cosine 0.89 to the folded model's. Each becomes the plain BatchNorm
    it computes in eval mode; the maps are zennit's for that model."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    from spray import explain
    from tests.lrp_oracles import zennit_reference

    def net(bn: type[nn.Module]) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), bn(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), bn(8), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
        ).eval()  # fmt: skip

    torch.manual_seed(0)
    plain = net(nn.BatchNorm2d)
    for m in plain.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 2), m.bias.data.uniform_(-1, 1)
    other = net(FrozenBatchNorm2d if kind == "FrozenBatchNorm2d" else nn.SyncBatchNorm)
    state = plain.state_dict()
    other.load_state_dict({k: v for k, v in state.items() if k in other.state_dict()})
    x = torch.rand(4, 3, 16, 16)
    targets = plain(x).argmax(1)
    got = explain(other, x, target=targets)
    want = zennit_reference(plain, x, "EpsilonPlusFlat", targets)
    assert torch.allclose(got, want, atol=1e-6 * float(want.abs().max()) + 1e-9, rtol=1e-4)


def test_a_batchnorm_type_given_a_rule_keeps_it() -> None:
    """A user who registered a rule for FrozenBatchNorm2d (as the old refusal advised) keeps the maps of that rule:
    canonization leaves the type alone."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    from spray.lrp.canonizers import canonize

    net = nn.Sequential(nn.Conv2d(3, 4, 3), FrozenBatchNorm2d(4), nn.ReLU())
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in canonize(net, "auto").modules())
    assert any(
        isinstance(m, FrozenBatchNorm2d) for m in canonize(net, "auto", keep=(FrozenBatchNorm2d,)).modules()
    )


def test_a_sync_batchnorm_anywhere_is_explained_as_its_plain_batchnorm() -> None:
    """A review: a SyncBatchNorm after a ReLU (an MLP head converted by convert_sync_batchnorm) became a
    BatchNorm2d and stopped the forward pass on its 2-D input."""
    from spray import explain

    def net(bn2: type[nn.Module], bn1: type[nn.Module]) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(3, 8, 3), nn.ReLU(), bn2(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 8),
            nn.ReLU(), bn1(8), nn.Linear(8, 3),
        ).eval()  # fmt: skip

    torch.manual_seed(0)
    plain = net(nn.BatchNorm2d, nn.BatchNorm1d)
    for m in plain.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
    synced = net(nn.SyncBatchNorm, nn.SyncBatchNorm)
    synced.load_state_dict(plain.state_dict())
    x = torch.rand(4, 3, 10, 10)
    targets = plain(x).argmax(1)
    assert torch.allclose(explain(synced, x, target=targets), explain(plain, x, target=targets), atol=1e-7)


# timm's re-parameterisable blocks (RepVGG, MobileOne, FastViT, RepViT): explained in their inference form


def _timm_model(name: str) -> nn.Module:
    timm = pytest.importorskip("timm")
    from tests.lrp_oracles import realistic_bn

    torch.manual_seed(0)
    return realistic_bn(
        timm.create_model(name, pretrained=False, num_classes=10), (3, 32, 32), zero_bias=True
    )


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1))


@pytest.mark.parametrize(
    ("name", "composite"), [("repvgg_a0", "EpsilonPlusFlat"), ("mobileone_s0", "EpsilonGammaBox")]
)
def test_reparameterisable_cnn_blocks_match_zennit_on_their_inference_form(name: str, composite: str) -> None:
    """An outside check: RepVGG and MobileOne in their training form (parallel branches that read one input)
    were refused; their heatmaps are now zennit's on the model timm reparameterizes."""
    from timm.utils import reparameterize_model

    from spray.lrp import Explainer
    from tests.lrp_oracles import zennit_reference

    model = _timm_model(name)
    torch.manual_seed(2)
    x = torch.randn(2, 3, 32, 32)
    kwargs = {"low": -3.0, "high": 3.0} if composite == "EpsilonGammaBox" else {}
    ours = Explainer(model, composite, composite_kwargs=kwargs)(x)
    ref = zennit_reference(reparameterize_model(model), x, composite, ours.targets, **kwargs)
    assert _cos(ours.relevance, ref).min() > 0.9999
    ratio = ours.relevance.flatten(1).sum(1) / ours.logits.gather(1, ours.targets[:, None]).squeeze(1)
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-3), ratio.tolist()


@pytest.mark.parametrize("name", ["fastvit_t8", "repvit_m0_9"])
def test_reparameterisable_hybrids_are_explained_and_conserve_relevance(name: str) -> None:
    """An outside check: FastViT (its stem's branches read the input) and RepViT (a BatchNorm on the sum of
    three branches: the copy computed other logits) were refused. In their inference form they conserve
    relevance (biases 0), give the maps of the model timm reparameterizes, and a model the user already
    reparameterized (some of timm's methods raise when called twice) is explained as it is."""
    from timm.utils import reparameterize_model

    from spray.lrp import Explainer

    model = _timm_model(name)
    torch.manual_seed(2)
    x = torch.randn(2, 3, 32, 32)
    box = {"low": -3.0, "high": 3.0}
    ours = Explainer(model, "EpsilonGammaBox", composite_kwargs=box, concept_layer="auto")(x)
    ratio = ours.relevance.flatten(1).sum(1) / ours.logits.gather(1, ours.targets[:, None]).squeeze(1)
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-3), ratio.tolist()
    fused = reparameterize_model(model)
    theirs = Explainer(fused, "EpsilonGammaBox", composite_kwargs=box, concept_layer="auto")(x, ours.targets)
    assert _cos(ours.relevance, theirs.relevance).min() > 0.9999
    assert ours.concepts is not None and theirs.concepts is not None
    assert _cos(ours.concepts, theirs.concepts).min() > 0.9999


def test_reparameterize_leaves_the_user_model_a_users_own_method_and_the_concept_layer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only timm's blocks are changed, on the copy; a block above the concept layer keeps its branches, so
    that the layer still exists in the copy."""
    timm = pytest.importorskip("timm")

    model = _timm_model("mobileone_s0")
    assert resolve_canonizers(model, "auto")[0] == "reparameterize"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level("INFO", logger="spray.lrp.canonizers"):
        copied = canonize(model, "auto")
    # an outside check: nothing said the model was converted, while later messages named the copy's modules
    assert "re-parameterisable blocks in their inference form (spray's copy" in caplog.text
    assert {k: v for k, v in model.state_dict().items()}.keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not any(getattr(m, "conv_kxk", None) is not None for m in copied.modules())
    kept = canonize(model, "auto", protect="stages.0.0.conv_kxk.0")
    assert kept.get_submodule("stages.0.0.conv_kxk.0") is not None
    assert kept.get_submodule("stages.0.1").reparam_conv is not None

    # a module of a type given a rule of its own (P-ClArC's projection) inside a block: the block is kept
    inner = model.get_submodule("stages.0.0.conv_scale.bn")
    inner.__class__ = type("Ruled", (type(inner),), {})
    assert canonize(model, "auto").get_submodule("stages.0.0").reparam_conv is not None
    held = canonize(model, "auto", keep=(inner.__class__,))
    assert held.get_submodule("stages.0.0").reparam_conv is None
    assert held.get_submodule("stages.0.1").reparam_conv is not None

    class Own(nn.Conv2d):
        def fuse(self) -> nn.Module:  # a user's method of that name may mean anything
            raise AssertionError("called")

    own = nn.Sequential(Own(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    own(torch.rand(1, 3, 8, 8))
    assert "reparameterize" not in resolve_canonizers(own, "auto")
    assert timm is not None


def test_a_model_holding_tensors_computed_with_autograd_is_copied() -> None:
    """An outside check: a model pruned with torch.nn.utils.prune (its ``weight`` is ``weight_orig * mask``,
    computed with autograd) stopped spray with deepcopy's raw "graph leaves" RuntimeError; so did timm models that
    cache attention biases after a forward pass with gradients."""
    from torch.nn.utils import prune

    from spray.lrp import Explainer
    from spray.lrp.canonizers import model_copy

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 64, 4)).eval()
    prune.l1_unstructured(model[0], "weight", 0.5)
    model.cache = {"bias": model[3].weight * 2}  # a cached tensor with a graph, as timm's
    assert model[0].weight.grad_fn is not None
    copied = model_copy(model)
    assert copied[0].weight.grad_fn is None and torch.equal(copied[0].weight, model[0].weight)
    assert copied.cache["bias"].grad_fn is None
    x = torch.randn(2, 3, 8, 8)
    result = Explainer(model)(x)
    with torch.no_grad():
        assert torch.allclose(result.logits, model(x), atol=1e-5)

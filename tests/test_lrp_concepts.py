"""spray.lrp.concepts against zennit-crp 0.6 (CondAttribution + ChannelConcept, on zennit 0.5.1).

Oracle side: zennit's composite with the same canonizers as tests/test_lrp.py, CRP's recorded relevance
at the concept layer summed per channel, and CRP's conditional heatmaps (relevance of one channel of the
layer propagated to the input). zennit-crp is a test oracle only (install: ``pip install --no-deps
zennit-crp==0.6.0``; its own pin asks for zennit<=0.4.6, but the parts used here work on 0.5.1).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from spray.errors import ConfigError, ModelError
from spray.lab.cnn import small_cnn
from spray.lrp import Explainer
from spray.lrp.concepts import concept_channels, default_concept_layer, resolve_concept_layer
from tests.test_lrp import FixedMergeBatchNorm, SmallCNN, _randomise_bn, _resnet_canonizers

zc = pytest.importorskip("zennit.composites")


def _crp() -> tuple[Any, Any]:
    attribution = pytest.importorskip("crp.attribution")
    concepts = pytest.importorskip("crp.concepts")
    return attribution, concepts


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return nn.functional.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1)


def _crp_reference(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    layer: str,
    canonizers: list[Any],
    channels: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CRP's (B, C) channel relevance at ``layer`` and (B, H, W) heatmap (conditional on ``channels``)."""
    attribution, concepts = _crp()
    model = copy.deepcopy(model).eval()
    for m in model.modules():
        if getattr(m, "inplace", False) is True:
            m.inplace = False  # zennit's hooks need the gradient path intact
    composite = zc.EpsilonPlusFlat(canonizers=canonizers)
    conditions = [
        {"y": [int(t)]} if channels is None else {"y": [int(t)], layer: [channels[i]]}
        for i, t in enumerate(targets)
    ]
    result = attribution.CondAttribution(model, no_param_grad=True)(
        x.clone().requires_grad_(True), conditions, composite, record_layer=[layer]
    )
    rel = concepts.ChannelConcept().attribute(result.relevances[layer], abs_norm=False)
    return rel.detach(), result.heatmap.detach()


CASES = {
    "small_cnn": (SmallCNN, 32, lambda: [FixedMergeBatchNorm()], ["features", "features.8"]),
    "resnet18": (
        lambda: torchvision.models.resnet18(num_classes=10),
        64,
        _resnet_canonizers,
        ["layer4", "layer3"],
    ),
}


def _setup(name: str) -> tuple[nn.Module, torch.Tensor, Any, list[str]]:
    factory, size, canonizers, layers = CASES[name]
    torch.manual_seed(0)
    model = _randomise_bn(factory())
    torch.manual_seed(2)
    return model, torch.randn(3, 3, size, size), canonizers, layers


@pytest.mark.parametrize("name", list(CASES))
def test_channel_relevance_matches_crp(name: str) -> None:
    model, x, canonizers, layers = _setup(name)
    for layer in layers:
        ours = Explainer(model, concept_layer=layer)(x, target="pred")
        assert ours.concepts is not None and ours.concepts.dtype == torch.float32
        ref, ref_map = _crp_reference(model, x, ours.targets, layer, canonizers())
        assert ours.concepts.shape == ref.shape
        cos = _cosine(ours.concepts, ref)
        assert bool((cos >= 0.9999).all()), (layer, cos.tolist())
        # the heatmap of the same pass is the ordinary one
        assert bool((_cosine(ours.relevance.sum(1), ref_map) >= 0.9999).all())


def _top_channel_maps(model: nn.Module, x: torch.Tensor, canonizers: Any, layer: str) -> tuple[Any, ...]:
    """Each sample's map conditioned on its own most relevant channel at ``layer``, checked against CRP's;
    returns the Explainer, the unmasked result, the channels, the mask and the conditioned result."""
    explainer = Explainer(model, concept_layer=layer)
    full = explainer(x, target="pred")
    assert full.concepts is not None
    top = full.concepts.argmax(dim=1).tolist()
    mask = concept_channels([[c] for c in top], full.concepts.shape[1], x.device)
    ours = explainer(x, target="pred", concept_mask=mask)
    _, ref_map = _crp_reference(model, x, full.targets, layer, canonizers(), channels=top)
    cos = _cosine(ours.relevance.sum(1), ref_map)
    assert bool((cos >= 0.9999).all()), cos.tolist()
    return explainer, full, top, mask, ours


@pytest.mark.parametrize("name", list(CASES))
def test_conditional_heatmaps_match_crp(name: str) -> None:
    model, x, canonizers, layers = _setup(name)
    _, full, top, _, ours = _top_channel_maps(model, x, canonizers, layers[0])
    # the conditional map carries the channel's relevance (conservation through the lower layers is
    # approximate under z+ / flat with biases, so only the sign and scale are checked)
    picked = full.concepts[torch.arange(len(top)), top]
    assert torch.allclose(ours.concepts, full.concepts)  # the vector is the unmasked one
    assert bool((ours.relevance.sum((1, 2, 3)).sign() == picked.sign()).all())


def test_conditional_heatmaps_inside_a_residual_branch_leave_out_the_skip_path() -> None:
    """An outside check: at a layer inside a residual branch the mask applied only at the tap, so the skip
    connection's relevance reached the input whole (cosine -0.92 to zennit-crp's conditional map, whose
    default excludes parallel paths; an empty mask still gave a map). Now only what passes the layer does."""
    model, x, canonizers, _ = _setup("resnet18")
    explainer, full, _, mask, ours = _top_channel_maps(model, x, canonizers, "layer4.1.bn2")
    assert torch.allclose(ours.concepts, full.concepts)
    empty = explainer(x, target="pred", concept_mask=torch.zeros_like(mask)).relevance
    assert float(empty.abs().sum()) == 0.0
    assert float(full.relevance.abs().sum()) > 0.0
    # a review: timm's blocks add the shortcut in place onto the layer's output (x += shortcut), which moved
    # the tensor the backward started from past the sum
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    inplace = _randomise_bn(timm.create_model("resnet18", num_classes=4, zero_init_last=False)).eval()
    tapped = Explainer(inplace, concept_layer="layer4.1.bn2")
    base = tapped(x, target="pred")
    assert base.concepts is not None and float(base.relevance.abs().sum()) > 0.0
    none = tapped(x, target="pred", concept_mask=torch.zeros_like(base.concepts)).relevance
    assert float(none.abs().sum()) == 0.0


def test_concepts_do_not_change_the_heatmap(caplog: pytest.LogCaptureFixture) -> None:
    model, x, _, _ = _setup("small_cnn")
    plain = Explainer(model)(x, target="pred")
    with caplog.at_level("INFO", logger="spray.lrp.explainer"):
        tapped = Explainer(model, concept_layer="auto")(x, target="pred")
    # the layer 'auto' chose is named once (the evidence speaks of "the concept layer")
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("concept layer:")] == [
        "concept layer: features (chosen by lrp.concept_layer: auto)"
    ]
    assert plain.concepts is None
    torch.testing.assert_close(plain.relevance, tapped.relevance, rtol=0, atol=0)


def test_all_channels_mask_gives_the_heatmap() -> None:
    model, x, _, _ = _setup("small_cnn")
    explainer = Explainer(model, concept_layer="features")
    full = explainer(x, target="pred")
    assert full.concepts is not None
    ones = torch.ones_like(full.concepts)
    torch.testing.assert_close(explainer(x, target="pred", concept_mask=ones).relevance, full.relevance)
    # masks that split the channels add up to the full map (the backward is linear in the relevance)
    half = torch.zeros_like(ones)
    half[:, ::2] = 1.0
    a = explainer(x, target="pred", concept_mask=half).relevance
    b = explainer(x, target="pred", concept_mask=1.0 - half).relevance
    torch.testing.assert_close(a + b, full.relevance, rtol=1e-4, atol=1e-6)


def test_position_masks_add_up_to_the_heatmap() -> None:
    model, x, _, _ = _setup("small_cnn")
    explainer = Explainer(model, concept_layer="features")
    full = explainer(x, target="pred")
    with torch.no_grad():
        grid = tuple(model.features(x).shape)  # (3, 16, 4, 4)
    torch.testing.assert_close(
        explainer(x, target="pred", concept_mask=torch.ones(grid)).relevance, full.relevance
    )
    top, rest = torch.zeros(grid), torch.ones(grid)
    top[:, :, :1] = 1.0
    rest[:, :, :1] = 0.0
    a = explainer(x, target="pred", concept_mask=top).relevance
    b = explainer(x, target="pred", concept_mask=rest).relevance
    torch.testing.assert_close(a + b, full.relevance, rtol=1e-4, atol=1e-6)
    # the layer's top row reaches only the top of the input (its receptive field: rows 0-14)
    assert float(a[..., 16:, :].abs().sum()) == 0.0 and float(a.abs().sum()) > 0.0
    with pytest.raises(ConfigError, match=r"or the output's \(2, 16, 4, 4\)"):
        explainer(x[:2], concept_mask=torch.ones(2, 16, 4, 3))


def test_default_layers() -> None:
    assert default_concept_layer(small_cnn()) == "features"
    assert default_concept_layer(torchvision.models.resnet18()) == "layer4"
    assert default_concept_layer(torchvision.models.mobilenet_v2()) == "features"
    # an outside check: SqueezeNet's last convolution computes the class scores (its "concepts" were the
    # logits), and GoogLeNet's auxiliary classifier aux2, after inception5b in module order, never runs in eval
    assert default_concept_layer(torchvision.models.squeezenet1_1(num_classes=4)) == "features"
    assert (
        default_concept_layer(torchvision.models.googlenet(num_classes=4, init_weights=False))
        == "inception5b"
    )
    timm = pytest.importorskip("timm")
    # timm's MobileNetV3 runs conv_head after global_pool, on a 1×1 map: the concept layer is before it.
    assert default_concept_layer(timm.create_model("mobilenetv3_small_050", num_classes=3)) == "blocks"
    assert default_concept_layer(timm.create_model("efficientnet_b0", num_classes=3)) == "conv_head"
    # A squeeze-and-excitation's pool inside a block is no global pooling.
    assert default_concept_layer(timm.create_model("seresnet18", num_classes=3)) == "layer4"
    assert default_concept_layer(torchvision.models.mobilenet_v3_small()) == "features"
    vit = torchvision.models.VisionTransformer(32, 8, 2, 2, 16, 32)
    assert default_concept_layer(vit) == "encoder.layers.encoder_layer_1"
    assert default_concept_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 2))) is None


class _AllConv(nn.Module):
    """An all-convolutional classifier: a 1×1 convolution gives the class-score maps, pooled in forward()."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU()
        )
        self.classifier = nn.Conv2d(16, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(self.classifier(self.features(x)), 1).flatten(1)


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.qkv(x)


class _Stage(nn.Module):
    def __init__(self, depth: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(_Attention() for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def test_default_layers_an_outside_check_found_wrong() -> None:
    """An outside check: 'auto' took the class-score convolution of an all-convolutional classifier whose
    pooling is F.adaptive_avg_pool2d (its 'concepts' were the class scores), and the stage before the last
    when the last attention stage has one block (timm's MaxViT-nano: depths 1, 2, 3, 1)."""
    assert default_concept_layer(_AllConv()) == "features"
    hierarchical = nn.Sequential(_Stage(2), _Stage(3), _Stage(1), nn.Linear(8, 3))
    assert default_concept_layer(hierarchical) == "2.blocks.0"
    assert default_concept_layer(nn.Sequential(_Stage(2), _Stage(3), nn.Linear(8, 3))) == "1.blocks.2"


def test_default_layer_is_found_inside_a_wrapper_not_at_the_logits() -> None:
    """An outside check: for nn.Sequential(normalize, resnet18), DataParallel, torch.compile or a
    ``.backbone`` holding the whole classifier, 'auto' took the wrapper's child, whose output is the logits
    (a "concept vector" of 4 class scores, no warning)."""
    from spray.models import OutputSelector

    class Backbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = torchvision.models.resnet18(num_classes=4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.backbone(x)

    class Split(nn.Module):  # a backbone and a head of its own: the backbone is the feature map
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
            self.head = nn.Linear(8, 2)

    net = torchvision.models.resnet18(num_classes=4)
    normalize = torchvision.transforms.Normalize([0.5] * 3, [0.25] * 3)
    assert default_concept_layer(nn.Sequential(normalize, net)) == "1.layer4"
    assert default_concept_layer(nn.Sequential(net)) == "0.layer4"
    assert default_concept_layer(nn.DataParallel(net)) == "module.layer4"
    assert default_concept_layer(Backbone()) == "backbone.layer4"
    assert (
        default_concept_layer(OutputSelector(nn.Sequential(normalize, small_cnn()), 0)) == "model.1.features"
    )
    assert default_concept_layer(Split()) == "backbone"

    class Tempered(nn.Module):  # a temperature scaler: a parameter of its own beside the wrapped classifier
        def __init__(self) -> None:
            super().__init__()
            self.model = torchvision.models.resnet18(num_classes=4)
            self.t = nn.Parameter(torch.ones(()))

    assert default_concept_layer(Tempered()) == "model.layer4"
    # A body whose head has no weights (global pooling, flatten) is a stage, not a wrapper: unchanged.
    body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU())
    assert default_concept_layer(nn.Sequential(body, nn.AdaptiveAvgPool2d(1), nn.Flatten())) == "0"
    # a stage that ends in its own pooling (no classifier inside) stays the stage
    pooled = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    assert default_concept_layer(nn.Sequential(pooled, nn.Flatten(), nn.Linear(4, 2))) == "0"
    assert default_concept_layer(nn.Conv2d(3, 2, 3)) == ""  # the model is its own (only) layer: no loop
    x = torch.rand(2, 3, 32, 32)
    got = Explainer(nn.Sequential(net).eval(), concept_layer="auto")(x)
    assert got.concepts is not None and got.concepts.shape == (2, 512)


def test_token_layer_concepts_sum_over_tokens() -> None:
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(32, 8, 2, 2, 16, 32, num_classes=3).eval()
    result = Explainer(vit, "AttnLRP", concept_layer="auto")(torch.randn(2, 3, 32, 32))
    assert result.concepts is not None and result.concepts.shape == (2, 16)
    assert bool(torch.isfinite(result.concepts).all())


def test_swin_concepts_are_its_last_stage_channels() -> None:
    """torchvision's Swin blocks return (B, H, W, C): an outside check found the concept vector read as the
    2 rows of the last grid instead of 768 channels, and 'auto' on stage 3 (the longest), not stage 4."""
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    # two stages of widths 16 and 32 on a 4×4 → 2×2 grid: H = W = 2, C = 32 in the last stage
    swin = SwinTransformer([4, 4], 16, [3, 2], [2, 4], [4, 4], num_classes=3).eval()  # stage 1 the longest
    for name, p in swin.named_parameters():
        if name.endswith("bias") or "relative_position_bias" in name:
            p.data.zero_()  # conservative: the concept relevance then sums to the heatmap's
    assert default_concept_layer(swin) == "features.3.1"  # the last stage's last block
    explainer = Explainer(swin, "CPLRP", concept_layer="auto")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    full = explainer(x, target="pred")
    assert full.concepts is not None and full.concepts.shape == (2, 32)
    torch.testing.assert_close(
        full.concepts.sum(1), full.relevance.flatten(1).sum(1).float(), rtol=1e-3, atol=1e-6
    )
    half = torch.zeros_like(full.concepts)
    half[:, ::2] = 1.0
    a = explainer(x, target="pred", concept_mask=half).relevance
    b = explainer(x, target="pred", concept_mask=1.0 - half).relevance
    torch.testing.assert_close(a + b, full.relevance, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(a, full.relevance)


def test_a_concatenating_cnn_block_stays_channels_first() -> None:
    """A review found DenseNet's dense block at 32×32 (output (B, 512, 32, 32), growth rate 32) read as
    channels-last: its spatial size equals a convolution's width."""
    from spray.lrp.concepts import channels_last_output

    block = torchvision.models.densenet121().features.denseblock2.eval()
    with torch.no_grad():
        out = block(torch.randn(1, 128, 32, 32))
    assert out.shape == (1, 512, 32, 32) and not channels_last_output(block, out)


def test_bad_layers_are_named() -> None:
    model = small_cnn()
    assert resolve_concept_layer(model, "none") is None
    with pytest.raises(ConfigError, match="featurez"):
        resolve_concept_layer(model, "featurez")
    # a misspelling (neither a prefix nor a part of any path) still gets the nearest paths
    with pytest.raises(ConfigError, match=r"close names: \['features'"):
        resolve_concept_layer(model, "featres")
    assert resolve_concept_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), "auto") is None  # warned
    explainer = Explainer(model, concept_layer="features")
    x = torch.randn(2, 1, 28, 28)
    with pytest.raises(ConfigError, match=r"\(B, C\)"):
        explainer(x, concept_mask=torch.ones(2, 3))
    with pytest.raises(ConfigError, match="concept_layer"):
        Explainer(model)(x, concept_mask=torch.ones(2, 64))
    with pytest.raises(ConfigError, match="out of range"):
        concept_channels([[64]], 64, x.device)


def test_a_blocks_reused_relu_as_concept_layer_runs_with_a_warning_or_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An outside check: torchvision ResNet's one ``relu`` per block as the concept layer was refused as 'did
    not run in the model's forward pass' (spray's copy had fused it away), and resnet50's, called at widths
    512 and 2048, would have added tensors of other shapes. A module run twice is now summed and said to be."""
    model, x, _, _ = _setup("resnet18")
    with caplog.at_level("WARNING", logger="spray.lrp.concepts"):
        res = Explainer(model, concept_layer="layer4.1.relu")(x, target="pred")
    assert res.concepts is not None and res.concepts.shape == (3, 512)
    assert "runs 2 times in one forward pass" in caplog.text
    block = Explainer(model, concept_layer="layer4.1")(x, target="pred")  # the second call's output
    first = Explainer(model, concept_layer="layer4.1.bn1")(x, target="pred")  # the first call's input
    assert block.concepts is not None and first.concepts is not None
    torch.testing.assert_close(res.concepts, block.concepts + first.concepts, rtol=1e-4, atol=1e-6)  # summed
    torch.manual_seed(0)
    wide = torchvision.models.resnet50(num_classes=4).eval()
    with pytest.raises(
        ModelError, match=r"different widths \(512 channels, then 2048\).*the block around it"
    ):
        Explainer(wide, concept_layer="layer4.2.relu")(torch.randn(1, 3, 32, 32), target="pred")


def test_an_auto_layer_on_unfolded_patches_gives_way_to_the_block_around_it() -> None:
    """An outside check: on timm's MobileViT 'auto' took a transformer layer that works on patches unfolded
    into the batch axis, which the Explainer dropped with a warning: no concepts were computed at all."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("mobilevit_xxs", num_classes=3).eval()
    explainer = Explainer(model, concept_layer="auto")
    res = explainer(torch.randn(2, 3, 64, 64), target="pred")
    assert explainer.concept_layer == "stages.4.1"
    assert res.concepts is not None and res.concepts.shape == (2, 80)
    # a review: a run whose maps all come from the cache calls first with a mask (the analysis stage)
    masked_first = Explainer(model, concept_layer="auto")
    cond = masked_first(torch.randn(2, 3, 64, 64), target="pred", concept_mask=torch.ones(2, 80))
    assert masked_first.concept_layer == "stages.4.1" and cond.concepts is not None


class _Unfolding(nn.Module):
    """Attention blocks on patches unfolded into the batch axis, inside the classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.blocks = nn.Sequential(_Attention(), _Attention())
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.stem(x)  # (B, 8, 4, 4)
        b = z.shape[0]
        patches = z.reshape(b, 8, 2, 2, 2, 2).permute(0, 2, 4, 3, 5, 1).reshape(b * 4, 4, 8)
        return self.head(self.blocks(patches).reshape(b, 16, 8).mean(1))


def test_an_auto_layer_on_unfolded_patches_never_gives_way_to_the_logits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A review: the module around such a layer may be the whole classifier (a wrapper's child), whose
    output is the class scores: it is dropped with the warning instead."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Identity(), _Unfolding()).eval()
    explainer = Explainer(model, concept_layer="auto")
    assert explainer.concept_layer == "1.blocks.1"
    with caplog.at_level("WARNING", logger="spray.lrp.explainer"):
        res = explainer(torch.randn(2, 3, 16, 16), target="pred")
    assert res.concepts is None and explainer.concept_layer is None
    assert "no concept relevance is computed" in caplog.text


def test_layer_that_does_not_run_is_refused() -> None:
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = small_cnn()
            self.spare = nn.Conv2d(1, 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    with pytest.raises(ModelError, match="did not run"):
        Explainer(Unused(), concept_layer="spare")(torch.randn(2, 1, 28, 28))


def test_bf16_and_contiguous_layout_give_the_same_concepts() -> None:
    model, x, _, _ = _setup("small_cnn")
    ref = Explainer(model, concept_layer="features")(x, target="pred").concepts
    contiguous = Explainer(model, concept_layer="features", channels_last=False)(x, target="pred").concepts
    half = Explainer(model, concept_layer="features", precision="bf16")(x, target="pred").concepts
    assert ref is not None and contiguous is not None and half is not None
    assert half.dtype == torch.float32
    torch.testing.assert_close(contiguous, ref, rtol=1e-4, atol=1e-6)
    assert bool((_cosine(half, ref) >= 0.99).all())


def test_auto_layer_the_forward_bypasses_is_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    from tests.model_factories import normalising

    # "tiny" holds the pooling and the classifier: a wrapper, so 'auto' looks inside it for the conv.
    assert Explainer(normalising(), concept_layer="auto", self_check=False).concept_layer == "tiny.conv"

    class Bypassing(nn.Module):  # calls its stage's layers one by one, never the stage itself
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.pool(self.features[1](self.features[0](x))).flatten(1))

    torch.manual_seed(0)
    model = Bypassing().eval()
    explainer = Explainer(model, concept_layer="auto", self_check=False)
    assert explainer.concept_layer == "features"
    result = explainer(torch.randn(2, 3, 16, 16))
    assert result.concepts is None and explainer.concept_layer is None
    assert "not called by the model's forward()" in caplog.text
    with pytest.raises(ModelError, match="did not run"):
        Explainer(model, concept_layer="features", self_check=False)(torch.randn(2, 3, 16, 16))


def test_a_layer_path_of_the_users_model_is_found_inside_spray_and_torch_wrappers() -> None:
    """With ``model.output`` set spray wraps the model (``model.``): the user's own path was refused."""
    from spray.lrp.concepts import resolve_concept_layer
    from spray.models import OutputSelector

    net = nn.Sequential(nn.Identity(), torchvision.models.resnet18(num_classes=3))
    assert resolve_concept_layer(OutputSelector(net, 0), "1.layer4") == "model.1.layer4"
    assert resolve_concept_layer(nn.DataParallel(net), "1.layer3") == "module.1.layer3"
    assert resolve_concept_layer(net, "1.layer4") == "1.layer4"
    with pytest.raises(ConfigError, match="not a module of the model"):
        resolve_concept_layer(OutputSelector(net, 0), "1.layer9")


class _SeqFirstHybrid(nn.Module):
    """A conv stem, 16 tokens, two ``nn.TransformerEncoderLayer`` in torch's default (T, B, D) layout."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.blocks = nn.Sequential(
            *[nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0) for _ in range(2)]  # batch_first=False
        )
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.stem(x).flatten(2).permute(2, 0, 1)  # (T, B, D)
        return self.head(self.blocks(tokens).mean(0))


@pytest.mark.parametrize("batch", [16, 5])
def test_a_sequence_first_block_gives_no_rows_taken_for_samples(
    batch: int, caplog: pytest.LogCaptureFixture
) -> None:
    """An outside check: the auto concept layer of a (T, B, D) transformer wrote per-token rows as samples'
    concept vectors ((1024, 64) for 1024 images when tokens and batch were both 64, unnoticed; (960, 64) for
    928), and the audit died later on a mask of the wrong shape. The auto layer is now passed over with a
    warning, and a named one is refused with the fix."""
    torch.manual_seed(0)
    model, x = _SeqFirstHybrid().eval(), torch.rand(batch, 3, 16, 16)  # 16 tokens
    with caplog.at_level("WARNING", logger="spray.lrp.explainer"):
        got = Explainer(model, "EpsilonPlusFlat", concept_layer="auto")(x)
    assert got.concepts is None and "whose first axis is the batch" in caplog.text
    with pytest.raises(ModelError, match=r"first axis is not the batch of .* lrp.concept_layer: none"):
        Explainer(model, "EpsilonPlusFlat", concept_layer="blocks.1")(x)
    with pytest.raises(ModelError, match=r"first axis is not the batch"):  # a review: its sublayers too
        Explainer(model, "EpsilonPlusFlat", concept_layer="blocks.1.linear2")(x)

"""The artifact direction: pattern CAV, pooling, layer lookup, held-out separation."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from spray.correct.activations import layer_activations, pool, resolve_layer, tap, trace_calls
from spray.correct.cav import GroupActivations, fit_direction, separation, signal_cav
from spray.errors import ConfigError, SprayError
from tests.test_correct_world import TARGET, World, build_world, to_input


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("world"))


def test_signal_cav_is_the_normalised_mean_difference() -> None:
    # For a 0/1 indicator cov(A, t)/var(t) is the difference of the group means (the oracle here).
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 7))
    t = (rng.random(50) < 0.3).astype(float)
    want = a[t == 1].mean(0) - a[t == 0].mean(0)
    assert np.allclose(signal_cav(a, t), want / np.linalg.norm(want))


def test_signal_cav_points_along_the_signal_not_the_filter() -> None:
    # a1 = signal + distractor, a2 = distractor: a linear classifier's weights are the filter (1, -1) that
    # cancels the distractor; the pattern CAV is the signal's own direction in the activations, (1, 0).
    rng = np.random.default_rng(1)
    n = 4000
    t = np.repeat([1.0, 0.0], n // 2)
    d = rng.normal(0, 1.0, n)
    a = np.stack([t + d, d], axis=1)
    v = signal_cav(a, t)
    assert abs(v[0]) > 0.99
    w, *_ = np.linalg.lstsq(np.c_[a, np.ones(n)], t, rcond=None)
    assert w[1] / w[0] < -0.9  # the filter, for contrast


def test_signal_cav_refuses_identical_groups() -> None:
    a = np.ones((10, 3))
    with pytest.raises(SprayError, match="no artifact direction"):
        signal_cav(a, np.r_[np.ones(5), np.zeros(5)])


def test_pool_shapes() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    assert pool(x, "none").shape == (2, 48)
    assert torch.equal(pool(x, "max"), x.flatten(2).amax(2))
    assert torch.allclose(pool(x, "mean"), x.mean((2, 3)))
    assert pool(torch.ones(2, 5), "max").shape == (2, 5)


def test_auto_layer_is_the_last_feature_map(world: World) -> None:
    x = to_input(world.images[:2])
    assert resolve_layer(world.model, "auto", x) == "features"
    assert resolve_layer(world.model, "features.3", x) == "features.3"
    assert [c.path for c in trace_calls(world.model, x)][-1] == "classifier"


@pytest.mark.parametrize(
    ("arch", "want"),
    [("resnet18", "layer4"), ("mobilenet_v3_small", "features"), ("efficientnet_b0", "features")],
)
def test_auto_layer_is_the_last_map_with_a_grid_not_the_global_pool(
    arch: str, want: str, caplog: pytest.LogCaptureFixture
) -> None:
    # torchvision's avgpool is the last (B, C, H, W) output, but 1×1: no grid for the region's footprint
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=3).eval()
    x = torch.rand(2, 3, 64, 64)
    with caplog.at_level(logging.WARNING, logger="spray.correct.activations"):
        assert resolve_layer(model, "auto", x) == want
    assert "no spatial grid" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="spray.correct.activations"):
        assert resolve_layer(model, "avgpool", x) == "avgpool"  # named: taken, said aloud
    assert (
        "the configured layer 'avgpool', whose output (" in caplog.text
        and "no spatial grid (1×1)" in caplog.text
    )


def test_auto_layer_without_any_grid_takes_the_last_map_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2)).eval()
    with caplog.at_level(logging.WARNING, logger="spray.correct.activations"):
        assert resolve_layer(model, "auto", torch.rand(2, 3, 1, 1)) == "1"
    assert "'auto' found no feature map larger than 1×1 and took '1'" in caplog.text


def test_unknown_layer_lists_the_layers(world: World) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_layer(world.model, "featurs", to_input(world.images[:2]))
    msg = str(err.value)
    assert "no layer 'featurs'" in msg and "Did you mean 'features'" in msg and "classifier.3" in msg


def test_the_layers_listed_are_the_stages_not_the_first_forty() -> None:
    """An outside check: a timm model's 234 layers were listed as the first 40 of named_modules() (its stem),
    so the stage names a correction is placed at could not be found from the message."""
    from spray.correct.activations import _layer_list

    blocks = [
        nn.Sequential(*(nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU()) for _ in range(10))) for _ in range(4)
    ]
    model = nn.Sequential(nn.Sequential(*blocks), nn.Flatten(), nn.Linear(2, 3))
    said = _layer_list(model)
    names = said.split(" (")[0].split(", ")
    assert names == ["0", "0.0", "0.1", "0.2", "0.3", "1", "2"], said
    assert f"({len(list(model.named_modules())) - 1} in all" in said


def test_direction_separates_planted_from_clean_on_held_out_samples(world: World) -> None:
    cls = np.flatnonzero(world.labels == TARGET)
    planted, clean = cls[world.planted[cls]], cls[~world.planted[cls]]
    x = to_input(world.images)

    def acts(rows: np.ndarray) -> torch.Tensor:
        return layer_activations(world.model, "features", iter([x[rows]]), torch.device("cpu"))

    groups = GroupActivations(acts(planted[::2]), acts(clean[::2]), acts(planted[1::2]), acts(clean[1::2]))
    d = fit_direction("features", groups, "auto")
    assert d.separation.auroc > 0.95
    assert d.separation.n_artifact == len(planted[1::2])
    assert set(d.candidates) == {"none", "max"}
    assert np.isclose(np.linalg.norm(d.vector), 1.0, atol=1e-5)
    assert d.reference_mean.shape == (8, 3, 3)
    # A direction from random labels separates nothing on held-out samples.
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(cls)
    half = len(shuffled) // 2
    rand = GroupActivations(
        acts(shuffled[:half:2]),
        acts(shuffled[half::2]),
        acts(shuffled[1:half:2]),
        acts(shuffled[half + 1 :: 2]),
    )
    assert fit_direction("features", rand, "none").separation.auroc < 0.8


def test_separation_scores() -> None:
    v = np.array([1.0, 0.0])
    s = separation(v, np.array([[2.0, 5.0], [3.0, -1.0]]), np.array([[0.0, 9.0], [1.0, 0.0], [-1.0, 2.0]]))
    assert s.auroc == 1.0 and s.accuracy == 1.0
    assert s.mean_artifact == 2.5 and s.mean_reference == 0.0


def test_tap_is_not_changed_by_an_in_place_op_after_the_layer() -> None:
    """A layer followed by ReLU(inplace=True): its captured output stays the layer's, and a leaf copy works."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(inplace=True), torch.nn.Flatten())
    x = torch.randn(2, 1, 6, 6)
    expected = model[0](x).detach()
    with torch.no_grad(), tap(model, "0") as got:
        out = model(x)
    assert (got[0] < 0).any() and torch.equal(got[0], expected)
    assert torch.equal(out, expected.clamp(min=0).flatten(1))
    with tap(model, "0", replace=lambda a: a.detach().requires_grad_(True)) as got:
        logits = model(x)
    (grad,) = torch.autograd.grad(logits.sum(), got[0])
    assert torch.equal(grad, (expected > 0).float())


def test_pooling_asked_for_on_tokens_is_refused_not_run_as_none() -> None:
    """An outside check: correction.pooling max on a ViT block ran 'none' under a new correction id, without a
    word."""
    torch.manual_seed(0)
    tokens = [torch.randn(6, 5, 4) + (1.0 if i % 2 == 0 else 0.0) for i in range(4)]
    groups = GroupActivations(*tokens)
    with pytest.raises(ConfigError, match=r"correction\.pooling: 'max' pools a \(B, C, H, W\).*\(5, 4\)"):
        fit_direction("blocks.1", groups, "max")
    assert set(fit_direction("blocks.1", groups, "auto").candidates) == {"none"}


def test_a_named_layer_spray_cannot_correct_at_is_refused_with_what_to_name() -> None:
    """An outside check: the logits layer was corrected at (clean accuracy -5 points, advice to 'try a later
    layer'); a module returning a tuple failed later with exit 1; a channels-last (B, H, W, C) map was read as
    (B, C, H, W)."""

    class Pair(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, x

    class ChannelsLast(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.pair = nn.Conv2d(3, 8, 3, padding=1), Pair()
            self.to_nhwc, self.norm = nn.Identity(), nn.LayerNorm(8)
            self.head = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a, _ = self.pair(self.conv(x))
            h = self.norm(self.to_nhwc(a.permute(0, 2, 3, 1)))
            return self.head(h.mean((1, 2)))

    model, x = ChannelsLast().eval(), torch.rand(2, 3, 6, 6)
    with pytest.raises(ConfigError, match="'head' returns the model's output"):
        resolve_layer(model, "head", x)
    with pytest.raises(ConfigError, match="'pair' returns no single tensor"):
        resolve_layer(model, "pair", x)
    with pytest.raises(ConfigError, match=r"'norm' returns \(6, 6, 8\), a channels-last"):
        resolve_layer(model, "norm", x)
    assert resolve_layer(model, "conv", x) == "conv"
    assert resolve_layer(model, "auto", x) == "conv"  # not the channels-last norm after it


def test_auto_on_timm_swin_says_its_maps_are_channels_last() -> None:
    timm = pytest.importorskip("timm")
    swin = timm.create_model(
        "swin_tiny_patch4_window7_224", pretrained=False, img_size=56, window_size=7, depths=(1, 1), num_heads=(1, 2),
        embed_dim=16, num_classes=3,
    ).eval()  # fmt: skip
    with pytest.raises(ConfigError, match=r"channels-last, \(B, H, W, C\), as timm's Swin"):
        resolve_layer(swin, "auto", torch.rand(1, 3, 56, 56))


def test_layer_checks_leave_cnns_with_layer_norms_and_attention_heads_alone() -> None:
    """A review: a CNN with LayerNorm([C, H, W]) had its maps called channels-last (auto fell to the 1×1 pool);
    a CNN with an attention pooling head (CLIP's RN50) or a spatial-attention block last was refused by auto;
    logits behind a division or a Flatten module were accepted; unfolded patches were taken for (B, tokens, D)."""

    class AttentionPool2d(nn.Module):  # CLIP-style head: (B, C, H, W) -> (B, D)
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            w = torch.softmax(x.flatten(2).mean(1), -1)
            return (x.flatten(2) * w[:, None]).sum(2)

    class SpatialAttention(nn.Module):  # CBAM-style: a map weighted by its own spatial gate
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(8, 1, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * torch.sigmoid(self.conv(x))

    class Net(nn.Module):
        def __init__(self, head: str) -> None:
            super().__init__()
            self.head_kind = head
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.LayerNorm([8, 6, 6]), SpatialAttention()
            )
            self.pool = AttentionPool2d() if head == "attention" else nn.AdaptiveAvgPool2d(1)
            self.flat, self.fc = nn.Flatten(), nn.Linear(8, 2)
            self.unfold = nn.Unflatten(0, (-1,))  # stands for a patch unfolding below

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.features(x)
            patches = self.unfold(a.reshape(len(x) * 4, 8, 9).transpose(1, 2))  # (B·4, 9, 8)
            z = self.pool(a + 0 * patches.sum())
            out = self.fc(self.flat(z))
            return out / 2.0 if self.head_kind == "scaled" else self.flat(out)

    x = torch.rand(2, 3, 6, 6)
    for head in ("attention", "scaled", "flat"):
        model = Net(head).eval()
        assert resolve_layer(model, "auto", x) == "features", head
        assert resolve_layer(model, "features.1", x) == "features.1"  # LayerNorm([C, H, W]): channels first
        with pytest.raises(ConfigError, match="'fc' returns the model's output"):
            resolve_layer(model, "fc", x)
    with pytest.raises(
        ConfigError, match=r"'unfold' returns \(8, 9, 8\) for 2 inputs: its first axis is not"
    ):
        resolve_layer(Net("flat").eval(), "unfold", x)


class _SeqFirstHybrid(nn.Module):
    """A conv stem, 16 tokens, two ``nn.TransformerEncoderLayer`` in torch's default (T, B, D) layout."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.blocks = nn.Sequential(*[nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0) for _ in range(2)])
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x).flatten(2).permute(2, 0, 1)).mean(0))


def test_a_sequence_first_transformer_is_said_and_its_blocks_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An outside check: 'auto' on a batch_first=False hybrid took the stem without a word (RR-ClArC then
    fine-tuned the whole transformer: -21 points), and naming its block was refused as MobileViT's patches.
    With 16 images and 16 tokens its (T, B, D) block looked batch-first and would have been taken."""
    torch.manual_seed(0)
    model, x = _SeqFirstHybrid().eval(), torch.rand(16, 3, 16, 16)
    with caplog.at_level("WARNING", logger="spray.correct.activations"):
        assert resolve_layer(model, "auto", x) == "stem"
    assert "(tokens, batch, D) (batch_first=False)" in caplog.text and "'blocks.1'" in caplog.text
    with pytest.raises(ConfigError, match=r"works on \(tokens, batch, D\).*batch_first=True"):
        resolve_layer(model, "blocks.1", x)
    with pytest.raises(ConfigError, match=r"works on \(tokens, batch, D\)"):  # a review: its sublayers too
        resolve_layer(model, "blocks.1.linear2", x)

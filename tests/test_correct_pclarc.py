"""P-ClArC: the projection's algebra, the corrected model's behaviour, its checkpoint and factory, LRP on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from spray.config import LRPConfig, config_from_dict
from spray.correct.activations import layer_activations
from spray.correct.cav import ArtifactDirection, GroupActivations, fit_direction
from spray.correct.checkpoint import corrected_model, projection_spec, save_corrected
from spray.correct.pclarc import ArtifactProjection, ProjectedLayer, original_layer, pclarc
from spray.correct.relevance import region_share, relevance_maps
from spray.errors import ConfigError
from spray.models import build_model
from tests.test_correct_world import TARGET, World, build_world, flip_rate, paste_square, to_input


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("world"))


def _unit(n: int, seed: int) -> torch.Tensor:
    v = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def test_full_projection_moves_only_the_component_along_v() -> None:
    x = torch.randn(5, 3, 4, 4)
    v, z = _unit(48, 0), torch.randn(3, 4, 4)
    y = ArtifactProjection(v, z)(x)
    # along v: the reference's value; orthogonal to v: unchanged (x' = x + v(−vᵀx + vᵀz)).
    assert torch.allclose(y.flatten(1) @ v, (z.flatten() @ v).expand(5), atol=1e-5)
    p = torch.eye(48) - torch.outer(v, v)
    assert torch.allclose(y.flatten(1) @ p, x.flatten(1) @ p, atol=1e-5)


def test_channel_projection_applies_at_every_position() -> None:
    x = torch.randn(4, 6, 3, 3)
    v, z = _unit(6, 1), torch.randn(6, 3, 3)
    y = ArtifactProjection(v, z)(x)
    along = torch.einsum("bchw,c->bhw", y, v)
    assert torch.allclose(along, torch.einsum("chw,c->hw", z, v).expand(4, 3, 3), atol=1e-5)
    p = torch.eye(6) - torch.outer(v, v)
    assert torch.allclose(torch.einsum("bchw,cd->bdhw", y, p), torch.einsum("bchw,cd->bdhw", x, p), atol=1e-5)
    assert x.shape == y.shape


def _direction(world: World, pooling: str = "auto") -> ArtifactDirection:
    cls = np.flatnonzero(world.labels == TARGET)
    planted, clean = cls[world.planted[cls]], cls[~world.planted[cls]]
    x = to_input(world.images)

    def acts(rows: np.ndarray) -> torch.Tensor:
        return layer_activations(world.model, "features", iter([x[rows]]), torch.device("cpu"))

    return fit_direction(
        "features", GroupActivations(acts(planted), acts(clean), acts(planted), acts(clean)), pooling
    )


def test_pclarc_removes_the_reliance_on_the_planted_square(world: World) -> None:
    before = flip_rate(world.model, world.images, world.labels)
    corrected = pclarc(world.model, _direction(world))
    after = flip_rate(corrected, world.images, world.labels)
    assert before > 0.5 and after < 0.2 * before
    # the user's model is untouched
    assert not any(isinstance(m, ProjectedLayer) for m in world.model.modules())
    with torch.no_grad():
        clean = ~world.planted
        acc_before = (
            world.model(to_input(world.images[clean])).argmax(1).numpy() == world.labels[clean]
        ).mean()
        acc_after = (corrected(to_input(world.images[clean])).argmax(1).numpy() == world.labels[clean]).mean()
    assert acc_after > acc_before - 0.1
    assert original_layer(corrected, "features") == "features.0"
    assert original_layer(world.model, "features") == "features"


def test_tcav_after_pclarc_is_zero_not_the_sign_of_rounding(world: World) -> None:
    """The projection leaves a directional derivative of ~1e-8: its sign is noise, so the TCAV score is 0."""
    from spray.correct.evaluate import _sensitivity

    direction = _direction(world)
    x = to_input(world.images[:64])
    _, abs_b, tcav_b = _sensitivity(world.model, x, direction, TARGET, torch.device("cpu"), 32)
    _, abs_a, tcav_a = _sensitivity(
        pclarc(world.model, direction), x, direction, TARGET, torch.device("cpu"), 32
    )
    assert abs_b > 1e-3 and tcav_b > 0.5
    assert abs_a < 1e-4 * abs_b and tcav_a == 0.0


def test_checkpoint_and_factory_rebuild_the_corrected_model(world: World, tmp_path: Path) -> None:
    corrected = pclarc(world.model, _direction(world))
    cfg = config_from_dict(yaml.safe_load(world.config.read_text()), base_dir=world.root)
    path = save_corrected(corrected, cfg, tmp_path / "out", "reaudit", "tiny-corrected")
    raw = yaml.safe_load(path.read_text())
    assert raw["model"]["factory"] == "spray.correct.checkpoint:corrected_model"
    assert raw["model"]["factory_kwargs"]["projection"] == projection_spec(corrected)
    assert "correction" not in raw
    # the written config loads like any config, and its model is the corrected one
    loaded = config_from_dict(raw, base_dir=path.parent)
    rebuilt = build_model(loaded.model)
    x = to_input(paste_square(world.images[:20]))
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), corrected(x), atol=1e-6)
    # the factory alone builds the right structure with empty buffers
    bare = corrected_model(**raw["model"]["factory_kwargs"])
    assert isinstance(bare.get_submodule("features"), ProjectedLayer)
    assert float(bare.get_submodule("features.1").vector.abs().sum()) == 0.0
    # The same weights saved again (another process) are the same bytes: the archive is not named after a
    # temporary file (an outside check compared two identical corrections by sha256).
    import os

    first = (path.parent / "model.pt").read_bytes()
    monkey = pytest.MonkeyPatch()
    monkey.setattr(os, "getpid", lambda: 424242)
    try:
        save_corrected(corrected, cfg, tmp_path / "out", "reaudit", "tiny-corrected")
    finally:
        monkey.undo()
    assert (path.parent / "model.pt").read_bytes() == first


def test_lrp_explains_the_projected_model_and_the_square_loses_relevance(world: World) -> None:
    corrected = pclarc(world.model, _direction(world))
    rows = np.flatnonzero(world.planted)[:20]
    x = to_input(world.images[rows])
    labels = world.labels[rows]
    mask = np.zeros((12, 12), dtype=bool)
    mask[0:3, 0:3] = True
    dev = torch.device("cpu")
    before = region_share(relevance_maps(world.model, iter([x]), labels, LRPConfig(), dev), mask).mean()
    after = region_share(relevance_maps(corrected, iter([x]), labels, LRPConfig(), dev), mask).mean()
    assert after < 0.5 * before


def test_a_corrected_config_finds_the_users_factory_modules(tmp_path: Path) -> None:
    """An outside-in check ran the documented re-audit of a corrected model whose data and model came from
    factory modules next to the original config: the corrected config, in the correction folder, found
    neither (exit 2). It now records their folder in factory_dirs; a fresh process loads it and builds both."""
    import subprocess
    import sys

    from spray.lab.cnn import small_cnn

    project = tmp_path / "project"
    project.mkdir()
    (project / "team_model.py").write_text(
        "from spray.lab.cnn import small_cnn\n\ndef build(num_classes=2):\n"
        "    return small_cnn(in_channels=1, num_classes=num_classes)\n"
    )
    (project / "team_data.py").write_text(
        "import torch\n\nclass Data(torch.utils.data.Dataset):\n"
        "    classes = ['a', 'b']\n    targets = [0, 1, 0, 1]\n    sample_ids = ['s0', 's1', 's2', 's3']\n"
        "    def __len__(self):\n        return 4\n"
        "    def __getitem__(self, i):\n        return torch.zeros(1, 28, 28), self.targets[i]\n\n"
        "def make():\n    return Data()\n"
    )
    raw = {"model": {"factory": "team_model:build"}, "data": {"kind": "factory", "factory": "team_data:make"}}
    cfg = config_from_dict(raw, base_dir=project)
    path = save_corrected(
        small_cnn(in_channels=1, num_classes=2), cfg, tmp_path / "corrections" / "c1", "r", "n"
    )
    assert yaml.safe_load(path.read_text())["factory_dirs"] == [str(project.resolve())]
    code = (
        "from spray.config import load_config; from spray.models import build_model; "
        "from spray.data import build_dataset; import sys; "
        f"cfg = load_config({str(path)!r}); m = build_model(cfg.model); d = build_dataset(cfg.data); "
        "print(type(m).__name__, len(d))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["SmallCNN", "4"]
    bad = {**raw, "factory_dirs": ["nowhere"]}
    with pytest.raises(ConfigError, match=r"factory_dirs: .*nowhere.* is not a folder"):
        config_from_dict(bad, base_dir=project)


class _Hybrid(torch.nn.Module):
    """A conv stem, tokens, an ``nn.TransformerEncoder`` (batch first) and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 4, stride=4)
        layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.blocks = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x).flatten(2).transpose(1, 2)).mean(1))


def _random_direction(model: torch.nn.Module, layer: str, x: torch.Tensor) -> ArtifactDirection:
    acts = layer_activations(model, layer, iter([x]), torch.device("cpu"))
    v = torch.randn(acts[0].numel(), generator=torch.Generator().manual_seed(0))
    return ArtifactDirection(layer, "none", (v / v.norm()).numpy(), acts.mean(0).numpy(), None, {})  # type: ignore[arg-type]


def test_a_projection_inside_a_transformer_encoder_runs_with_its_keywords() -> None:
    """An outside check: P-ClArC at a layer of an ``nn.TransformerEncoder`` stopped with "forward() got an
    unexpected keyword argument 'src_mask'" (the encoder passes it), and at its first layer with "'ProjectedLayer'
    object has no attribute 'self_attn'" (the encoder reads it)."""
    from spray.correct.pclarc import check_projection_runs

    torch.manual_seed(0)
    model, x = _Hybrid().eval(), torch.rand(4, 3, 16, 16)
    for layer in ("blocks.layers.1", "blocks.layers.0"):
        corrected = pclarc(model, _random_direction(model, layer, x))
        check_projection_runs(corrected, x)
        out = corrected(x)
        assert out.shape == (4, 3) and not torch.allclose(out, model(x))


def test_a_sublayer_that_a_fused_path_skips_is_refused() -> None:
    """An outside check: a projection after ``linear1`` of an ``nn.TransformerEncoderLayer`` is never called in
    evaluation (the layer's fused path reads linear1's weights): refused, not measured as no change."""
    from spray.correct.pclarc import check_projection_runs

    torch.manual_seed(0)
    model, x = _Hybrid().eval(), torch.rand(4, 3, 16, 16)
    corrected = pclarc(model, _random_direction(model, "blocks.layers.1.linear1", x))
    with pytest.raises(ConfigError, match=r"not called through its own forward.*Name the whole block"):
        check_projection_runs(corrected, x)


def test_the_projected_layer_does_not_answer_for_spray_lrp_marks() -> None:
    """A review: through the wrapper, the canonizers read ``lrp_fused`` and ``relu`` of a projected ResNet block
    and fused its convolution a second time under a path that does not exist; ``inplace`` was set on it."""
    import torchvision

    from spray.lrp import Explainer

    torch.manual_seed(0)
    model, x = torchvision.models.resnet18(num_classes=3).eval(), torch.rand(2, 3, 32, 32)
    corrected = pclarc(model, _random_direction(model, "layer4.1", x))
    wrapper = corrected.get_submodule("layer4.1")
    wrapper[0].lrp_fused = [False]
    assert (
        wrapper.conv1 is wrapper[0].conv1
    )  # the layer's own attributes still answer (a parent may read them)
    assert getattr(wrapper, "lrp_fused", None) is None and getattr(wrapper, "inplace", None) is None
    got = Explainer(corrected, "EpsilonPlusFlat")(x)
    assert torch.isfinite(got.relevance).all()

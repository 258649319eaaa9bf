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

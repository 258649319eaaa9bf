from pathlib import Path

import pytest
import torch

from spray.config import ModelConfig
from spray.errors import ConfigError, ModelError
from spray.lab.cnn import small_cnn
from spray.models import build_model, check_model_output, model_hash


def test_torchvision_with_checkpoint(tmp_path: Path) -> None:
    import torchvision

    m = torchvision.models.resnet18(num_classes=3)
    torch.save({"state_dict": {f"module.{k}": v for k, v in m.state_dict().items()}}, tmp_path / "w.pt")
    got = build_model(ModelConfig(architecture="resnet18", num_classes=3, checkpoint=tmp_path / "w.pt"))
    assert model_hash(got) == model_hash(m.eval())
    assert not got.training


def test_wrong_num_classes_is_explained(tmp_path: Path) -> None:
    torch.save(small_cnn(num_classes=10).state_dict(), tmp_path / "w.pt")
    cfg = ModelConfig(
        factory="spray.lab.cnn:small_cnn", factory_kwargs={"num_classes": 5}, checkpoint=tmp_path / "w.pt"
    )
    with pytest.raises(
        ModelError, match=r"classifier\.4\.weight: checkpoint \(10, 128\) vs model \(5, 128\)"
    ):
        build_model(cfg)


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        build_model(ModelConfig(architecture="resnet18", num_classes=3, checkpoint=tmp_path / "none.pt"))


def test_pickled_model_needs_opt_in(tmp_path: Path) -> None:
    torch.save(small_cnn(), tmp_path / "full.pt")
    with pytest.raises(ModelError, match="allow_pickle"):
        build_model(ModelConfig(factory="spray.lab.cnn:small_cnn", checkpoint=tmp_path / "full.pt"))
    m = build_model(
        ModelConfig(factory="spray.lab.cnn:small_cnn", checkpoint=tmp_path / "full.pt", allow_pickle=True)
    )
    assert isinstance(m, torch.nn.Module)


def test_unknown_architecture_and_factory() -> None:
    with pytest.raises(ConfigError, match="not a torchvision model"):
        build_model(ModelConfig(architecture="resnet19", num_classes=3))
    with pytest.raises(ConfigError, match="cannot import module"):
        build_model(ModelConfig(factory="no_such_mod:fn"))


def test_output_checks() -> None:
    m = small_cnn(num_classes=3).eval()
    assert check_model_output(m, torch.randn(2, 1, 28, 28), 3) == 3
    with pytest.raises(ModelError, match="3 outputs but the dataset has 5 classes"):
        check_model_output(m, torch.randn(2, 1, 28, 28), 5)
    with pytest.raises(ModelError, match="fails on an input of shape"):
        check_model_output(m, torch.randn(2, 3, 32, 32), 3)
    with torch.no_grad():
        m.classifier[-1].bias.fill_(float("nan"))
    with pytest.raises(ModelError, match="NaN"):
        check_model_output(m, torch.randn(2, 1, 28, 28), 3)

"""lrp.concept_layer must not be the model's output: an empty path (the whole model) is refused when the
config loads, a layer whose output the model returns (the classifier, its last Linear) when it runs."""

from pathlib import Path

import pytest
import torch

from spray.config import config_from_dict
from spray.errors import ConfigError
from spray.lab.cnn import small_cnn
from spray.lrp import Explainer


def test_an_empty_concept_layer_is_refused_when_the_config_loads(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    raw = {
        "model": {"architecture": "resnet18", "num_classes": 3},
        "data": {"kind": "image_folder", "path": "imgs"},
        "lrp": {"concept_layer": ""},
    }
    with pytest.raises(ConfigError, match=r"lrp\.concept_layer: an empty layer is the whole model"):
        config_from_dict(raw, base_dir=tmp_path)


@pytest.mark.parametrize("layer", ["classifier.4", "classifier", ""])
def test_a_layer_giving_the_logits_is_refused(layer: str) -> None:
    torch.manual_seed(0)
    model = small_cnn(in_channels=1, num_classes=3, width=8).eval()
    with pytest.raises(ConfigError, match=r"computes the model's output, its class scores.*'auto'"):
        Explainer(model, concept_layer=layer)(torch.randn(2, 1, 28, 28))


def test_an_earlier_layer_is_kept() -> None:
    torch.manual_seed(0)
    model = small_cnn(in_channels=1, num_classes=3, width=8).eval()
    out = Explainer(model, concept_layer="classifier.2")(torch.randn(2, 1, 28, 28))
    assert out.concepts is not None and tuple(out.concepts.shape) == (2, 128)


class _AllConv(torch.nn.Module):
    """A classifier convolution whose map forward() averages into the logits (no Linear head)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x).mean((2, 3))


@pytest.mark.parametrize("layer", ["enc", "enc.2"])
def test_a_classifier_convolution_is_refused(layer: str) -> None:
    torch.manual_seed(0)
    with pytest.raises(ConfigError, match=r"'enc(\.2)?' gives the class scores: its 3 channels.*'auto'"):
        Explainer(_AllConv().eval(), concept_layer=layer)(
            torch.randn(4, 1, 12, 12), target=torch.tensor([0, 1, 2, 0])
        )


def test_the_stage_before_a_classifier_convolution_is_kept() -> None:
    torch.manual_seed(0)
    out = Explainer(_AllConv().eval(), concept_layer="enc.1")(
        torch.randn(4, 1, 12, 12), target=torch.tensor([0, 1, 2, 0])
    )
    assert out.concepts is not None and tuple(out.concepts.shape) == (4, 8)

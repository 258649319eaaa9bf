"""What an Explainer call accepts (spray.lrp.inputs) and how it behaves around a notebook's state: threads,
an open autocast, a softmax at the end, bf16 rounding. Each case comes from an outside check of the
Python API."""

from __future__ import annotations

import threading

import pytest
import torch
import torchvision
from torch import nn

from spray.errors import ConfigError, ModelError
from spray.lrp import Explainer


def _calibrated(model: nn.Module, seed: int = 1) -> nn.Module:
    """Random BatchNorm statistics from one training-mode pass, so BN is not the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.6 - 0.3)
        model.train()
        model(torch.randn(8, 3, 64, 64, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return _calibrated(torchvision.models.resnet18(num_classes=10))


def _x(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_one_explainer_from_two_threads_gives_each_call_its_own_result(resnet: nn.Module) -> None:
    """Concepts came back None or another call's in 18 of 20 threaded calls; a conditional map leaked into a
    plain call; a new Explainer raised IndexError from its first-batch checks."""
    xs = [_x(seed=i) for i in range(2)]
    fresh = Explainer(resnet, concept_layer="layer4")
    errors: list[BaseException] = []
    out: dict[int, torch.Tensor | None] = {}

    def work(i: int) -> None:
        try:
            mask = torch.zeros(2, 512).index_fill_(1, torch.tensor([3, 7]), 1.0) if i else None
            r = fresh(xs[i], target=1, concept_mask=mask)
            out[i] = r.relevance if i else r.concepts
        except BaseException as err:  # the failure itself is what is tested
            errors.append(err)

    for _ in range(3):
        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert not errors
        want_concepts = fresh(xs[0], target=1).concepts
        mask = torch.zeros(2, 512).index_fill_(1, torch.tensor([3, 7]), 1.0)
        want_map = fresh(xs[1], target=1, concept_mask=mask).relevance
        assert out[0] is not None and torch.allclose(out[0], want_concepts, atol=1e-6)
        assert out[1] is not None and torch.allclose(out[1], want_map, atol=1e-6)


def test_a_callers_autocast_does_not_lower_the_explainers_precision(resnet: nn.Module) -> None:
    """Under an open torch.autocast(bfloat16) an fp32 Explainer ran in bf16 (cosine 0.9993, unsaid), or a
    new one blamed BatchNorm registration."""
    x = _x()
    warm = Explainer(resnet)
    ref = warm(x, target=1).relevance
    with torch.autocast("cpu", dtype=torch.bfloat16):
        again = warm(x, target=1).relevance
        first = Explainer(resnet)(x, target=1).relevance
    torch.testing.assert_close(again, ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(first, ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("head", [nn.Softmax(dim=1), nn.LogSoftmax(dim=1)])
def test_a_model_ending_in_a_softmax_is_refused(resnet: nn.Module, head: nn.Module) -> None:
    """The audit refused it; the Explainer explained probabilities as if they were logits."""
    with pytest.raises(ModelError, match=r"ends in a softmax.*up to its logits"):
        Explainer(nn.Sequential(resnet, head))(_x(), target=1)


def test_bf16_that_moves_the_models_own_logits_is_named_as_the_cause() -> None:
    """precision='bf16' on CPU refused plain torchvision models blaming BatchNorm registration order; the
    model alone under bf16 autocast was as far off."""
    said = []
    for seed in range(3):
        torch.manual_seed(seed)
        m = _calibrated(torchvision.models.resnet50(num_classes=10), seed=seed + 1)
        try:
            Explainer(m, precision="bf16")(_x(seed=seed), target=1)
        except ModelError as err:
            said.append(str(err))
    assert said, "bf16 passed on every seed: the case no longer arises on this machine"
    assert all("precision='bf16' moves this model's own logits" in s and "BatchNorm" not in s for s in said)


@pytest.mark.parametrize(
    ("inputs", "said"),
    [
        (_x(1)[0], r"one image \(C, H, W\)\? .*x\[None\]"),
        (_x(0), "inputs hold no samples"),
        ((_x() * 255).to(torch.uint8), "inputs are uint8: the model takes float inputs"),
    ],
)
def test_a_notebooks_slips_in_the_input_are_named(resnet: nn.Module, inputs: torch.Tensor, said: str) -> None:
    """Raw RuntimeErrors (a Flat rule's convolution, a reshape), or uint8 pixels explained at 0-255."""
    with pytest.raises(ConfigError, match=said):
        Explainer(resnet)(inputs)


def test_fractional_or_boolean_classes_are_refused_not_truncated(resnet: nn.Module) -> None:
    e = Explainer(resnet)
    x = torch.cat([_x(), _x()])
    with pytest.raises(ConfigError, match="target must be whole class indices"):
        e(x, target=torch.tensor([0.0, 1.7, 2.2, 3.9]))
    with pytest.raises(ConfigError, match="labels must be whole class indices"):
        e(x, target="label", labels=torch.tensor([0.5, 1.5, 2.5, 3.5]))
    with pytest.raises(ConfigError, match="not booleans"):
        e(x, target=torch.tensor([True, False, True, False]))
    assert e(x, target=torch.tensor([0.0, 1.0, 2.0, 3.0])).targets.tolist() == [0, 1, 2, 3]


def test_inference_mode_is_named_with_the_fix(resnet: nn.Module) -> None:
    """'Inference tensors cannot be saved for backward' was all one got, building or calling."""
    e = Explainer(resnet)
    with torch.inference_mode():
        with pytest.raises(ConfigError, match=r"torch.inference_mode\(\) is on.*torch.no_grad\(\)"):
            e(_x())
        with pytest.raises(ConfigError, match=r"torch.inference_mode\(\) is on"):
            Explainer(resnet)
    with torch.no_grad():
        assert e(_x()).relevance.shape == (2, 3, 64, 64)


def test_an_explainer_can_still_be_deep_copied(resnet: nn.Module) -> None:
    """A review: the lock made copy.deepcopy(Explainer(m)) raise 'cannot pickle _thread.lock'."""
    import copy

    e = Explainer(resnet)
    x = _x()
    twin = copy.deepcopy(e)
    assert twin._lock is not e._lock
    torch.testing.assert_close(twin(x, target=1).relevance, e(x, target=1).relevance)

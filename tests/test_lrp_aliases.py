"""Models that name or wire their layers in ways the LRP copy must follow: a module registered under several
names is one layer whose rule holds under every name; a forward() that cuts the graph is named with the fix.

An outside check found ``self.c3 = self.c2`` and ``nn.ModuleList([block] * 2)`` explained with the plain
gradient through the second name (``named_modules()`` lists a shared module once), and a first conv also
grouped into a Sequential refused as "ran 0 times". Each model below is compared with the same function
written without aliases, whose maps the zennit oracle tests cover.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spray.lrp import explain


class SharedConv(nn.Module):
    """``c2`` applied twice, once as ``c3`` (``unshare`` gives ``c3`` its own copy of the weights)."""

    def __init__(self, unshare: bool = False) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 6, 3, padding=1)
        self.c3 = copy.deepcopy(self.c2) if unshare else self.c2
        self.fc = nn.Linear(6 * 3 * 3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c1(x))
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        x = F.max_pool2d(F.relu(self.c3(x)), 2)
        return self.fc(torch.flatten(x, 1))


class SharedList(nn.Module):
    """One conv block repeated as ``nn.ModuleList([block] * 2)``."""

    def __init__(self, unshare: bool = False) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 3, padding=1)
        block = nn.Conv2d(6, 6, 3, padding=1)
        self.blocks = nn.ModuleList([block, copy.deepcopy(block)] if unshare else [block] * 2)
        self.fc = nn.Linear(6 * 3 * 3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c1(x))
        for b in self.blocks:
            x = F.max_pool2d(F.relu(b(x)), 2)
        return self.fc(torch.flatten(x, 1))


class Grouped(nn.Module):
    """Layers made as attributes, then grouped into the Sequentials ``forward`` uses (``plain``: only the
    Sequentials)."""

    def __init__(self, plain: bool = False) -> None:
        super().__init__()
        conv1, conv2, fc = nn.Conv2d(1, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1), nn.Linear(6 * 9, 4)
        if not plain:
            self.conv1, self.conv2, self.fc = conv1, conv2, fc
        self.features = nn.Sequential(conv1, nn.ReLU(), nn.MaxPool2d(2), conv2, nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _twin(model: nn.Module, plain: nn.Module) -> nn.Module:
    """``plain`` with ``model``'s weights (an aliased parameter is copied to each of its names)."""
    own = dict(model.named_parameters(remove_duplicate=False))
    mapping = {"c3.": "c2.", "blocks.1.": "blocks.0."}
    state = {}
    for name in plain.state_dict():
        src = name if name in own else next(name.replace(a, b) for a, b in mapping.items() if a in name)
        state[name] = own[src].detach().clone()
    plain.load_state_dict(state)
    return plain.eval()


@pytest.mark.parametrize("composite", ["EpsilonPlusFlat", "EpsilonAlpha2Beta1"])
@pytest.mark.parametrize("kind", ["shared_conv", "shared_list", "grouped"])
def test_an_aliased_module_gets_its_rule_under_every_name(kind: str, composite: str) -> None:
    torch.manual_seed(0)
    make = {"shared_conv": SharedConv, "shared_list": SharedList, "grouped": Grouped}[kind]
    model = make().eval()
    plain = _twin(model, make(True))
    x = torch.rand(5, 1, 12, 12)
    with torch.no_grad():
        assert torch.allclose(model(x), plain(x), atol=1e-6)
    got = explain(model, x, target="pred", composite=composite)
    want = explain(plain, x, target="pred", composite=composite)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()))


class FrozenProbe(nn.Module):
    """A linear probe on a backbone run without a graph (``mode``: ``no_grad`` or ``detach``)."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.backbone = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten())
        self.head = nn.Linear(4 * 36, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "no_grad":
            with torch.no_grad():
                z = self.backbone(x)
        else:
            z = self.backbone(x).detach()
        return self.head(z)


@pytest.mark.parametrize("mode", ["no_grad", "detach"])
@pytest.mark.parametrize("concept_layer", [None, "backbone.0"])
def test_a_forward_that_cuts_the_graph_is_named_with_the_fix(mode: str, concept_layer: str | None) -> None:
    """An outside check: a linear probe on a frozen backbone (torch.no_grad() or .detach() in forward) ended
    in autograd's raw 'element 0 of tensors does not require grad', or blamed the concept layer's place."""
    from spray.errors import ModelError
    from spray.lrp import Explainer

    model = FrozenProbe(mode).eval()
    with pytest.raises(ModelError) as got:
        Explainer(model, concept_layer=concept_layer)(torch.rand(2, 1, 6, 6))
    text = str(got.value)
    assert "requires_grad=False" in text and ("no_grad" in text or "cuts the graph" in text), text
    if concept_layer is not None and mode == "no_grad":
        assert "runs with gradients off" in text


class RandomHead(nn.Module):
    """``F.dropout(x, 0.3)``: training defaults to True, so eval mode still drops (a common slip)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 36, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.dropout(torch.flatten(F.relu(self.conv(x)), 1), 0.3))


def test_a_random_forward_is_named_not_blamed_on_batchnorm() -> None:
    """An outside check: a model with F.dropout in forward() (no BatchNorm) was refused with "Probably a
    BatchNorm is registered right after a layer", and canonize=False did not help."""
    from spray.errors import ModelError
    from spray.lrp import Explainer

    torch.manual_seed(0)
    for canonize in (True, False):
        with pytest.raises(ModelError, match=r"two runs of the same input in eval mode.*F\.dropout") as got:
            Explainer(RandomHead().eval(), canonize=canonize)(torch.rand(2, 1, 6, 6))
        assert "BatchNorm" not in str(got.value)

"""Model factories for the model tests and the model fault suite (``model.factory: tests.model_factories:NAME``).

Each builds a tiny classifier for (B, 3, 16, 16) images; the faulty ones fail in one specific way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn


class NamedOutput(NamedTuple):
    logits: torch.Tensor
    features: torch.Tensor


class Tiny(nn.Module):
    """Conv → ReLU → global average pool → Linear; ``mode`` selects the shape of the output."""

    def __init__(self, num_classes: int = 2, in_channels: int = 3, mode: str = "tensor") -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(4, num_classes)
        self.mode = mode

    def forward(self, x: torch.Tensor) -> object:
        features = self.flat(self.pool(self.relu(self.conv(x))))
        logits = self.fc(features)
        if self.mode == "tuple":
            return logits, features
        if self.mode == "dict":
            return {"logits": logits, "features": features}
        if self.mode == "object":
            return Output(logits=logits, hidden=[features])
        if self.mode == "namedtuple":
            return NamedOutput(logits, features)
        if self.mode == "3d":
            return logits[..., None]
        if self.mode == "nan":
            return logits * float("nan")
        return logits


@dataclass
class Output:
    """A Hugging Face-style output object."""

    logits: torch.Tensor
    hidden: list[torch.Tensor]


def tiny(num_classes: int = 2, in_channels: int = 3) -> nn.Module:
    """A working model."""
    torch.manual_seed(0)
    return Tiny(num_classes, in_channels)


def constant_head(num_classes: int = 2) -> nn.Module:
    """A model whose class head has zero weights: its logits do not depend on the input."""
    model = tiny(num_classes)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.weight)
    return model


def tiny_double(num_classes: int = 2) -> nn.Module:
    """A working model in float64 (a user's scientific-computing habit)."""
    return tiny(num_classes).double()


def tuple_output(num_classes: int = 2) -> nn.Module:
    """Returns ``(logits, features)``."""
    return Tiny(num_classes, mode="tuple")


def dict_output(num_classes: int = 2) -> nn.Module:
    """Returns ``{"logits": ..., "features": ...}``."""
    return Tiny(num_classes, mode="dict")


def object_output(num_classes: int = 2) -> nn.Module:
    """Returns an object with a ``logits`` attribute."""
    return Tiny(num_classes, mode="object")


def namedtuple_output(num_classes: int = 2) -> nn.Module:
    """Returns a namedtuple ``(logits, features)``."""
    return Tiny(num_classes, mode="namedtuple")


def wrong_shape(num_classes: int = 2) -> nn.Module:
    """Returns ``(B, K, 1)``."""
    return Tiny(num_classes, mode="3d")


def nan_output(num_classes: int = 2) -> nn.Module:
    """Returns NaN logits."""
    return Tiny(num_classes, mode="nan")


def _build_layers(depth: int) -> list[nn.Module]:
    if depth > 2:
        raise ValueError(f"bad depth {depth}: at most 2 blocks fit a 16x16 input")
    return [nn.Identity() for _ in range(depth)]


def raising(num_classes: int = 2, depth: int = 5) -> nn.Module:
    """Raises inside a helper (the user's traceback must be shown)."""
    nn.Sequential(*_build_layers(depth))
    return Tiny(num_classes)


def not_a_model(num_classes: int = 2) -> str:
    """Returns a string."""
    return "not a model"


class Lstm(nn.Module):
    """A layer spray has no rule for."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.rnn = nn.LSTM(4, 4, batch_first=True)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = self.conv(x).mean(3).transpose(1, 2)
        return self.fc(self.rnn(seq)[0][:, -1])


def with_lstm(num_classes: int = 2) -> nn.Module:
    """Has an LSTM."""
    return Lstm(num_classes)


class Normalising(nn.Module):
    """Divides by a norm in its own forward(): relevance is not conserved there."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.tiny = Tiny(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tiny.conv(x)
        h = h / (h.pow(2).mean(1, keepdim=True).sqrt() + 1e-3)
        return self.tiny.fc(self.tiny.flat(self.tiny.pool(h)))


def normalising(num_classes: int = 2) -> nn.Module:
    """Fails the LRP self-check."""
    torch.manual_seed(0)
    return Normalising(num_classes)


def scripted(num_classes: int = 2) -> nn.Module:
    """A TorchScript module (traced): its layers are compiled away."""
    return torch.jit.trace(tiny(num_classes).eval(), torch.rand(1, 3, 8, 8))


def compiled(num_classes: int = 2) -> nn.Module:
    """A torch.compile'd module (compiled lazily: nothing runs until its first call)."""
    return torch.compile(tiny(num_classes))


def data_parallel_cnn(num_classes: int = 2) -> nn.Module:
    """The small CNN wrapped in ``nn.DataParallel``: its own keys carry ``module.``."""
    from spray.lab.cnn import small_cnn

    return nn.DataParallel(small_cnn(num_classes=num_classes))

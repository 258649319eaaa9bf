"""The small CNN of the demo, the tests and the benchmarks."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """A small CNN for 28×28 inputs (the demo's and benchmarks' model; its classifier takes the 7×7 map two poolings
    leave of them, so other sizes fail: resize them to 28 with data.transform).

    Parameters
    ----------
    in_channels : int
        Input channels.
    num_classes : int
        Output classes.
    width : int
        Channels of the first conv block (the second has twice as many).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(2 * width * 7 * 7, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, 28, 28) → logits (B, num_classes)."""
        return self.classifier(self.features(x))


def small_cnn(in_channels: int = 1, num_classes: int = 10, width: int = 32) -> SmallCNN:
    """Factory for :class:`SmallCNN` (usable as ``model.factory: spray.lab.cnn:small_cnn``)."""
    return SmallCNN(in_channels=in_channels, num_classes=num_classes, width=width)

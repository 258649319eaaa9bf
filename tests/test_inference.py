"""The paste test's forward passes (:mod:`spray.inference`): a channels_last copy on CPU that answers as
the model does, or the model itself."""

from __future__ import annotations

import logging

import pytest
import torch
import torchvision
from torch import nn

from spray.inference import PASS_ROWS, Inference
from spray.lab.cnn import small_cnn

CPU = torch.device("cpu")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return small_cnn(in_channels=3, num_classes=5).eval()


def _x(n: int = 40) -> torch.Tensor:
    return torch.randn(n, 3, 28, 28, generator=torch.Generator().manual_seed(1))


def test_copy_in_channels_last_answers_as_the_model_and_leaves_it_alone() -> None:
    model = _model()
    inf = Inference(model, CPU, batch_size=16)
    assert inf._fast is None  # no copy until a forward pass is asked for
    inf.logits(_x(2))
    assert inf._fast is not None and inf._fast is not model
    weight = next(p for p in inf._fast.parameters() if p.dim() == 4)
    assert weight.is_contiguous(memory_format=torch.channels_last)
    # the user's model keeps its layout
    assert all(p.is_contiguous() for p in model.parameters())
    x = _x()
    with torch.no_grad():
        want = model(x)
    got = inf.logits(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert torch.equal(inf.predict(x), got.argmax(1))
    assert inf._fast is not None  # kept after the first batch's check


class _FlattensWithView(nn.Module):
    """``.view`` after a convolution: fails on a channels_last tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)  # most weights in the convolution: a copy is made
        self.fc = nn.Linear(32 * 4 * 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).view(len(x), -1))


class _ReadsRawMemory(nn.Module):
    """Reads the feature map's storage in contiguous order (as a custom kernel might): silently other
    numbers in channels_last."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 4 * 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        raw = torch.as_strided(h, h.shape, (h[0].numel(), 16, 4, 1))
        return self.fc(raw.reshape(len(x), -1))


@pytest.mark.parametrize(
    ("cls", "why"),
    [(_FlattensWithView, "failed in that layout"), (_ReadsRawMemory, "differ from the model's")],
)
def test_a_copy_that_fails_or_answers_otherwise_is_dropped_with_a_warning(
    cls: type[nn.Module], why: str, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    model = cls().eval()
    x = torch.randn(12, 3, 4, 4)
    inf = Inference(model, CPU, batch_size=5)
    with caplog.at_level(logging.WARNING, logger="spray.inference"):
        got = inf.logits(x)
    assert inf._fast is None
    assert why in caplog.text
    with torch.no_grad():
        torch.testing.assert_close(got, model(x))


def test_models_without_2d_convolutions_and_empty_inputs() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    inf = Inference(mlp, CPU)
    x = torch.randn(7, 3, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(inf.logits(x), mlp(x))
    assert inf._fast is None
    # a transformer's patch embedding is a convolution, but most of its weights are not: no copy
    vit = torchvision.models.VisionTransformer(32, 8, 2, 2, 64, 128, num_classes=3).eval()
    inf = Inference(vit, CPU)
    inf.logits(torch.randn(1, 3, 32, 32))
    assert inf._fast is None
    assert inf.predict(x[:0]).shape == (0,)
    assert inf.logits(x[:0]).shape[0] == 0


def test_an_uncopyable_model_runs_as_it_is() -> None:
    model = _model()
    model.handle = (i for i in range(3))  # a generator cannot be deep-copied
    inf = Inference(model, CPU)
    x = _x(4)
    with torch.no_grad():
        torch.testing.assert_close(inf.logits(x), model(x))
    assert inf._fast is None


def test_an_images_logits_do_not_depend_on_the_images_run_with_it() -> None:
    """A trace of an outside check: an incremental run's paste gains differed from a fresh run's by ~1e-8, since
    BLAS picks its kernel by the number of rows (MKL's sgemm rounds otherwise below 16) and the paste cache
    keeps logits computed in passes of other sizes; every pass now has the same number of rows."""
    model, x = _model(), _x(100)
    inf = Inference(model, CPU)
    assert inf.batch_size == PASS_ROWS["cpu"]
    ref = inf.logits(x)
    order = torch.randperm(100, generator=torch.Generator().manual_seed(0)).tolist()
    for idx in ([3], list(range(5, 12)), list(range(40, 55)), order):
        assert torch.equal(inf.logits(x[idx]), ref[idx]), idx

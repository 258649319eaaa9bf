"""spray.lrp.numerics.seeded_grad and _LinearOp.shared_input: the same numbers as the plain calls, cheaper."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torch
from torch import nn

from spray.lrp.kernels import _LinearOp
from spray.lrp.numerics import seeded_grad


def _graph() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    x = torch.randn(3, 1, 8, 8, requires_grad=True)
    out = model(x)
    seed = torch.zeros_like(out).scatter_(1, torch.tensor([[0], [3], [4]]), 1.0)
    return out, x, seed


def test_seeded_grad_equals_autograd_with_grad_outputs_bit_for_bit() -> None:
    out, x, seed = _graph()
    (oracle,) = torch.autograd.grad(out, x, grad_outputs=seed, retain_graph=True)
    assert torch.equal(seeded_grad(out, x, seed), oracle)


def test_seeded_grad_works_under_no_grad() -> None:
    out, x, seed = _graph()
    (oracle,) = torch.autograd.grad(out, x, grad_outputs=seed, retain_graph=True)
    with torch.no_grad():
        got = seeded_grad(out, x, seed)
    assert torch.equal(got, oracle)


def test_explaining_imports_no_sympy() -> None:
    """autograd.grad with a tensor grad_outputs imports sympy (~0.5 CPU s); the Explainer must not."""
    code = textwrap.dedent(
        """
        import sys, torch
        from spray.lab.cnn import small_cnn
        from spray.lrp import Explainer
        Explainer(small_cnn())(torch.rand(2, 1, 28, 28))
        print("sympy" in sys.modules)
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


def test_shared_input_is_the_layout_the_convolution_uses() -> None:
    """A contiguous input to a channels_last conv is converted once; the conv's output is unchanged."""
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 6, 3, padding=1).to(memory_format=torch.channels_last)
    op = _LinearOp(conv)
    x = torch.rand(4, 8, 10, 10)  # contiguous, as after a first layer with a 1-channel input
    shared = op.shared_input(x, conv.weight)
    assert shared.is_contiguous(memory_format=torch.channels_last) and torch.equal(shared, x)
    assert torch.equal(op.forward(shared, conv.weight, conv.bias), op.forward(x, conv.weight, conv.bias))
    assert op.shared_input(shared, conv.weight) is shared  # already in that layout: no copy
    plain = nn.Conv2d(8, 6, 3)  # contiguous weight: nothing to convert
    assert _LinearOp(plain).shared_input(x, plain.weight) is x

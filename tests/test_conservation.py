"""spray.conservation: the share of the explained logit the heatmaps carry, judged on the model at hand."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch
from torch import nn

from spray.accuracy import recorded_problems
from spray.conservation import LOW_SHARE, measure, problems, shares
from spray.lrp import Explainer


def _model(bias: float) -> nn.Module:
    """A small CNN whose classifier's bias is ``bias`` (0: none)."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    with torch.no_grad():
        m[0].bias.zero_()
        m[3].bias.fill_(bias)
    return m.eval()


class _Data:
    def __init__(self, n: int = 40) -> None:
        g = torch.Generator().manual_seed(1)
        self.x = torch.rand(n, 1, 8, 8, generator=g)
        self.labels = [i % 3 for i in range(n)]

    def __len__(self) -> int:
        return len(self.x)

    def load_input(self, i: int) -> torch.Tensor:
        return self.x[i]


def test_shares_are_relevance_over_the_explained_logit() -> None:
    r = torch.tensor([[1.0, 1.0], [0.5, 0.0], [2.0, 2.0]]).view(3, 2, 1, 1)
    z = torch.tensor([[4.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    got = shares(r, z, torch.tensor([0, 1, 0]))
    assert np.allclose(got, [0.5, 0.5])  # the third logit is 0: left out


def test_a_bias_free_model_keeps_its_logit_and_large_biases_take_it() -> None:
    """Without biases ε-LRP conserves the logit (share ≈ 1, no warning); with biases that dominate the
    logit the maps carry little of it, and the audit says so."""
    data = _Data()
    kept = measure(Explainer(_model(0.0), "EpsilonPlusFlat"), data, "label", torch.device("cpu"))
    assert kept is not None and kept.n_samples == 32 and abs(kept.median_share - 1) < 0.02 and not kept.low
    taken = measure(Explainer(_model(30.0), "EpsilonPlusFlat"), data, "label", torch.device("cpu"))
    assert taken is not None and taken.median_share < LOW_SHARE and taken.low
    (sentence,) = problems(asdict(taken))
    assert sentence.startswith("The heatmaps carry") and "EpsilonGammaBox" in sentence
    assert recorded_problems({"conservation": asdict(taken)}) == [sentence]
    assert recorded_problems({"conservation": asdict(kept)}) == [] == recorded_problems({})


@pytest.mark.parametrize("target", ["pred", 1])
def test_other_targets(target: str | int) -> None:
    got = measure(Explainer(_model(0.0), "EpsilonPlusFlat"), _Data(), target, torch.device("cpu"))
    assert got is not None and abs(got.median_share - 1) < 0.02


def test_reading_the_recorded_check_imports_no_torch() -> None:
    """The dashboard's overview and the reports word the recorded check; torch's import (seconds) is not
    theirs to pay."""
    import subprocess
    import sys

    code = (
        "import sys; from spray.accuracy import recorded_problems; "
        "rec = {'low': True, 'median_share': 0.01, 'low_share': 0.0, 'high_share': 0.1, 'n_samples': 32}; "
        "assert recorded_problems({'conservation': rec}); assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]

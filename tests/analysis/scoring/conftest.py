"""Synthetic classes built once per test session (a spectral embedding and a k-means sweep each)."""

from __future__ import annotations

import pytest

from tests.analysis.scoring.cases import Case, make_case


@pytest.fixture(scope="session")
def planted() -> Case:
    """A class of 5 strategies, one of them a 5 % top-left artifact."""
    return make_case(0.05)


@pytest.fixture(scope="session")
def natural() -> Case:
    """A class of 6 natural strategies and no artifact."""
    return make_case(0.0, n_clusters=6)

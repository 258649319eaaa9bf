"""spray: a Clever-Hans auditor for PyTorch image classifiers (LRP + Spectral Relevance Analysis)."""

from __future__ import annotations

__version__ = "0.1.0"

"""spray: a Clever-Hans auditor for PyTorch image classifiers (LRP + Spectral Relevance Analysis).

The public entry points are imported lazily so that ``import spray`` stays cheap (the CLI's
``--help`` and config validation must answer in well under a second)::

    from spray import explain, Explainer        # LRP heatmaps
    from spray import load_config, run_audit    # the whole audit
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"

_LAZY = {
    "explain": "spray.lrp",
    "Explainer": "spray.lrp",
    "LRPResult": "spray.lrp",
    "load_config": "spray.config",
    "AuditConfig": "spray.config",
    "run_audit": "spray.audit",
    "load_report": "spray.audit",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'spray' has no attribute {name!r}")

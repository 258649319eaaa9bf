"""spray's LRP library: zennit's rules, composites and canonizers (same names) and AttnLRP's rules for
transformers, computed as activation × modified gradient in one ordinary backward pass.

    from spray.lrp import explain, Explainer
    relevance = explain(model, images, target="pred")
"""

from __future__ import annotations

from spray.lrp.explainer import Explainer, LRPResult, explain

__all__ = ["Explainer", "LRPResult", "explain"]

"""The part of a model after a layer, as a module of its own (when the model's graph allows it).

When nothing before a layer trains, fine-tuning only needs the layer's activations, which do not change:
they are computed once and the rest of the model (its *head*) is trained on them, instead of running the
frozen part again in every epoch. The head is cut out of the model's ``torch.fx`` graph; it shares the
model's parameters, so training it trains the model. Models that ``torch.fx`` cannot trace, or whose
output after the layer also depends on values computed before it (a skip connection around the layer),
have no head: the caller runs the whole model instead.
"""

from __future__ import annotations

import logging

import torch
from torch import fx, nn

log = logging.getLogger(__name__)


def head_after(model: nn.Module, layer: str) -> fx.GraphModule | None:
    """``head`` with ``head(layer_output) == model(x)``, or None when the model cannot be cut there.

    Parameters
    ----------
    model : nn.Module
        The model (its submodules and parameters are shared, not copied).
    layer : str
        Module path whose output the head takes.
    """

    class _Tracer(fx.Tracer):
        # the layer is one node even when it is a container (fx would otherwise trace into it)
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return qualname == layer or super().is_leaf_module(m, qualname)

    try:
        traced = fx.GraphModule(model, _Tracer().trace(model))
    except Exception as err:  # any tracing failure only means "no shortcut": the slow path is exact too
        log.info(
            "the model cannot be traced (%s: %s); fine-tuning runs the whole model", type(err).__name__, err
        )
        return None
    nodes = list(traced.graph.nodes)
    cut = [n for n in nodes if n.op == "call_module" and n.target == layer]
    if len(cut) != 1:
        return None
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {cut[0]: graph.placeholder("activation")}
    for node in nodes[nodes.index(cut[0]) + 1 :]:
        if node.op == "placeholder":
            return None
        if any(i not in env for i in node.all_input_nodes):
            return None  # depends on something computed before the layer
        env[node] = graph.node_copy(node, lambda i: env[i])
    head = fx.GraphModule(model, graph)
    return head


def check_head(model: nn.Module, head: nn.Module, layer: str, example: torch.Tensor) -> bool:
    """Whether ``head`` reproduces ``model`` on ``example`` (the cut is trusted only then); compared in eval
    mode, every module's mode restored after."""
    from spray.correct.activations import eval_mode, tap

    with eval_mode(model), torch.no_grad(), tap(model, layer) as got:
        full = model(example)
        return bool(torch.allclose(head(got[0]), full, rtol=1e-4, atol=1e-5))

"""LRP rules in the gradient×input frame.

Every rule is written so that the tensor travelling backwards through the network is a *modified
gradient* ``g`` with ``relevance = activation × g`` at every activation. This lets the plain autograd
backward of ReLU, max-pool, flatten, dropout and reshapes do the right thing without hooks or clones:

* ReLU: the plain gradient ``g·1[z>0]`` gives ``z·g_in = relu(z)·g``, i.e. relevance passes unchanged
  (zennit's ``Pass`` rule for activations).
* max-pool: the plain gradient routes ``g`` to the winner, so ``x_win·g = y·g`` (winner-take-all).
* ε (linear/conv) and Norm (avg-pool, residual add): the plain layer gradient applied to
  ``g·z/stab(z)``, so only an element-wise rescale of the output gradient is needed
  (:class:`_StabScale`), the layer itself keeps its fast native backward.
* z+, αβ, γ: one fused :class:`torch.autograd.Function` per layer that computes the modified forward
  once, saves only the ratio ``z / stab(z_mod)`` and does one (or two) input-VJPs in backward.
* Flat, w², ZBox produce *relevance*, not a gradient: they are only allowed on the first layer (the one
  whose input is the model input); the engine reads the input relevance off ``inputs.grad``.

The first rule layer of a model is run in "relevance-out" mode: a :class:`_TimesInput` in front of it
turns ``g`` into ``x·g``, so whatever sits between the model input and that layer (flatten, dropout,
max-pool) receives relevance, exactly as in zennit where un-hooked modules apply their gradient to
the relevance.

Stabilisation follows zennit (``stab(z) = z + ε·sign(z)`` with ``sign(0) = +1``) and is always done
in float32, also when the forward runs in bfloat16.

None of these modules is derived from zennit's code; the rule definitions follow the LRP papers and are
checked numerically against zennit 0.5.1 in the tests.

The rules live in modules by the layers they are for, and are all importable from here:
:mod:`spray.lrp.base` (``Rule``, ``RuleModule``, ``Gradient``, ``Epsilon``, ``Norm``),
:mod:`spray.lrp.linear` (``ZPlus``, ``AlphaBeta``, ``Gamma``, ``Flat``, ``WSquare``, ``ZBox``),
:mod:`spray.lrp.activations` (``Pass``), :mod:`spray.lrp.normalization` (``Normalize``),
:mod:`spray.lrp.pooling` (``LeanMaxPool``).
"""

from __future__ import annotations

from spray.lrp.activations import Pass
from spray.lrp.base import Epsilon, Gradient, Norm, Rule, RuleContext, RuleModule
from spray.lrp.linear import AlphaBeta, Flat, Gamma, WSquare, ZBox, ZPlus
from spray.lrp.normalization import HeldNorms, Normalize
from spray.lrp.numerics import stabilize
from spray.lrp.pooling import LeanMaxPool

__all__ = [
    "AlphaBeta",
    "Epsilon",
    "Flat",
    "Gamma",
    "Gradient",
    "HeldNorms",
    "LeanMaxPool",
    "Norm",
    "Normalize",
    "Pass",
    "Rule",
    "RuleContext",
    "RuleModule",
    "WSquare",
    "ZBox",
    "ZPlus",
    "stabilize",
]

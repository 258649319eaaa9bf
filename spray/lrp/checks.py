"""The first-batch checks of an Explainer: layer order, the copy's outputs, and conservation.

* **Order**: the relevance-out layer must run once, before any other rule layer.
* **Reference**: the canonized copy must compute the user's model (folded BatchNorms, patched blocks).
* **Empty maps** (:func:`warn_empty_maps`): a map that is exactly 0 everywhere carries no evidence; a
  warning says how many and why (the target logit below the rules' stabiliser, typically random weights).
* **Conservation** (:func:`check_conservation`): spray's rules conserve relevance wherever the LRP
  papers say they do. A rule that is not applied where it should be (a product of two activations in a
  custom ``forward()`` that spray cannot see, a module given ``Gradient()`` that is not a routing) shows
  up as relevance that is created or lost. The check runs a *probe*: a float32 copy of the LRP model
  with every bias (and additive constant such as a class token or position embedding) set to 0 and every
  stabiliser made negligible (the smallest normal float32), so that each rule must hand on exactly what it receives. On the first
  two samples it measures, with :class:`~spray.lrp.capture.RelevanceTaps`, the relevance into and out of
  every module call. The code of a module outside its submodules (its *glue*) must then conserve
  relevance; a leaf must conserve it unless its rule says otherwise (αβ). Under AttnLRP a softmax (alone or in
  ``scaled_dot_product_attention``) is measured on its own and its change of relevance taken out, since its
  rule does not conserve; the rest of the code around it must conserve. A violation raises
  :class:`~spray.errors.ModelError` naming the module.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from spray.errors import ConfigError, ModelError
from spray.lrp.base import RuleContext, RuleModule
from spray.lrp.canonizers import ResidualAdd
from spray.lrp.capture import CallRecord, RelevanceTaps
from spray.lrp.functional import functional_rules
from spray.lrp.inputs import INFERENCE_MODE
from spray.lrp.layout import _tf32
from spray.lrp.numerics import seeded_grad
from spray.lrp.pooling import LeanMaxPool
from spray.lrp.preparation import input_normalisation_advice

logger = logging.getLogger(__name__)

__all__ = [
    "ADDITIVE_NAMES",
    "check_conservation",
    "check_order",
    "forward_overrides",
    "reference_error",
    "warn_empty_maps",
]

#: Parameter and buffer names that the probe treats as additive constants (set to 0), besides every
#: name ending in "bias": BatchNorm means, and the tokens and position embeddings of vision transformers.
ADDITIVE_NAMES = frozenset(
    {
        "running_mean",
        "class_token",
        "cls_token",
        "dist_token",
        "reg_token",
        "register_tokens",
        "class_embedding",
        "pos_embedding",
        "pos_embed",
        "absolute_pos_embed",
        "positional_embedding",
        "position_embedding",
        "position_embeddings",
        "relative_position_bias_table",
    }
)
#: Relative tolerance of the conservation check, against the relevance magnitude at the module.
CONSERVATION_TOL = 1e-3
# The probe's stabiliser: the smallest normal float32. With every bias at 0, activations can shrink by
# orders of magnitude through a deep net (SiLU and sigmoid gates halve small values: about 1e-12 after
# EfficientNet-B0's 16 blocks), so any fixed "small" stabiliser would absorb relevance there.
_PROBE_EPS = float(torch.finfo(torch.float32).tiny)


def _shared_types(model: nn.Module, paths: list[str]) -> str:
    """Advice for modules at ``paths`` whose type other modules of ``model`` share: a rule registered for the
    type would change those too (empty when none shares it)."""
    wrapped = {id(m.inner) for m in model.modules() if isinstance(m, RuleModule)}
    inner = {
        p: m.inner if isinstance(m, RuleModule) else m
        for p, m in model.named_modules()
        if id(m) not in wrapped
    }
    for path in paths:
        kind = type(inner[path])
        others = [p for p, m in inner.items() if type(m) is kind and p not in paths]
        if others:
            return (
                f" register_layer_rule works by type, and {len(others)} other {kind.__name__} module(s) of the "
                f"model ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}) would get the rule too, "
                f"with wrong maps: give {path} a type of its own (class InputNorm({kind.__name__}): pass, built "
                "into the model in its place) and register the rule for that type."
            )
    return ""


def check_order(context: RuleContext, first_path: str | None, model: nn.Module | None = None) -> None:
    """Raise :class:`ModelError` unless the relevance-out layer ran once and before any rule layer."""
    if first_path is None:
        return
    order = context.order
    others = sorted(set(context.input_readers))
    if others:
        raise ModelError(
            f"layers {[first_path, *others]} each read the model's input (parallel branches, joined later by "
            f"torch.cat or a sum): spray's LRP turns the gradient into relevance at one input layer ({first_path}), "
            f"so what reaches the input through {others} would be added in another frame and the heatmaps would "
            "be wrong. Merge the branches' first layers into one (one convolution or Linear with their output "
            "channels side by side, split with torch.split after it): the same function, with one input layer."
        )
    hits = [i for i, (p, _) in enumerate(order) if p == first_path]
    if len(hits) != 1:
        raise ModelError(
            f"the first layer {first_path} ran {len(hits)} times in one forward pass; spray's LRP "
            "needs it to run exactly once (shared first layers are not supported)"
        )
    early = [p for p, grad_frame in order[: hits[0]] if grad_frame]
    if early:
        top = first_path.split(".")[0]
        # layers of the same top-level block that ran first: parallel branches reading the input
        branches = (
            " If they are parallel branches of one block that all read the input (RepVGG or MobileOne in their "
            "training form), no order fixes it: reparameterize the model into its single-branch form before the "
            "audit (timm: model = timm.utils.reparameterize_model(model), e.g. in your model factory; spray does "
            "this itself for timm's own blocks unless lrp.canonize is false)."
            if any(p.split(".")[0] == top for p in early) and "." in first_path
            else ""
        )
        shared = "" if model is None else _shared_types(model, early)
        raise ModelError(
            f"layers {early} ran before the first layer {first_path}: spray takes the first dense/conv layer "
            "in named_modules() order as the input layer, so it must be the first to run. Register modules in "
            f"execution order; {input_normalisation_advice()}.{shared}{branches}"
        )


def check_model(model: Any) -> None:
    """Refuse what the explainer cannot attach rules to, or run, with the fix.

    Raises
    ------
    ConfigError
        Not a module, weights not float32, or a TorchScript module.
    ModelError
        A BatchNorm without running statistics.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"Explainer needs a torch.nn.Module, got {type(model).__name__}")
    if torch.is_inference_mode_enabled():
        raise ConfigError(INFERENCE_MODE)
    kinds = {t.dtype for t in model.parameters() if t.is_floating_point()}
    if kinds - {torch.float32}:
        # the copy runs in float32 (``precision`` picks the faster modes); a raw dtype error was all one got
        # (buffers are left alone: an unused float64 statistic never met the inputs)
        raise ConfigError(
            f"Explainer needs a float32 model; this one's weights are {sorted(str(k) for k in kinds)}. Call "
            "model.float() first (spray's audit does so itself, with a warning)."
        )
    if isinstance(model, torch.jit.ScriptModule):
        raise ConfigError(
            "Explainer needs the Python model: a TorchScript module (torch.jit.script or torch.jit.trace) "
            "has compiled its layers away, so no rule can be attached to them. Build the Python model and "
            "load the scripted module's weights into it (model.load_state_dict(scripted.state_dict()))."
        )
    # in eval mode such a BatchNorm normalises each batch by that batch's statistics
    batch_stats = [
        n for n, m in model.named_modules() if isinstance(m, _BatchNorm) and m.running_mean is None
    ]
    if batch_stats:
        raise ModelError(
            f"BatchNorm {', '.join(batch_stats[:3])}{' ...' if len(batch_stats) > 3 else ''} has no running "
            "statistics (track_running_stats=False): also in eval mode it normalises each batch by that batch's "
            "own statistics, so a sample's logits and heatmap depend on the other images of its batch. Give it "
            "running statistics (track_running_stats=True, then run the training data through the model in "
            "train mode to fill them), or train the model with them."
        )


def warn_train_mode(model: nn.Module) -> None:
    """Say that a model given in train mode, with layers that compute otherwise there (dropout, BatchNorm), is
    explained as its eval-mode copy."""
    modal = (_BatchNorm, nn.modules.dropout._DropoutNd)
    if model.training and any(isinstance(m, modal) for m in model.modules()):
        logger.warning(
            "the model is in train mode: spray explains an eval-mode copy of it (dropout off, BatchNorm with "
            "its running statistics), the function its predictions use; call model.eval() to silence this"
        )


def reference_error(
    reference: nn.Module, x: torch.Tensor, logits: torch.Tensor, precision: str, device: torch.device
) -> tuple[float, float, float]:
    """``(max |Δlogit|, tolerance, logit scale)`` of the copy against the user's model on ``x[:2]``."""
    n = min(len(x), 2)
    with torch.no_grad(), torch.autocast(device.type, enabled=False), _tf32(device, False):
        # The reference runs in strict float32 (no autocast, no TF32): the copy's round-off is then
        # part of the tolerance, while a wrongly folded BatchNorm moves logits by a good fraction of
        # their scale. bf16 rounds ~0.4 % a layer (a few % over a deep net; 1 % was too tight on a
        # Bottleneck ResNet); TF32's 10-bit mantissa ~0.05 % a layer (measured on an H100: 0.13 % of
        # the logit scale on ResNet-50, where the float32 tolerance of 0.1 % failed).
        expected = reference(x[:n].detach().contiguous().float())
    if not isinstance(expected, torch.Tensor):
        raise ModelError(f"the model must return a (B, K) logits tensor, got a {type(expected).__name__}")
    expected = expected.float()
    scale = float(expected.abs().max().clamp(min=1e-12))
    tol = {"bf16": 5e-2, "tf32": 1e-2}.get(precision, 1e-3) * scale
    return float((expected - logits[:n]).abs().max()), tol, scale


def bf16_rounding(reference: nn.Module, x: torch.Tensor, device: torch.device) -> float:
    """Max |Δlogit| of the user's model on ``x[:2]`` under bfloat16 autocast against float32: how far bf16
    alone moves this model's logits."""
    n = min(len(x), 2)
    inputs = x[:n].detach().contiguous().float()
    with torch.no_grad(), _tf32(device, False):
        with torch.autocast(device.type, enabled=False):
            exact = reference(inputs)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            rounded = reference(inputs)
    if not isinstance(exact, torch.Tensor) or not isinstance(rounded, torch.Tensor):
        return 0.0
    return float((exact.float() - rounded.float()).abs().max())


def float64_rounding(reference: nn.Module, x: torch.Tensor) -> float:
    """Max |Δlogit| of the user's model on ``x[:2]`` in float32 against a float64 copy of it on the CPU: how far
    float32 rounding alone moves this model's logits."""
    n = min(len(x), 2)
    inputs = x[:n].detach().contiguous().float()
    try:
        exact = copy.deepcopy(reference).cpu().double()
        # strict float32 as in reference_error: TF32 convolutions alone would move a CUDA model's logits this far
        with torch.no_grad(), torch.autocast(inputs.device.type, enabled=False), _tf32(inputs.device, False):
            single, double = reference(inputs), exact(inputs.cpu().double())
    except (RuntimeError, TypeError):  # a model that cannot run in float64: nothing to say
        return 0.0
    if not isinstance(single, torch.Tensor) or not isinstance(double, torch.Tensor):
        return 0.0
    return float((single.double().cpu() - double).abs().max())


def reference_varies(reference: nn.Module, x: torch.Tensor, device: torch.device) -> bool:
    """Whether the user's model gives other logits on two runs of ``x[:2]`` (a random forward pass)."""
    n = min(len(x), 2)
    with torch.no_grad(), torch.autocast(device.type, enabled=False), _tf32(device, False):
        a, b = (reference(x[:n].detach().contiguous().float()) for _ in range(2))
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and not torch.equal(a, b)


# --------------------------------------------------------------------------------------------------
# conservation


def _units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every module of the copy, rule modules and lean pools taken as wholes (not their insides)."""
    units: list[tuple[str, nn.Module]] = []
    opaque: list[str] = []
    for path, module in model.named_modules():
        if any(path.startswith(p + ".") for p in opaque):
            continue
        units.append((path, module))
        if isinstance(module, (RuleModule, LeanMaxPool)):
            opaque.append(path)
    return units


def _probe_copy(model: nn.Module, context: RuleContext, dtype: torch.dtype) -> tuple[nn.Module, RuleContext]:
    """The copy the check runs on: additive constants 0, stabilisers negligible, in ``dtype``."""
    probe, ctx = copy.deepcopy((model, context))
    with torch.no_grad():
        for module in probe.modules():
            named = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
            for name, t in named:
                if (
                    t is not None
                    and t.is_floating_point()
                    and (name.endswith("bias") or name in ADDITIVE_NAMES)
                ):
                    t.zero_()
    probe.to(dtype)
    for module in probe.modules():
        if isinstance(module, ResidualAdd) and module.stabilizer is not None:
            module.stabilizer = _PROBE_EPS
        if isinstance(module, RuleModule):
            fields = {f.name for f in dataclasses.fields(module.rule)}
            small = {k: _PROBE_EPS for k in ("epsilon", "stabilizer") if k in fields}
            module.rule = dataclasses.replace(module.rule, **small)
            module.rule.prepare(module)
    return probe, ctx


def _inner(module: nn.Module) -> nn.Module:
    """The user's module behind a rule."""
    return module.inner if isinstance(module, RuleModule) else module


def _violation(calls: list[CallRecord], index: int, floor: float) -> float | None:
    """The relative conservation error of one call's own code, or None where none is expected."""
    call = calls[index]
    if call.ops or call.opaque or any(calls[c].opaque for c in call.children):
        return None
    if isinstance(call.module, RuleModule) and not call.module.rule.conservative:
        return None
    # a softmax's own change of relevance is its rule's; anything else in the same code must conserve
    own = call.loss - sum(calls[c].loss for c in call.children) - call.op_loss
    scale = max(call.abs_in, call.abs_out, call.op_abs, floor)
    error = own / scale
    return error if abs(error) > CONSERVATION_TOL else None


#: Under CP-LRP the refusal's rule advice cannot help attention whose weights change after the softmax.
_CP_HINT = (
    " Under CPLRP an attention module whose weights are transformed after the softmax (CaiT's talking heads "
    "mix them across heads with a Linear) is not explained; lrp.composite: AttnLRP explains such attention."
)


def _message(call: CallRecord, error: float) -> str:
    kind = type(call.module.inner if isinstance(call.module, RuleModule) else call.module).__qualname__
    what = "lost" if error > 0 else "created"
    where = call.path or "the model itself"
    head = (
        f"relevance is not conserved in {where} ({kind}): {abs(error):.1%} of the relevance through it "
        f"is {what} "
    )
    skip = (
        "From the command line: a normalisation written in forward() belongs in data.transform (mean, std); "
        "other operations need a model.factory that returns the model with them in a module. In Python, "
        "Explainer(..., self_check=False) explains the model anyway (the command line has no such switch: "
        "its heatmaps would be wrong without a word)."
    )
    if isinstance(call.module, RuleModule):
        return (
            head + f"by its rule {call.module.rule!r}, which should conserve it (biases set to 0). Give "
            f"{kind} a rule that fits it: Pass() for an element-wise activation, Epsilon() for a linear "
            f"map, Gradient() only for modules that move values without changing them. {skip}"
        )
    if not call.children:
        return (
            head + f"by its plain gradient. Give {kind} a rule: Pass() if it is element-wise, Epsilon() "
            f"if it is a linear map (Explainer(..., extra_rules={{{kind}: Pass()}})). {skip}"
        )
    own = [
        name
        for name, t in call.module.named_parameters(recurse=False)
        if not (name.endswith("bias") or name in ADDITIVE_NAMES)
    ]
    constants = (
        f" Its own parameters {', '.join(own)} are not taken as additive constants: if one is added to the "
        "activations (a class token, a position embedding), spray knows it under the names "
        f"{', '.join(sorted(ADDITIVE_NAMES - {'running_mean'}))} or '*bias'."
        if own
        else ""
    )
    # the model itself cannot be given one rule: a rule replaces a layer's backward, and the model is no layer
    whole = (
        ""
        if not call.path
        else f", or give the whole {kind} one rule (Explainer(..., extra_rules={{{kind}: Epsilon()}}))"
    )
    return (
        head + "in its own forward() (outside its submodules): a functional operation that spray has no "
        "rule for is explained by its plain gradient there (a division or product spray does not "
        "recognise, exp/log/pow, a normalisation written by hand, a constant added that is not a "
        f"parameter named '*bias'), or a part computed under torch.no_grad() or .detach(), which no relevance "
        f"reaches.{constants} Move the operation into a module and give that a rule{whole}. "
        f"{skip}"
    )


def _probe(
    model: nn.Module,
    context: RuleContext,
    x: torch.Tensor,
    targets: torch.Tensor,
    attention: str,
    dtype: torch.dtype,
) -> list[CallRecord]:
    probe, ctx = _probe_copy(model, context, dtype)
    taps = RelevanceTaps(_units(probe), lambda: ctx.relevance_frame, rescale=True)
    xp = x[:2].detach().to(dtype).requires_grad_(True)
    try:
        ctx.reset()
        with (
            torch.enable_grad(),
            functional_rules(ctx, attention, recorder=taps.record_op, watcher=taps.watch_op),
        ):
            out = probe(xp)
        seed = torch.zeros_like(out).scatter_(1, targets[:2, None].to(out.device), 1.0)
        seeded_grad(out, xp, seed)
    finally:
        taps.remove()
    return taps.calls


def check_conservation(
    model: nn.Module, context: RuleContext, x: torch.Tensor, targets: torch.Tensor, attention: str
) -> None:
    """Raise :class:`ModelError` naming the first module whose own code does not conserve relevance.

    Parameters
    ----------
    model : nn.Module
        The LRP copy (rules attached); not modified (the check runs on a deep copy of it).
    context : RuleContext
        Its context.
    x : torch.Tensor
        ``(B, ...)`` the first batch (the first two samples are used).
    targets : torch.Tensor
        ``(B,)`` the explained classes.
    attention : {"attnlrp", "cp"}
        The composite's attention rule.
    """
    calls = _probe(model, context, x, targets, attention, torch.float32)
    if not calls:
        return
    floor = 1e-6 * max(calls[0].abs_out, 1e-30)
    for index, call in enumerate(calls):
        error = _violation(calls, index, floor)
        if error is not None:
            raise ModelError(_message(call, error) + (_CP_HINT if attention == "cp" else ""))
    unjudged = [
        c for c in calls if not all(math.isfinite(v) for v in (c.rel_in, c.rel_out, c.abs_in, c.abs_out))
    ]
    if unjudged:
        # a NaN compares as no error: without this, such modules passed the check unseen
        names = [c.path or "the model itself (its own forward())" for c in unjudged]
        where = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        # spray's own P-ClArC projection mixes channels before a ReLU: expected there, not the user's to fix
        projected = any(getattr(_inner(c.module), "lrp_removes_relevance", False) for c in calls)
        (logger.info if projected else logger.warning)(
            "The LRP self-check could not judge %d of %d module calls: its test pass (biases 0, a negligible "
            "stabiliser) gave non-finite relevance in %s, so a rule missing there (an operation in a "
            "custom forward() such as a hand-written gate x * relu6(x + 3) / 6, or a normalisation done in "
            "forward()) would go unseen. Compare lrp.composite: EpsilonGammaBox, which checks the first layer "
            "too, and the heatmaps' share of the logit (spray audit reports it).",
            len(unjudged),
            len(calls),
            where,
        )
    logger.debug("self-check: relevance conserved in %d module calls", len(calls) - len(unjudged))


def check_class_score_layer(
    concepts: torch.Tensor | None, targets: torch.Tensor, n_outputs: int, path: str | None
) -> None:
    """Refuse a concept layer whose channels are the class scores: a classifier convolution (or a block ending in
    one) whose map ``forward()`` pools into the logits puts every sample's concept relevance on its target's
    channel alone, which the check of a layer returned as the output does not see.

    Parameters
    ----------
    concepts : torch.Tensor or None
        ``(B, C)`` channel relevance of the first batch (None: no concept layer).
    targets : torch.Tensor
        ``(B,)`` explained class of each sample.
    n_outputs : int
        The model's number of outputs ``K``.

    Raises
    ------
    ConfigError
        ``C == K`` and, in every sample (at least two) whose channel relevance is not all zero, 99.9 % of it
        lies on the target's channel.
    """
    if concepts is None or concepts.dim() != 2 or concepts.shape[1] != n_outputs:
        return
    mag = concepts.detach().abs().float()
    total = mag.sum(1)
    live = total > 0
    if int(live.sum()) < 2:
        return
    on_target = mag[live].gather(1, targets.to(mag.device)[live].long().view(-1, 1)).squeeze(1)
    if float((on_target / total[live]).min()) >= 0.999:
        raise ConfigError(
            f"lrp.concept_layer {path!r} gives the class scores: its {n_outputs} channels are the model's "
            f"{n_outputs} outputs, and every sample's channel relevance lies on its own class's channel (a "
            "classifier convolution whose map forward() pools into the logits): concept vectors there would be the "
            "logits, not the features the model found. Name an earlier layer (a module path from "
            "model.named_modules()), 'auto' (the last convolutional stage or transformer block) or 'none'."
        )


def warn_empty_maps(relevance: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> int:
    """Log a warning if maps of a batch are exactly 0 everywhere, and say why; return how many.

    An ε (or Norm) rule hands on ``z / (z + ε)`` of the relevance it receives, so where the model's
    activations and target logit are far below the stabiliser (about 1e-14 on a random-weight
    EfficientNet-B0 at 32×32) all relevance is absorbed and the map is 0: correct by the rules, but no
    evidence to audit.

    Parameters
    ----------
    relevance : torch.Tensor
        ``(B, ...)`` input relevance.
    logits : torch.Tensor
        ``(B, K)``.
    targets : torch.Tensor
        ``(B,)`` explained classes.

    Returns
    -------
    int
        The number of all-zero maps.
    """
    empty = relevance.flatten(1).abs().amax(1) == 0
    n_empty = int(empty.sum())
    if n_empty:
        target_logits = logits.gather(1, targets[:, None]).squeeze(1)[empty].abs()
        logger.warning(
            "%d of %d relevance maps of the first batch are exactly 0 (|target logit| of those up to %.3g): "
            "either the explained logit does not depend on the input at all (a dead output, a class head of "
            "constant weights), or the rules' stabiliser absorbed all relevance, which happens when activations "
            "and logits are far below it, e.g. with random (untrained) weights: load trained weights "
            "(model.checkpoint) or lower lrp.composite_kwargs epsilon and stabilizer. Such maps carry no "
            "evidence for the analysis.",
            n_empty,
            len(empty),
            float(target_logits.max()),
        )
    return n_empty


#: An absolute relevance mass above this many times the sample's largest |logit| is numerical noise.
RELEVANCE_BLOWUP = 1e4


def check_relevance_scale(
    relevance: torch.Tensor, logits: torch.Tensor, canonized: bool, has_batchnorm: bool
) -> None:
    """Refuse maps whose relevance explodes: rules that divide by near-zero values (the ε rule on a layer
    whose outputs all but cancel, e.g. before an unfolded BatchNorm) give sums of 1e27 against logits of
    1.5, maps that look like heatmaps but are noise.

    Parameters
    ----------
    relevance : torch.Tensor
        ``(B, ...)`` input relevance.
    logits : torch.Tensor
        ``(B, K)``.
    canonized, has_batchnorm : bool
        Whether the copy was canonized and the model holds BatchNorms (for the message's likely cause).

    Raises
    ------
    ModelError
        A sample's finite absolute relevance mass exceeds :data:`RELEVANCE_BLOWUP` times its largest
        |logit| (at least 1).
    """
    # the absolute mass too: maps of ±1e30 entries that cancel to a small sum are noise as well
    sums = relevance.flatten(1).double().abs().sum(1)
    scale = logits.detach().double().abs().amax(1).clamp_min(1.0)
    bad = torch.isfinite(sums) & (sums > RELEVANCE_BLOWUP * scale)
    if not bool(bad.any()):
        return
    rows = bad.nonzero().flatten().tolist()
    if has_batchnorm and not canonized:
        cause = (
            "The model's BatchNorms are not folded into their layers (canonize=False, lrp.canonize: false), so "
            "the layer before each divides by pre-activations that cancel: keep canonization on."
        )
    else:
        cause = (
            "Some layer's outputs nearly cancel under the ε rule (also the layer before a BatchNorm that "
            "cannot be folded, such as one that comes before its convolution): raise the composite's epsilon "
            "(composite_kwargs / lrp.composite_kwargs: {epsilon: 1e-3}) or use another composite."
        )
    raise ModelError(
        f"relevance of batch rows {rows[:10]} amounts to up to {float(sums.max()):.3g} against logits of "
        f"at most {float(scale[bad].max()):.3g}: the rules divided by near-zero values and the maps are "
        f"numerical noise. {cause}"
    )


def forward_overrides(model: nn.Module) -> list[str]:
    """``path (Type)`` of the model's Conv/Linear subclasses that override ``forward`` (their output is not
    the plain layer's of ``weight``, which spray's rules compute)."""
    plain = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    out = []
    for path, m in model.named_modules():
        base = next((b for b in plain if isinstance(m, b)), None)
        if base is not None and type(m) is not base and type(m).forward is not base.forward:
            out.append(f"{path or '<root>'} ({type(m).__name__})")
    return out

"""Fast, batched LRP for image classifiers (the explain stage of spray).

Usage::

    from spray.lrp import Explainer
    explainer = Explainer(model, "EpsilonPlusFlat")
    result = explainer(images, target="label", labels=labels)   # one batched forward + backward
    result.relevance  # (B, C, H, W) float32

How it works: the model is deep-copied and canonized, every layer that needs a rule is replaced by a
:class:`spray.lrp.rules.RuleModule` (:mod:`spray.lrp.preparation`, :mod:`spray.lrp.composites`), functional
operations get their rules while the copy runs (:mod:`spray.lrp.functional`), and relevance is computed in
the gradient×input frame with a single ``torch.autograd.grad`` call. There are no hooks and no per-layer
re-runs of the forward pass; z+ costs one extra forward of the layer. The first batch is checked once
(:mod:`spray.lrp.checks`): layer order, the copy's outputs against the model's, and conservation.

The relevance put on the output is ``one_hot(target) × logit``, so with zero biases the input
relevance sums to the target logit (conservation).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from spray.errors import ConfigError, ModelError
from spray.lrp.base import Rule, RuleModule
from spray.lrp.checks import (
    bf16_rounding,
    check_class_score_layer,
    check_conservation,
    check_model,
    check_order,
    check_relevance_scale,
    float64_rounding,
    forward_overrides,
    reference_error,
    reference_varies,
    warn_empty_maps,
    warn_train_mode,
)
from spray.lrp.composites import get_composite
from spray.lrp.concepts import (
    ConceptTap,
    enclosing_tap,
    resolve_concept_layer,
    through_layer,
    warn_reused,
)
from spray.lrp.functional import functional_rules
from spray.lrp.fused import ELEMENTWISE_MODES, elementwise_mode
from spray.lrp.fusion import _FusionWatch
from spray.lrp.inputs import batch_input, checked_logits, normalised_kind, resolve_targets
from spray.lrp.layout import _convert_layout, _is_layout_error, _tf32
from spray.lrp.numerics import CUT_GRAPH, graph_reaches, seeded_grad
from spray.lrp.preparation import check_hooks, eager_model, prepare, reference_copy, warn_hooks

logger = logging.getLogger(__name__)

__all__ = ["Explainer", "LRPResult", "explain"]

_PRECISIONS = ("fp32", "tf32", "bf16")


@dataclass
class LRPResult:
    """Relevance of one batch.

    Attributes
    ----------
    relevance : torch.Tensor
        ``(B, C, H, W)`` float32 input relevance (detached).
    logits : torch.Tensor
        ``(B, K)`` float32 model outputs (detached).
    targets : torch.Tensor
        ``(B,)`` int64 class explained for each sample.
    concepts : torch.Tensor or None
        ``(B, C)`` float32 channel relevance at the concept layer (see :mod:`spray.lrp.concepts`), from
        the same backward pass; None without a concept layer.
    """

    relevance: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor
    concepts: torch.Tensor | None = None


class Explainer:
    """Batched LRP on a canonized copy of a model.

    Parameters
    ----------
    model : nn.Module
        A classifier mapping ``(B, C, H, W)`` to ``(B, K)`` logits. It is deep-copied; the original is
        never modified (parameters, buffers, hooks and training flag stay as they are), and its forward
        hooks do not run in spray's copies. The copy is explained in eval mode (Dropout off, BatchNorm
        with its running statistics), whatever the model's training flag. Calls on one Explainer run one
        at a time (threads wait for each other); a caller's ``torch.autocast`` is switched off inside.
    composite : str
        Name in :data:`spray.lrp.composites.COMPOSITES` (default ``"EpsilonPlusFlat"``).
    composite_kwargs : dict, optional
        Parameters of the composite (``epsilon``, ``stabilizer``, ``gamma``, ``low``, ``high``).
    canonize : bool
        Fold BatchNorm and route torchvision ResNet sums through a module (``canonizers="auto"``).
    device : str or torch.device, optional
        Where to run (default: the model's device).
    precision : {"fp32", "tf32", "bf16"}
        ``"bf16"`` runs the forward under bfloat16 autocast (CUDA or CPU); rule denominators are always
        divided in float32. ``"tf32"`` allows TF32 matmuls/convolutions on CUDA; ``"fp32"`` disables them.
    extra_rules : dict[type[nn.Module], Rule], optional
        Rules for additional module types (containers too); they take precedence over the composite.
    channels_last : bool, optional
        Run the copy in ``channels_last`` memory format (oneDNN's preferred layout; on CPU about 10–20 %
        faster for torchvision ResNets and VGGs). Default: on for models with ``Conv2d`` layers on CPU
        and no 5-D parameter or buffer (``Conv3d``); only 4-D tensors are converted. If the first
        forward pass fails in that layout with a layout error (e.g. a ``.view()`` on activations) and
        succeeds in the contiguous one, the copy stays contiguous, with a warning; other errors (and
        out-of-memory) are raised unchanged. The relevance is always returned contiguous.
    self_check : bool
        On the first batch, check that relevance is conserved wherever the rules conserve it
        (:func:`spray.lrp.checks.check_conservation`) and refuse the model, naming the module, if not.
    elementwise : {"eager", "compile"}
        How the rules' element-wise work (stabilised ratios, rescales) runs: PyTorch's in-place ops, or
        kernels fused by ``torch.compile`` (:mod:`spray.lrp.fused`; meant for CUDA, where that work is
        memory-bound; the first call compiles). The maps agree to float32 round-off.
    concept_layer : str, optional
        Module path whose per-channel relevance each call also returns (``LRPResult.concepts``), taken
        from the same backward pass; ``"auto"`` picks the last convolutional stage (or transformer
        block, :func:`spray.lrp.concepts.default_concept_layer`); None or ``"none"``: no concepts.

    Raises
    ------
    UnsupportedLayerError
        Some module has no known rule (raised here, before any forward pass).
    ConfigError
        Unknown composite, precision, or a rule that cannot go where the composite puts it.
    """

    def __init__(
        self,
        model: nn.Module,
        composite: str = "EpsilonPlusFlat",
        *,
        composite_kwargs: dict[str, Any] | None = None,
        canonize: bool = True,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        extra_rules: dict[type[nn.Module], Rule] | None = None,
        channels_last: bool | None = None,
        self_check: bool = True,
        elementwise: str = "eager",
        concept_layer: str | None = None,
    ) -> None:
        if precision not in _PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; choose one of {list(_PRECISIONS)}")
        if elementwise not in ELEMENTWISE_MODES:
            raise ConfigError(
                f"unknown elementwise mode {elementwise!r}; choose one of {list(ELEMENTWISE_MODES)}"
            )
        self.elementwise = elementwise
        check_model(model)
        warn_train_mode(model)
        for t, r in (extra_rules or {}).items():
            if not (isinstance(t, type) and issubclass(t, nn.Module)) or not isinstance(r, Rule):
                raise ConfigError(
                    f"extra_rules must map nn.Module subclasses to Rule instances, got {t!r}: {r!r}"
                )
        self.composite = get_composite(composite, **(composite_kwargs or {}))
        model, concept_layer = eager_model(model, concept_layer)
        self.concept_layer = resolve_concept_layer(model, concept_layer)
        self._concept_auto = self._auto_open = concept_layer == "auto"  # open: not yet seen to run
        self._tap: ConceptTap | None = None  # set for the duration of one call
        self._lock = threading.Lock()
        self.precision = precision
        if device is None:
            first = next(iter(model.parameters()), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = torch.device(device)
        prepared = prepare(
            model,
            self.composite,
            device=self.device,
            canonize_model=canonize,
            extra_rules=extra_rules,
            channels_last=channels_last,
            unfused=self.concept_layer,
        )
        self._model, self._rules, self._context = prepared.model, prepared.rules, prepared.context
        self._canonized = canonize
        self._has_batchnorm = any(isinstance(m, _BatchNorm) for m in model.modules())
        self._image_model = any(isinstance(m, nn.Conv2d) for m in model.modules())
        self._first_path, self._fusions = prepared.first_path, prepared.fusions
        self.channels_last, self._layout_checked = prepared.channels_last, False
        # the fusions are checked on the first forward pass (see _FusionWatch), then this is None
        self._watch: _FusionWatch | None = _FusionWatch(self._fusions) if self._fusions else None
        # A hook-free eval copy of the user's model, used once on the first batch to check that
        # canonization did not change the function (e.g. a BN folded into the wrong layer because the
        # registration order differs from the execution order). Dropped after the check.
        # Checked with canonization off too: a layer computing its weight in forward() is not what the rule
        # layers compute either.
        self._reference: nn.Module | None = reference_copy(model, self.device)
        self._suspects = forward_overrides(model)
        self._self_check = self_check
        self._empty_checked = self._reuse_warned = False  # all-zero maps, a reused concept layer: said once
        self._hooked = warn_hooks(model)  # compared with the reference on the first batch, then dropped
        logger.debug(
            "LRP %s: %d rule layers (%d ReLUs fused), first layer %s",
            self.composite.name,
            len(self._rules),
            len(self._fusions),
            self._first_path,
        )

    def __getstate__(self) -> dict[str, Any]:
        # a lock cannot be copied: a deep copy or pickle of an Explainer gets a lock of its own
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def model(self) -> nn.Module:
        """The canonized copy with rules attached (eval mode, frozen parameters)."""
        return self._model

    @property
    def rules(self) -> dict[str, Rule]:
        """Module path → rule actually used (plain-gradient modules are not listed)."""
        return dict(self._rules)

    @contextlib.contextmanager
    def _precision(self, autocast: bool = True) -> Iterator[None]:
        """TF32 switches (CUDA) as ``precision`` asks, and bf16 autocast when ``autocast`` (forward only:
        PyTorch advises against running the backward under autocast; it follows the forward's dtypes)."""
        with _tf32(self.device, self.precision == "tf32"):
            if self.precision == "bf16" and autocast:
                with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                    yield
            else:
                yield

    def _set_layout(self, channels_last: bool) -> None:
        """Convert the copy's weights and recompute the rules' cached weights in that layout."""
        self.channels_last = _convert_layout(self._model, channels_last)
        for module in self._model.modules():
            if isinstance(module, RuleModule):
                module.rule.prepare(module)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        self._context.reset()
        if self._watch is not None:
            self._watch.reset()
        tap = self._tap.installed() if self._tap is not None else contextlib.nullcontext()
        with (
            torch.enable_grad(),
            self._precision(),
            functional_rules(self._context, self.composite.attention),
            tap,
        ):
            return self._model(x)

    def _unfuse(self, indices: list[int], reason: str) -> None:
        """Undo the fusions at ``indices`` (positions in ``self._fusions``) and log why."""
        chosen = set(indices)
        paths = [f.path for k, f in enumerate(self._fusions) if k in chosen]
        for k in sorted(chosen, reverse=True):
            self._fusions.pop(k).undo()
        logger.info("ReLU fusion undone for %s: %s", ", ".join(paths), reason)

    def _run_in_layout(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward pass; on the first call in ``channels_last``, fall back to contiguous if needed."""
        if self._layout_checked or not self.channels_last:
            return self._forward(x), x
        try:
            out = self._forward(x)
        except RuntimeError as exc:
            if not _is_layout_error(exc):
                raise
            self._set_layout(False)
            xc = x.detach().contiguous().requires_grad_(True)
            try:
                out = self._forward(xc)
            except Exception as retry:
                # the layout was not the problem: keep the faster one and report the first error
                self._set_layout(True)
                exc.add_note(f"(spray: retrying in the contiguous layout failed too: {retry!r})")
                raise exc from None
            logger.warning(
                "forward pass failed in channels_last layout (%s) and succeeded in the contiguous layout; "
                "this Explainer uses the contiguous layout from now on",
                exc,
            )
            x = xc
        self._layout_checked = True
        return out, x

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward pass; on the first call, also check that every ReLU fusion was valid (else undo)."""
        try:
            return self._run_watched(x)
        except RuntimeError as exc:
            # the plain rule of a layer whose own forward() differs can fail outright (timm's Conv2dSame pads
            # in forward(): at a small input the unpadded kernel is larger than the map)
            memory = isinstance(exc, torch.OutOfMemoryError) or "allocate memory" in str(exc)
            if self._reference is None or not self._suspects or memory:
                raise
            raise ModelError(
                f"spray's forward pass of the model failed ({exc}). {self._suspects_advice()}"
            ) from exc

    def _run_watched(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        watch = self._watch
        if watch is None:
            return self._run_in_layout(x)
        out, x = self._run_in_layout(x)  # if this raises, the watch stays for the next call
        bad = watch.violations()
        watch.remove()
        self._watch = None
        if bad:
            self._unfuse(
                bad,
                "the model reads the output of these layers outside their nn.Sequential/block "
                "(e.g. it iterates or indexes the Sequential); re-running the forward pass unfused",
            )
            out = self._forward(x)
        return out, x

    def _check_reference(self, x: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Compare the first two samples' logits with the original model (once); return (out, logits).

        If they differ while ReLUs are fused, the fusions are undone and the forward pass re-run, so that
        the error (if any) is about canonization alone.
        """
        logits = checked_logits(out, x)
        reference, self._reference = self._reference, None
        if reference is None:
            return out, logits
        if logits.shape[1] >= 2 and (normalised := normalised_kind(logits)):
            raise ModelError(
                f"the model returns {normalised} (every row is a distribution: it ends in a softmax); LRP explains a "
                "class's logit: pass the network up to its logits (e.g. nn.Sequential(*list(net.children())[:-1]) "
                "for a Sequential ending in nn.Softmax)"
            )
        err, tol, scale = reference_error(reference, x, logits, self.precision, self.device)
        if not err <= tol and self._fusions:
            self._unfuse(
                list(range(len(self._fusions))),
                f"the canonized copy's logits differ from the model's (max |Δlogit| = {err:.3g}); "
                "re-running the forward pass unfused",
            )
            out = self._forward(x)
            logits = checked_logits(out, x)
            err, tol, scale = reference_error(reference, x, logits, self.precision, self.device)
        if not err <= tol and self.precision == "bf16":
            own = bf16_rounding(reference, x, self.device)
            if own > tol / 2:  # the model alone moves as far: bf16 is the cause, not the copy
                raise ModelError(
                    f"precision='bf16' moves this model's own logits by {own:.3g} of {scale:.3g} (the model alone "
                    f"under bfloat16 autocast; the explained copy: {err:.3g}), more than the check allows "
                    f"({tol:.3g}): its heatmaps would explain a coarser function; use precision='fp32' (or 'tf32' "
                    "on CUDA)"
                )
        if not err <= tol:
            varies = reference_varies(reference, x, self.device)
            own = float64_rounding(reference, x) if not varies else 0.0
            raise ModelError(self._mismatch(err, scale, varies, own if own > tol / 2 else 0.0))
        hooked, self._hooked = self._hooked, None
        check_hooks(hooked, reference, x)
        return out, logits

    def _suspects_advice(self) -> str:
        return (
            f"These layers compute their output in their own forward(), which spray's rules do not run: "
            f"{', '.join(self._suspects[:5])} (e.g. timm's StdConv2d standardises its weight there, Conv2dSame "
            "pads its input there). Give a model whose layers are plain nn.Conv2d / nn.Linear with the weights "
            "and padding they use (for StdConv2d: copy the standardised weight into a plain Conv2d; timm's tf_ "
            "models pad in forward() by TensorFlow's 'same' rule, which a plain Conv2d cannot: train the "
            "architecture without the tf_ prefix to audit it). Or audit with lrp.composite: AttnLRP or CPLRP, "
            "whose ε rule runs each such layer's own forward() (LRP-ε on the convolutions too)."
        )

    def _mismatch(self, err: float, scale: float, varies: bool = False, own: float = 0.0) -> str:
        """Why the explained copy's logits differ from the model's, with the likely cause first (``own``: how
        far the model's own float32 logits are from its float64 ones, when that alone is near the gap)."""
        head = (
            f"the copy spray explains computes other logits than the model (max |Δlogit| = {err:.3g} of "
            f"{scale:.3g}, with ReLU fusion off): its heatmaps would explain another function. "
        )
        if self._context.rebound:
            ops = sorted(set(self._context.rebound))
            return head + (
                f"The model changes a layer's output in place ({', '.join('Tensor.' + o for o in ops)}), which the "
                "LRP rules cannot allow, so spray runs it out of place: that equals the model for x += y but not "
                "for a bare x.add_(y) statement, whose result is then dropped. Write x = x + y in the model's "
                "forward()."
            )
        if self._suspects:
            return head + self._suspects_advice()
        if varies:
            return head + (
                "The model itself gives other logits on two runs of the same input in eval mode: its forward() is "
                "random (F.dropout(x, p) without training=self.training, noise added, a random crop): make it "
                "deterministic in eval mode; heatmaps of a random function explain one draw."
            )
        if own:
            return head + (
                f"The model's own float32 logits differ from its float64 ones by {own:.3g}: at these inputs it is "
                "too ill-conditioned in float32 for any copy to match it closer. Check that data.transform gives "
                "the inputs the model was trained on (image size, mean/std): inputs unlike its training data "
                f"can give logits of {scale:.3g}."
            )
        if self._has_batchnorm:
            return head + (
                "Probably a BatchNorm is registered right after a layer it does not follow in forward() and was "
                "folded into it: register modules in execution order, or turn canonization off (lrp.canonize: "
                "false in a config, Explainer(..., canonize=False) in Python)."
            )
        return head + (
            "spray could not name the cause: the model's forward() does something the copy does not reproduce; "
            "please report it with the model's code."
        )

    def __call__(
        self,
        inputs: torch.Tensor,
        target: str | int | torch.Tensor = "pred",
        labels: torch.Tensor | None = None,
        concept_mask: torch.Tensor | None = None,
    ) -> LRPResult:
        """Explain a batch (see :meth:`_explain`), with the element-wise kernels chosen at construction."""
        # One call at a time: a call keeps its concept tap and first-batch checks on the instance. A caller's
        # autocast is switched off: it would run the explainer in another precision than its own, unsaid.
        outer = torch.autocast(device_type=self.device.type, enabled=False)
        with self._lock, outer, elementwise_mode(self.elementwise):
            return self._explain(inputs, target, labels, concept_mask)

    def _explain(
        self,
        inputs: torch.Tensor,
        target: str | int | torch.Tensor = "pred",
        labels: torch.Tensor | None = None,
        concept_mask: torch.Tensor | None = None,
    ) -> LRPResult:
        """Explain a batch.

        Parameters
        ----------
        inputs : torch.Tensor
            ``(B, C, H, W)`` (any shape the model accepts; ``B`` first).
        target : {"pred", "label"} or int or torch.Tensor
            Class to explain: the predicted class, the true label (needs ``labels``), one class for all
            samples, or a ``(B,)`` tensor of classes.
        labels : torch.Tensor, optional
            ``(B,)`` int64 true labels, for ``target="label"``.
        concept_mask : torch.Tensor, optional
            ``(B, C)`` weights of the concept layer's channels (needs ``concept_layer``): only their
            relevance is propagated to the input, which gives concept-conditional heatmaps (CRP). A mask
            of the layer output's shape weights every channel and position.
            ``LRPResult.concepts`` stays the unmasked channel relevance.

        Returns
        -------
        LRPResult
            Relevance ``(B, C, H, W)``, logits ``(B, K)``, targets ``(B,)`` and concepts ``(B, C)``.

        Raises
        ------
        ModelError
            The logits contain NaN/inf or are not ``(B, K)``; on the first call also: the copy does not
            compute the model, or relevance is not conserved where the rules conserve it.
        """
        x = batch_input(inputs, self._image_model, self.device)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        if concept_mask is not None and self.concept_layer is None:
            raise ConfigError("concept_mask needs an Explainer with a concept_layer")
        if self.concept_layer is not None:
            # an auto layer is settled on the first call, masked or not (a run whose maps all come from the
            # cache first calls with a mask); after that a mask needs the layer
            required = not self._auto_open and (concept_mask is not None or not self._concept_auto)
            self._tap = ConceptTap(
                self._model, self.concept_layer, self._context, concept_mask, required, batch=x.shape[0]
            )
        try:  # the tap stays set while a first-batch check may re-run the forward pass
            out, x = self._run(x)
            check_order(self._context, self._first_path, self._model)
            out, logits = self._check_reference(x, out)
        finally:
            tap, self._tap = self._tap, None
        out, tap = self._settled_tap(x, out, tap, concept_mask)
        targets = resolve_targets(target, labels, logits)
        grad = self._backward(out, x, targets, tap)
        if tap is not None:
            tap.edge = None  # the edge holds the graph (and the tap, through it) until collected
        relevance = grad if self._first_path is not None else grad * x
        relevance = relevance.detach().float().contiguous()
        check_relevance_scale(relevance, logits, self._canonized, self._has_batchnorm)
        concepts = tap.result() if tap is not None else None
        if not self._empty_checked:
            self._empty_checked = True
            warn_empty_maps(relevance, logits, targets)
            check_class_score_layer(concepts, targets, logits.shape[1], self.concept_layer)
        return LRPResult(relevance=relevance, logits=logits, targets=targets, concepts=concepts)

    def _settled_tap(
        self, x: torch.Tensor, out: torch.Tensor, tap: ConceptTap | None, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, ConceptTap | None]:
        """The concept tap after a forward pass: an auto layer that gave no map settled on the module around it
        or dropped with a warning (a mask needs it), a layer run several times said once."""
        if tap is None:
            return out, None
        if tap.missing and self._auto_open:
            found = enclosing_tap(tap, mask, x.shape[0], lambda t: self._forward_tapped(x, t))
            if found is not None:
                tap, out = found
                self.concept_layer = tap.path
        if self._auto_open and not tap.missing:  # the evidence says "the concept layer": name it once
            logger.info("concept layer: %s (chosen by lrp.concept_layer: auto)", tap.path)
        self._auto_open = False
        if tap.missing and mask is not None:
            raise ModelError(
                f"concept layer {tap.path!r} gives no (B, C, ...) map: no concept mask can apply"
            )
        if tap.missing:
            logger.warning(
                "concept layer %r (chosen by concept_layer='auto') is not called by the model's forward() or "
                "returns no (B, C, ...) tensor whose first axis is the batch; no concept relevance is computed: "
                "set lrp.concept_layer to such a module",
                tap.path,
            )
            self.concept_layer = None
            return out, None
        if tap.calls > 1 and not self._reuse_warned:
            self._reuse_warned = True
            warn_reused(tap)
        return out, tap

    def _forward_tapped(self, x: torch.Tensor, tap: ConceptTap) -> torch.Tensor:
        """A forward pass with ``tap`` on its layer."""
        self._tap = tap
        try:
            return self._forward(x)
        finally:
            self._tap = None

    def _backward(
        self, out: torch.Tensor, x: torch.Tensor, targets: torch.Tensor, tap: ConceptTap | None = None
    ) -> torch.Tensor:
        """The rules' backward pass from the target logits to ``x`` (first call: the conservation check).

        With a concept mask on a layer that ran once, only the relevance passing that layer reaches ``x``
        (:func:`through_layer`)."""
        if not out.requires_grad:
            raise ModelError(CUT_GRAPH)
        try:
            if self._self_check:
                self._self_check = False
                check_conservation(self._model, self._context, x, targets, self.composite.attention)
            # Gradient frame: relevance at the logits is logit × one_hot, i.e. a one-hot "gradient".
            seed = torch.zeros_like(out).scatter_(1, targets[:, None], 1.0)
            # The backward pass (the rules' input-VJPs) runs under the same precision switches as the
            # forward: outside them, PyTorch's default TF32 cuDNN convolutions made "fp32" maps on an H100
            # differ from zennit's by up to 1.2 % of their scale.
            with self._precision(autocast=False):
                if tap is not None and tap.mask is not None and tap.calls == 1 and tap.edge is not None:
                    return through_layer(out, x, seed, tap.edge)
                return seeded_grad(out, x, seed)
        except RuntimeError as err:
            if graph_reaches(out, x):
                raise
            raise ModelError(CUT_GRAPH) from err


def explain(
    model: nn.Module,
    inputs: torch.Tensor,
    target: str | int | torch.Tensor = "pred",
    composite: str = "EpsilonPlusFlat",
    **kwargs: Any,
) -> torch.Tensor:
    """One-liner: ``(B, C, H, W)`` relevance of ``inputs`` for ``target``.

    ``labels=`` goes to the call, every other keyword to :class:`Explainer`. Builds a new Explainer
    (deep copy + canonization) each time: use :class:`Explainer` for many batches.
    """
    labels = kwargs.pop("labels", None)
    return Explainer(model, composite, **kwargs)(inputs, target=target, labels=labels).relevance

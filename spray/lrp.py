"""Fast, batched LRP for image classifiers (the explain stage of spray).

Usage::

    from spray.lrp import Explainer
    explainer = Explainer(model, "EpsilonPlusFlat")
    result = explainer(images, target="label", labels=labels)   # one batched forward + backward
    result.relevance  # (B, C, H, W) float32

How it works: the model is deep-copied and canonized (:mod:`spray.canonizers`), every layer that needs
a rule is replaced by a :class:`spray.rules.RuleModule` (:mod:`spray.composites` decides which), and
relevance is computed in the gradient×input frame with a single ``torch.autograd.grad`` call. There
are no hooks and no per-layer re-runs of the forward pass; z+ costs one extra forward of the layer.

The relevance put on the output is ``one_hot(target) × logit``, so with zero biases the input
relevance sums to the target logit (conservation).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from spray.canonizers import ResidualAdd, canonize
from spray.composites import LINEAR_TYPES, get_composite
from spray.errors import ConfigError, ModelError, UnsupportedLayerError
from spray.rules import Epsilon, LeanMaxPool, Norm, Rule, RuleContext, RuleModule

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
    """

    relevance: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor


def _set_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, new)


def _fusable(module: nn.Module) -> bool:
    if isinstance(module, RuleModule):
        return module.rule.fuses_relu
    return isinstance(module, ResidualAdd)


def _fuse_relus(model: nn.Module) -> int:
    """Fold each plain ReLU into the rule layer whose output only it consumes; return how many.

    Only where the structure guarantees that the ReLU is the sole consumer: consecutive children of
    an exact ``nn.Sequential`` (``nn.Identity`` in between, e.g. a folded BatchNorm, is skipped) and
    the ReLUs of the torchvision ResNet blocks patched by :mod:`spray.canonizers`. Modules registered
    more than once are left alone. The fused layer then saves one tensor (ratio with the ReLU's mask
    folded in) instead of two, and the ReLU's forward and backward passes disappear.
    """
    uses: dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        uses[id(m)] = uses.get(id(m), 0) + 1

    def single(m: nn.Module) -> bool:
        return uses.get(id(m)) == 1

    fused = 0
    for module in list(model.modules()):
        if type(module) is nn.Sequential:
            children = list(module.named_children())
            for i, (_, child) in enumerate(children):
                j = i + 1
                while j < len(children) and type(children[j][1]) is nn.Identity:
                    j += 1
                if j == len(children) or not (_fusable(child) and single(child)):
                    continue
                relu_name, relu = children[j]
                if type(relu) is nn.ReLU:
                    child.fuse_relu = True  # type: ignore[assignment]
                    identity = nn.Identity()
                    setattr(module, relu_name, identity)
                    children[j] = (relu_name, identity)
                    fused += 1
        flags = getattr(module, "lrp_fused", None)
        if isinstance(flags, list) and type(getattr(module, "relu", None)) is nn.ReLU:
            # torchvision blocks, in the order of their ReLUs (see canonizers._bottleneck_forward)
            pairs = [("conv1", "bn1"), ("conv2", "bn2")][: len(flags) - 1]
            for k, (conv_name, bn_name) in enumerate(pairs):
                conv, bn = getattr(module, conv_name), getattr(module, bn_name)
                if _fusable(conv) and single(conv) and type(bn) is nn.Identity:
                    conv.fuse_relu, flags[k] = True, True
                    fused += 1
            add = getattr(module, "lrp_add", None)
            if isinstance(add, ResidualAdd) and single(add):
                add.fuse_relu, flags[-1] = True, True
                fused += 1
    return fused


def _lean_maxpools(model: nn.Module) -> int:
    """Replace every exact ``nn.MaxPool{1,2,3}d`` by a :class:`spray.rules.LeanMaxPool`; return how many.

    Same forward and gradient; the backward keeps only the argmax indices instead of the input too.
    """
    count = 0
    # a pool that carries a user rule (extra_rules) keeps its own module inside the RuleModule
    ruled = {id(m.inner) for m in model.modules() if isinstance(m, RuleModule)}
    for path, module in list(model.named_modules()):
        if path and type(module) in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d) and id(module) not in ruled:
            _set_module(model, path, LeanMaxPool(module))
            count += 1
    return count


def _unsupported_message(unsupported: list[tuple[str, nn.Module]]) -> str:
    lines = [f"  - {path}: {type(m).__module__}.{type(m).__qualname__}" for path, m in unsupported]
    first_type = type(unsupported[0][1]).__name__
    return (
        f"spray has no LRP rule for {len(unsupported)} module(s) of this model:\n"
        + "\n".join(lines)
        + "\nRegister a rule for each type, e.g. "
        f"Explainer(model, extra_rules={{{first_type}: Pass()}}) for an element-wise activation, "
        "Epsilon() for a linear map, Gradient() for a reshape/routing module (rules in spray.rules), "
        "or globally with spray.composites.register_layer_rule("
        f"{first_type}, Pass()). Supported out of the box: Conv1d/2d/3d, Linear, BatchNorm, ReLU, "
        "Max/AvgPool (incl. adaptive), Flatten, Dropout, Identity, Sequential, torchvision ResNet/VGG."
    )


class Explainer:
    """Batched LRP on a canonized copy of a model.

    Parameters
    ----------
    model : nn.Module
        A classifier mapping ``(B, C, H, W)`` to ``(B, K)`` logits. It is deep-copied; the original is
        never modified (parameters, buffers, hooks and training flag stay as they are).
    composite : str
        Name in :data:`spray.composites.COMPOSITES` (default ``"EpsilonPlusFlat"``).
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
        Rules for additional module types; they take precedence over the composite.
    channels_last : bool, optional
        Run the copy in ``channels_last`` memory format (oneDNN's preferred layout; on CPU about 10–20 %
        faster for torchvision ResNets and VGGs). Default: on for models with ``Conv2d`` layers on CPU.
        If the first forward pass fails in that layout (e.g. a ``.view()`` on activations), the copy
        falls back to the contiguous layout once, with a warning. The relevance is always returned
        contiguous.

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
    ) -> None:
        if precision not in _PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; choose one of {list(_PRECISIONS)}")
        if not isinstance(model, nn.Module):
            raise ConfigError(f"Explainer needs a torch.nn.Module, got {type(model).__name__}")
        for t, r in (extra_rules or {}).items():
            if not (isinstance(t, type) and issubclass(t, nn.Module)) or not isinstance(r, Rule):
                raise ConfigError(
                    f"extra_rules must map nn.Module subclasses to Rule instances, got {t!r}: {r!r}"
                )
        self.composite = get_composite(composite, **(composite_kwargs or {}))
        self.precision = precision
        if device is None:
            first = next(iter(model.parameters()), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = torch.device(device)

        copied = canonize_model(model, self.device, canonize)
        if channels_last is None:
            channels_last = self.device.type == "cpu" and any(
                isinstance(m, nn.Conv2d) for m in copied.modules()
            )
        self.channels_last = bool(channels_last)
        if self.channels_last:
            # before the rules are attached, so that their cached weights (W⁺, ...) share the layout
            copied.to(memory_format=torch.channels_last)
        self._layout_checked = False
        rules, unsupported = self.composite.assign(copied, extra_rules)
        if unsupported:
            raise UnsupportedLayerError(_unsupported_message(unsupported))

        self._context = RuleContext()
        self._first_path = self._relevance_out_layer(copied, rules)
        for path, rule in rules.items():
            module = copied.get_submodule(path)
            if isinstance(module, ResidualAdd):
                if not isinstance(rule, (Norm, Epsilon)):
                    raise ConfigError(
                        f"only Norm/Epsilon rules can go on residual sums ({path}), got {rule!r}"
                    )
                module.stabilizer = rule.stabilizer if isinstance(rule, Norm) else rule.epsilon
                continue
            if rule.direct and path != self._first_path:
                raise ConfigError(
                    f"rule {rule!r} produces relevance, not a gradient, and can only go on the first layer "
                    f"({self._first_path}); it was assigned to {path}"
                )
            _set_module(copied, path, RuleModule(module, rule, path, path == self._first_path, self._context))
        fused = _fuse_relus(copied)
        _lean_maxpools(copied)
        self._model = copied
        self._rules = rules
        # One eval-mode copy of the original model, used once on the first batch to check that
        # canonization did not change the function (e.g. a BN folded into the wrong layer because the
        # registration order differs from the execution order). Dropped after the check.
        self._reference: nn.Module | None = None
        if canonize:
            self._reference = copy.deepcopy(model).eval().to(self.device)
            for p in self._reference.parameters():
                p.requires_grad_(False)
        logger.debug(
            "LRP %s: %d rule layers (%d ReLUs fused), first layer %s",
            self.composite.name,
            len(rules),
            fused,
            self._first_path,
        )

    @staticmethod
    def _relevance_out_layer(model: nn.Module, rules: Mapping[str, Rule]) -> str | None:
        # The first dense/conv layer in module order; it returns relevance instead of a gradient.
        for path, module in model.named_modules():
            if path in rules and isinstance(module, LINEAR_TYPES):
                return path
        direct = [p for p, r in rules.items() if r.direct]
        return direct[0] if direct else None

    @property
    def model(self) -> nn.Module:
        """The canonized copy with rules attached (eval mode, frozen parameters)."""
        return self._model

    @property
    def rules(self) -> dict[str, Rule]:
        """Module path → rule actually used (plain-gradient modules are not listed)."""
        return dict(self._rules)

    @contextlib.contextmanager
    def _precision(self) -> Iterator[None]:
        cuda = self.device.type == "cuda"
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        try:
            if cuda:
                allow = self.precision == "tf32"
                torch.backends.cuda.matmul.allow_tf32 = allow
                torch.backends.cudnn.allow_tf32 = allow
            if self.precision == "bf16":
                with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                    yield
            else:
                yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

    def _targets(
        self, target: str | int | torch.Tensor, labels: torch.Tensor | None, logits: torch.Tensor
    ) -> torch.Tensor:
        batch, classes = logits.shape
        if isinstance(target, str):
            if target == "pred":
                t = logits.argmax(dim=1)
            elif target == "label":
                if labels is None:
                    raise ConfigError("target='label' needs labels=(B,) int64 class indices")
                t = torch.as_tensor(labels, device=logits.device).long().reshape(-1)
            else:
                raise ConfigError(f"target must be 'pred', 'label', an int or a (B,) tensor, got {target!r}")
        elif isinstance(target, bool):
            raise ConfigError("target must be 'pred', 'label', an int or a (B,) tensor, not a bool")
        elif isinstance(target, int):
            t = torch.full((batch,), int(target), dtype=torch.long, device=logits.device)
        elif isinstance(target, torch.Tensor):
            t = target.to(logits.device).long().reshape(-1)
            if t.numel() == 1:
                t = t.expand(batch)
        else:
            raise ConfigError(f"target must be 'pred', 'label', an int or a (B,) tensor, got {type(target)}")
        if t.shape != (batch,):
            raise ConfigError(f"targets must have shape ({batch},), got {tuple(t.shape)}")
        if batch and (int(t.min()) < 0 or int(t.max()) >= classes):
            raise ConfigError(f"target class out of range [0, {classes}): {t.tolist()}")
        return t.contiguous()

    def _check_order(self) -> None:
        if self._first_path is None:
            return
        order = self._context.order
        hits = [i for i, (p, _) in enumerate(order) if p == self._first_path]
        if len(hits) != 1:
            raise ModelError(
                f"the first layer {self._first_path} ran {len(hits)} times in one forward pass; spray's LRP "
                "needs it to run exactly once (shared first layers are not supported)"
            )
        early = [p for p, grad_frame in order[: hits[0]] if grad_frame]
        if early:
            raise ModelError(
                f"layers {early} ran before the first layer {self._first_path} (by module order); spray "
                "takes the first dense/conv layer in named_modules() order as the input layer. Register "
                "modules in execution order."
            )

    def _set_layout(self, channels_last: bool) -> None:
        """Convert the copy's weights and recompute the rules' cached weights in that layout."""
        self.channels_last = channels_last
        self._model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        for module in self._model.modules():
            if isinstance(module, RuleModule):
                module.rule.prepare(module)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        self._context.reset()
        with torch.enable_grad(), self._precision():
            return self._model(x)

    def _check_reference(self, x: torch.Tensor, logits: torch.Tensor) -> None:
        reference, self._reference = self._reference, None
        if reference is None:
            return
        n = min(len(x), 2)
        with torch.no_grad(), self._precision():
            expected = reference(x[:n].detach().contiguous()).float()
        scale = float(expected.abs().max().clamp(min=1e-12))
        tol = 1e-2 if self.precision == "bf16" else 1e-3
        err = float((expected - logits[:n]).abs().max())
        if not err <= tol * scale:
            raise ModelError(
                f"canonization changed the model's output (max |Δlogit| = {err:.3g} of {scale:.3g}); "
                "probably a BatchNorm is registered right after a layer it does not follow in forward(). "
                "Use Explainer(..., canonize=False) or register modules in execution order."
            )

    def __call__(
        self,
        inputs: torch.Tensor,
        target: str | int | torch.Tensor = "pred",
        labels: torch.Tensor | None = None,
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

        Returns
        -------
        LRPResult
            Relevance ``(B, C, H, W)``, logits ``(B, K)`` and targets ``(B,)``.

        Raises
        ------
        ModelError
            The logits contain NaN/inf or are not ``(B, K)``.
        """
        if not isinstance(inputs, torch.Tensor) or inputs.ndim < 2:
            raise ConfigError("inputs must be a batched tensor (B, C, H, W)")
        x = inputs.detach().to(self.device, torch.float32)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        if self._layout_checked or not self.channels_last:
            out = self._forward(x)
        else:
            try:
                out = self._forward(x)
            except RuntimeError as exc:
                logger.warning(
                    "forward pass failed in channels_last layout (%s); using the contiguous layout", exc
                )
                self._set_layout(False)
                x = x.detach().contiguous().requires_grad_(True)
                try:
                    out = self._forward(x)
                except Exception:
                    self._set_layout(True)  # not a layout problem: keep the faster layout
                    raise
            self._layout_checked = True
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelError(f"the model must return (B, K) logits, got {shape}")
        logits = out.detach().float()
        if not bool(torch.isfinite(logits).all()):
            bad = (~torch.isfinite(logits)).any(dim=1).nonzero().flatten().tolist()
            raise ModelError(
                f"the model produced NaN/inf logits for batch rows {bad}; check inputs and weights"
            )
        self._check_order()
        self._check_reference(x, logits)
        targets = self._targets(target, labels, logits)
        # Gradient frame: relevance at the logits is logit × one_hot, i.e. a one-hot "gradient".
        seed = torch.zeros_like(out).scatter_(1, targets[:, None], 1.0)
        (grad,) = torch.autograd.grad(out, x, grad_outputs=seed)
        relevance = grad if self._first_path is not None else grad * x
        relevance = relevance.detach().float().contiguous()
        return LRPResult(relevance=relevance, logits=logits, targets=targets)


def canonize_model(model: nn.Module, device: torch.device, enabled: bool) -> nn.Module:
    """Deep copy (always) and canonize (when ``enabled``) ``model`` onto ``device``."""
    return canonize(model, "auto" if enabled else None, device=device)


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

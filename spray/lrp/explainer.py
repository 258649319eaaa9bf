"""Fast, batched LRP for image classifiers (the explain stage of spray).

Usage::

    from spray.lrp import Explainer
    explainer = Explainer(model, "EpsilonPlusFlat")
    result = explainer(images, target="label", labels=labels)   # one batched forward + backward
    result.relevance  # (B, C, H, W) float32

How it works: the model is deep-copied and canonized (:mod:`spray.lrp.canonizers`), every layer that needs
a rule is replaced by a :class:`spray.lrp.rules.RuleModule` (:mod:`spray.lrp.composites` decides which), and
relevance is computed in the gradient×input frame with a single ``torch.autograd.grad`` call. There
are no hooks and no per-layer re-runs of the forward pass; z+ costs one extra forward of the layer.

The relevance put on the output is ``one_hot(target) × logit``, so with zero biases the input
relevance sums to the target logit (conservation).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from spray.errors import ConfigError, ModelError, UnsupportedLayerError
from spray.lrp.canonizers import ResidualAdd, canonize
from spray.lrp.composites import LINEAR_TYPES, get_composite
from spray.lrp.rules import Epsilon, LeanMaxPool, Norm, Rule, RuleContext, RuleModule

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


@dataclass
class _Fusion:
    """One ReLU folded into the layer before it; ``undo`` restores the unfused copy exactly.

    Fusion is only correct if ``owner`` (an exact ``nn.Sequential`` or a patched torchvision block)
    calls ``layer`` exactly once per call of its own ``forward``: then the ReLU is the only reader of
    the layer's output. A parent that iterates the Sequential, indexes into it or slices it sees the
    layer's output directly; the engine checks this on the first call (:class:`_FusionWatch`).
    """

    path: str
    owner: nn.Module
    layer: nn.Module
    undo: Callable[[], None]


def _fuse_relus(model: nn.Module) -> list[_Fusion]:
    """Fold each plain ReLU into the rule layer whose output only it consumes; return the fusions.

    Candidates: consecutive children of an exact ``nn.Sequential`` (``nn.Identity`` in between, e.g. a
    folded BatchNorm, is skipped) and the ReLUs of the torchvision ResNet blocks patched by
    :mod:`spray.lrp.canonizers`. Modules registered more than once are left alone, and so is a window of a
    Sequential in which one module object occurs twice. Whether the owner really runs the pair as a
    whole is verified on the first forward pass (the parent may iterate the Sequential). The fused layer
    saves one tensor (ratio with the ReLU's mask folded in) instead of two, and the ReLU's forward and
    backward passes disappear.
    """
    uses: dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        uses[id(m)] = uses.get(id(m), 0) + 1

    def single(m: nn.Module) -> bool:
        return uses.get(id(m)) == 1

    def unfuse_seq(seq: nn.Module, child: nn.Module, name: str, relu: nn.Module) -> Callable[[], None]:
        def undo() -> None:
            child.fuse_relu = False  # type: ignore[assignment]
            setattr(seq, name, relu)

        return undo

    def unfuse_flag(layer: nn.Module, flags: list[bool], k: int) -> Callable[[], None]:
        def undo() -> None:
            layer.fuse_relu = False  # type: ignore[assignment]
            flags[k] = False

        return undo

    fusions: list[_Fusion] = []
    for path, module in list(model.named_modules()):
        if type(module) is nn.Sequential and "forward" not in module.__dict__:
            # _modules keeps a module registered under two names twice (named_children() does not)
            items = list(module._modules.items())
            for i, (name, child) in enumerate(items):
                if child is None or not (_fusable(child) and single(child)):
                    continue
                j = i + 1
                while j < len(items) and type(items[j][1]) is nn.Identity:
                    j += 1
                if j == len(items) or type(items[j][1]) is not nn.ReLU:
                    continue
                window = [m for _, m in items[i : j + 1]]
                if len({id(m) for m in window}) != len(window):
                    continue
                relu_name, relu = items[j]
                assert relu is not None
                child.fuse_relu = True  # type: ignore[assignment]
                identity = nn.Identity()
                setattr(module, relu_name, identity)
                items[j] = (relu_name, identity)
                fusions.append(
                    _Fusion(
                        f"{path}.{name}" if path else name,
                        module,
                        child,
                        unfuse_seq(module, child, relu_name, relu),
                    )
                )
        flags = getattr(module, "lrp_fused", None)
        if isinstance(flags, list) and type(getattr(module, "relu", None)) is nn.ReLU:
            # torchvision blocks, in the order of their ReLUs (see canonizers._bottleneck_forward)
            pairs = [("conv1", "bn1"), ("conv2", "bn2")][: len(flags) - 1]
            for k, (conv_name, bn_name) in enumerate(pairs):
                conv, bn = getattr(module, conv_name), getattr(module, bn_name)
                if _fusable(conv) and single(conv) and type(bn) is nn.Identity:
                    conv.fuse_relu, flags[k] = True, True
                    fusions.append(_Fusion(f"{path}.{conv_name}", module, conv, unfuse_flag(conv, flags, k)))
            add = getattr(module, "lrp_add", None)
            if isinstance(add, ResidualAdd) and single(add):
                add.fuse_relu, flags[-1] = True, True
                fusions.append(
                    _Fusion(f"{path}.lrp_add", module, add, unfuse_flag(add, flags, len(flags) - 1))
                )
    return fusions


class _FusionWatch:
    """Forward hooks that check, during one forward pass, that every fusion's owner ran it as a whole.

    A fused layer must be called only while its owner's ``forward`` runs, and exactly once per call of
    the owner. Hooks are removed with :meth:`remove`; nothing is left on the model afterwards.
    """

    def __init__(self, fusions: list[_Fusion]) -> None:
        self.fusions = list(fusions)  # indices refer to the fusions at the time of the check
        self._handles: list[Any] = []
        self._active: dict[int, int] = {}  # id(owner) -> depth of running owner forwards
        self._owner_calls: dict[int, int] = {}
        self._layer_calls: list[int] = []
        self._outside: set[int] = set()
        owners = {id(f.owner): f.owner for f in fusions}
        for key, owner in owners.items():
            self._handles.append(owner.register_forward_pre_hook(self._enter(key)))
            self._handles.append(owner.register_forward_hook(self._leave(key), always_call=True))
        for k, f in enumerate(fusions):
            self._handles.append(f.layer.register_forward_pre_hook(self._visit(k, id(f.owner))))
        self.reset()

    def reset(self) -> None:
        """Forget a previous (failed) forward pass."""
        self._active = {id(f.owner): 0 for f in self.fusions}
        self._owner_calls = dict(self._active)
        self._layer_calls = [0] * len(self.fusions)
        self._outside = set()

    def _enter(self, key: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            self._active[key] += 1
            self._owner_calls[key] += 1

        return hook

    def _leave(self, key: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self._active[key] -= 1

        return hook

    def _visit(self, k: int, key: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            self._layer_calls[k] += 1
            if self._active[key] <= 0:
                self._outside.add(k)

        return hook

    def violations(self) -> list[int]:
        """Indices of the fusions whose layer ran outside its owner or not once per owner call."""
        return [
            k
            for k, f in enumerate(self.fusions)
            if k in self._outside or self._layer_calls[k] != self._owner_calls[id(f.owner)]
        ]

    def remove(self) -> None:
        """Remove all hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def _lean_maxpools(model: nn.Module) -> int:
    """Replace every exact ``nn.MaxPool{1,2,3}d`` by a :class:`spray.lrp.rules.LeanMaxPool`; return how many.

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
        "Epsilon() for a linear map, Gradient() for a reshape/routing module (rules in spray.lrp.rules), "
        "or globally with spray.lrp.composites.register_layer_rule("
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
        Rules for additional module types; they take precedence over the composite.
    channels_last : bool, optional
        Run the copy in ``channels_last`` memory format (oneDNN's preferred layout; on CPU about 10–20 %
        faster for torchvision ResNets and VGGs). Default: on for models with ``Conv2d`` layers on CPU
        and no 5-D parameter or buffer (``Conv3d``); only 4-D tensors are converted. If the first
        forward pass fails in that layout with a layout error (e.g. a ``.view()`` on activations) and
        succeeds in the contiguous one, the copy stays contiguous, with a warning; other errors (and
        out-of-memory) are raised unchanged. The relevance is always returned contiguous.

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
            # 3-D (video/volume) models keep the contiguous layout: channels_last is a 4-D format
            channels_last = (
                self.device.type == "cpu"
                and any(isinstance(m, nn.Conv2d) for m in copied.modules())
                and not any(t.dim() == 5 for t in (*copied.parameters(), *copied.buffers()))
            )
        # before the rules are attached, so that their cached weights (W⁺, ...) share the layout
        self.channels_last = _convert_layout(copied, bool(channels_last))
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
        self._fusions = _fuse_relus(copied)
        # the fusions are checked on the first forward pass (see _FusionWatch), then this is None
        self._watch: _FusionWatch | None = _FusionWatch(self._fusions) if self._fusions else None
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
            len(self._fusions),
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
    def _precision(self, autocast: bool = True) -> Iterator[None]:
        """TF32 switches (CUDA) as ``precision`` asks, and bf16 autocast when ``autocast`` (forward only:
        PyTorch advises against running the backward under autocast; it follows the forward's dtypes)."""
        with _tf32(self.device, self.precision == "tf32"):
            if self.precision == "bf16" and autocast:
                with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                    yield
            else:
                yield

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
        self.channels_last = _convert_layout(self._model, channels_last)
        for module in self._model.modules():
            if isinstance(module, RuleModule):
                module.rule.prepare(module)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        self._context.reset()
        if self._watch is not None:
            self._watch.reset()
        with torch.enable_grad(), self._precision():
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

    @staticmethod
    def _logits(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelError(f"the model must return (B, K) logits, got {shape}")
        logits = out.detach().float()
        if not bool(torch.isfinite(logits).all()):
            bad = (~torch.isfinite(logits)).any(dim=1).nonzero().flatten().tolist()
            raise ModelError(
                f"the model produced NaN/inf logits for batch rows {bad}; check inputs and weights"
            )
        return logits

    def _check_reference(
        self, x: torch.Tensor, out: torch.Tensor, logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Compare the first two samples' logits with the original model (once); return (out, logits).

        If they differ while ReLUs are fused, the fusions are undone and the forward pass re-run, so that
        the error (if any) is about canonization alone.
        """
        reference, self._reference = self._reference, None
        if reference is None:
            return out, logits
        n = min(len(x), 2)
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False), _tf32(self.device, False):
            # The reference runs in strict float32 (no autocast, no TF32): the copy's round-off is then
            # part of the tolerance, while a wrongly folded BatchNorm moves logits by a good fraction of
            # their scale. bf16 rounds ~0.4 % a layer (a few % over a deep net; 1 % was too tight on a
            # Bottleneck ResNet); TF32's 10-bit mantissa ~0.05 % a layer (measured on an H100: 0.13 % of
            # the logit scale on ResNet-50, where the float32 tolerance of 0.1 % failed).
            expected = reference(x[:n].detach().contiguous().float()).float()
        scale = float(expected.abs().max().clamp(min=1e-12))
        tol = {"bf16": 5e-2, "tf32": 1e-2}.get(self.precision, 1e-3) * scale
        err = float((expected - logits[:n]).abs().max())
        if not err <= tol and self._fusions:
            self._unfuse(
                list(range(len(self._fusions))),
                f"the canonized copy's logits differ from the model's (max |Δlogit| = {err:.3g}); "
                "re-running the forward pass unfused",
            )
            out = self._forward(x)
            logits = self._logits(out, x)
            err = float((expected - logits[:n]).abs().max())
        if not err <= tol:
            raise ModelError(
                f"canonization changed the model's output (max |Δlogit| = {err:.3g} of {scale:.3g}, "
                "with ReLU fusion off); probably a BatchNorm is registered right after a layer it does "
                "not follow in forward() and was folded into it. Use Explainer(..., canonize=False) or "
                "register modules in execution order."
            )
        return out, logits

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
        out, x = self._run(x)
        logits = self._logits(out, x)
        self._check_order()
        out, logits = self._check_reference(x, out, logits)
        targets = self._targets(target, labels, logits)
        # Gradient frame: relevance at the logits is logit × one_hot, i.e. a one-hot "gradient".
        seed = torch.zeros_like(out).scatter_(1, targets[:, None], 1.0)
        # The backward pass (the rules' input-VJPs) runs under the same precision switches as the
        # forward: outside them, PyTorch's default TF32 cuDNN convolutions made "fp32" maps on an H100
        # differ from zennit's by up to 1.2 % of their scale.
        with self._precision(autocast=False):
            (grad,) = torch.autograd.grad(out, x, grad_outputs=seed)
        relevance = grad if self._first_path is not None else grad * x
        relevance = relevance.detach().float().contiguous()
        return LRPResult(relevance=relevance, logits=logits, targets=targets)


@contextlib.contextmanager
def _tf32(device: torch.device, allow: bool) -> Iterator[None]:
    """TF32 for CUDA matmuls and convolutions allowed or not inside the block (restored after); a no-op
    elsewhere."""
    if device.type != "cuda":
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


_LAYOUT_WORDS = ("view", "stride", "contiguous", "memory format", "memory_format", "channels_last", "layout")


def _is_layout_error(exc: BaseException) -> bool:
    """Whether ``exc`` may come from running in ``channels_last`` (never an out-of-memory error)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return False
    message = str(exc).lower()
    return "out of memory" not in message and any(word in message for word in _LAYOUT_WORDS)


def _convert_layout(model: nn.Module, channels_last: bool) -> bool:
    """Put the 4-D parameters and buffers of ``model`` in ``channels_last`` (or contiguous); return the layout.

    Unlike ``Module.to(memory_format=...)`` this leaves tensors of other ranks alone (a ``Conv3d``
    weight cannot be ``channels_last``). If the conversion fails, the model is made contiguous.
    """
    if channels_last:
        try:
            model._apply(lambda t: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t)
            return True
        except RuntimeError as exc:
            logger.warning(
                "could not convert the model to channels_last (%s); using the contiguous layout", exc
            )
    model._apply(lambda t: t.contiguous() if t.dim() in (4, 5) else t)
    return False


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

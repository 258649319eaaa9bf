"""Concept relevance: the relevance of each channel of one layer, read off the heatmap's own backward pass.

A *concept* is a channel of a chosen layer (the concept layer). Its relevance for a sample is the
relevance arriving at the layer's output in that channel, summed over positions (CRP's channel
relevance, Achtibat et al. 2023), so it does not depend on *where* in the image the channel fired.
:class:`ConceptTap` puts one graph node on the layer's output during the Explainer's forward pass; the
ordinary backward pass then passes through it, where it sums ``activation × gradient`` per channel (one
element-wise product and one reduction of one layer's output) and, for a *conditional* heatmap, keeps
only the relevance of chosen channels, so that the input relevance is that of those concepts alone.

Layout of the layer's output: ``(B, C, ...)`` (convolutions: channel at dimension 1, summed over the
rest), ``(B, H, W, C)`` (channels last, as torchvision's Swin blocks: told apart by the layer's own widths)
or ``(B, T, D)`` (token sequences: channel = feature at the last dimension, summed over tokens),
or ``(B, D)``.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from spray.errors import ConfigError, ModelError
from spray.lrp.base import RuleContext

__all__ = [
    "ConceptTap",
    "concept_channels",
    "default_concept_layer",
    "enclosing_tap",
    "resolve_concept_layer",
    "through_layer",
    "warn_reused",
    "wraps_model",
]

log = logging.getLogger(__name__)

#: Values of ``lrp.concept_layer`` that are not module paths.
AUTO, NONE = "auto", "none"

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _channel_sum(r: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """``(B, C)`` float32 per-channel sum of a ``(B, C, ...)``, ``(B, T, D)``, ``(B, D)`` or (``channels_last``)
    ``(B, H, W, C)`` tensor."""
    r = r.float()
    if r.dim() == 3:
        return r.sum(dim=1)
    if r.dim() > 3:
        return r.flatten(1, -2).sum(dim=1) if channels_last else r.flatten(2).sum(dim=2)
    return r


def _expand_mask(mask: torch.Tensor, like: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """The ``(B, C)`` channel mask shaped to broadcast against ``like`` (see :func:`_channel_sum`); a mask of
    ``like``'s own shape (per channel and position) is used as it is."""
    mask = mask.to(like.device, like.dtype)
    if mask.shape == like.shape:
        return mask
    if like.dim() == 3 or channels_last:
        return mask.reshape(mask.shape[0], *([1] * (like.dim() - 2)), mask.shape[1])
    return mask.reshape(*mask.shape, *([1] * (like.dim() - 2)))


def _widths(module: nn.Module, *, tokens: bool = False) -> set[int]:
    """The feature widths of a module's layers: convolution and linear outputs and normalised features, or
    (``tokens``) only those of the layers that act on the last dimension (linear layers, LayerNorms)."""
    out: set[int] = set()
    for m in module.modules():
        if isinstance(m, nn.Linear):
            out.add(m.out_features)
        elif isinstance(m, nn.LayerNorm):
            out.add(int(m.normalized_shape[-1]))
        elif tokens:
            continue
        elif isinstance(m, _CONV_TYPES):
            out.add(m.out_channels)
        elif isinstance(m, nn.modules.batchnorm._NormBase):
            out.add(m.num_features)
        elif isinstance(m, nn.GroupNorm):
            out.add(m.num_channels)
    return out


def channels_last_output(module: nn.Module, output: torch.Tensor) -> bool:
    """Whether a 4-D layer output is ``(B, H, W, C)`` (torchvision's Swin blocks): its last dimension is the
    width of a layer acting on the last dimension (a linear layer, a LayerNorm) and its second is no width
    of any layer. A concatenating CNN block (DenseNet, Inception), whose spatial size may equal a
    convolution's width, reads channels-first."""
    if output.dim() != 4:
        return False
    return int(output.shape[-1]) in _widths(module, tokens=True) and int(output.shape[1]) not in _widths(
        module
    )


class _Tap(torch.autograd.Function):
    """Copy forward; backward records the channel relevance and applies the channel mask, if any.

    The forward returns a copy, not a view, so that consumers may modify it in place (an in-place ReLU).
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, tap: ConceptTap, relevance_frame: bool, channels_last: bool
    ) -> torch.Tensor:
        ctx.tap, ctx.relevance_frame, ctx.channels_last = tap, relevance_frame, channels_last
        ctx.value = x.detach()  # the activation, for relevance = activation × gradient
        return x.clone()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        tap: ConceptTap = ctx.tap
        r = g if ctx.relevance_frame else g * ctx.value
        tap._add(_channel_sum(r, ctx.channels_last))
        if tap.mask is not None:
            g = g * _expand_mask(tap.mask, g, ctx.channels_last)
        return g, None, None, None


class ConceptTap:
    """Captures the channel relevance of one layer of an Explainer's copy during one forward + backward.

    Parameters
    ----------
    model : nn.Module
        The Explainer's copy (rules attached).
    path : str
        The concept layer's module path (as in ``named_modules()`` of the user's model).
    context : RuleContext
        The copy's context (whether the backward carries relevance or a gradient at the layer).
    mask : torch.Tensor, optional
        ``(B, C)`` weights of the channels whose relevance is propagated further down (1: keep, 0: drop),
        or weights of the layer output's own shape (per channel and position: the relevance of chosen
        positions, as the correction's region footprint uses it); None keeps all (the ordinary heatmap).
    required : bool
        A layer that does not run in the forward pass is an error (a path the user chose); else
        :attr:`missing` is set (a layer chosen by ``"auto"``, which the model's ``forward`` may bypass).
    batch : int, optional
        The batch size: an output whose first axis is not the batch is refused (``required``) or passed
        over like a missing layer.

    Attributes
    ----------
    relevance : torch.Tensor or None
        ``(B, C)`` float32 channel relevance after the backward pass (summed over the calls of the layer
        if it runs more than once).
    """

    def __init__(
        self,
        model: nn.Module,
        path: str,
        context: RuleContext,
        mask: torch.Tensor | None = None,
        required: bool = True,
        batch: int | None = None,
    ) -> None:
        self.model, self.path, self.context = model, path, context
        self.mask = mask
        self.required = required
        self.batch = batch
        self.missing = False
        self.relevance: torch.Tensor | None = None
        self.calls = 0
        self._channels = 0
        self._tapped: torch.Tensor | None = None
        #: Where the layer's output enters autograd in the last forward pass, for a backward that starts there
        #: (an edge, not the tensor: an in-place ``x += shortcut`` after the layer moves the tensor on).
        self.edge: Any = None
        #: Whether the layer ran but its output's first axis was not the batch (patches unfolded into it).
        self.unbatched = False
        self.ndim = 0  # of the tapped output

    def _add(self, r: torch.Tensor) -> None:
        self.relevance = r if self.relevance is None else self.relevance + r

    def _hook(self, module: nn.Module, args: Any, output: Any) -> Any:
        if not (isinstance(output, torch.Tensor) and output.is_floating_point() and output.dim() >= 2):
            if not self.required:
                return output  # counted as missing: the Explainer drops the layer with a warning
            kind = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ModelError(
                f"concept layer {self.path!r} returns {kind}; it must return a (B, C, ...) or (B, T, D) "
                "float tensor: choose another layer (lrp.concept_layer)"
            )
        if self.batch is not None and (
            output.shape[0] != self.batch or sequence_first(self.model, self.path)
        ):
            # per-token or per-patch rows taken for samples would misalign every concept vector after them
            if not self.required:
                self.unbatched = True
                return output
            raise ModelError(
                f"concept layer {self.path!r} returns {tuple(output.shape)}, whose first axis is not the batch of "
                f"{self.batch} images (a sequence-first transformer layer, (T, B, D), or patches unfolded into the "
                "batch axis): choose a layer whose output starts with the batch (lrp.concept_layer), or "
                "lrp.concept_layer: none"
            )
        if not output.requires_grad:
            cut = (
                "forward() cuts the graph before it (torch.no_grad(), x.detach(), .data, a round trip through "
                "numpy); remove the cut: a frozen backbone keeps the graph with its parameters' "
                "requires_grad=False (spray never trains the model)"
            )
            raise ModelError(
                f"concept layer {self.path!r} runs with gradients off: {cut}"
                if not torch.is_grad_enabled()
                else f"concept layer {self.path!r}: its output does not depend on the input through autograd. "
                f"Either it runs before the input enters the graph (choose a later layer: lrp.concept_layer), or {cut}"
            )
        last = channels_last_output(module, output)
        channels = int(output.shape[-1] if output.dim() == 3 or last else output.shape[1])
        if self.calls and channels != self._channels:
            if not self.required:  # an auto layer is dropped with a warning instead
                self.calls = 0
                return output
            raise ModelError(
                f"concept layer {self.path!r} runs more than once in one forward pass with different widths "
                f"({self._channels} channels, then {channels}): one module reused at several places (a block's "
                "one ReLU), so its channels are not one set of concepts. Choose a module that runs once, such as "
                "the block around it (lrp.concept_layer)"
            )
        self._channels, self.ndim = channels, output.dim()
        if self.mask is not None and tuple(self.mask.shape) not in (
            (output.shape[0], channels),
            tuple(output.shape),
        ):
            raise ConfigError(
                f"concept mask must have shape (B, C) = ({output.shape[0]}, {channels}) or the output's "
                f"{tuple(output.shape)} for layer {self.path!r}, got {tuple(self.mask.shape)}"
            )
        self.calls += 1
        self._tapped = _Tap.apply(output, self, self.context.relevance_frame, last)
        self.edge = torch.autograd.graph.get_gradient_edge(self._tapped)
        return self._tapped

    def _model_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        # the layer's own output returned as the model's: its channels are the class scores
        if self.required and self._tapped is not None and output is self._tapped:
            raise ConfigError(
                f"lrp.concept_layer {self.path or '(empty: the whole model)'!r} computes the model's output, its "
                "class scores: concept vectors there would be the logits, not the features the model found. "
                "Name an earlier layer (a module path from model.named_modules()), 'auto' (the last "
                "convolutional stage or transformer block) or 'none'."
            )

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Hook the layer for the duration of one forward pass (the module is looked up now: fusions
        may have swapped it since the last pass)."""
        self.calls = 0
        self.relevance = None
        self._tapped = None
        self.edge = None
        self.unbatched = False
        module = _submodule(self.model, self.path)
        handle = module.register_forward_hook(self._hook)
        outer = self.model.register_forward_hook(self._model_hook)
        try:
            yield
        finally:
            handle.remove()
            outer.remove()
            self._tapped = None
        self.missing = self.calls == 0
        if self.missing and self.required:
            raise ModelError(f"concept layer {self.path!r} did not run in the model's forward pass")

    def result(self) -> torch.Tensor:
        """The ``(B, C)`` float32 channel relevance after the backward pass."""
        if self.relevance is not None:
            return self.relevance.detach()
        raise ModelError(f"no relevance reached concept layer {self.path!r}; choose a layer the logits use")


def through_layer(out: torch.Tensor, x: torch.Tensor, seed: torch.Tensor, edge: Any) -> torch.Tensor:
    """The rules' backward from ``out`` to ``x`` of only the relevance that passes the concept layer.

    The gradient where the layer's output enters autograd comes first, then the backward from there: a path
    around the layer (a residual branch's skip connection) carries nothing to ``x``, as zennit-crp's
    conditional attribution (``exclude_parallel``) has it; masked at the tap, such a path reached the input
    whole.

    Parameters
    ----------
    out : torch.Tensor
        ``(B, K)`` outputs.
    x : torch.Tensor
        ``(B, ...)`` input that requires grad.
    seed : torch.Tensor
        ``(B, K)`` the gradient put on ``out``.
    edge : torch.autograd.graph.GradientEdge
        :attr:`ConceptTap.edge` of the forward pass that gave ``out``.

    Returns
    -------
    torch.Tensor
        Same shape as ``x``; zeros when the logits do not use the layer (the tap then says so).
    """
    with torch.enable_grad():
        scalar = (out * seed).sum()
    (at_layer,) = torch.autograd.grad(scalar, edge, retain_graph=True, allow_unused=True)
    if at_layer is None:
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(edge, x, grad_outputs=at_layer)
    return grad


def enclosing_tap(
    tap: ConceptTap, mask: torch.Tensor | None, batch: int, forward: Callable[[ConceptTap], torch.Tensor]
) -> tuple[ConceptTap, torch.Tensor] | None:
    """For a layer 'auto' chose whose output has not the batch first (a MobileViT block's transformer runs on
    unfolded patches): a tap on the nearest module around it whose output is a ``(B, C, ...)`` map.

    Never a module holding the whole classifier (its output is the logits), and not for a ``(T, B, D)``
    transformer (a stack around it has T rows first too, which may equal the batch by chance).

    Parameters
    ----------
    tap : ConceptTap
        The auto layer's tap after a forward pass that found it missing.
    mask : torch.Tensor or None
        The call's concept mask, for the candidates.
    batch : int
        The batch size.
    forward : callable
        Runs one forward pass with the given tap installed; returns the outputs.

    Returns
    -------
    tuple of (ConceptTap, torch.Tensor) or None
        The candidate's tap and the outputs of its forward pass; None when no module around it fits.
    """
    model, path = tap.model, tap.path
    if not tap.unbatched or sequence_first(model, path):
        return None
    while "." in path:
        path = path.rpartition(".")[0]
        if wraps_model(model.get_submodule(path), model):
            return None
        candidate = ConceptTap(model, path, tap.context, mask, False, batch=batch)
        out = forward(candidate)
        if not candidate.missing and candidate.ndim >= 3:
            log.info("concept layer %r (auto) has not the batch first; %r around it has", tap.path, path)
            return candidate, out
    return None


def warn_reused(tap: ConceptTap) -> None:
    """Say that the concept layer ran more than once in a forward pass (its relevance is summed).

    Parameters
    ----------
    tap : ConceptTap
        The tap after the forward pass (its ``calls`` > 1).
    """
    log.warning(
        "concept layer %r runs %d times in one forward pass (a module reused, e.g. a block's one ReLU): its "
        "channel relevance is the sum over the calls, and a concept-conditional map keeps the chosen channels "
        "at every call (zennit-crp records one call). A module that runs once, such as the block around it, "
        "avoids that (lrp.concept_layer)",
        tap.path,
        tap.calls,
    )


def sequence_first(model: nn.Module, path: str) -> bool:
    """Whether the module at ``path`` runs inside (or is) a torch transformer layer or stack that works on
    ``(T, B, D)`` (``batch_first=False``, torch's default): its output's first axis is the batch only by
    chance, when the tokens are as many as the images (a sublayer such as ``linear2`` sees the same layout)."""
    parts = path.split(".") if path else []
    for depth in range(len(parts) + 1):
        module = model.get_submodule(".".join(parts[:depth]))
        if isinstance(module, (nn.TransformerEncoder, nn.TransformerDecoder)) and len(module.layers):
            module = module.layers[0]
        if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)) and not getattr(
            module.self_attn, "batch_first", True
        ):
            return True
    return False


def _submodule(model: nn.Module, path: str) -> nn.Module:
    try:
        return model.get_submodule(path) if path else model
    except AttributeError:
        raise ConfigError(f"concept layer {path!r} is not a module of the model") from None


def concept_channels(mask_channels: list[list[int]], channels: int, device: torch.device) -> torch.Tensor:
    """``(B, C)`` float32 0/1 mask keeping, for sample ``i``, the channels ``mask_channels[i]``."""
    mask = torch.zeros(len(mask_channels), channels, device=device)
    for i, chosen in enumerate(mask_channels):
        bad = [c for c in chosen if not 0 <= int(c) < channels]
        if bad:
            raise ConfigError(f"concept channels {bad} out of range [0, {channels}) for sample {i}")
        mask[i, [int(c) for c in chosen]] = 1.0
    return mask


def _last_repeated_block(model: nn.Module) -> str | None:
    """The last block of the model's last stage of attention blocks: the last child of the last
    ``ModuleList``/``Sequential`` (in module order) of ≥ 2 children of one type that hold attention (a
    hierarchical transformer's last stage, e.g. Swin's ``features.7``, not its longest); a later stage of
    one block of such a type counts too (MaxViT-nano's ``stages.3.blocks``); without one, the last child of
    the longest such list of any blocks."""
    last: str | None = None
    longest: tuple[int, str] | None = None
    block_types: set[tuple[type, int]] = set()  # (block type, depth of its list) of the stages seen
    for path, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        children = list(module.named_children())
        if not children:
            continue
        kinds = {(type(m), path.count(".")) for _, m in children}
        end = f"{path}.{children[-1][0]}" if path else children[-1][0]
        if len(children) >= 2 and len(kinds) == 1:
            if has_attention(children[-1][1]):
                last = end
                block_types |= kinds
            if longest is None or len(children) >= longest[0]:
                longest = (len(children), end)
        elif len(children) == 1 and kinds <= block_types:  # a stage of one block, at a stage's depth
            last = end
    if last is not None:
        return last
    return None if longest is None else longest[1]


def has_attention(model: nn.Module) -> bool:
    """Whether ``model`` has attention (a ``MultiheadAttention`` or a module whose class name says so)."""
    return any(
        isinstance(m, nn.MultiheadAttention) or "attention" in type(m).__name__.lower()
        for m in model.modules()
    )


def default_concept_layer(model: nn.Module) -> str | None:
    """The default concept layer: the last convolutional stage, or for a transformer its last block.

    * Transformers (a ``MultiheadAttention`` or a module whose class name contains "Attention"): the
      last block of the last stage of same-type attention blocks (``encoder.layers.encoder_layer_11`` of
      torchvision's ViT, ``blocks.11`` of timm's, ``features.7.1`` of torchvision's Swin-T).
    * Other models with a convolution: the top-level child of the model that holds the last
      convolution before the model's global pooling, in module order (``features`` of a
      VGG/MobileNet/EfficientNet/DenseNet/ConvNeXt or spray's ``SmallCNN``, ``layer4`` of a ResNet,
      ``blocks`` of timm's MobileNetV3, whose ``conv_head`` runs on the pooled 1×1 map): the last feature
      map before pooling and classifier. A last convolution with nothing weighted after the pooling computes
      the class scores (SqueezeNet's classifier): the one before it counts. Auxiliary classifiers (a child
      named ``aux...``: GoogLeNet's, Inception's) run only in training and are passed over. A child that holds the global pooling and a classifier after it
      (or, with no pooling module, every parameter of the model) is a wrapper (``nn.Sequential(normalize,
      net)``, ``DataParallel``, ``torch.compile``, a temperature scaler, spray's own output selector): the
      search goes on inside it (``1.layer4``, ``module.layer4``, ``_orig_mod.features``).
    * None otherwise (an MLP).
    """
    if has_attention(model):
        block = _last_repeated_block(model)
        if block is not None:
            return block
    prefix = ""
    while True:
        stage, head_inside = _conv_stage(model)
        if stage is None:
            return None
        inner = model.get_submodule(stage)
        if inner is model or not (head_inside or (head_inside is None and wraps_model(inner, model))):
            return prefix + stage
        # A wrapper (nn.Sequential(normalize, net), DataParallel's "module", torch.compile's "_orig_mod", a
        # ".backbone" or a temperature scaler holding the whole classifier): its child's output is the
        # logits, not a feature map.
        prefix, model = f"{prefix}{stage}.", inner


def _conv_stage(model: nn.Module) -> tuple[str | None, bool | None]:
    """The top-level child of ``model`` holding its last convolution before its global pooling, and whether
    that child also holds the pooling and a layer with weights after it (a classifier: the child is the
    whole model, wrapped); None for the second when no global pooling module was found."""
    convs: list[str] = []
    modules = list(model.named_modules())
    for i, (path, module) in enumerate(modules):
        if convs and _global_pool(path, module):
            weighted = [p for p, m in modules[i + 1 :] if next(m.parameters(recurse=False), None) is not None]
            if not weighted and len(convs) > 1:
                # nothing with weights after the pooling: the last convolution computes the class scores
                # (SqueezeNet's classifier), so the feature map is the one before it
                convs.pop()
            stage = convs[-1].split(".")[0]
            head = any(p.startswith(f"{stage}.") for p in weighted)
            return stage, head and path.startswith(f"{stage}.")
        # auxiliary classifiers (GoogLeNet's aux1/aux2, Inception's AuxLogits) run only in training
        if isinstance(module, _CONV_TYPES) and not path.split(".")[0].lower().startswith("aux"):
            convs.append(path)
    if len(convs) > 1:
        # no pooling module (F.adaptive_avg_pool2d in forward()) and nothing weighted after the last
        # convolution: it computes the class scores (an all-convolutional classifier), as above
        at = [p for p, _ in modules].index(convs[-1])
        after = any(next(m.parameters(recurse=False), None) is not None for _, m in modules[at + 1 :])
        if not after and not any(isinstance(m, nn.Linear) for _, m in modules):  # a head registered earlier
            convs.pop()
    return (convs[-1].split(".")[0] if convs else None), None


def wraps_model(child: nn.Module, model: nn.Module) -> bool:
    """Whether ``child`` holds every parameter of ``model`` (so it is the whole classifier, wrapped)."""
    total = {id(p) for p in model.parameters()}
    return bool(total) and total <= {id(p) for p in child.parameters()}


def _global_pool(path: str, module: nn.Module) -> bool:
    """The model's global pooling (``avgpool``, timm's ``global_pool`` or ``head.global_pool``): an adaptive
    pooling module at most two levels deep; a squeeze-and-excitation's pool sits deeper, inside a block."""
    adaptive = isinstance(module, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d) or (
        "adaptivepool" in type(module).__name__.lower()
    )
    return adaptive and path.count(".") <= 1


def _wrapped_path(model: nn.Module, layer: str, names: dict[str, nn.Module]) -> str | None:
    """``layer`` as a path of the user's model inside wrappers spray or torch added (``model.`` of the
    output selector, ``_orig_mod.`` of torch.compile, ``module.`` of DataParallel): the full path, when
    ``layer`` itself is not a module of ``model``."""
    if layer in names:
        return None
    prefix, inner = "", model
    while True:
        children = [(n, c) for n, c in inner.named_children() if wraps_model(c, inner)]
        if len(children) != 1:
            return None
        name, inner = children[0]
        prefix = f"{prefix}{name}."
        if f"{prefix}{layer}" in names:
            return f"{prefix}{layer}"


def resolve_concept_layer(model: nn.Module, layer: str | None) -> str | None:
    """The module path of the concept layer for ``lrp.concept_layer`` (``"auto"``, ``"none"`` or a path).

    Raises
    ------
    ConfigError
        The path is not a module of the model (``"auto"`` that finds no layer gives None, with a warning).
    """
    if layer is None or layer == NONE:
        return None
    if layer == AUTO:
        found = default_concept_layer(model)
        if found is None:
            # An MLP or a recurrent model: no sensible default, and no reason to stop the audit over it.
            log.warning(
                "lrp.concept_layer: auto found no convolutional stage or repeated block in this model, so no "
                "concept relevance is computed; set lrp.concept_layer to a module path (model.named_modules()) "
                "to get it, or to 'none' to silence this"
            )
        return found
    names = dict(model.named_modules())
    wrapped = _wrapped_path(model, layer, names)
    if wrapped is not None:
        return wrapped
    if layer not in names:
        # substring matches catch a missing prefix or suffix, difflib a misspelling
        near = [n for n in names if n and (layer in n or n in layer)][:8]
        near += [n for n in difflib.get_close_matches(layer, [n for n in names if n], n=3) if n not in near]
        raise ConfigError(
            f"lrp.concept_layer {layer!r} is not a module of the model"
            + (f"; close names: {near}" if near else "")
            + "; use a path from model.named_modules(), 'auto' or 'none'"
        )
    return layer

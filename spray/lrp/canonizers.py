"""Canonization: turn a user model into an equivalent copy on which LRP rules can be attached.

Everything here works on a deep copy; the user's model is never touched (parameters, buffers, hooks
and the training flag stay as they were).

* **BatchNorm folding**: a BatchNorm that directly follows a ``Linear``/``Conv`` layer (in module
  registration order, as in zennit's ``SequentialMergeBatchNorm``) is folded into that layer and
  replaced by ``nn.Identity``. Folding is done in float64 and is exact (zennit 0.5.1 keeps the BN
  module with ``eps`` still in place, which leaves a ``1/sqrt(1+eps)`` factor per BN).
* **ResNet**: torchvision ``BasicBlock``/``Bottleneck`` compute ``out += identity`` functionally, which
  no module rule can see. Their ``forward`` is replaced by one that routes the sum through a
  :class:`ResidualAdd` module, so the composite can attach the ``Norm`` rule to it (the equivalent of
  zennit's ``ResNetCanonizer`` with its ``Sum`` module).
* Every module with an ``inplace`` switch (ReLU, ReLU6, SiLU, Hardswish, LeakyReLU, ELU, timm's
  activations and layer scales, ...) is made out-of-place: the rules need a layer's input after the
  layer ran. (In-place *functional* operations are handled where they run, see
  :mod:`spray.lrp.functional` and :class:`spray.lrp.activations.Pass`.)
* ``nn.MultiheadAttention`` is rebuilt from separate projection layers and
  ``F.scaled_dot_product_attention`` (:mod:`spray.lrp.attention`), so that rules reach its insides.
* timm's ``BatchNormAct2d`` (a BatchNorm with its activation inside) is split into a plain BatchNorm
  followed by the activation, so that the BatchNorm can be folded.
* ``FrozenBatchNorm2d`` (torchvision's detection backbones, timm) and ``nn.SyncBatchNorm`` become the plain
  BatchNorm that computes the same in eval mode, and are folded like one.
* timm's re-parameterisable blocks (RepVGG, MobileOne, FastViT, RepViT, RepGhost, ...: a block whose
  ``fuse``/``reparameterize``/``switch_to_deploy`` turns its parallel training branches into one layer) are
  put in that inference form, as ``timm.utils.reparameterize_model`` does: parallel branches that all read the
  same input, and a BatchNorm applied to their sum, have no rule, the single layer has.

Functional operations inside a custom ``forward`` (``x + y``, ``torch.cat``, ``x * gate``, attention)
are invisible to module inspection; :mod:`spray.lrp.functional` gives them their rules while the copy
runs, and the self-check on the first batch refuses what no rule covers.
"""

from __future__ import annotations

import copy
import logging
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from spray.errors import ConfigError
from spray.lrp.attention import split_attention

logger = logging.getLogger(__name__)

__all__ = [
    "KNOWN_CANONIZERS",
    "ResidualAdd",
    "canonize",
    "fold_batchnorm",
    "leaves",
    "model_copy",
    "resolve_canonizers",
]

_LINEAR_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN_TYPES: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
KNOWN_CANONIZERS: tuple[str, ...] = ("merge_batchnorm", "resnet", "reparameterize")
#: Methods of timm blocks that return or make their single-branch inference form (timm's own names).
REPARAMETERIZE_METHODS: tuple[str, ...] = ("fuse", "reparameterize", "switch_to_deploy")


class ResidualAdd(nn.Module):
    """``a + b`` as a module, so that an LRP rule (``Norm``) can be attached to residual sums.

    Attributes
    ----------
    stabilizer : float or None
        When set (by the composite), the backward rescales the gradient by ``s / stab(s)`` (the Norm
        rule); ``None`` leaves the plain gradient (Norm with a zero stabiliser).
    fuse_relu : bool
        Return ``relu(a + b)`` (set by the LRP engine when the block's ReLU is fused into the sum, so
        that one saved tensor serves both the ReLU mask and the Norm rescale).
    """

    def __init__(self) -> None:
        super().__init__()
        self.stabilizer: float | None = None
        self.fuse_relu = False

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Return ``a + b`` (same shape), or ``relu(a + b)`` with ``fuse_relu``."""
        # local import: rules imports nothing from here, avoid a cycle
        from spray.lrp.base import _AddNormReLU, _StabScale

        if self.stabilizer is None or not (a.requires_grad or b.requires_grad):
            s = a + b
            return torch.relu(s) if self.fuse_relu else s
        if self.fuse_relu:
            return _AddNormReLU.apply(a, b, self.stabilizer)
        return _StabScale.apply(a + b, self.stabilizer)


def _act(block: Any, index: int, t: torch.Tensor) -> torch.Tensor:
    # The block's ReLU number ``index``, unless the LRP engine fused it into the preceding layer.
    return t if block.lrp_fused[index] else block.relu(t)


def _basic_block_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """torchvision ``BasicBlock.forward`` with the residual sum routed through ``self.lrp_add``."""
    identity = x
    out = _act(self, 0, self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    if self.downsample is not None:
        identity = self.downsample(x)
    return _act(self, 1, self.lrp_add(out, identity))


def _bottleneck_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """torchvision ``Bottleneck.forward`` with the residual sum routed through ``self.lrp_add``."""
    identity = x
    out = _act(self, 0, self.bn1(self.conv1(x)))
    out = _act(self, 1, self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    if self.downsample is not None:
        identity = self.downsample(x)
    return _act(self, 2, self.lrp_add(out, identity))


def _resnet_blocks() -> tuple[type[nn.Module], type[nn.Module]] | None:
    # A model built from torchvision's blocks has imported their module already. If it is not loaded,
    # no block of it can be in the model, and importing torchvision (≈ 2 s, it pulls in torch._dynamo)
    # for nothing would be most of a small audit's start-up.
    resnet = sys.modules.get("torchvision.models.resnet")
    if resnet is None:
        return None
    return resnet.BasicBlock, resnet.Bottleneck


def _non_leaf_tensors(value: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    """Tensors computed with autograd (not graph leaves) in a module attribute ``value``, looking into dicts,
    lists and tuples up to three levels deep."""
    if isinstance(value, torch.Tensor):
        if not value.is_leaf:
            yield value
    elif depth < 3 and isinstance(value, dict):
        for v in value.values():
            yield from _non_leaf_tensors(v, depth + 1)
    elif depth < 3 and isinstance(value, list | tuple):
        for v in value:
            yield from _non_leaf_tensors(v, depth + 1)


def model_copy(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)``, also of a model that holds tensors computed with autograd as plain attributes
    (``torch.nn.utils.prune``'s masked ``weight``, timm's cached attention biases after a forward pass with
    gradients), which deepcopy refuses: those are copied detached.
    """
    try:
        return copy.deepcopy(model)
    except RuntimeError as err:
        if "graph leaves" not in str(err):
            raise
    memo: dict[int, Any] = {}
    for module in model.modules():
        for tensor in _non_leaf_tensors(vars(module)):
            memo[id(tensor)] = tensor.detach().clone()
    return copy.deepcopy(model, memo)


def leaves(model: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(path, module)`` for every module without children, in registration order."""
    children = list(model.named_children())
    if not children:
        yield prefix, model
        return
    for name, child in children:
        yield from leaves(child, f"{prefix}.{name}" if prefix else name)


def _set_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, new)


def _tensor(module: nn.Module, name: str) -> torch.Tensor | None:
    value = getattr(module, name, None)
    return value if isinstance(value, torch.Tensor) else None


@torch.no_grad()
def _fold(linear: nn.Module, bn: nn.Module) -> None:
    """Fold ``bn`` (applied after ``linear``) into ``linear``'s weight and bias.

    The per-channel scale and the bias are computed in float64; the weight is multiplied once in its
    own dtype (one rounding, and no float64 copy of a large weight).
    """
    weight = _tensor(linear, "weight")
    mean, var = _tensor(bn, "running_mean"), _tensor(bn, "running_var")
    assert weight is not None and mean is not None and var is not None  # checked by the caller
    mean, var = mean.double(), var.double()
    bn_weight, bn_bias, bias_t = _tensor(bn, "weight"), _tensor(bn, "bias"), _tensor(linear, "bias")
    gamma = bn_weight.double() if bn_weight is not None else torch.ones_like(mean)
    beta = bn_bias.double() if bn_bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + float(bn.eps))  # type: ignore[arg-type]
    bias = bias_t.double() if bias_t is not None else torch.zeros_like(mean)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    new_weight = weight * scale.to(weight.dtype).reshape(shape)
    new_bias = ((bias - mean) * scale + beta).to(weight.dtype)
    linear.weight = nn.Parameter(new_weight, requires_grad=False)
    linear.bias = nn.Parameter(new_bias, requires_grad=False)


def fold_batchnorm(model: nn.Module) -> list[tuple[str, str]]:
    """Fold every BatchNorm that directly follows a dense/conv layer (registration order), in place.

    Parameters
    ----------
    model : nn.Module
        Must be a copy (it is modified). BN layers must track running statistics.

    Returns
    -------
    list[tuple[str, str]]
        ``(linear path, batchnorm path)`` pairs that were folded; the BN modules become ``nn.Identity``.
    """
    folded: list[tuple[str, str]] = []
    previous: tuple[str, nn.Module] | None = None
    for path, leaf in list(leaves(model)):
        if (
            previous is not None
            and isinstance(previous[1], _LINEAR_TYPES)
            and isinstance(leaf, _BN_TYPES)
            and _tensor(leaf, "running_mean") is not None
            and _tensor(previous[1], "weight") is not None
            and _tensor(previous[1], "weight").shape[0] == leaf.num_features  # type: ignore[union-attr]
        ):
            _fold(previous[1], leaf)
            _set_module(model, path, nn.Identity())
            folded.append((previous[0], path))
        previous = (path, leaf)
    return folded


def _patch_resnet(model: nn.Module) -> int:
    blocks = _resnet_blocks()
    if blocks is None:
        return 0
    basic, bottleneck = blocks
    count = 0
    for module in model.modules():
        # exact types only: a subclass may have changed forward(), and patching it would be wrong
        if type(module) is basic:
            module.forward = types.MethodType(_basic_block_forward, module)
            flags = [False, False]  # ReLU after conv1, after the sum
        elif type(module) is bottleneck:
            module.forward = types.MethodType(_bottleneck_forward, module)
            flags = [False, False, False]  # ReLU after conv1, conv2, the sum
        else:
            continue
        module.lrp_add = ResidualAdd()
        module.__dict__["lrp_fused"] = flags  # a plain list attribute, set by the LRP engine
        count += 1
    return count


def resolve_canonizers(model: nn.Module, canonizers: str | Sequence[str] | None) -> list[str]:
    """Turn ``"auto"``, ``None`` or a list of names into the list of canonizers to apply.

    ``"auto"`` always merges BatchNorm, adds ``"resnet"`` when torchvision ResNet blocks are present and
    ``"reparameterize"`` when timm's re-parameterisable blocks are.
    """
    if canonizers is None:
        return []
    if isinstance(canonizers, str):
        if canonizers != "auto":
            canonizers = [canonizers]
        else:
            names = ["merge_batchnorm"]
            blocks = _resnet_blocks()
            if blocks is not None and any(type(m) in blocks for m in model.modules()):
                names.append("resnet")
            if any(_reparameterizable(m) for m in model.modules()):
                names.insert(0, "reparameterize")
            return names
    unknown = [c for c in canonizers if c not in KNOWN_CANONIZERS]
    if unknown:
        raise ConfigError(f"unknown canonizer(s) {unknown}; known: {list(KNOWN_CANONIZERS)} or 'auto'")
    return list(canonizers)


def _reparameterizable(module: nn.Module) -> str | None:
    """The name of ``module``'s re-parameterisation method, for timm's own blocks only (a user's method of
    that name may mean anything else)."""
    if not type(module).__module__.startswith("timm."):
        return None
    return next((m for m in REPARAMETERIZE_METHODS if callable(getattr(module, m, None))), None)


@torch.no_grad()
def reparameterize(
    model: nn.Module, keep: tuple[type[nn.Module], ...] = (), protect: str | None = None
) -> int:
    """Put timm's re-parameterisable blocks below the root of ``model`` into their inference form, in place
    (on spray's copy; the same walk as ``timm.utils.reparameterize_model``).

    Parameters
    ----------
    model : nn.Module
        spray's copy, in eval mode (the BatchNorms are folded with their running statistics).
    keep : tuple of module types
        Types the user gave a rule: never changed, nor a block that holds one.
    protect : str, optional
        A module path that must survive (the concept layer): no block above it is changed.

    Returns
    -------
    int
        How many blocks were changed.
    """
    count = 0

    def walk(parent: nn.Module, prefix: str) -> None:
        nonlocal count
        for name, child in list(parent.named_children()):
            path = f"{prefix}.{name}" if prefix else name
            # a block holding a module the user gave a rule (P-ClArC's projection) keeps its branches: its
            # method would fold them without that module
            held = keep and any(isinstance(m, keep) for m in child.modules())
            method = None if held else _reparameterizable(child)
            if method is not None and not (protect or "").startswith(path + "."):
                # on a copy of the block: timm's methods are not all idempotent (a block already in its
                # inference form raises half-way), and such a block is left as it is
                trial = copy.deepcopy(child)
                try:
                    made = getattr(trial, method)()
                except (AttributeError, AssertionError, RuntimeError, TypeError, ValueError) as err:
                    logger.debug("%s left as it is: its %s() raised %r", path, method, err)
                else:
                    child = made if method == "fuse" and isinstance(made, nn.Module) else trial
                    setattr(parent, name, child)
                    count += 1
            walk(child, path)

    walk(model, "")
    return count


def _out_of_place(model: nn.Module) -> int:
    """Switch off ``inplace`` on every module that has the switch; return how many were on."""
    count = 0
    for m in model.modules():
        if getattr(m, "inplace", None) is True:
            setattr(m, "inplace", False)  # noqa: B010 - a plain attribute on any module class
            count += 1
    return count


#: BatchNorm classes that compute what ``nn.BatchNorm2d`` does in eval mode, by class name: torchvision's and
#: timm's ``FrozenBatchNorm2d`` (statistics as buffers), and ``nn.SyncBatchNorm`` (its own class).
_OTHER_BATCHNORMS = ("FrozenBatchNorm2d", "SyncBatchNorm")


class AnyBatchNorm(nn.BatchNorm2d):
    """An eval-mode BatchNorm for inputs of any dimension ``(N, C, ...)``, as ``nn.SyncBatchNorm`` takes them
    (which dimension a replaced one sees is not known before a forward pass)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input of at least 2 dimensions (N, C, ...), got {input.dim()}")


def _plain_batchnorms(model: nn.Module, keep: tuple[type[nn.Module], ...] = ()) -> int:
    """Replace every ``FrozenBatchNorm2d`` and ``SyncBatchNorm`` by the plain BatchNorm that computes the same
    in eval mode (:class:`AnyBatchNorm`), so that it is folded and explained like one; a module of a ``keep``
    type (one the user gave a rule) stays. Returns how many were replaced."""
    count = 0
    for path, m in list(leaves(model)):
        if (
            type(m).__name__ in _OTHER_BATCHNORMS
            and not isinstance(m, keep)
            and (mean := _tensor(m, "running_mean")) is not None
        ):
            bn = (
                AnyBatchNorm(mean.numel(), eps=float(getattr(m, "eps", 1e-5)))
                .to(mean.device, mean.dtype)
                .eval()
            )
            with torch.no_grad():
                for name in ("weight", "bias", "running_mean", "running_var"):
                    value = _tensor(m, name)
                    if value is not None:
                        getattr(bn, name).copy_(value)
            _set_module(model, path, bn)
            count += 1
    return count


def _split_norm_act(model: nn.Module) -> int:
    """Replace timm's ``BatchNormAct2d`` by ``Sequential(BatchNorm2d, drop, act)`` (same function)."""
    count = 0
    for path, m in list(model.named_modules()):
        if not (
            isinstance(m, nn.BatchNorm2d)
            and type(m).__name__ == "BatchNormAct2d"
            and isinstance(getattr(m, "act", None), nn.Module)
            and isinstance(getattr(m, "drop", None), nn.Module)
        ):
            continue
        bn = nn.BatchNorm2d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
        bn.load_state_dict({k: v for k, v in m.state_dict().items() if "." not in k})
        bn.to(next(iter(m.buffers())).device).eval()
        parts: OrderedDict[str, nn.Module] = OrderedDict(
            bn=bn, drop=m.get_submodule("drop"), act=m.get_submodule("act")
        )
        _set_module(model, path, nn.Sequential(parts))
        count += 1
    return count


def bake_weight_transforms(model: nn.Module) -> int:
    """Turn weights computed on each forward pass into plain weights, in place (on spray's copy): weight
    and spectral norm, old style (forward pre-hooks, which the copy would drop) and new style
    (``torch.nn.utils.parametrize``, whose modules are of a generated type no rule knows). Each weight is
    the one the model uses in eval mode. Returns how many were baked."""
    from torch.nn.utils import parametrize
    from torch.nn.utils.spectral_norm import SpectralNorm, remove_spectral_norm
    from torch.nn.utils.weight_norm import WeightNorm, remove_weight_norm

    count = 0
    for path, module in list(model.named_modules()):
        if path and parametrize.is_parametrized(module):
            # Not torch's remove_parametrizations: it edits the generated class, which the copy shares with
            # the user's module.
            _set_module(model, path, _unparametrized(module))
            count += 1
            continue
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, SpectralNorm):
                remove_spectral_norm(module, hook.name)
                count += 1
            elif isinstance(hook, WeightNorm):
                remove_weight_norm(module, hook.name)
                count += 1
    return count


def _unparametrized(module: nn.Module) -> nn.Module:
    """A module of the original class (``Conv2d`` for a ``ParametrizedConv2d``) holding, as plain parameters,
    the tensors its parametrizations compute now; everything else shared with ``module`` (a copy already)."""
    names: nn.ModuleDict = module.parametrizations  # type: ignore[assignment]
    values = {name: getattr(module, name).detach().clone() for name in names}
    base: type[nn.Module] = type(module).__bases__[0]
    plain: nn.Module = object.__new__(base)
    plain.__dict__ = dict(module.__dict__)
    plain._modules = {k: v for k, v in module._modules.items() if k != "parametrizations"}
    plain._parameters = dict(module._parameters)
    for name, value in values.items():
        plain._parameters[name] = nn.Parameter(value, requires_grad=False)
    return plain


def _clear_hooks(model: nn.Module) -> None:
    # The copy must not run the user's hooks (they may record, modify outputs, or hold references to
    # the original model); the original keeps its own hooks untouched.
    for module in model.modules():
        for attr in (
            "_forward_hooks",
            "_forward_hooks_with_kwargs",
            "_forward_hooks_always_called",
            "_forward_pre_hooks",
            "_forward_pre_hooks_with_kwargs",
            "_backward_hooks",
            "_backward_pre_hooks",
            "_state_dict_hooks",
            "_state_dict_pre_hooks",
            "_load_state_dict_pre_hooks",
            "_load_state_dict_post_hooks",
        ):
            hooks = getattr(module, attr, None)
            if hooks is not None:
                hooks.clear()


def canonize(
    model: nn.Module,
    canonizers: str | Sequence[str] | None = "auto",
    device: torch.device | str | None = None,
    keep: tuple[type[nn.Module], ...] = (),
    protect: str | None = None,
) -> nn.Module:
    """Return a canonized deep copy of ``model`` in eval mode with frozen parameters.

    Parameters
    ----------
    model : nn.Module
        The user's model; not modified.
    canonizers : {"auto"} or list of {"merge_batchnorm", "resnet", "reparameterize"} or None
        What to apply; ``None`` only copies (eval mode, no grads, no hooks, out-of-place activations).
    device : torch.device or str, optional
        Where to put the copy (default: where the model is).
    keep : tuple of module types
        Types the user gave a rule (``register_layer_rule``, ``extra_rules``): never replaced.
    protect : str, optional
        A module path (the concept layer) that re-parameterisation must leave in the copy.

    Returns
    -------
    nn.Module
        The copy.
    """
    names = resolve_canonizers(model, canonizers)
    copied = model_copy(model)
    bake_weight_transforms(copied)
    _clear_hooks(copied)
    copied.eval()
    if "reparameterize" in names:
        # before the parameters are frozen: the single layers it makes are new parameters
        n = reparameterize(copied, keep, protect)
        # said, since the module paths of spray's later messages are then the converted copy's
        logger.info(
            "LRP explains %d of timm's re-parameterisable blocks in their inference form (spray's copy; the model "
            "is unchanged, and module paths in spray's messages are the copy's)",
            n,
        )
    if device is not None:
        copied.to(device)
    for p in copied.parameters():
        p.requires_grad_(False)
    _out_of_place(copied)
    split_attention(copied)
    if "merge_batchnorm" in names:
        _plain_batchnorms(copied, keep)
        _split_norm_act(copied)
        folded = fold_batchnorm(copied)
        logger.debug("folded %d BatchNorm layers", len(folded))
    if "resnet" in names:
        n = _patch_resnet(copied)
        logger.debug("routed %d residual sums through ResidualAdd", n)
    return copied

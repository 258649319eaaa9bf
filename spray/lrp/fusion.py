"""Activation fusion: an activation that is the only consumer of a rule layer's output is applied by that layer.

The fused layer saves one tensor (its ratio with the ReLU's mask folded in) instead of two, and the
ReLU's forward and backward passes disappear. Whether a fusion is valid depends on how the parent
module calls its children, which only the forward pass shows: :class:`_FusionWatch` checks it on the
first call and the engine undoes the fusions that fail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from spray.lrp.activations import Pass, is_activation, is_gate
from spray.lrp.base import RuleModule
from spray.lrp.canonizers import ResidualAdd

__all__ = ["_Fusion", "_FusionWatch", "_fuse_relus"]


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


def _fusable_activation(m: nn.Module | None) -> nn.Module | None:
    """The activation module to fold in, if ``m`` is one: a plain ReLU, or an activation with ``Pass``
    (no parameters, not a gate: a gate's output must stay tagged for the product after it)."""
    if type(m) is nn.ReLU:
        return m
    if not isinstance(m, RuleModule) or type(m.rule) is not Pass:
        return None
    inner = m.get_submodule("inner")
    fits = is_activation(inner) and not is_gate(inner)
    return inner if fits and next(inner.parameters(), None) is None else None


def _sequential_windows(
    module: nn.Module, single: Callable[[nn.Module], bool]
) -> list[tuple[str, str, nn.Module]]:
    """(layer name, activation name, activation) for each fusable pair among ``module``'s children."""
    if not (
        isinstance(module, nn.Sequential)
        and type(module).forward is nn.Sequential.forward
        and "forward" not in module.__dict__
    ):
        return []
    # _modules keeps a module registered under two names twice (named_children() does not)
    items = list(module._modules.items())
    found = []
    for i, (name, child) in enumerate(items):
        if child is None or not (_fusable(child) and single(child)):
            continue
        j = i + 1
        while j < len(items) and type(items[j][1]) is nn.Identity:
            j += 1
        following = items[j][1] if j < len(items) else None
        if following is None or not single(following):
            continue
        act = _fusable_activation(following)
        if act is None or (type(act) is not nn.ReLU and not isinstance(child, RuleModule)):
            continue
        window = [m for _, m in items[i : j + 1]]
        if len({id(m) for m in window}) == len(window):
            found.append((name, items[j][0], act))
            items[j] = (items[j][0], nn.Identity())
    return found


def _fuse_in_sequential(path: str, module: nn.Module, single: Callable[[nn.Module], bool]) -> list[_Fusion]:
    fusions = []
    for name, act_name, act in _sequential_windows(module, single):
        layer, original = getattr(module, name), getattr(module, act_name)
        if type(act) is nn.ReLU:
            layer.fuse_relu = True
        else:
            layer.__dict__["fuse_act"] = act
        setattr(module, act_name, nn.Identity())

        def undo(
            seq: nn.Module = module, layer: nn.Module = layer, n: str = act_name, m: nn.Module = original
        ) -> None:
            layer.fuse_relu = False  # type: ignore[assignment]
            layer.__dict__["fuse_act"] = None
            setattr(seq, n, m)

        fusions.append(_Fusion(f"{path}.{name}" if path else name, module, layer, undo))
    return fusions


def _fuse_in_block(path: str, module: nn.Module, single: Callable[[nn.Module], bool]) -> list[_Fusion]:
    """The ReLUs of the torchvision ResNet blocks patched by :mod:`spray.lrp.canonizers`."""
    flags = getattr(module, "lrp_fused", None)
    if not (isinstance(flags, list) and type(getattr(module, "relu", None)) is nn.ReLU):
        return []

    def unfuse_flag(layer: nn.Module, k: int) -> Callable[[], None]:
        def undo() -> None:
            layer.fuse_relu = False  # type: ignore[assignment]
            flags[k] = False

        return undo

    fusions = []
    # in the order of the block's ReLUs (see canonizers._bottleneck_forward)
    pairs = [("conv1", "bn1"), ("conv2", "bn2")][: len(flags) - 1]
    for k, (conv_name, bn_name) in enumerate(pairs):
        conv, bn = getattr(module, conv_name), getattr(module, bn_name)
        if _fusable(conv) and single(conv) and type(bn) is nn.Identity:
            conv.fuse_relu, flags[k] = True, True
            fusions.append(_Fusion(f"{path}.{conv_name}", module, conv, unfuse_flag(conv, k)))
    add = getattr(module, "lrp_add", None)
    if isinstance(add, ResidualAdd) and single(add):
        add.fuse_relu, flags[-1] = True, True
        fusions.append(_Fusion(f"{path}.lrp_add", module, add, unfuse_flag(add, len(flags) - 1)))
    return fusions


def _fuse_relus(model: nn.Module, unfused: str | None = None) -> list[_Fusion]:
    """Fold each activation into the rule layer whose output only it consumes; return the fusions.

    Candidates: consecutive children of an ``nn.Sequential`` that keeps Sequential's ``forward``
    (``nn.Identity`` in between, e.g. a folded BatchNorm, is skipped), where the activation is a plain
    ``nn.ReLU`` or an activation with ``Pass`` (SiLU, GELU, Hardswish, ReLU6, ...), and the ReLUs of the
    torchvision ResNet blocks patched by :mod:`spray.lrp.canonizers`. Modules registered more than once
    are left alone, and so is a window of a Sequential in which one module object occurs twice. Whether
    the owner really runs the pair as a whole is verified on the first forward pass (the parent may
    iterate the Sequential). A block whose ``relu`` is at the path ``unfused`` is left unfused. The fused
    layer saves one tensor (its ratio with the activation folded in:
    ``act(z) / stab(z')``) instead of two, and the activation's own passes disappear.
    """
    uses: dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        uses[id(m)] = uses.get(id(m), 0) + 1

    def single(m: nn.Module) -> bool:
        return uses.get(id(m)) == 1

    fusions: list[_Fusion] = []
    for path, module in list(model.named_modules()):
        fusions += _fuse_in_sequential(path, module, single)
        # a block whose ReLU is the concept layer keeps calling it (fused, the ReLU never runs)
        if unfused is None or unfused != (f"{path}.relu" if path else "relu"):
            fusions += _fuse_in_block(path, module, single)
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

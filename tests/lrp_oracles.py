"""Test-only references for spray.lrp on modern architectures: zennit 0.5.1 (CNNs) and LXT 2.1 (ViTs).

zennit has no canonizers for MobileNet, EfficientNet, RegNet, DenseNet or ConvNeXt, and in zennit's frame
(relevance, not gradient, flows backwards) a functional operation applies its Jacobian to the relevance:
``x + f(x)`` would hand the full relevance to both branches, ``scale * x`` would multiply it. So the
reference gives zennit what it needs to apply *the same rules* as spray, using zennit's own machinery:

* residual sums through zennit's ``Sum`` module (the ``Norm`` rule), as zennit's ``ResNetCanonizer`` does;
* a squeeze-and-excitation product through a ``Gate`` module (``Pass``: all relevance to the features,
  the gate treated as a constant, spray's gate rule), a layer scale through a ``Scale`` module (``Pass``);
* functional pooling/ReLU at the head of MobileNetV2 and DenseNet through modules;
* LayerNorm: zennit's ``Epsilon`` on a forward with the standard deviation detached, which is LXT's own
  ``layer_norm_forward`` (AttnLRP's LayerNorm rule);
* the BatchNorm pairs that spray folds, folded by zennit's ``MergeBatchNorm`` (with the 0.5.1 ``eps``
  fix, see tests/test_lrp.py); a BatchNorm that cannot be folded gets ``Pass``, or with
  ``zero_input_drop=True`` a ``Pass`` that drops the relevance of inputs that are exactly 0 (spray's
  documented deviation from zennit, see docs/lrp.md).

The ViT reference is LXT: LayerNorm by ``layer_norm_forward``, GELU by ``identity_rule_implicit``, and the
attention with the uniform rule (``divide_gradient``: query and key by 4, value by 2) or CP-LRP (LXT's
``stop_gradient`` on query and key), linear layers by their gradient (LRP-0).
"""

from __future__ import annotations

import contextlib
import copy
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

zc = pytest.importorskip("zennit.composites")
zcan = pytest.importorskip("zennit.canonizers")
zcore = pytest.importorskip("zennit.core")
zlayer = pytest.importorskip("zennit.layer")
zrules = pytest.importorskip("zennit.rules")
zattr = pytest.importorskip("zennit.attribution")


def lxt_modules() -> tuple[types.ModuleType, types.ModuleType]:
    """LXT's ``efficient.rules`` and ``efficient.patches``.

    ``lxt/efficient/__init__.py`` imports LXT's Hugging Face model patches, which fail against the installed
    transformers 5 (``transformers.modeling_attn_mask_utils`` is gone); the two modules used here do not
    need them, so the package is entered without running its ``__init__``.
    """
    import importlib
    import sys
    from pathlib import Path

    lxt = pytest.importorskip("lxt")
    if "lxt.efficient" not in sys.modules:
        package = types.ModuleType("lxt.efficient")
        package.__path__ = [str(Path(lxt.__file__).parent / "efficient")]
        sys.modules["lxt.efficient"] = package
    return importlib.import_module("lxt.efficient.rules"), importlib.import_module("lxt.efficient.patches")


ZENNIT_NAMES = {
    "EpsilonPlusFlat": "epsilon_plus_flat",
    "EpsilonGammaBox": "epsilon_gamma_box",
    "EpsilonAlpha2Beta1Flat": "epsilon_alpha2_beta1_flat",
    "EpsilonPlus": "epsilon_plus",
    "EpsilonAlpha2Beta1": "epsilon_alpha2_beta1",
}


# --------------------------------------------------------------------------------------------------
# modules zennit can attach rules to


class Gate(nn.Module):
    """``x * scale`` with ``scale`` set just before the call (a constant for the rules)."""

    scale: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class Scale(nn.Module):
    """``x * weight`` with a fixed weight (ConvNeXt's layer scale)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class PassNonzero(zcore.Hook):
    """zennit's ``Pass``, except that inputs exactly 0 receive no relevance (spray's frame)."""

    def forward(self, module: nn.Module, input: Any, output: Any) -> None:
        self.stored_tensors["input"] = input

    def backward(self, module: nn.Module, grad_input: Any, grad_output: Any) -> Any:
        return tuple(g * (x != 0) for g, x in zip(grad_output, self.stored_tensors["input"], strict=False))

    def copy(self) -> PassNonzero:
        return PassNonzero()


def _sum(module: nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return module.canonizer_sum(torch.stack([a, b], dim=-1))


# --------------------------------------------------------------------------------------------------
# forwards of the torchvision blocks with their functional operations routed through modules


def _inverted_residual_v2(self: Any, x: torch.Tensor) -> torch.Tensor:
    return _sum(self, x, self.conv(x)) if self.use_res_connect else self.conv(x)


def _block_residual(self: Any, x: torch.Tensor) -> torch.Tensor:
    # MobileNetV3 InvertedResidual, EfficientNet MBConv and FusedMBConv
    result = self.block(x)
    if not self.use_res_connect:
        return result
    if hasattr(self, "stochastic_depth"):
        result = self.stochastic_depth(result)
    return _sum(self, result, x)


def _regnet_block(self: Any, x: torch.Tensor) -> torch.Tensor:
    shortcut = self.proj(x) if self.proj is not None else x
    return self.activation(_sum(self, shortcut, self.f(x)))


def _squeeze_excitation(self: Any, x: torch.Tensor) -> torch.Tensor:
    self.canonizer_gate.scale = self._scale(x).detach()
    return self.canonizer_gate(x)


def _cn_block(self: Any, x: torch.Tensor) -> torch.Tensor:
    result = self.stochastic_depth(self.canonizer_scale(self.block(x)))
    return _sum(self, result, x)


def _layer_norm_2d(self: Any, x: torch.Tensor) -> torch.Tensor:
    return lxt_modules()[1].layer_norm_forward(self, x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _pooled_head(self: Any, x: torch.Tensor) -> torch.Tensor:
    # MobileNetV2 and DenseNet end in functional (ReLU,) adaptive average pooling and flatten
    features = self.features(x)
    if hasattr(self, "canonizer_relu"):
        features = self.canonizer_relu(features)
    return self.classifier(torch.flatten(self.canonizer_pool(features), 1))


class BlockCanonizer(zcan.AttributeCanonizer):
    """Routes the functional operations of torchvision's modern CNN blocks through modules."""

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(name: str, module: nn.Module) -> dict[str, Any] | None:
        from torchvision.models import convnext, densenet, efficientnet, mobilenetv2, mobilenetv3, regnet
        from torchvision.ops.misc import SqueezeExcitation

        kind = type(module)
        if kind is mobilenetv2.InvertedResidual:
            return {"forward": types.MethodType(_inverted_residual_v2, module), "canonizer_sum": zlayer.Sum()}
        if kind in (mobilenetv3.InvertedResidual, efficientnet.MBConv, efficientnet.FusedMBConv):
            return {"forward": types.MethodType(_block_residual, module), "canonizer_sum": zlayer.Sum()}
        if kind is regnet.ResBottleneckBlock:
            return {"forward": types.MethodType(_regnet_block, module), "canonizer_sum": zlayer.Sum()}
        if kind is SqueezeExcitation:
            return {"forward": types.MethodType(_squeeze_excitation, module), "canonizer_gate": Gate()}
        if kind is convnext.CNBlock:
            attrs = {"forward": types.MethodType(_cn_block, module), "canonizer_sum": zlayer.Sum()}
            return {**attrs, "canonizer_scale": Scale(module.layer_scale.detach())}
        if kind is convnext.LayerNorm2d:
            return {"forward": types.MethodType(_layer_norm_2d, module)}
        if kind is nn.LayerNorm:
            return {"forward": types.MethodType(lxt_modules()[1].layer_norm_forward, module)}
        if kind is mobilenetv2.MobileNetV2:
            return {
                "forward": types.MethodType(_pooled_head, module),
                "canonizer_pool": nn.AdaptiveAvgPool2d(1),
            }
        if kind is densenet.DenseNet:
            pooled = {"canonizer_pool": nn.AdaptiveAvgPool2d(1), "canonizer_relu": nn.ReLU()}
            return {"forward": types.MethodType(_pooled_head, module), **pooled}
        return None


def folded_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """The (linear, BatchNorm) pairs spray folds in ``model`` (decided on a copy)."""
    from spray.lrp.canonizers import _split_norm_act, fold_batchnorm

    copied = copy.deepcopy(model)
    _split_norm_act(copied)
    return fold_batchnorm(copied)


class _PairMerge(zcan.MergeBatchNorm):
    """zennit's MergeBatchNorm for given module pairs, with the 0.5.1 identity-BN ``eps`` fix."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__()
        self.pairs = pairs

    def apply(self, root_module: nn.Module) -> list[Any]:
        instances = []
        for linear, bn in self.pairs:
            instance = self.copy()
            instance.register([root_module.get_submodule(linear)], root_module.get_submodule(bn))
            instances.append(instance)
        return instances

    def copy(self) -> _PairMerge:
        return _PairMerge(self.pairs)

    @staticmethod
    def merge_batch_norm(modules: Any, batch_norm: Any) -> None:
        zcan.MergeBatchNorm.merge_batch_norm(modules, batch_norm)
        batch_norm.running_var.data = torch.full_like(batch_norm.running_var, 1.0 - batch_norm.eps)


def zennit_reference(
    model: nn.Module,
    x: torch.Tensor,
    composite: str,
    targets: torch.Tensor,
    *,
    zero_input_drop: bool = False,
    **kwargs: Any,
) -> torch.Tensor:
    """Input relevance of ``model`` by zennit with the canonizers above (``model`` is not modified)."""
    model = copy.deepcopy(model).eval()
    for m in model.modules():
        if getattr(m, "inplace", False) is True:
            m.inplace = False  # zennit's Pass hook clones its input, but the gradient path must stay intact
    bn_rule: Any = PassNonzero() if zero_input_drop else zrules.Pass()
    layer_map = [
        ((Gate, Scale), zrules.Pass()),
        ((nn.LayerNorm,), zrules.Epsilon(1e-6)),
        ((nn.BatchNorm1d, nn.BatchNorm2d), bn_rule),
    ]
    canonizers = [_PairMerge(folded_pairs(model)), BlockCanonizer()]
    comp = zc.COMPOSITES[ZENNIT_NAMES[composite]](canonizers=canonizers, layer_map=layer_map, **kwargs)
    with zattr.Gradient(model, comp) as attributor:
        _, rel = attributor(x, lambda out: torch.zeros_like(out).scatter_(1, targets[:, None], 1.0) * out)
    return rel.detach()


# --------------------------------------------------------------------------------------------------
# LXT (ViT)


@contextlib.contextmanager
def _patched_sdpa(wrapper: Callable[..., torch.Tensor]) -> Iterator[None]:
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = wrapper  # type: ignore[assignment]
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original  # type: ignore[assignment]


def lxt_reference(
    model: nn.Module, x: torch.Tensor, targets: torch.Tensor, attention: str = "attnlrp"
) -> torch.Tensor:
    """Input relevance (``x ⊙ gradient``) of a torchvision or timm ViT with LXT's rules.

    The attention rule is applied where both libraries' attentions meet, at
    ``F.scaled_dot_product_attention`` (``nn.MultiheadAttention`` calls it by its module-global name, so
    patching it there covers torchvision's ViT and timm's fused attention alike).
    """
    rules, patches = lxt_modules()
    layer_norm_forward, identity_rule_implicit = patches.layer_norm_forward, rules.identity_rule_implicit
    model = copy.deepcopy(model).eval()
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            m.forward = types.MethodType(layer_norm_forward, m)
        elif isinstance(m, nn.GELU):
            m.forward = (lambda f: lambda t: identity_rule_implicit(f, t))(m.forward)
    original = F.scaled_dot_product_attention

    def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args: Any, **kw: Any) -> torch.Tensor:
        return original(*_qkv(q, k, v, attention), *args, **kw)

    xx = x.clone().requires_grad_(True)
    with _patched_sdpa(sdpa):
        out = model(xx)
    seed = torch.zeros_like(out).scatter_(1, targets[:, None], 1.0)
    (grad,) = torch.autograd.grad(out, xx, seed)
    return (xx * grad).detach()


def lxt_swin_reference(
    model: nn.Module, x: torch.Tensor, targets: torch.Tensor, attention: str = "attnlrp"
) -> torch.Tensor:
    """LXT's rules on torchvision's Swin, whose attention is functional: its two matmuls go through
    ``Tensor.matmul`` or ``@`` (uniform rule: ``divide_gradient`` by 2 on both factors), SwinV2's cosine
    attention normalises q and k with ``F.normalize`` (the norm held constant, as LXT's rule for LayerNorm
    holds the standard deviation) and, for CP-LRP, the softmax output is held constant (``stop_gradient``)."""
    rules, patches = lxt_modules()
    model = copy.deepcopy(model).eval()
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            m.forward = types.MethodType(patches.layer_norm_forward, m)
        elif isinstance(m, nn.GELU):
            m.forward = (lambda f: lambda t: rules.identity_rule_implicit(f, t))(m.forward)
    matmul, at, softmax, normalize = torch.Tensor.matmul, torch.Tensor.__matmul__, F.softmax, F.normalize

    def uniform(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.requires_grad and b.requires_grad:
            return matmul(rules.divide_gradient(a, 2), rules.divide_gradient(b, 2))
        return matmul(a, b)

    def constant_norm(t: torch.Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12) -> torch.Tensor:
        return t / t.norm(p, dim, keepdim=True).clamp_min(eps).detach()

    torch.Tensor.matmul = uniform  # type: ignore[method-assign]
    torch.Tensor.__matmul__ = uniform  # type: ignore[method-assign]
    F.normalize = constant_norm  # type: ignore[assignment]
    if attention == "cp":
        F.softmax = lambda *a, **kw: rules.stop_gradient(softmax(*a, **kw))  # type: ignore[assignment]
    try:
        xx = x.clone().requires_grad_(True)
        out = model(xx)
    finally:
        torch.Tensor.matmul = matmul  # type: ignore[method-assign]
        torch.Tensor.__matmul__ = at  # type: ignore[method-assign]
        F.softmax, F.normalize = softmax, normalize  # type: ignore[assignment]
    (grad,) = torch.autograd.grad(out, xx, torch.zeros_like(out).scatter_(1, targets[:, None], 1.0))
    return (xx * grad).detach()


def _qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention: str) -> tuple[torch.Tensor, ...]:
    rules = lxt_modules()[0]
    if attention == "cp":
        return rules.stop_gradient(q), rules.stop_gradient(k), v
    return rules.divide_gradient(q, 4), rules.divide_gradient(k, 4), rules.divide_gradient(v, 2)


def realistic_bn(
    model: nn.Module, shape: tuple[int, ...], zero_bias: bool = False, seed: int = 1
) -> nn.Module:
    """Random BN affine parameters and BN statistics measured on random inputs of ``shape`` (C, H, W), so
    that activations keep their scale through a deep random network; with ``zero_bias`` every effective
    bias is 0 (dense/conv biases, BN shifts, LayerNorm biases, class tokens and position embeddings)."""
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
            m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.copy_(torch.rand(m.num_features, generator=gen) * 0.6 - 0.3)
        model.train()
        for _ in range(2):
            model(torch.randn(8, *shape, generator=gen))
        model.eval()
        for m in bns:
            m.momentum = 0.1
            if zero_bias:  # the BN's shift (b - mean)·scale + beta is 0, folded or not
                m.bias.copy_(m.running_mean * m.weight / torch.sqrt(m.running_var + m.eps))
        if zero_bias:
            for m in model.modules():
                if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                    continue
                for name, p in m.named_parameters(recurse=False):
                    if name.endswith("bias") or name in (
                        "class_token",
                        "cls_token",
                        "pos_embedding",
                        "pos_embed",
                    ):
                        p.zero_()
    return model
